"""Decoded, resized ``uint8`` pixels of a dataset split, cached once in a memory-mapped ``.npy`` file.

Training decodes every JPEG of a small FER set (RAF-DB: 12,271 images) once per epoch in the per-sample pipeline; the
cache decodes and resizes each image once, in parallel threads, with the evaluation transform's resize (processor's
size and filter, antialias). Afterwards a batch is an index into a memory-mapped ``[N, H, W, 3]`` array: no decoding,
no per-sample Python, and the OS page cache shares the pixels between DataLoader workers and processes.

The file is named after the split's ``datasets`` fingerprint, the size and the filter, written to a temporary name and
renamed (a killed build leaves no half-written cache), and reused by every later run on the same data.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image as PILImage

from ..environment import usable_cores

__all__ = ["CACHE_VERSION", "CachedImages", "cached_pixels", "describe_cache", "identity_collate", "resize_to_uint8"]

#: Bump when the decoding or resizing changes: it is part of the file name.
CACHE_VERSION = 1

_PIL_FILTERS = {
    "nearest": PILImage.Resampling.NEAREST,
    "bilinear": PILImage.Resampling.BILINEAR,
    "bicubic": PILImage.Resampling.BICUBIC,
    "lanczos": PILImage.Resampling.LANCZOS,
}


def resize_to_uint8(image: PILImage.Image, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """An RGB ``[H, W, 3]`` ``uint8`` array of ``image`` resized to ``size = (H, W)``.

    The same pixels as the evaluation transform before its conversion to float (``v2.RGB`` then ``v2.Resize`` with
    antialias on a PIL image is PIL's ``resize``), so cached evaluation equals the per-sample pipeline.
    """
    from torchvision.transforms import v2

    if interpolation not in _PIL_FILTERS:
        raise ValueError(f"interpolation must be one of {sorted(_PIL_FILTERS)}, got {interpolation!r}")
    image = image.convert("RGB")
    height, width = size
    if image.size != (width, height):
        mode = v2.InterpolationMode(interpolation)
        image = v2.functional.resize(image, [height, width], interpolation=mode, antialias=True)
    return np.asarray(image, dtype=np.uint8)


def _files_signature(dataset: datasets.Dataset, image_column: str) -> bytes:
    """Size and modification time of every image stored as a path: an image replaced in place (same path, same
    fingerprint) must not be served from a stale cache."""
    signature = hashlib.sha256()
    column = dataset.data.column(image_column)
    for chunk in column.chunks:
        if not hasattr(chunk, "field"):  # not the {bytes, path} struct of datasets.Image
            continue
        paths = chunk.field("path").to_pylist()
        stored = chunk.field("bytes").is_valid().to_pylist()
        for path, has_bytes in zip(paths, stored, strict=True):
            if has_bytes or not path:
                continue
            try:
                stat = os.stat(path)
                signature.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns};".encode())
            except OSError:
                signature.update(f"{path}:missing;".encode())
    return signature.digest()


def _cache_path(
    dataset: datasets.Dataset, size: tuple[int, int], interpolation: str, cache_dir: Path, image_column: str
) -> Path:
    fingerprint = getattr(dataset, "_fingerprint", None)
    if not fingerprint:
        raise ValueError("the dataset has no fingerprint to key the pixel cache; pass cache_dir=None to keep it "
                         "in memory")
    key = hashlib.sha256(f"{fingerprint}-{size}-{interpolation}-{len(dataset)}-v{CACHE_VERSION}".encode())
    key.update(_files_signature(dataset, image_column))
    key = key.hexdigest()
    return cache_dir / "pixels" / f"{key[:24]}-{size[0]}x{size[1]}.npy"


def _decode_all(
    dataset: datasets.Dataset,
    out: np.ndarray,
    size: tuple[int, int],
    interpolation: str,
    image_column: str,
    num_threads: int,
    progress: Callable[[int], None] | None,
) -> None:
    # PIL decodes and resizes without the GIL: threads scale, and nothing is pickled.
    chunk = 256
    decoder = datasets.Image()
    raw = dataset.cast_column(image_column, datasets.Image(decode=False))  # decoded below, one error per image

    def work(start: int) -> int:
        rows = raw[start : start + chunk][image_column]
        for offset, item in enumerate(rows):
            try:
                out[start + offset] = resize_to_uint8(decoder.decode_example(item), size, interpolation)
            except Exception as error:
                where = f" ({item['path']})" if isinstance(item, dict) and item.get("path") else ""
                raise ValueError(f"image {start + offset} of the split{where} could not be decoded for the pixel "
                                 f"cache: {error}. Fix or remove the file, or load the data with skip_bad=True "
                                 "(--skip-bad) to leave unreadable images out") from error
        return len(rows)

    starts = range(0, len(dataset), chunk)
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        for done in pool.map(work, starts):
            if progress is not None:
                progress(done)


def cached_pixels(
    dataset: datasets.Dataset,
    size: int | tuple[int, int],
    *,
    interpolation: str = "bilinear",
    image_column: str = "image",
    cache_dir: str | Path | None = None,
    num_threads: int | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """The decoded pixels of every image of ``dataset``, resized to ``size``: ``[N, H, W, 3]`` ``uint8``.

    Args:
        dataset: A split with a ``datasets.Image`` column.
        size: Output ``(H, W)`` or a side (the image processor's size).
        interpolation: Resize filter (the image processor's ``resample``): bilinear, bicubic, nearest or lanczos.
        image_column: Name of the image column.
        cache_dir: Where the memory-mapped file lives (``<cache_dir>/pixels/``); ``None`` builds the array in
            memory and writes nothing.
        num_threads: Decoding threads (default: :func:`fer_mek.environment.usable_cores`).
        show_progress: Show a progress bar while the cache is built.

    Returns:
        A read-only memory map of the cache file (or an in-memory array when ``cache_dir`` is ``None``).
    """
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    num_threads = num_threads or usable_cores()
    shape = (len(dataset), size[0], size[1], 3)
    decode_only = dataset.select_columns([image_column])
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc=f"caching {size[0]}x{size[1]} pixels", unit="img", leave=False)
    try:
        if cache_dir is None:
            pixels = np.empty(shape, dtype=np.uint8)
            _decode_all(decode_only, pixels, size, interpolation, image_column, num_threads, bar and bar.update)
            return pixels
        path = _cache_path(dataset, size, interpolation, Path(cache_dir), image_column)
        if path.is_file():
            pixels = np.load(path, mmap_mode="r")
            if pixels.shape == shape and pixels.dtype == np.uint8:
                return pixels
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.stem}-{os.getpid()}.npy")
        try:
            pixels = np.lib.format.open_memmap(staging, mode="w+", dtype=np.uint8, shape=shape)
            _decode_all(decode_only, pixels, size, interpolation, image_column, num_threads, bar and bar.update)
            pixels.flush()
            del pixels
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)
        return np.load(path, mmap_mode="r")
    finally:
        if bar is not None:
            bar.close()


def describe_cache(pixels: Any) -> str:
    """``"N x H x W x 3 uint8 (X MB, memory-mapped <file>)"`` for logs."""
    where = f"memory-mapped {pixels.filename}" if isinstance(pixels, np.memmap) else "in memory"
    return f"{' x '.join(map(str, pixels.shape))} uint8 ({pixels.nbytes / 2**20:.0f} MB, {where})"


class CachedImages:
    """A map-style dataset over cached pixels that a ``DataLoader`` reads a whole batch at a time.

    ``__getitems__`` (used by ``torch.utils.data`` for batched fetching) returns ``{"images": uint8 [B, 3, H, W],
    "labels": int64 [B], "uniforms": float32 [B, NUM_UNIFORMS]}``; use it with ``collate_fn=lambda batch: batch``
    (:func:`identity_collate`). Keys may encode an epoch as ``epoch * N + index`` (the trainer's epoch sampler): the
    random numbers of :class:`~fer_mek.data.BatchAugmentation` are a pure function of ``(seed, epoch, index)``.

    Args:
        pixels: ``[N, H, W, 3]`` ``uint8`` (see :func:`cached_pixels`).
        labels: ``N`` class indices.
        seed: Seed of the per-sample random numbers; ``None`` gives none (evaluation).
    """

    def __init__(self, pixels: np.ndarray, labels: Any, seed: int | None = None):
        if len(pixels) != len(labels):
            raise ValueError(f"{len(pixels)} cached images but {len(labels)} labels")
        self.pixels, self.labels, self.seed = pixels, np.asarray(labels, dtype=np.int64), seed

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key: int) -> dict[str, Any]:
        batch = self.__getitems__([key])
        return {name: value[0] for name, value in batch.items()}

    def __getitems__(self, keys: list[int]) -> dict[str, Any]:
        import torch

        from .batch_augment import NUM_UNIFORMS

        keys_array = np.asarray(keys, dtype=np.int64)
        epochs, indices = np.divmod(keys_array, len(self.pixels))
        order = np.argsort(indices, kind="stable")  # sorted reads are kinder to a memory map
        images = np.empty((len(indices), *self.pixels.shape[1:]), dtype=np.uint8)
        images[order] = self.pixels[indices[order]]
        batch = {
            "images": torch.from_numpy(images).permute(0, 3, 1, 2),
            "labels": torch.from_numpy(self.labels[indices]),
        }
        if self.seed is not None:
            uniforms = np.stack([
                np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, int(e), int(i)])))
                .random(NUM_UNIFORMS, dtype=np.float32)
                for e, i in zip(epochs, indices, strict=True)
            ])
            batch["uniforms"] = torch.from_numpy(uniforms)
        return batch


def identity_collate(batch: Any) -> Any:
    """``collate_fn`` for datasets whose ``__getitems__`` already returns a batch."""
    return batch

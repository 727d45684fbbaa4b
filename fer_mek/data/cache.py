"""Decoded, resized ``uint8`` pixels of a dataset split, cached once in a memory-mapped ``.npy`` file.

Training decodes every JPEG of a small FER set (RAF-DB: 12,271 images) once per epoch in the per-sample pipeline; the
cache decodes and resizes each image once, in parallel threads, with the evaluation transform's resize (processor's
size and filter, antialias). Afterwards a batch is an index into a memory-mapped ``[N, H, W, 3]`` array: no decoding,
no per-sample Python, and the OS page cache shares the pixels between DataLoader workers and processes.

The file is named after the split's ``datasets`` fingerprint, the size, the filter and a SHA-256 digest of the bytes
of every image the split stores as a path (an image replaced in place, even with the same size and modification time,
gives another cache), and reused by every later run on the same data. It cannot lie:

- it is written to a temporary name with its blocks reserved first (``posix_fallocate``: a full disk is one clear
  :class:`~fer_mek.io.WriteError` line, not a ``SIGBUS``), renamed, and then committed by ``NAME.npy.sha256``
  (``sha256sum`` format, written atomically): a cache without its checksum is an interrupted build;
- every load hashes the file and compares it with its checksum; a missing or different checksum, a truncated, empty
  or unreadable file, or another shape is rebuilt, with a message on stderr that says why.

Cost (measured on a shared 2-core CPU, warm page cache, 2,000 PNG sources of 48 x 48, 4.8 MB): a SHA-256 of every
source's bytes takes 25-55 ms per run start, against 8-10 ms for their size and time only (which misses a file
rewritten with the same size and time) and 20-50 ms for a 4 KB sample plus size, time and inode (opening the files
dominates, so sampling saves little and misses changes outside the sample); decoding and resizing them takes
270-400 ms. Verifying a 147 MB cache (12,000 images of 64 x 64, the default run) takes 80-180 ms. A set of hundreds of
thousands of large files pays seconds per start (its reading speed), in exchange for a cache that never serves
stale pixels.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image as PILImage

from ..environment import usable_cores
from ..image_processing_mek import to_rgb8
from ..io import WriteError, atomic_write_text, writing

__all__ = ["CACHE_VERSION", "CachedImages", "cache_problem", "cached_pixels", "describe_cache", "identity_collate",
           "resize_to_uint8"]

#: Bump when the decoding or resizing changes: it is part of the file name. 2: decoding by ``to_rgb8`` (16-bit and
#: transparent images), sources keyed by content, a checksum beside the file.
CACHE_VERSION = 2
#: Suffix of the checksum that commits a cache file (``sha256sum -c`` reads it).
CHECKSUM_SUFFIX = ".sha256"
_HINT = ("set FER_MEK_CACHE to a folder on a disk with more space, free some space, or train with "
         "--data-pipeline per-sample (no cache)")

_PIL_FILTERS = {
    "nearest": PILImage.Resampling.NEAREST,
    "bilinear": PILImage.Resampling.BILINEAR,
    "bicubic": PILImage.Resampling.BICUBIC,
    "lanczos": PILImage.Resampling.LANCZOS,
}


def resize_to_uint8(image: PILImage.Image, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """An RGB ``[H, W, 3]`` ``uint8`` array of ``image`` resized to ``size = (H, W)``.

    The same pixels as the evaluation transform before its conversion to float (``to_rgb8`` then ``v2.Resize`` with
    antialias on a PIL image is PIL's ``resize``), so cached evaluation equals the per-sample pipeline.
    """
    from torchvision.transforms import v2

    if interpolation not in _PIL_FILTERS:
        raise ValueError(f"interpolation must be one of {sorted(_PIL_FILTERS)}, got {interpolation!r}")
    image = to_rgb8(image)
    height, width = size
    if image.size != (width, height):
        mode = v2.InterpolationMode(interpolation)
        image = v2.functional.resize(image, [height, width], interpolation=mode, antialias=True)
    return np.asarray(image, dtype=np.uint8)


def _files_signature(dataset: datasets.Dataset, image_column: str) -> bytes:
    """SHA-256 over the path and the SHA-256 of the bytes of every image stored as a path: an image replaced in place
    (same path, same fingerprint, even the same size and modification time) must not be served from a stale cache.
    Images stored as bytes in the dataset are covered by its fingerprint."""
    paths: list[str] = []
    column = dataset.data.column(image_column)
    for chunk in column.chunks:
        if not hasattr(chunk, "field"):  # not the {bytes, path} struct of datasets.Image
            continue
        stored = chunk.field("bytes").is_valid().to_pylist()
        for path, has_bytes in zip(chunk.field("path").to_pylist(), stored, strict=True):
            if path and not has_bytes:
                paths.append(path)
    signature = hashlib.sha256()
    for path in paths:  # one thread: threads were 3x slower on 2,000 small files (measured)
        signature.update(f"{path}:{_file_digest(path)};".encode())
    return signature.digest()


def _file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), or ``"missing"`` when it cannot be read (decoding reports it)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return "missing"


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
        if path.exists() or _checksum_path(path).exists():
            problem = cache_problem(path, shape)
            if problem is None:
                return np.load(path, mmap_mode="r")
            print(f"pixel cache {path}: {problem}; rebuilding it", file=sys.stderr, flush=True)
        _build(path, shape, lambda out: _decode_all(decode_only, out, size, interpolation, image_column, num_threads,
                                                    bar and bar.update))
        return np.load(path, mmap_mode="r")
    finally:
        if bar is not None:
            bar.close()


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def cache_problem(path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> str | None:
    """Why the cache file ``path`` cannot be served (``None`` when it can): no checksum beside it, a checksum that
    differs from the file's bytes (changed, damaged, truncated, empty), or an array that is not ``uint8`` of
    ``shape``."""
    path = Path(path)
    checksum = _checksum_path(path)
    if not path.is_file():
        return "the file is missing"
    try:
        recorded = checksum.read_text(encoding="utf-8").split()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        return f"no valid checksum {checksum.name} (an interrupted build, or one of an older fer-mek)"
    actual = _file_digest(path)
    if actual != recorded:
        size = path.stat().st_size
        return (f"its bytes do not match its checksum ({size:,} bytes{', empty' if size == 0 else ''}): the file "
                "was changed, damaged or cut short")
    try:
        pixels = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as error:
        return f"unreadable ({type(error).__name__}: {error})"
    if pixels.dtype != np.uint8 or (shape is not None and pixels.shape != tuple(shape)):
        return f"holds {pixels.dtype} {pixels.shape}, expected uint8 {tuple(shape or ())}"
    return None


def _build(path: Path, shape: tuple[int, ...], fill: Callable[[np.ndarray], None]) -> None:
    """Write the cache file ``path`` (``fill`` writes the pixels), then its checksum; nothing is left on failure."""
    folder = path.parent
    with writing(folder, "the pixel cache folder"):
        folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        pixels = _reserve(staging, shape)
        fill(pixels)
        pixels.flush()
        del pixels
        with writing(staging, "the pixel cache"):
            os.replace(staging, path)
            atomic_write_text(_checksum_path(path), f"{_file_digest(path)}  {path.name}\n")
    finally:
        staging.unlink(missing_ok=True)


def _reserve(staging: Path, shape: tuple[int, ...]) -> np.memmap:
    """A writable memory map of a new ``.npy`` file whose blocks are all allocated (not sparse): a full disk fails
    here, as one :class:`~fer_mek.io.WriteError` line, and never later as a ``SIGBUS`` while pixels are written."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    needed = math.prod(shape)
    free = shutil.disk_usage(staging.parent).free
    if free < needed + 2**20:
        raise WriteError(errno.ENOSPC, f"the pixel cache needs {needed / 2**20:,.0f} MB in {staging.parent} but "
                                       f"only {free / 2**20:,.0f} MB are free: {_HINT}")
    try:
        with open(staging, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            offset = handle.tell()
            try:
                os.posix_fallocate(handle.fileno(), 0, offset + needed)
            except (AttributeError, OSError) as error:  # no fallocate here: a plain (sparse) size, checked above
                if getattr(error, "errno", errno.EOPNOTSUPP) not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                handle.truncate(offset + needed)
    except OSError as error:
        hint = _HINT if error.errno == errno.ENOSPC else ("make the folder writable or set FER_MEK_CACHE to "
                                                          "another folder")
        raise WriteError(error.errno or errno.EIO, f"could not write the pixel cache in {staging.parent} "
                                                   f"({error.strerror or error}): {hint}") from error
    return np.memmap(staging, dtype=np.uint8, mode="r+", offset=offset, shape=shape)


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

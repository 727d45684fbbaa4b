"""Fault injection on the data side (issue 15): true pixels on every path, a pixel cache that cannot lie, full and
read-only disks, badly encoded label files.

Every PIL mode gives the same pixels on the training transform, the evaluation transform, the pixel cache, the image
processor (``pipeline()``) and ``fer-mek predict``; corrupted, stale, truncated and empty caches are rebuilt with a
message; a full disk while the cache or a prepared dataset is written gives one line and leaves nothing half-written.
"""

from __future__ import annotations

import errno
import io
import os
import random
import shutil
import subprocess
import sys
from collections import namedtuple

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from transformers.image_utils import load_image as transformers_load_image

import fer_mek.data.cache as cache_module
import fer_mek.io
from fer_mek import MEKImageProcessor
from fer_mek.data import (
    build_eval_transform,
    build_train_transform,
    cached_pixels,
    load_fer2013,
    load_hub_dataset,
    load_rafdb,
    load_synthetic,
    prepare,
)
from fer_mek.data.cache import resize_to_uint8
from fer_mek.data.common import DataError
from fer_mek.data.fixtures import write_fer2013_csv, write_image_folder, write_rafdb
from fer_mek.data.rafdb import RAFDB_LABEL_FILE
from fer_mek.data.synthetic import _encode, render_face
from fer_mek.evaluation import ServedImageTransform, evaluation_settings
from fer_mek.image_processing_mek import array_to_rgb8, to_rgb8
from fer_mek.io import WriteError
from fer_mek.media import ImageLoadError, load_image
from tests.data_fixtures import FER_USAGE_COUNTS, RAF_TEST, RAF_TRAIN

SIZE = 12  # the processor's output side: the 16-px sources are resized on every path
SOURCE = 16


# --------------------------------------------------------------------------------------------------------- pixels


def _mode_images() -> dict[str, tuple[Image.Image, str]]:
    """``{name: (image in that mode, file format that stores it)}`` for every mode PIL opens from common files."""
    rng = np.random.default_rng(15)
    rgb = rng.integers(0, 256, (SOURCE, SOURCE, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (SOURCE, SOURCE), dtype=np.uint8)
    alpha = rng.integers(0, 256, (SOURCE, SOURCE), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(16)
    transparent_palette = palette.copy()
    transparent_palette.info["transparency"] = 3
    palette_alpha = palette.convert("PA")
    palette_alpha.putalpha(Image.fromarray(alpha))
    rgba = Image.fromarray(np.dstack([rgb, alpha]))
    grey_alpha = Image.fromarray(np.dstack([grey, alpha]))
    return {
        "1": (Image.fromarray(grey > 127), "PNG"),
        "L": (Image.fromarray(grey), "PNG"),
        "LA": (grey_alpha, "PNG"),
        "P": (palette, "PNG"),
        "P+transparency": (transparent_palette, "PNG"),
        "PA": (palette_alpha, "TIFF"),
        "RGB": (Image.fromarray(rgb), "PNG"),
        "RGBA": (rgba, "PNG"),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), "TIFF"),
        "I;16": (Image.fromarray(grey.astype(np.uint16) * 257), "PNG"),  # a 16-bit PNG: 257 * v is v in 8 bits
        "I": (Image.fromarray(grey.astype(np.int32) * 257), "TIFF"),  # 16-bit data in 32-bit storage
        "F": (Image.fromarray(grey.astype(np.float32) / 255), "TIFF"),
    }


MODE_IMAGES = _mode_images()


@pytest.fixture(scope="module")
def mode_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("modes")
    files = {}
    for name, (image, fmt) in MODE_IMAGES.items():
        path = folder / f"{name.replace(';', '_').replace('+', '_')}.{fmt.lower()}"
        image.save(path, fmt)
        files[name] = str(path)
    return files


@pytest.fixture(scope="module")
def processor() -> MEKImageProcessor:
    return MEKImageProcessor(size={"height": SIZE, "width": SIZE})


def _as_uint8(pixel_values: torch.Tensor | np.ndarray, processor: MEKImageProcessor) -> np.ndarray:
    """Normalised ``[3, H, W]`` pixel values back to the ``uint8`` ``[H, W, 3]`` they were made of."""
    values = torch.as_tensor(np.asarray(pixel_values), dtype=torch.float64)
    mean = torch.tensor(processor.image_mean, dtype=torch.float64)[:, None, None]
    std = torch.tensor(processor.image_std, dtype=torch.float64)[:, None, None]
    restored = ((values * std + mean) * 255).permute(1, 2, 0)
    assert torch.allclose(restored, restored.round(), atol=1e-3), "not the normalisation of uint8 pixels"
    return restored.round().to(torch.uint8).numpy()


def _paths(path: str, processor: MEKImageProcessor, tmp_path) -> dict[str, np.ndarray]:
    """The resized ``uint8`` pixels of one image file on every path that feeds a model."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a"])})
    split = datasets.Dataset.from_dict({"image": [path], "label": [0]}, features=features)
    decoded = split[0]["image"]  # as datasets decodes it for the training / evaluation transforms
    plain = build_train_transform(processor, rotation=0, crop_scale=(1, 1), crop_ratio=(1, 1), hflip=0,
                                  color_jitter=None, auto_augment=None, re_prob=0)
    return {
        "train transform": _as_uint8(plain(decoded), processor),
        "eval transform": _as_uint8(build_eval_transform(processor)(decoded), processor),
        "pixel cache": np.asarray(cached_pixels(split, SIZE, cache_dir=tmp_path, num_threads=1)[0]),
        "processor": _as_uint8(processor(Image.open(path))["pixel_values"][0], processor),
        # pipeline() decodes with transformers' load_image (PIL's convert("RGB"), which clips 16-bit values and drops
        # alpha) before the processor runs: given fer_mek's decoding, it sees the same pixels.
        "pipeline": _as_uint8(processor(transformers_load_image(load_image(path)))["pixel_values"][0], processor),
        "predict": _as_uint8(processor(load_image(path))["pixel_values"][0], processor),
    }


@pytest.mark.parametrize("mode", list(MODE_IMAGES))
def test_every_mode_gives_the_same_pixels_on_every_path(mode, mode_files, processor, tmp_path) -> None:
    opened = Image.open(mode_files[mode])
    assert opened.mode == mode.split("+")[0]
    pixels = _paths(mode_files[mode], processor, tmp_path)
    reference = pixels["predict"]
    for path, values in pixels.items():
        np.testing.assert_array_equal(values, reference, err_msg=f"{mode}: {path} differs from predict")
    assert 60 < reference.mean() < 200, f"{mode}: mean {reference.mean():.0f}: clipped to white or black?"


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "P+transparency", "F"])
def test_evaluation_sees_the_same_pixels_as_predict(mode, mode_files, processor) -> None:
    """``fer_mek.evaluation`` (its served-image step comes before the evaluation transform) decodes by ``to_rgb8``."""
    served = ServedImageTransform(build_eval_transform(processor), evaluation_settings(processor))
    np.testing.assert_array_equal(_as_uint8(served(Image.open(mode_files[mode])), processor),
                                  _as_uint8(processor(load_image(mode_files[mode]))["pixel_values"][0], processor))


def test_the_decoding_rules(mode_files) -> None:
    """16-bit and float grey are scaled, transparency is composited on white, 8-bit RGB / grey are PIL's."""
    grey = np.asarray(MODE_IMAGES["L"][0])
    for mode in ("I;16", "I", "F"):
        decoded = np.asarray(to_rgb8(Image.open(mode_files[mode])))
        np.testing.assert_array_equal(decoded, np.repeat(grey[..., None], 3, axis=2), err_msg=mode)
    rgba = np.asarray(MODE_IMAGES["RGBA"][0], dtype=np.float64)
    expected = rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)
    assert np.abs(np.asarray(to_rgb8(Image.open(mode_files["RGBA"]))) - expected).max() <= 1
    transparent = Image.open(mode_files["P+transparency"])
    index = np.asarray(transparent) == 3
    assert index.any() and (np.asarray(to_rgb8(transparent))[index] == 255).all()
    rgb, grey_image = Image.open(mode_files["RGB"]), Image.open(mode_files["L"])
    assert to_rgb8(rgb) is rgb
    np.testing.assert_array_equal(np.asarray(to_rgb8(grey_image)), np.asarray(grey_image.convert("RGB")))
    # I holding 8-bit data (as datasets may store uint8 arrays) stays 8-bit; 32-bit data uses the 32-bit range.
    eight = Image.fromarray(grey.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(to_rgb8(eight))[..., 0], grey)
    wide = np.asarray(to_rgb8(Image.fromarray(np.full((2, 2), 2**31 - 1, dtype=np.int32))))
    assert (wide == 255).all()
    with pytest.raises(ValueError, match="NaN"):
        array_to_rgb8(np.full((2, 2), np.nan, dtype=np.float32))


def test_exif_orientation_is_applied_once_on_every_path(processor, tmp_path) -> None:
    rng = np.random.default_rng(6)
    image = Image.fromarray(rng.integers(0, 256, (SOURCE, SOURCE + 4, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise by the camera
    path = tmp_path / "phone.jpg"
    image.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    upright = to_rgb8(Image.open(path))
    assert upright.size == (SOURCE, SOURCE + 4)
    assert to_rgb8(upright) is upright  # already applied: nothing happens a second time
    pixels = _paths(str(path), processor, tmp_path)
    for name in ("eval transform", "pixel cache", "processor", "pipeline"):
        np.testing.assert_array_equal(pixels[name], pixels["predict"], err_msg=name)


def test_eight_bit_rgb_and_grey_give_what_they_gave_before(processor) -> None:
    """The default run's synthetic set is 8-bit JPEG (RGB / L, no transparency, no EXIF): the new first step gives
    what ``v2.RGB()`` gave, so the same seed gives the same augmented tensors (bit-identical training)."""
    images = [Image.open(io.BytesIO(_encode(render_face(k, 48, [0, k]), k)["bytes"])) for k in range(7)]
    images += [Image.open(io.BytesIO(_encode(render_face(2, 48, [0, 9]).convert("L"), 9)["bytes"]))]
    for image in images:
        assert image.mode in ("RGB", "L") and "transparency" not in image.info and 0x0112 not in image.getexif()
        new = build_train_transform(processor)
        old = v2.Compose([v2.RGB(), *new.transforms[1:]])
        assert new.transforms[0] is to_rgb8
        outputs = []
        for transform in (new, old):
            random.seed(0)  # timm draws from Python's generator, torchvision from torch's
            torch.manual_seed(0)
            outputs.append(transform(image))
        assert torch.equal(*outputs)
        evaluated = build_eval_transform(processor)
        assert torch.equal(evaluated(image), v2.Compose([v2.RGB(), *evaluated.transforms[1:]])(image))
        resized = v2.functional.resize(image.convert("RGB"), [SIZE, SIZE], antialias=True)
        np.testing.assert_array_equal(resize_to_uint8(image, (SIZE, SIZE)), np.asarray(resized))


def test_load_image_names_the_input_on_decoding_errors() -> None:
    with pytest.raises(ImageLoadError, match="<array .*NaN"):
        load_image(np.full((2, 2), np.inf, dtype=np.float32))
    buffer = io.BytesIO()
    MODE_IMAGES["I;16"][0].save(buffer, "PNG")
    assert load_image(buffer.getvalue()).getpixel((0, 0)) == tuple([np.asarray(MODE_IMAGES["L"][0])[0, 0]] * 3)


# --------------------------------------------------------------------------------------------------------- cache


def _source_split(folder, count: int = 6) -> datasets.Dataset:
    """A split of ``count`` BMP files stored as paths (BMP: the same size whatever the pixels)."""
    rng = np.random.default_rng(3)
    paths = []
    for index in range(count):
        path = folder / f"face{index}.bmp"
        Image.fromarray(rng.integers(0, 256, (SOURCE, SOURCE, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a"])})
    return datasets.Dataset.from_dict({"image": paths, "label": [0] * count}, features=features)


def _expected(split: datasets.Dataset) -> np.ndarray:
    return cached_pixels(split, SIZE, cache_dir=None, num_threads=1)


def _only_cache_file(cache_dir):
    files = sorted((cache_dir / "pixels").glob("*.npy"))
    assert len(files) == 1, files
    return files[0]


def _damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped":
        rng = np.random.default_rng(500)
        header = 128
        for offset in rng.choice(np.arange(header, len(data)), size=500, replace=False):
            data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "no checksum":
        path.with_name(path.name + ".sha256").unlink()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty", "no checksum"])
def test_a_damaged_pixel_cache_is_rebuilt_with_a_message(how, tmp_path, capsys) -> None:
    split = _source_split(tmp_path)
    expected = _expected(split)
    cache = tmp_path / "cache"
    first = cached_pixels(split, SIZE, cache_dir=cache, num_threads=1)
    np.testing.assert_array_equal(first, expected)
    path = _only_cache_file(cache)
    del first
    _damage(path, how)
    capsys.readouterr()
    again = cached_pixels(split, SIZE, cache_dir=cache, num_threads=1)
    message = capsys.readouterr().err
    assert f"pixel cache {path}" in message and "rebuilding it" in message, message
    np.testing.assert_array_equal(again, expected)
    assert not list((cache / "pixels").glob(".*"))  # no staging left
    capsys.readouterr()
    cached_pixels(split, SIZE, cache_dir=cache, num_threads=1)  # repaired: served without a word
    assert capsys.readouterr().err == ""


def test_a_source_changed_with_the_same_size_and_time_is_not_served_stale(tmp_path) -> None:
    split = _source_split(tmp_path)
    cache = tmp_path / "cache"
    cached_pixels(split, SIZE, cache_dir=cache, num_threads=1)
    changed = tmp_path / "face0.bmp"
    stat = changed.stat()
    Image.new("RGB", (SOURCE, SOURCE), (255, 0, 0)).save(changed)

    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert changed.stat().st_size == stat.st_size and changed.stat().st_mtime_ns == stat.st_mtime_ns
    again = cached_pixels(split, SIZE, cache_dir=cache, num_threads=1)
    assert (np.asarray(again[0]) == [255, 0, 0]).all()
    np.testing.assert_array_equal(again, _expected(split))


def test_a_full_disk_while_caching_is_one_line_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    split = _source_split(tmp_path)
    cache = tmp_path / "cache"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(WriteError) as error:
        cached_pixels(split, SIZE, cache_dir=cache, num_threads=1)
    assert str(cache / "pixels") in str(error.value) and "FER_MEK_CACHE" in str(error.value)
    assert "\n" not in str(error.value)
    assert not list((cache / "pixels").iterdir())
    monkeypatch.undo()

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.posix_fallocate", no_space)  # the disk fills up between the check and the write
    with pytest.raises(WriteError, match=r"could not write the pixel cache in .*No space left.*FER_MEK_CACHE"):
        cached_pixels(split, SIZE, cache_dir=cache, num_threads=1)
    assert not list((cache / "pixels").iterdir())


def test_a_read_only_cache_folder_is_one_line(tmp_path, monkeypatch) -> None:
    split = _source_split(tmp_path)
    cache = tmp_path / "cache"
    (cache / "pixels").mkdir(parents=True)
    (cache / "pixels").chmod(0o555)
    if os.geteuid() == 0:  # root writes into read-only folders: the refusal is simulated

        def refused(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(cache_module, "open", refused, raising=False)
    try:
        with pytest.raises(WriteError, match=r"could not write the pixel cache in .*\(Permission denied\): make the "
                                             "folder writable"):
            cached_pixels(split, SIZE, cache_dir=cache, num_threads=1)
    finally:
        (cache / "pixels").chmod(0o755)
    assert not list((cache / "pixels").iterdir())


@pytest.mark.parametrize("how", ["truncated", "empty", "flipped"])
def test_a_damaged_synthetic_set_is_generated_again(how, tmp_path, capsys) -> None:
    first = load_synthetic(40, 16, cache_dir=tmp_path)
    expected = [np.asarray(image) for image in first["train"]["image"]]
    arrow = sorted((tmp_path / "synthetic").glob("*/train/*.arrow"))[0]
    del first
    data = arrow.read_bytes()
    if how == "truncated":
        arrow.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        arrow.write_bytes(b"")
    else:
        arrow.write_bytes(data[:-200] + bytes(byte ^ 0xFF for byte in data[-200:]))
    capsys.readouterr()
    again = load_synthetic(40, 16, cache_dir=tmp_path)
    message = capsys.readouterr().err
    assert "synthetic set cache" in message and "generating it again" in message and arrow.name in message
    assert all(np.array_equal(np.asarray(image), reference)
               for image, reference in zip(again["train"]["image"], expected, strict=True))
    assert not [p for p in (tmp_path / "synthetic").iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------------------------------------- prepare


def _rafdb(folder):
    return write_rafdb(folder, RAF_TRAIN, RAF_TEST, size=16, style="flat")


@pytest.fixture(scope="module")
def fer_csv(tmp_path_factory):
    return write_fer2013_csv(tmp_path_factory.mktemp("fer") / "fer2013.csv", FER_USAGE_COUNTS, style="flat")


def _with_line_changed(path, number: int, change) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = change(lines[number - 1])
    path.write_bytes(b"\n".join(lines))


def test_a_label_list_or_csv_that_is_not_utf8_names_the_file_and_line(tmp_path, fer_csv) -> None:
    root = _rafdb(tmp_path / "raf")
    _with_line_changed(root / RAFDB_LABEL_FILE, 5, lambda line: line + " caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"list_patition_label.txt, line 5: the RAF-DB label list is not UTF-8 text "
                                        r"\(byte 0xe9 at column \d+\)\. Save it as UTF-8"):
        load_rafdb(root)
    csv_copy = tmp_path / "fer2013.csv"
    shutil.copyfile(fer_csv, csv_copy)
    _with_line_changed(csv_copy, 7, lambda line: line.replace(b"Training", b"Tr\xe4ining"))
    with pytest.raises(DataError, match=r"fer2013.csv, line 7: the FER-2013 CSV is not UTF-8 text.*iconv"):
        load_fer2013(csv_copy)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path, fer_csv) -> None:
    root = _rafdb(tmp_path / "raf")
    plain = {split: len(part) for split, part in load_rafdb(root).items()}
    label_file = root / RAFDB_LABEL_FILE
    label_file.write_bytes(b"\xef\xbb\xbf" + label_file.read_bytes())
    assert {split: len(part) for split, part in load_rafdb(root).items()} == plain
    csv_copy = tmp_path / "fer2013.csv"
    csv_copy.write_bytes(b"\xef\xbb\xbf" + fer_csv.read_bytes())
    assert {s: len(p) for s, p in load_fer2013(csv_copy).items()} == {s: len(p) for s, p in load_fer2013(fer_csv).items()}


def test_prepare_data_reads_a_label_mapping_file_with_a_bom_and_names_one_that_is_not_utf8(tmp_path, capsys) -> None:
    root = write_image_folder(tmp_path / "f", ["a", "b", "contempt"], [10, 10, 4], [2, 2, 1], size=16, style="flat")
    mapping = tmp_path / "mapping.json"
    mapping.write_bytes(b'\xef\xbb\xbf{"contempt": null}')
    argv = ["--source", "folder", "--root", str(root), "--label-mapping", str(mapping)]
    assert prepare.main([*argv, "--output", str(tmp_path / "o")]) == 0
    mapping.write_bytes('{"m\xe9pris": null}'.encode("latin-1"))
    capsys.readouterr()
    assert prepare.main([*argv, "--output", str(tmp_path / "o2")]) == 2
    error = _error_line(capsys.readouterr().err)
    assert "mapping.json, line 1: the --label-mapping file is not UTF-8" in error


def _error_line(stderr: str) -> str:
    """The one ``error:`` line of a command's stderr (progress bars aside)."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _prepare_synthetic(tmp_path, out, *extra):
    return prepare.main(["--output", str(out), "--num-images", "40", "--image-size", "16", *extra])


def test_prepare_data_on_a_full_disk_leaves_no_half_written_dataset(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FER_MEK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "data" / "synthetic"
    assert _prepare_synthetic(tmp_path, out) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    real_save = datasets.DatasetDict.save_to_disk

    def full_disk(self, path, **kwargs):
        real_save(self, path, **kwargs)  # most of it written ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", full_disk)
    for target, extra in ((tmp_path / "data" / "other", ()), (out, ("--overwrite",))):
        capsys.readouterr()
        assert _prepare_synthetic(tmp_path, target, *extra) == 2
        error = _error_line(capsys.readouterr().err)
        assert "could not write the prepared dataset" in error, error
        assert str(target) in error and "the disk is full" in error
        assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no staging left
    assert not (tmp_path / "data" / "other").exists()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the previous dataset is intact
    datasets.load_from_disk(str(out))


def test_prepare_data_into_a_read_only_folder_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FER_MEK_CACHE", str(tmp_path / "cache"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes into read-only folders: the refusal is simulated

        def refused(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(fer_mek.io.tempfile, "TemporaryFile", refused)
    try:
        assert _prepare_synthetic(tmp_path, locked / "out") == 2
    finally:
        locked.chmod(0o755)
    error = _error_line(capsys.readouterr().err)
    assert f"could not write the folder of --output {locked}" in error, error
    assert "not writable" in error and not (locked / "out").exists()


# --------------------------------------------------------------------------------------------------------- backend

_LOAD_PROCESSOR = """
import sys
import fer_mek
from transformers import AutoImageProcessor, pipeline
processor = AutoImageProcessor.from_pretrained(sys.argv[1])
assert type(processor).__name__ == "MEKImageProcessor" and processor.backend == "pil", type(processor)
classifier = pipeline("image-classification", model=sys.argv[1], trust_remote_code=False)
assert type(classifier.image_processor).__name__ == "MEKImageProcessor"
print("loaded")
"""


def test_the_image_processor_loads_without_a_backend_fallback_message(saved_tiny_model) -> None:
    """transformers asks for the torchvision backend when torchvision is installed; MEK has one processor, PIL-based
    (torchvision's tensor resize differs from PIL's by one grey level in up to 1.5 % of the pixels, so a
    torchvision variant would not give the model its training pixels), registered for both backend names: no
    "Requested torchvision backend is not available" message, which was false."""
    folder, _ = saved_tiny_model
    result = subprocess.run([sys.executable, "-c", _LOAD_PROCESSOR, str(folder)], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and "loaded" in result.stdout, result.stderr
    assert "backend is not available" not in result.stderr and "Falling back" not in result.stderr, result.stderr


def test_a_folder_label_file_that_is_not_utf8_is_named(tmp_path) -> None:
    train = tmp_path / "set" / "train"
    train.mkdir(parents=True)
    rows = ["file_name,label"]
    for index in range(6):
        Image.fromarray(np.full((8, 8, 3), index * 30, np.uint8)).save(train / f"{index}.png")
        rows.append(f"{index}.png,{'happy' if index % 2 else 'fâché'}")
    (train / "metadata.csv").write_bytes("\n".join(rows).encode("latin-1"))
    with pytest.raises(DataError, match=r"metadata.csv, line 2: the label file is not UTF-8 text \(byte 0xe2 .*iconv"):
        load_hub_dataset(str(tmp_path / "set"), label_column="label")

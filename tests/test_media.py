"""Reading people's pictures (fer_mek.media): robust image loading, folder scans, videos that cannot be opened."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_mek.media import ImageLoadError, VideoOpenError, discover_inputs, iter_video_frames, load_image


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file that claims to be ``width x height`` (a decompression bomb's header)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------------ loading


def test_load_image_converts_unusual_layouts_to_rgb8(astronaut: np.ndarray) -> None:
    photo = Image.fromarray(astronaut)
    cmyk = load_image(_encode(photo.convert("CMYK"), "JPEG"))
    assert cmyk.mode == "RGB" and cmyk.size == photo.size

    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # black but fully transparent: shown as the background
    assert load_image(_encode(transparent, "PNG")).getpixel((0, 0)) == (255, 255, 255)

    gray16 = Image.fromarray(np.full((6, 6), 32896, dtype=np.uint16))  # mid-gray in 16 bits, not white after clipping
    loaded16 = load_image(_encode(gray16, "PNG"))
    assert loaded16.mode == "RGB" and loaded16.getpixel((0, 0)) == (128, 128, 128)

    assert load_image(np.full((4, 4), 0.5, dtype=np.float32)).getpixel((0, 0)) == (128, 128, 128)
    assert load_image(np.zeros((4, 4, 4), dtype=np.uint8)).getpixel((0, 0)) == (255, 255, 255)


def test_load_image_applies_exif_orientation() -> None:
    image = Image.new("RGB", (30, 10), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue()).size == (10, 30)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"this is a text file", "not an image"),
        (_png_header_only(20_000, 20_000), "decompression bomb"),
    ],
)
def test_load_image_rejects_bad_bytes_with_clear_messages(payload: bytes, message: str) -> None:
    with pytest.raises(ImageLoadError, match=message):
        load_image(payload)


def test_load_image_rejects_truncated_missing_and_oversized_files(tmp_path: Path, astronaut: np.ndarray) -> None:
    encoded = _encode(Image.fromarray(astronaut), "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(encoded[: len(encoded) // 3])
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(truncated)
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="above the limit"):
        load_image(encoded, max_pixels=1000)
    with pytest.raises(ImageLoadError, match="expected an image array"):
        load_image(np.zeros((2, 3, 5), dtype=np.uint8))


def test_discover_inputs_scans_folders_recursively(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ("b.jpg", "sub/a.PNG", "sub/clip.mp4", "notes.txt", ".hidden/x.jpg", "sub/.y.png"):
        (tmp_path / name).write_bytes(b"x")
    items, problems, skipped = discover_inputs([tmp_path, tmp_path / "notes.txt", tmp_path / "missing"])
    assert [(str(i.relative), i.kind) for i in items] == [
        ("b.jpg", "image"),
        ("sub/a.PNG", "image"),
        ("sub/clip.mp4", "video"),
        ("notes.txt", "image"),  # named explicitly: tried (and reported if it is not an image)
    ]
    assert skipped == 1 and problems == [(str(tmp_path / "missing"), f"{tmp_path / 'missing'}: no such file or folder")]




# ------------------------------------------------------------------------------------------------ video


def test_unreadable_videos_and_cameras_raise_clear_errors(tmp_path: Path) -> None:
    pytest.importorskip("cv2", reason="opencv-python-headless is needed to read videos")
    with pytest.raises(VideoOpenError, match="no such video"):
        list(iter_video_frames(tmp_path / "missing.mp4"))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(VideoOpenError):
        list(iter_video_frames(broken))
    with pytest.raises(VideoOpenError, match="cannot open camera 97"):
        list(iter_video_frames(97))

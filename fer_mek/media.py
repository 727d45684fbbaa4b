"""Reading people's pictures: images decoded robustly, videos and cameras frame by frame, folders scanned for both.

:func:`load_image` turns a path, bytes, a PIL image or an array into 8-bit RGB the way a viewer shows it (EXIF
orientation, CMYK, palettes, 16-bit, transparency) and refuses bad input with a message that says what to do.
:func:`discover_inputs` expands the files and folders given to ``fer-mek predict``; :func:`iter_video_frames` reads a
video file or a webcam with OpenCV. Split out of ``fer_mek.inference``, which re-exports these names.

This module imports numpy and PIL; the decoding rules (:func:`fer_mek.image_processing_mek.to_rgb8`) are imported when
an image is loaded, OpenCV when a video or camera is opened.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from .faces import import_cv2

#: What :func:`load_image` accepts: a path, encoded bytes, a PIL image or an RGB array.
ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray

#: File extensions that folder scans treat as images / videos (an explicitly named file is tried whatever its name).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
    | {".pgm", ".pbm", ".pnm", ".tga", ".qoi", ".jp2", ".avif", ".mpo"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"})
#: Largest number of pixels an image may have before it is refused as a possible decompression bomb (Pillow's default).
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageLoadError(ValueError):
    """An input could not be read as an image; the message says why and what to do."""


class VideoOpenError(ValueError):
    """A video file or camera could not be opened or gave no frames."""


# --------------------------------------------------------------------------------------------------------- images


def load_image(source: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image as 8-bit RGB, the way a viewer shows it.

    EXIF orientation is applied (phone photos); CMYK, palette and grayscale images are converted; 16-bit and float
    images are scaled to 8 bits; transparent images are composited on white: the rules of
    :func:`fer_mek.image_processing_mek.to_rgb8`, which training, the pixel cache, evaluation and the image processor
    share, so that a file gives the model the same pixels on every path.

    Args:
        source: A path, encoded bytes, a PIL image or an array (``uint8`` / ``uint16`` / float in ``[0, 1]``, with
            1, 3 or 4 channels, RGB order).
        max_pixels: Refuse larger images (decompression-bomb guard); ``None`` for no limit of ours (Pillow's own
            limit, ``PIL.Image.MAX_IMAGE_PIXELS``, still applies when decoding files).

    Raises:
        ImageLoadError: The input is missing, empty, not an image, truncated, too large or of an unusable layout.
    """
    name = describe_input(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name)
    image = source if isinstance(source, Image.Image) else _open_image(source, name, max_pixels)
    _check_size(image, name, max_pixels)
    try:
        return _to_rgb8(image, name)
    except ImageLoadError:
        raise
    except Exception as error:
        raise ImageLoadError(
            f"{name}: cannot decode the image ({type(error).__name__}: {error}); the file may be truncated or corrupt "
            "- re-export or re-download it"
        ) from error


def describe_input(source: Any) -> str:
    """A short name for an input in messages and results: the path, or ``<N bytes>``, ``<array shape dtype>``, ..."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    return f"<{type(source).__name__}>"


def _open_image(source: str | os.PathLike | bytes, name: str, max_pixels: int | None) -> Image.Image:
    if isinstance(source, bytes):
        if not source:
            raise ImageLoadError(f"{name}: empty data, not an image")
        stream: Any = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise ImageLoadError(f"{name}: no such file")
        if path.is_dir():
            raise ImageLoadError(f"{name}: is a folder; pass the folder to `fer-mek predict` to scan it for images")
        if path.stat().st_size == 0:
            raise ImageLoadError(f"{name}: empty file (0 bytes), not an image")
        stream = path
    try:
        with warnings.catch_warnings():
            # Our own size check below replaces Pillow's warning between 1x and 2x its limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as error:
        raise ImageLoadError(
            f"{name}: refused as a possible decompression bomb ({error}); downscale the image"
        ) from error
    except Image.UnidentifiedImageError as error:
        raise ImageLoadError(
            f"{name}: not an image, or a format Pillow cannot read; convert it to JPEG or PNG"
        ) from error
    except OSError as error:
        raise ImageLoadError(f"{name}: cannot read the file ({error})") from error
    return image


def _check_size(image: Image.Image, name: str, max_pixels: int | None) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageLoadError(f"{name}: image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            f"{name}: {width}x{height} = {width * height:,} pixels is above the limit of {max_pixels:,} "
            "(decompression-bomb guard); downscale the image or raise the limit (--max-pixels)"
        )


def _to_rgb8(image: Image.Image, name: str) -> Image.Image:
    """:func:`fer_mek.image_processing_mek.to_rgb8` (the decoding every path shares), its errors named."""
    from .image_processing_mek import to_rgb8

    try:
        return to_rgb8(image)
    except ValueError as error:
        raise ImageLoadError(f"{name}: {error}") from error


def _array_to_rgb(array: np.ndarray, name: str) -> Image.Image:
    """:func:`fer_mek.image_processing_mek.array_to_rgb8`, its errors named."""
    from .image_processing_mek import array_to_rgb8

    try:
        return array_to_rgb8(array)
    except ValueError as error:
        raise ImageLoadError(f"{name}: {error}") from error


# --------------------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InputItem:
    """A file found on the command line or in a folder.

    Attributes:
        path: The file.
        kind: ``"image"`` or ``"video"``.
        relative: Path relative to the folder it was found in (its own name for files named directly).
    """

    path: Path
    kind: Literal["image", "video"]
    relative: Path


def discover_inputs(paths: Iterable[str | os.PathLike]) -> tuple[list[InputItem], list[tuple[str, str]], int]:
    """Expand files and folders (recursively, sorted, hidden entries skipped) into images and videos.

    Args:
        paths: Files or folders. A named file is always tried; in folders only image/video extensions count.

    Returns:
        ``(items, problems, skipped)``: the inputs, ``(path, message)`` for paths that do not exist or folders
        without images, and how many files in folders were skipped for not having an image or video extension.
    """
    items: list[InputItem] = []
    problems: list[tuple[str, str]] = []
    skipped = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = 0
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = file.relative_to(path)
                if any(part.startswith(".") for part in relative.parts):
                    continue
                kind = _kind_from_suffix(file)
                if kind is None:
                    skipped += 1
                    continue
                items.append(InputItem(file, kind, relative))
                found += 1
            if not found:
                examples = ", ".join(sorted(IMAGE_EXTENSIONS)[:6])
                problems.append((str(path), f"{path}: folder holds no images or videos ({examples}, ...)"))
        elif path.exists():
            items.append(InputItem(path, _kind_from_suffix(path) or "image", Path(path.name)))
        else:
            problems.append((str(path), f"{path}: no such file or folder"))
    return items, problems, skipped


def _kind_from_suffix(path: Path) -> Literal["image", "video"] | None:
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return None


# --------------------------------------------------------------------------------------------------------- videos


def iter_video_frames(
    source: str | os.PathLike | int, frame_step: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """``(frame index, time in seconds, RGB frame)`` of a video file or camera.

    Raises:
        VideoOpenError: The source cannot be opened or gives no frame.
    """
    cv2 = import_cv2()
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    is_camera = isinstance(source, int)
    if not is_camera and not Path(source).is_file():
        raise VideoOpenError(f"{os.fspath(source)}: no such video file")
    with _quiet_opencv(cv2):  # our VideoOpenError explains a failure; OpenCV's backend warnings would only add noise
        capture = cv2.VideoCapture(source if is_camera else os.fspath(source))
    try:
        if not capture.isOpened():
            raise VideoOpenError(
                f"cannot open camera {source}: check that it is connected, not used by another program, and that "
                "this user may access it (try another index)"
                if is_camera
                else f"{os.fspath(source)}: OpenCV cannot open this video (unknown container or codec?)"
            )
        fps = capture.get(cv2.CAP_PROP_FPS) if not is_camera else 0.0
        start = time.monotonic()
        index = produced = 0
        while max_frames is None or produced < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if index % frame_step == 0:
                if is_camera:
                    time_s = time.monotonic() - start
                else:
                    time_s = index / fps if fps and math.isfinite(fps) and fps > 0 else None
                yield index, time_s, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                produced += 1
            index += 1
        if index == 0:
            raise VideoOpenError(
                f"camera {source} opened but gives no frames" if is_camera else f"{os.fspath(source)}: no frames"
            )
    finally:
        capture.release()


def video_fps(source: str | os.PathLike) -> float | None:
    """Frames per second a video file declares, or ``None`` when it cannot be read or declares none."""
    cv2 = import_cv2()
    with _quiet_opencv(cv2):
        capture = cv2.VideoCapture(os.fspath(source))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return float(fps) if fps and math.isfinite(fps) and fps > 0 else None


@contextlib.contextmanager
def _quiet_opencv(cv2: Any) -> Iterator[None]:
    """Silence OpenCV's own log messages while opening a capture (restored afterwards)."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None or not hasattr(log, "getLogLevel"):
        yield
        return
    previous = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(previous)


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ImageInput",
    "ImageLoadError",
    "InputItem",
    "VideoOpenError",
    "describe_input",
    "discover_inputs",
    "iter_video_frames",
    "load_image",
    "video_fps",
]

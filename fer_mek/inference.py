"""Facial-expression prediction on people's own pictures: image loading, face detection, batched classification.

:class:`FERPredictor` runs the whole pipeline: load (robustly) -> detect faces -> square crop with a margin (eyes
levelled) -> optional CLAHE -> the model's own image processor (the same code path as evaluation) -> one model or an
ensemble, optionally with flip test-time augmentation -> probabilities in the model's class names
(``config.id2label``) and the class attention map of the predicted class.

Example:
    >>> from fer_mek.inference import FERPredictor
    >>> predictor = FERPredictor("path/to/model")           # a save_pretrained folder or a Hub id
    >>> result = predictor.predict("photo.jpg")
    >>> [(face.box, face.top_k(3)) for face in result.faces]
    >>> analysis = predictor.analyze("photo.jpg")            # + annotated image, attention overlays, bar charts
    >>> analysis.annotated.save("annotated.png")

This module imports torch and transformers; OpenCV is imported when a detector, a video or a drawing needs it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from .faces import (
    DEFAULT_MARGIN,
    FaceBox,
    FaceDetector,
    FaceMode,
    apply_clahe,
    crop_face,
    get_face_detector,
    select_faces,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray
ModelInput = str | os.PathLike | Any  # a folder, a Hub id or a loaded model
TTA = Literal["none", "flip"]
Status = Literal["ok", "no_face", "error"]

#: File extensions that folder scans treat as images / videos (an explicitly named file is tried whatever its name).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
    | {".pgm", ".pbm", ".pnm", ".tga", ".qoi", ".jp2", ".avif", ".mpo"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"})
#: Largest number of pixels an image may have before it is refused as a possible decompression bomb (Pillow's default).
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: Face detection runs on a copy whose longer side is at most this (boxes are scaled back, crops use full resolution).
DEFAULT_DETECTION_SIZE = 1280
NO_FACE_MESSAGE = "no face found"


class ImageLoadError(ValueError):
    """An input could not be read as an image; the message says why and what to do."""


class ModelLoadError(ValueError):
    """A model could not be loaded, or models of an ensemble do not fit together."""


class VideoOpenError(ValueError):
    """A video file or camera could not be opened or gave no frames."""


# --------------------------------------------------------------------------------------------------------- loading


def load_image(source: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image as 8-bit RGB, the way a viewer shows it.

    EXIF orientation is applied (phone photos); CMYK, palette and grayscale images are converted; 16-bit and float
    images are scaled to 8 bits; transparent images are composited on white.

    Args:
        source: A path, encoded bytes, a PIL image or an array (``uint8`` / ``uint16`` / float in ``[0, 1]``, with
            1, 3 or 4 channels, RGB order).
        max_pixels: Refuse larger images (decompression-bomb guard); ``None`` for no limit of ours (Pillow's own
            limit, ``PIL.Image.MAX_IMAGE_PIXELS``, still applies when decoding files).

    Raises:
        ImageLoadError: The input is missing, empty, not an image, truncated, too large or of an unusable layout.
    """
    name = _describe(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name)
    image = source if isinstance(source, Image.Image) else _open_image(source, name, max_pixels)
    _check_size(image, name, max_pixels)
    try:
        image = ImageOps.exif_transpose(image) or image
        return _to_rgb8(image, name)
    except ImageLoadError:
        raise
    except Exception as error:
        raise ImageLoadError(
            f"{name}: cannot decode the image ({type(error).__name__}: {error}); the file may be truncated or corrupt "
            "- re-export or re-download it"
        ) from error


def _describe(source: Any) -> str:
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
    """Decode and convert to 8-bit RGB (composite transparency on white, scale high bit depths)."""
    image.load()  # decodes now: truncated / corrupt data raise here
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16/32-bit grayscale: scale, do not clip
        return _array_to_rgb(np.asarray(image), name)
    try:
        if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError as error:
        raise ImageLoadError(
            f"{name}: unsupported pixel mode {mode!r} ({error}); convert the image to 8-bit RGB"
        ) from error


def _array_to_rgb(array: np.ndarray, name: str) -> Image.Image:
    """An 8-bit RGB image from a ``[H, W]``, ``[H, W, 1|3|4]`` array (RGB order) of integers or floats."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageLoadError(f"{name}: expected an image array [H, W] or [H, W, 3|4], got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageLoadError(f"{name}: image has no pixels")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        high = 65535.0 if array.max() > 255 else 255.0  # 32-bit integer storage of 16- or 8-bit data
        array = (np.clip(array, 0, high).astype(np.float64) * (255.0 / high)).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == bool:
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{name}: image contains NaN or infinite values")
        high = 1.0 if array.max() <= 1.0 else (255.0 if array.max() <= 255.0 else float(array.max()))
        array = (np.clip(array, 0.0, high) * (255.0 / high)).round().astype(np.uint8)
    else:
        raise ImageLoadError(f"{name}: unsupported array dtype {array.dtype}; use uint8 RGB")
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), mode="L").convert("RGB")
    if array.shape[2] == 4:
        return _to_rgb8(Image.fromarray(np.ascontiguousarray(array), mode="RGBA"), name)
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


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


# --------------------------------------------------------------------------------------------------------- models


def load_model(
    model: ModelInput,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    processor: Any | None = None,
) -> tuple[PreTrainedModel, Any]:
    """A classification model in eval mode on ``device`` and its image processor.

    Args:
        model: A ``save_pretrained`` folder, a Hub id, or a loaded model.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
        trust_remote_code: Allow the model's own code (not needed for MEK models: ``fer_mek`` registers them).
        processor: The image processor; by default the one saved with the model (``preprocessor_config.json``).

    Raises:
        ModelLoadError: The model or its processor cannot be loaded.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from .image_processing_mek import MEKImageProcessor

    device = resolve_device(device)
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        path = Path(name).expanduser()
        if path.is_dir() and not (path / "config.json").is_file():
            raise ModelLoadError(f"{name}: folder has no config.json; pass a folder written by save_pretrained")
        if not path.exists() and (path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1):
            raise ModelLoadError(f"{name}: no such model folder (and not a Hub id of the form owner/name)")
        name = os.fspath(path) if path.exists() else name
        try:
            loaded = AutoModelForImageClassification.from_pretrained(name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(
                f"cannot load model {name!r}: {error}\nPass a folder written by save_pretrained (with config.json) or "
                "a Hub id (online, or already in the cache with HF_HUB_OFFLINE=1)."
            ) from error
        if processor is None:
            # MEK processors are registered for the PIL backend only: ask for it rather than fall back with a warning.
            backend = {"backend": "pil"} if getattr(loaded.config, "model_type", None) == "fer-mek" else {}
            try:
                processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=trust_remote_code, **backend)
            except (OSError, ValueError, KeyError) as error:
                if getattr(loaded.config, "model_type", None) != "fer-mek":
                    raise ModelLoadError(
                        f"model {name!r} has no usable image processor ({error}); save one beside it"
                    ) from error
                warnings.warn(
                    f"{name}: no preprocessor_config.json ({error}); using the preprocessing its config describes",
                    stacklevel=2,
                )
                processor = MEKImageProcessor.from_model_config(loaded.config)
    else:
        loaded = model
        if processor is None:
            if getattr(loaded.config, "model_type", None) != "fer-mek":
                raise ModelLoadError(f"pass the image processor of {type(loaded).__name__} (processor=...)")
            processor = MEKImageProcessor.from_model_config(loaded.config)
    return loaded.to(device).eval(), processor


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` or ``"auto"``: CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r} ({error}); use cpu, cuda, cuda:1, mps or auto") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use cpu or auto")
    return resolved


def model_labels(model: Any) -> tuple[str, ...]:
    """The class names of a model in index order, from ``config.id2label``."""
    config = model.config
    id2label = {int(i): str(name) for i, name in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(config.num_labels)):
        raise ModelLoadError(f"{type(model).__name__}: config.id2label {config.id2label} does not name every class")
    return tuple(id2label[i] for i in range(config.num_labels))


# --------------------------------------------------------------------------------------------------------- results


@dataclass
class FacePrediction:
    """One classified face.

    Attributes:
        box: Where the face is in the image (the whole image with ``detect=False``).
        probabilities: Class probabilities ``[K]`` in the model's class order (averaged over TTA and ensemble).
        labels: The model's class names, ``labels[i]`` for ``probabilities[i]``.
        crop: The face crop the model saw, before its image processor (after CLAHE when enabled).
        transform: ``2x3`` affine matrix from image pixels to crop pixels.
        attention: Class attention map of the predicted class at the model's feature resolution, scaled to
            ``[0, 1]``; ``None`` for models without attention maps.
    """

    box: FaceBox
    probabilities: np.ndarray
    labels: tuple[str, ...]
    crop: Image.Image
    transform: np.ndarray
    attention: np.ndarray | None = None

    @property
    def index(self) -> int:
        """Index of the predicted class."""
        return int(np.argmax(self.probabilities))

    @property
    def label(self) -> str:
        """Name of the predicted class."""
        return self.labels[self.index]

    @property
    def score(self) -> float:
        """Probability of the predicted class."""
        return float(self.probabilities[self.index])

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most probable classes as ``(label, probability)``, most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")[: max(1, min(k, len(self.labels)))]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]

    def attention_overlay(self, alpha: float = 0.45) -> Image.Image:
        """The face crop with the predicted class's attention map overlaid (the crop alone without a map)."""
        from .visualize import overlay_attention

        return overlay_attention(self.crop, self.attention, alpha=alpha)

    def probability_chart(self, **kwargs: Any) -> Image.Image:
        """A bar chart of the class probabilities (see :func:`fer_mek.visualize.probability_chart`)."""
        from .visualize import probability_chart

        return probability_chart(self.probabilities, self.labels, **kwargs)

    def to_dict(self, top_k: int = 3) -> dict[str, Any]:
        """JSON-ready: box, detector score, top-k and all probabilities by class name."""
        return {
            "box": {k: v for k, v in self.box.to_dict().items() if k != "score"},
            "face_score": round(self.box.score, 6),
            "label": self.label,
            "probability": round(self.score, 6),
            "top_k": [{"label": name, "probability": round(p, 6)} for name, p in self.top_k(top_k)],
            "probabilities": {
                name: round(float(p), 6) for name, p in zip(self.labels, self.probabilities, strict=True)
            },
        }


@dataclass
class ImageResult:
    """The prediction for one image or video frame.

    Attributes:
        source: File name (``video.mp4#12`` for frame 12), ``camera:N#i`` or a description of an in-memory image.
        faces: The classified faces (empty: no face found, or an error).
        image: The decoded RGB image (``None`` after an error).
        error: Why the input could not be processed, or ``None``.
        frame: Frame index for videos.
        time_s: Frame time in seconds for videos (since start for cameras).
    """

    source: str
    faces: list[FacePrediction] = field(default_factory=list)
    image: Image.Image | None = None
    error: str | None = None
    frame: int | None = None
    time_s: float | None = None

    @property
    def status(self) -> Status:
        """``"ok"``, ``"no_face"`` (a clear result, not an error) or ``"error"``."""
        if self.error is not None:
            return "error"
        return "ok" if self.faces else "no_face"

    def to_dict(self, top_k: int = 3) -> dict[str, Any]:
        """JSON-ready, one object per image/frame (one JSON line)."""
        record: dict[str, Any] = {"source": self.source}
        if self.frame is not None:
            record["frame"] = self.frame
            record["time_s"] = None if self.time_s is None else round(self.time_s, 3)
        record["status"] = self.status
        if self.status == "no_face":
            record["message"] = NO_FACE_MESSAGE
        if self.error is not None:
            record["error"] = self.error
        record["faces"] = [face.to_dict(top_k) for face in self.faces]
        return record

    def to_rows(self, top_k: int = 3) -> list[dict[str, Any]]:
        """Flat rows for CSV: one per face, or a single row for no face / error (see :data:`csv_columns`)."""
        base = {
            "source": self.source,
            "frame": "" if self.frame is None else self.frame,
            "time_s": "" if self.time_s is None else round(self.time_s, 3),
            "status": self.status,
        }
        if not self.faces:
            message = self.error if self.error is not None else NO_FACE_MESSAGE
            return [{**base, "message": message}]
        rows = []
        for number, face in enumerate(self.faces, start=1):
            row = {**base, "face": number, **{k: v for k, v in face.box.to_dict().items() if k != "score"}}
            row["face_score"] = round(face.box.score, 6)
            for rank, (name, p) in enumerate(face.top_k(top_k), start=1):
                row[f"label_{rank}"] = name
                row[f"probability_{rank}"] = round(p, 6)
            rows.append(row)
        return rows

    def annotate(self, **kwargs: Any) -> Image.Image:
        """The image with boxes, labels, attention overlays and a probability panel per face."""
        from .visualize import annotate_image

        if self.image is None:
            raise ValueError(f"{self.source}: nothing to draw ({self.error})")
        return annotate_image(self.image, self.faces, **kwargs)


def csv_columns(top_k: int = 3) -> list[str]:
    """The CSV columns of :meth:`ImageResult.to_rows`."""
    columns = ["source", "frame", "time_s", "status", "face", "x", "y", "width", "height", "face_score"]
    for rank in range(1, top_k + 1):
        columns += [f"label_{rank}", f"probability_{rank}"]
    return [*columns, "message"]


class ResultWriter:
    """Writes results as CSV (one row per face) or JSON lines (one object per image/frame), flushing as it goes.

    Args:
        path: Output file; the format comes from the suffix (``.csv``, ``.jsonl`` / ``.ndjson`` / ``.json``).
        top_k: Classes per face.
    """

    def __init__(self, path: str | os.PathLike, top_k: int = 3) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix == ".csv":
            self.format = "csv"
        elif suffix in (".jsonl", ".ndjson", ".json"):
            self.format = "jsonl"
        else:
            raise ValueError(f"cannot tell the output format of {self.path}: name it *.csv or *.jsonl")
        self.top_k = top_k
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._csv = None
        if self.format == "csv":
            self._csv = csv.DictWriter(self._file, fieldnames=csv_columns(top_k), extrasaction="raise")
            self._csv.writeheader()

    def write(self, result: ImageResult) -> None:
        """Append one image's (or frame's) results."""
        if self._csv is not None:
            self._csv.writerows(result.to_rows(self.top_k))
        else:
            self._file.write(json.dumps(result.to_dict(self.top_k), ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


@dataclass
class Analysis:
    """Everything to show for one image (for notebooks and the web demo).

    Attributes:
        result: The prediction.
        annotated: The image with boxes, labels, attention overlays and probability panels.
        overlays: Per face: the crop with the predicted class's attention map.
        charts: Per face: a bar chart of the class probabilities.
    """

    result: ImageResult
    annotated: Image.Image
    overlays: list[Image.Image]
    charts: list[Image.Image]

    @property
    def faces(self) -> list[FacePrediction]:
        """The classified faces."""
        return self.result.faces


# --------------------------------------------------------------------------------------------------------- predictor


class FERPredictor:
    """Face detection + facial-expression classification with one MEK model or an ensemble.

    Args:
        model: A ``save_pretrained`` folder, a Hub id or a loaded model; a list of them for an ensemble (their
            probabilities are averaged; they must share the same class names in the same order).
        device: ``"cpu"``, ``"cuda"``, ...; by default CUDA when available.
        detector: ``"mtcnn"``, ``None`` to classify whole images (already-cropped faces), or a
            :class:`~fer_mek.faces.FaceDetector`.
        face_mode: ``"all"`` faces (left to right) or only the ``"largest"``.
        margin: Crop margin, a fraction of the face box's longer side on every side.
        align: Level the eyes using the detector's landmarks.
        clahe: Apply CLAHE to face crops (for models trained on CLAHE crops, or dim webcams).
        tta: ``"flip"`` averages the prediction of the crop and its mirror image.
        batch_size: Faces per forward pass.
        max_pixels: Refuse larger images (decompression-bomb guard).
        detection_size: Detect faces on a copy whose longer side is at most this many pixels (``None``: full size).
        min_face_size: Smallest face side (pixels, at detection size) the detector looks for.
        min_confidence: Detector confidence below which faces are dropped.
        processors: Image processors, one per model, instead of those saved with the models.
        trust_remote_code: Passed to ``from_pretrained``.
    """

    def __init__(
        self,
        model: ModelInput | Sequence[ModelInput],
        *,
        device: str | torch.device | None = None,
        detector: str | FaceDetector | None = "mtcnn",
        face_mode: FaceMode = "all",
        margin: float = DEFAULT_MARGIN,
        align: bool = True,
        clahe: bool = False,
        tta: TTA | None = None,
        batch_size: int = 16,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        detection_size: int | None = DEFAULT_DETECTION_SIZE,
        min_face_size: int = 20,
        min_confidence: float = 0.9,
        processors: Sequence[Any] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        specs = list(model) if isinstance(model, (list, tuple)) else [model]
        if not specs:
            raise ModelLoadError("no model given")
        if processors is not None and len(processors) != len(specs):
            raise ValueError(f"got {len(processors)} processors for {len(specs)} models")
        if tta not in (None, "none", "flip"):
            raise ValueError(f"unknown test-time augmentation {tta!r}; use 'flip' or None")
        if face_mode not in ("all", "largest"):
            raise ValueError(f"unknown face mode {face_mode!r}; use 'all' or 'largest'")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.models: list[Any] = []
        self.processors: list[Any] = []
        for i, spec in enumerate(specs):
            loaded, processor = load_model(
                spec, self.device, trust_remote_code, None if processors is None else processors[i]
            )
            self.models.append(loaded)
            self.processors.append(processor)
        self.labels = model_labels(self.models[0])
        for spec, loaded in zip(specs[1:], self.models[1:], strict=True):
            labels = model_labels(loaded)
            if labels != self.labels:
                raise ModelLoadError(
                    f"ensemble members disagree on classes: {_name(specs[0])} has {list(self.labels)}, {_name(spec)} "
                    f"has {list(labels)}; ensemble only models trained on the same label set in the same order"
                )
        if detector == "mtcnn":
            self.detector = get_face_detector("mtcnn", min_face_size=min_face_size, min_confidence=min_confidence)
        else:
            self.detector = get_face_detector(detector)
        self.face_mode: FaceMode = face_mode
        self.margin = float(margin)
        self.align = bool(align)
        self.clahe = bool(clahe)
        self.tta = None if tta in (None, "none") else tta
        self.batch_size = int(batch_size)
        self.max_pixels = max_pixels
        self.detection_size = detection_size

    # ---- single steps

    def find_faces(self, image: Image.Image) -> list[tuple[FaceBox, Image.Image, np.ndarray]]:
        """Detect and crop the faces of an RGB image: ``(box, crop, image-to-crop matrix)`` per face.

        Without a detector the whole image is the one "face".
        """
        if self.detector is None:
            box = FaceBox(0, 0, image.width, image.height, 1.0, None)
            crop = image
            matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            if self.clahe:
                crop = apply_clahe(crop)
            return [(box, crop, matrix)]
        array = np.asarray(image)
        scale = 1.0
        if self.detection_size is not None and max(image.size) > self.detection_size:
            scale = self.detection_size / max(image.size)
            small = image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR
            )
            boxes = [_scale_box(box, 1.0 / scale, image.size) for box in self.detector.detect(np.asarray(small))]
        else:
            boxes = self.detector.detect(array)
        faces = []
        for box in select_faces(boxes, self.face_mode):
            crop, matrix = crop_face(array, box, self.margin, self.align)
            if self.clahe:
                crop = apply_clahe(crop)
            faces.append((box, crop, matrix))
        return faces

    @torch.inference_mode()
    def classify(self, crops: Sequence[Image.Image]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Class probabilities and the predicted class's attention map for face crops.

        Each model gets its own image processor; probabilities are averaged over TTA and the ensemble. Maps are
        scaled to ``[0, 1]`` per model before averaging.

        Returns:
            ``(probabilities [N, K], maps)``: ``maps[i]`` is ``[h, w]`` or ``None`` (model without attention maps).
        """
        if not crops:
            return np.zeros((0, len(self.labels)), dtype=np.float32), []
        probabilities: list[np.ndarray] = []
        maps: list[np.ndarray | None] = []
        for start in range(0, len(crops), self.batch_size):
            chunk = list(crops[start : start + self.batch_size])
            member_probs, member_maps = [], []
            for model, processor in zip(self.models, self.processors, strict=True):
                pixel_values = processor(images=chunk, return_tensors="pt")["pixel_values"]
                pixel_values = pixel_values.to(self.device, dtype=next(model.parameters()).dtype)
                probs, class_maps = self._forward(model, pixel_values)
                member_probs.append(probs)
                member_maps.append(class_maps)
            mean_probs = torch.stack(member_probs).mean(0)
            predicted = mean_probs.argmax(-1)
            maps.extend(_ensemble_maps(member_maps, predicted))
            probabilities.append(mean_probs.numpy())
        return np.concatenate(probabilities).astype(np.float32), maps

    def _forward(self, model: Any, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Probabilities ``[B, K]`` and class maps ``[B, K, h, w]`` (or ``None``); with flip TTA, the crops and their
        mirror images go through the model in one batch, the mirrored maps are flipped back before averaging."""
        count = len(pixel_values)
        if self.tta == "flip":
            pixel_values = torch.cat([pixel_values, pixel_values.flip(-1)])
        output = model(pixel_values=pixel_values)
        probs = output.logits.float().softmax(-1)
        class_maps = getattr(output, "attention_maps", None)
        class_maps = None if class_maps is None else class_maps.float()
        if self.tta == "flip":
            probs = (probs[:count] + probs[count:]) / 2
            if class_maps is not None:
                class_maps = (class_maps[:count] + class_maps[count:].flip(-1)) / 2
        return probs.cpu(), None if class_maps is None else class_maps.cpu()

    # ---- whole images

    def predict(self, image: ImageInput, source: str | None = None) -> ImageResult:
        """Faces and expressions in one image.

        Raises:
            ImageLoadError: The image cannot be read (batches record such errors instead, see :meth:`predict_batch`).
        """
        result = self.predict_batch([image], [source] if source is not None else None)[0]
        if result.error is not None:
            raise ImageLoadError(result.error)
        return result

    __call__ = predict

    def predict_batch(
        self,
        images: Sequence[ImageInput],
        sources: Sequence[str] | None = None,
        frames: Sequence[tuple[int, float | None]] | None = None,
    ) -> list[ImageResult]:
        """Faces and expressions in several images, all faces classified in batches.

        An input that cannot be read or processed gives a result with ``error`` set; the others are still
        processed. An image without a face gives ``status == "no_face"``.

        Args:
            images: Paths, bytes, PIL images or RGB arrays.
            sources: Names for the results (default: the paths, or a description).
            frames: ``(frame index, time in seconds)`` per image, for video frames.
        """
        results: list[ImageResult] = []
        pending: list[tuple[int, FaceBox, Image.Image, np.ndarray]] = []
        for i, item in enumerate(images):
            source = sources[i] if sources is not None else _describe(item)
            frame, time_s = frames[i] if frames is not None else (None, None)
            result = ImageResult(source=source, frame=frame, time_s=time_s)
            results.append(result)
            try:
                result.image = load_image(item, self.max_pixels)
            except ImageLoadError as error:
                result.error = str(error)
                continue
            try:
                found = self.find_faces(result.image)
            except Exception as error:  # reported in the result, the batch goes on
                result.error = f"{source}: face detection failed ({type(error).__name__}: {error})"
                continue
            pending.extend((i, box, crop, matrix) for box, crop, matrix in found)
        probabilities, maps = self.classify([crop for _, _, crop, _ in pending])
        for (i, box, crop, matrix), probs, attention in zip(pending, probabilities, maps, strict=True):
            results[i].faces.append(FacePrediction(box, probs, self.labels, crop, matrix, attention))
        return results

    def predict_files(
        self, paths: Iterable[str | os.PathLike], progress: bool = False, images_per_batch: int | None = None
    ) -> Iterator[ImageResult]:
        """Results for image files, in order, reading ``images_per_batch`` files at a time (default: batch size).

        Args:
            paths: Image files.
            progress: Show a tqdm progress bar (on a terminal).
            images_per_batch: Images read and detected before their faces are classified together.
        """
        paths = [Path(p) for p in paths]
        per_batch = images_per_batch or self.batch_size
        from tqdm.auto import tqdm

        with tqdm(total=len(paths), unit="image", disable=None if progress else True) as bar:
            for start in range(0, len(paths), per_batch):
                chunk = paths[start : start + per_batch]
                yield from self.predict_batch(chunk, [str(p) for p in chunk])
                bar.update(len(chunk))

    def predict_video(
        self,
        source: str | os.PathLike | int,
        frame_step: int = 1,
        max_frames: int | None = None,
        frames_per_batch: int | None = None,
    ) -> Iterator[ImageResult]:
        """Results frame by frame for a video file or a camera index.

        Args:
            source: A video file, or a camera index (``0`` is the default webcam).
            frame_step: Classify every ``frame_step``-th frame.
            max_frames: Stop after this many classified frames.
            frames_per_batch: Frames classified together (default: batch size for files, 1 for cameras).

        Raises:
            VideoOpenError: The video or camera cannot be opened or gives no frame.
        """
        per_batch = frames_per_batch or (1 if isinstance(source, int) else self.batch_size)
        name = f"camera:{source}" if isinstance(source, int) else os.fspath(source)
        batch: list[tuple[int, float | None, np.ndarray]] = []
        for index, time_s, frame in iter_video_frames(source, frame_step, max_frames):
            batch.append((index, time_s, frame))
            if len(batch) >= per_batch:
                yield from self._predict_frames(name, batch)
                batch = []
        if batch:
            yield from self._predict_frames(name, batch)

    def _predict_frames(self, name: str, batch: list[tuple[int, float | None, np.ndarray]]) -> list[ImageResult]:
        return self.predict_batch(
            [frame for _, _, frame in batch],
            [f"{name}#{index}" for index, _, _ in batch],
            [(index, time_s) for index, time_s, _ in batch],
        )

    def analyze(self, image: ImageInput, **annotate_kwargs: Any) -> Analysis:
        """The prediction plus the pictures: annotated image, attention overlays and bar charts per face.

        Raises:
            ImageLoadError: The image cannot be read.
        """
        result = self.predict(image)
        return Analysis(
            result=result,
            annotated=result.annotate(**annotate_kwargs),
            overlays=[face.attention_overlay() for face in result.faces],
            charts=[face.probability_chart(title=f"face {i}") for i, face in enumerate(result.faces, start=1)],
        )


def iter_video_frames(
    source: str | os.PathLike | int, frame_step: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """``(frame index, time in seconds, RGB frame)`` of a video file or camera.

    Raises:
        VideoOpenError: The source cannot be opened or gives no frame.
    """
    from .faces import _import_cv2

    cv2 = _import_cv2()
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
    from .faces import _import_cv2

    cv2 = _import_cv2()
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


def predict(
    images: ImageInput | Sequence[ImageInput], model: ModelInput | Sequence[ModelInput], **kwargs: Any
) -> list[ImageResult]:
    """One-off prediction: builds a :class:`FERPredictor` (keep one around for many calls) and runs it.

    Args:
        images: An image or a list of them.
        model: Model folder / Hub id / loaded model, or a list for an ensemble.
        **kwargs: :class:`FERPredictor` options.
    """
    batch = list(images) if isinstance(images, (list, tuple)) else [images]
    return FERPredictor(model, **kwargs).predict_batch(batch)


def analyze_image(image: ImageInput, model: ModelInput | Sequence[ModelInput], **kwargs: Any) -> Analysis:
    """One-off :meth:`FERPredictor.analyze` for notebooks: faces, probabilities, overlays, annotated image."""
    return FERPredictor(model, **kwargs).analyze(image)


def _name(spec: Any) -> str:
    return os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else type(spec).__name__


def _scale_box(box: FaceBox, factor: float, size: tuple[int, int]) -> FaceBox:
    width, height = size
    x, y = round(box.x * factor), round(box.y * factor)
    right = min(width, round((box.x + box.width) * factor))
    bottom = min(height, round((box.y + box.height) * factor))
    landmarks = (
        None if box.landmarks is None else {k: (px * factor, py * factor) for k, (px, py) in box.landmarks.items()}
    )
    return FaceBox(x, y, max(1, right - x), max(1, bottom - y), box.score, landmarks)


def _ensemble_maps(member_maps: list[torch.Tensor | None], predicted: torch.Tensor) -> list[np.ndarray | None]:
    """Per image: the predicted class's map of every member, scaled to [0, 1], resized to the finest grid, averaged."""
    available = [m for m in member_maps if m is not None]
    if not available:
        return [None] * len(predicted)
    height = max(m.shape[-2] for m in available)
    width = max(m.shape[-1] for m in available)
    index = torch.arange(len(predicted))
    selected = []
    for maps in available:
        chosen = maps[index, predicted].unsqueeze(1)  # [N, 1, h, w]
        if chosen.shape[-2:] != (height, width):
            chosen = torch.nn.functional.interpolate(chosen, size=(height, width), mode="bilinear", align_corners=False)
        selected.append(_unit_scale(chosen[:, 0]))
    mean = torch.stack(selected).mean(0)
    return [m.numpy().astype(np.float32) for m in _unit_scale(mean)]


def _unit_scale(maps: torch.Tensor) -> torch.Tensor:
    """Scale each ``[h, w]`` map of ``[N, h, w]`` to ``[0, 1]`` (a flat map becomes zeros)."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "NO_FACE_MESSAGE",
    "VIDEO_EXTENSIONS",
    "Analysis",
    "FERPredictor",
    "FacePrediction",
    "ImageLoadError",
    "ImageResult",
    "InputItem",
    "ModelLoadError",
    "ResultWriter",
    "VideoOpenError",
    "analyze_image",
    "csv_columns",
    "discover_inputs",
    "iter_video_frames",
    "load_image",
    "load_model",
    "model_labels",
    "predict",
    "video_fps",
]

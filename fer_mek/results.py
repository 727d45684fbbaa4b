"""Prediction records and their files: faces with class probabilities, per-image results, CSV and JSON lines.

Records are data: :class:`FacePrediction` (one face), :class:`ImageResult` (one image or video frame) and
:class:`Analysis` (a result with its pictures). Drawing them is :mod:`fer_mek.annotate`'s job; writing them is
:class:`ResultWriter`'s (one CSV row per face, or one JSON object per image). Split out of ``fer_mek.inference``,
which re-exports these names.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from PIL import Image

from .faces import FaceBox

#: ``"ok"``: faces found and classified; ``"no_face"``: a clear result, not an error; ``"error"``: unreadable input.
Status = Literal["ok", "no_face", "error"]
#: The message of a result without faces (CSV ``message`` column, JSON ``message`` field).
NO_FACE_MESSAGE = "no face found"


@dataclass
class FacePrediction:
    """One classified face.

    Attributes:
        box: Where the face is in the image (the whole image without a detector).
        probabilities: Class probabilities ``[K]`` in the model's class order (averaged over TTA and ensemble).
        labels: The model's class names, ``labels[i]`` for ``probabilities[i]``.
        crop: The face crop the model saw, before its image processor (after CLAHE when enabled).
        transform: ``2x3`` affine matrix from image pixels to crop pixels.
        attention: Class attention map of the predicted class at the model's feature resolution, scaled to
            ``[0, 1]`` (with TTA: that of the whole crop averaged with its mirror's, see :func:`fer_mek.tta.tta_forward`;
            with an ensemble: averaged over the members); ``None`` for models without attention maps.
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
    """Everything to show for one image (for notebooks and the web demo), drawn by
    :func:`fer_mek.annotate.analyze_result` (:meth:`fer_mek.inference.FERPredictor.analyze`).

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


__all__ = [
    "NO_FACE_MESSAGE",
    "Analysis",
    "FacePrediction",
    "ImageResult",
    "ResultWriter",
    "Status",
    "csv_columns",
]

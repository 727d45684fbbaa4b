"""Prediction records (fer_mek.results) are data: built by hand, written as CSV and JSON lines, no model needed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_mek.faces import FaceBox
from fer_mek.labels import RAFDB_LABELS
from fer_mek.results import NO_FACE_MESSAGE, FacePrediction, ImageResult, ResultWriter, csv_columns


def _face(x: int, best: int) -> FacePrediction:
    probabilities = np.full(len(RAFDB_LABELS), 0.05, dtype=np.float32)
    probabilities[best] = 1.0 - 0.05 * (len(RAFDB_LABELS) - 1)
    return FacePrediction(FaceBox(x, 10, 40, 50, 0.99), probabilities, RAFDB_LABELS, Image.new("RGB", (48, 48)),
                          np.array([[1.0, 0.0, -x], [0.0, 1.0, -10.0]]))


def test_records_to_csv_and_jsonl(tmp_path: Path) -> None:
    results = [
        ImageResult("group.jpg", faces=[_face(5, 3), _face(90, 6)]),
        ImageResult("clip.mp4#4", frame=4, time_s=0.4),
        ImageResult("broken.jpg", error="broken.jpg: not an image"),
    ]
    assert [r.status for r in results] == ["ok", "no_face", "error"]
    assert results[0].faces[0].label == "happy" and results[0].faces[1].top_k(1) == [("neutral", pytest.approx(0.7))]
    for suffix in (".csv", ".jsonl"):
        with ResultWriter(tmp_path / f"out{suffix}", top_k=2) as writer:
            for result in results:
                writer.write(result)
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert list(rows[0]) == csv_columns(2)
    assert [(r["source"], r["face"], r["label_1"], r["status"]) for r in rows] == [
        ("group.jpg", "1", "happy", "ok"), ("group.jpg", "2", "neutral", "ok"),
        ("clip.mp4#4", "", "", "no_face"), ("broken.jpg", "", "", "error"),
    ]
    assert rows[2]["message"] == NO_FACE_MESSAGE and rows[2]["frame"] == "4" and rows[3]["message"].endswith("image")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [len(line["faces"]) for line in lines] == [2, 0, 0] and lines[1]["message"] == NO_FACE_MESSAGE
    assert lines[0]["faces"][1]["box"] == {"x": 90, "y": 10, "width": 40, "height": 50}


def test_records_do_not_draw_themselves() -> None:
    """Pictures of records are fer_mek.annotate's functions (annotate_result, face_attention_overlay, ...)."""
    assert not {"annotate", "attention_overlay", "probability_chart"} & (set(dir(ImageResult)) | set(dir(FacePrediction)))

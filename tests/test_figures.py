"""PNG figures of a run (``fer_mek.figures``): confusion matrix and training curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_mek.figures import plot_confusion_matrix, plot_training_curves
from fer_mek.labels import RAFDB_LABELS


def _assert_png(path: Path, min_side: int = 300) -> tuple[int, int]:
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("L"))
    assert min(width, height) >= min_side and max(width, height) <= 4000
    assert pixels.std() > 10  # something is drawn
    assert not list(path.parent.glob(f".{path.name}.*")), "temporary file left behind"
    return width, height


def test_confusion_matrix_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 50, size=(7, 7)) + np.diag(rng.integers(100, 500, size=7))
    path = plot_confusion_matrix(confusion.tolist(), RAFDB_LABELS, tmp_path / "sub" / "confusion.png")
    assert path == tmp_path / "sub" / "confusion.png"
    width, height = _assert_png(path)
    assert 0.7 < width / height < 1.6


@pytest.mark.parametrize("normalize", ["true", "pred", "all", None])
def test_confusion_matrix_zero_support(tmp_path: Path, normalize: str | None) -> None:
    """A class with no true (and no predicted) sample must not produce NaNs or warnings."""
    confusion = np.array([[5, 1, 0], [2, 7, 0], [0, 0, 0]])
    with np.errstate(all="raise"):
        path = plot_confusion_matrix(confusion, ["a", "b", "c"], tmp_path / "cm.png", normalize=normalize, title="t")
    _assert_png(path)


def test_confusion_matrix_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "cm.png"
    path.write_bytes(b"old")
    plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], path)
    _assert_png(path)


@pytest.mark.parametrize(
    ("confusion", "names", "normalize", "message"),
    [
        ([[1, 2, 3], [4, 5, 6]], ["a", "b"], "true", "square"),
        ([[1, 0], [0, 1]], ["a", "b", "c"], "true", "label_names"),
        ([[1, 0], [0, 1]], ["a", "b"], "rows", "normalize"),
        ([[1, -1], [0, 1]], ["a", "b"], "true", "negative"),
    ],
)
def test_confusion_matrix_errors(tmp_path: Path, confusion: list, names: list, normalize: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plot_confusion_matrix(confusion, names, tmp_path / "cm.png", normalize=normalize)
    assert not list(tmp_path.iterdir())


def test_training_curves_png(tmp_path: Path) -> None:
    history = [
        {
            "epoch": epoch,
            "train_loss": 2.0 / epoch,
            "val_loss": 2.1 / epoch + 0.02 * epoch,
            "val_accuracy": 1 - 1 / (epoch + 1),
            "val_mean_class_accuracy": 0.9 - 1 / (epoch + 1),
            "lr": 1e-3 * math.cos(epoch / 10),
            "per_class_recall": [0.1, 0.2],  # not numeric: ignored
        }
        for epoch in range(1, 6)
    ]
    history[2].pop("val_loss")  # a gap, not a crash
    path = plot_training_curves(history, tmp_path / "curves.png", title="run", best_epoch=4)
    width, height = _assert_png(path)
    assert width > height  # panels side by side


def test_training_curves_minimal(tmp_path: Path) -> None:
    _assert_png(plot_training_curves([{"train_loss": 1.0}, {"train_loss": 0.5}], tmp_path / "c.png"))


@pytest.mark.parametrize(("history", "message"), [([], "empty"), ([{"epoch": 1, "note": "x"}], "no numeric")])
def test_training_curves_errors(tmp_path: Path, history: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plot_training_curves(history, tmp_path / "c.png")

"""The figures of a training run: its test confusion matrix and its training curves, as PNG files.

(Renamed from ``fer_mek.plots``; drawings on people's pictures are :mod:`fer_mek.annotate`.) The trainer writes them
into the run folder (:data:`fer_mek.runs.CONFUSION_MATRIX`, :data:`fer_mek.runs.TRAINING_CURVES`).

Figures are drawn on ``matplotlib.figure.Figure`` with an explicit Agg canvas, never through pyplot: importing this
module neither selects a global backend nor opens windows, and it is safe in headless, multi-process training.
Files are written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import atomic_file

__all__ = ["plot_confusion_matrix", "plot_training_curves"]

_NORMALIZE = ("true", "pred", "all", None)
_LR_KEYS = ("lr", "learning_rate")
_X_KEYS = ("epoch", "step")


def _save_atomic(fig: Figure, path: str | os.PathLike[str], dpi: int) -> Path:
    """Render ``fig`` as PNG to a temporary file next to ``path`` and move it into place (ordinary permissions)."""
    FigureCanvasAgg(fig)
    with atomic_file(path, binary=True) as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    return Path(path)


def plot_confusion_matrix(
    confusion: Sequence[Sequence[int]] | np.ndarray,
    label_names: Sequence[str],
    path: str | os.PathLike[str],
    normalize: str | None = "true",
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Save a confusion matrix as a PNG heat map with class names on both axes.

    Args:
        confusion: K x K counts, row = true class, column = predicted class.
        label_names: Class names in index order.
        path: Where to write the PNG.
        normalize: ``"true"`` (rows sum to 1: the diagonal is per-class recall), ``"pred"`` (columns),
            ``"all"``, or ``None`` for raw counts. Rows/columns with no sample are shown as 0, not NaN.
        title: Figure title; a default naming the normalisation is used when ``None``.
        dpi: Resolution of the PNG.

    Returns:
        The written path.

    Raises:
        ValueError: The matrix is not square, does not match ``label_names``, has negative entries, or
            ``normalize`` is unknown.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion must be a square K x K matrix, got shape {counts.shape}")
    if counts.shape[0] != len(label_names):
        raise ValueError(f"confusion is {counts.shape[0]} x {counts.shape[1]} but {len(label_names)} label_names")
    if (counts < 0).any():
        raise ValueError("confusion has negative counts")
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")

    if normalize is None:
        values = counts.astype(float)
    else:
        axis = {"true": 1, "pred": 0, "all": None}[normalize]
        totals = counts.sum(axis=axis, keepdims=axis is not None)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(totals > 0, counts / np.maximum(totals, 1), 0.0)

    k = counts.shape[0]
    support = counts.sum(axis=1)
    side = max(4.5, 0.75 * k + 2.5)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    vmax = 1.0 if normalize is not None else max(float(values.max()), 1.0)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    if normalize is not None:
        colorbar.ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")

    fontsize = 9 if k <= 10 else 7
    for i in range(k):
        for j in range(k):
            if normalize is None:
                text = f"{counts[i, j]}"
            elif normalize == "true" and support[i] == 0:
                text = "–"  # no true sample: the row has no rate to show
            else:
                text = f"{values[i, j]:.1%}\n({counts[i, j]})"
            colour = "white" if values[i, j] > 0.5 * vmax else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize)

    names = [str(name) for name in label_names]
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), [f"{name} (n={n})" for name, n in zip(names, support, strict=True)])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title is None:
        title = {
            "true": "Confusion matrix (rows normalised: diagonal = recall)",
            "pred": "Confusion matrix (columns normalised: diagonal = precision)",
            "all": "Confusion matrix (fraction of all samples)",
            None: "Confusion matrix (counts)",
        }[normalize]
    ax.set_title(title)
    return _save_atomic(fig, path, dpi)


def _is_number(value: Any) -> bool:
    return isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_))


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    title: str | None = None,
    best_epoch: float | None = None,
    dpi: int = 120,
) -> Path:
    """Save per-epoch training curves as a PNG.

    Every numeric key of the history is plotted against ``epoch`` (or ``step``, else the entry's position):
    keys containing ``loss`` in one panel, metrics with values in [0, 1] (accuracies, F1, ...) in another, any other
    numeric key in an "other" panel, and the learning rate (``lr``/``learning_rate``, log scale) in the last. Non-numeric values (lists, dicts) are ignored;
    a key missing from some entries leaves a gap.

    Args:
        history: One dict per epoch, e.g. ``{"epoch": 1, "train_loss": 1.2, "val_accuracy": 0.6, "lr": 1e-4}``.
        path: Where to write the PNG.
        title: Figure title.
        best_epoch: If given, marked with a dashed vertical line (e.g. the checkpoint kept).
        dpi: Resolution of the PNG.

    Returns:
        The written path.

    Raises:
        ValueError: The history is empty or has no numeric value to plot.
    """
    if not history:
        raise ValueError("history is empty: nothing to plot")
    x_key = next((key for key in _X_KEYS if all(_is_number(entry.get(key)) for entry in history)), None)
    xs = [float(entry[x_key]) for entry in history] if x_key else [float(i + 1) for i in range(len(history))]

    keys: list[str] = []
    for entry in history:
        for key, value in entry.items():
            if key not in keys and key not in _X_KEYS and _is_number(value):
                keys.append(key)
    if not keys:
        raise ValueError("history has no numeric values to plot besides epoch/step")

    def series(key: str) -> list[float]:
        return [float(e[key]) if _is_number(e.get(key)) else math.nan for e in history]

    def is_fraction(key: str) -> bool:
        return all(0.0 <= y <= 1.0 for y in series(key) if not math.isnan(y))

    rest = [k for k in keys if "loss" not in k.lower() and k.lower() not in _LR_KEYS]
    groups = {
        "loss": [k for k in keys if "loss" in k.lower()],
        "metrics": [k for k in rest if is_fraction(k)],
        "other": [k for k in rest if not is_fraction(k)],
        "learning rate": [k for k in keys if k.lower() in _LR_KEYS],
    }
    groups = {name: members for name, members in groups.items() if members}

    fig = Figure(figsize=(6.0 * len(groups), 4.2), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    marker = "o" if len(history) <= 30 else None
    for ax, (name, members) in zip(axes, groups.items(), strict=True):
        for key in members:
            ys = series(key)
            ax.plot(xs, ys, marker=marker, markersize=3, label=key)
        if name == "learning rate" and all(y > 0 for key in members for y in series(key) if not math.isnan(y)):
            ax.set_yscale("log")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best ({best_epoch:g})")
        ax.set_xlabel(x_key or "entry")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save_atomic(fig, path, dpi)

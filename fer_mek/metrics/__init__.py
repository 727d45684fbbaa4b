"""Evaluation metrics for facial-expression recognition, through a local ``evaluate`` module.

``evaluate.load("accuracy")`` needs the Hugging Face Hub; fer-mek ships its own metric module
(``fer_metrics/fer_metrics.py``) and loads it by path, which works offline. Typical use on the main process, after
``accelerator.gather_for_metrics``::

    from fer_mek.metrics import compute_metrics, format_metrics_table

    metrics = compute_metrics(predictions, references, label_names)
    print(format_metrics_table(metrics))

Importing this module has no side effect; the metric is loaded (and copied into evaluate's module cache) on first
use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import evaluate
import numpy as np

__all__ = ["METRIC_PATH", "compute_metrics", "format_metrics_table", "load_metric"]

#: Directory of the ``fer_metrics`` evaluate module; ``evaluate.load(METRIC_PATH)`` loads it.
METRIC_PATH: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fer_metrics")


def load_metric(
    *,
    experiment_id: str | None = None,
    num_process: int = 1,
    process_id: int = 0,
    keep_in_memory: bool | None = None,
    cache_dir: str | None = None,
) -> evaluate.EvaluationModule:
    """Load the ``fer_metrics`` evaluate module from :data:`METRIC_PATH` (no network).

    For training, gather the predictions (``accelerator.gather_for_metrics``) and compute once on the main process
    with the defaults. evaluate's own file-based synchronisation (``num_process > 1``) is also supported; it needs a
    ``cache_dir`` shared by all processes and an ``experiment_id`` unique to the evaluation.

    Args:
        experiment_id: Names the cache files of a distributed evaluation; required when ``num_process > 1``.
        num_process: Number of processes adding predictions (evaluate's distributed mode when > 1).
        process_id: Rank of this process, ``0 <= process_id < num_process``.
        keep_in_memory: Keep predictions in memory instead of Arrow cache files. Defaults to ``True`` for a single
            process (no files, no locks, no collisions between concurrent runs) and must be ``False`` otherwise.
        cache_dir: Where evaluate keeps its cache files (default: evaluate's metrics cache).

    Returns:
        The loaded ``FERMetrics`` module.

    Raises:
        ValueError: ``num_process > 1`` without an ``experiment_id``.
    """
    if num_process > 1 and not experiment_id:
        raise ValueError(
            "a distributed evaluation (num_process > 1) needs an experiment_id shared by all its processes and "
            "unique to this evaluation, so concurrent runs do not mix their cache files"
        )
    if keep_in_memory is None:
        keep_in_memory = num_process == 1
    return evaluate.load(
        METRIC_PATH,
        experiment_id=experiment_id,
        num_process=num_process,
        process_id=process_id,
        keep_in_memory=keep_in_memory,
        cache_dir=cache_dir,
    )


def _as_index_array(values: Any, name: str) -> np.ndarray:
    """Convert class indices (list, numpy array, CPU tensor) to a 1-D int64 array, with a clear error."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        hint = " (logits? take argmax over the last axis first)" if array.ndim == 2 else ""
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {array.shape}{hint}")
    integral = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)
    whole_floats = np.issubdtype(array.dtype, np.floating) and bool(np.all(np.mod(array, 1) == 0))
    if array.size and not (integral or whole_floats):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def compute_metrics(
    predictions: Any,
    references: Any,
    label_names: Sequence[str],
    *,
    metric: evaluate.EvaluationModule | None = None,
) -> dict[str, Any]:
    """Compute the FER metrics of predicted class indices through the evaluate module.

    Args:
        predictions: Predicted class indices, shape ``(N,)`` (list, numpy array or tensor).
        references: True class indices, shape ``(N,)``.
        label_names: Class names in index order; their number is the number of classes K.
        metric: A module from :func:`load_metric` to reuse; loaded afresh when ``None``.

    Returns:
        The module's ``accuracy``, ``mean_class_accuracy``, ``macro_f1``, ``per_class_recall`` and
        ``confusion_matrix`` (rows = true class), plus ``num_samples``, ``label_names`` and ``per_class``: one
        ``{"index", "label", "recall", "support"}`` dict per class (recall is 0.0 where support is 0). JSON-ready.

    Raises:
        ValueError: Lengths differ, no predictions, an index is outside ``[0, K)``, or inputs are not 1-D indices.
    """
    label_names = [str(name) for name in label_names]
    if not label_names:
        raise ValueError("label_names is empty: give one name per class")
    predictions = _as_index_array(predictions, "predictions")
    references = _as_index_array(references, "references")
    if predictions.shape != references.shape:
        raise ValueError(f"predictions and references differ in length: {predictions.size} vs {references.size}")
    if metric is None:
        metric = load_metric()
    results = metric.compute(
        predictions=predictions, references=references, num_labels=len(label_names), label_names=label_names
    )
    support = [int(sum(row)) for row in results["confusion_matrix"]]
    results["num_samples"] = int(predictions.size)
    results["label_names"] = label_names
    results["per_class"] = [
        {"index": i, "label": name, "recall": recall, "support": count}
        for i, (name, recall, count) in enumerate(zip(label_names, results["per_class_recall"], support, strict=True))
    ]
    return results


def format_metrics_table(metrics: Mapping[str, Any], label_names: Sequence[str] | None = None) -> str:
    """Format metrics as a one-screen plain-text summary.

    Args:
        metrics: Output of :func:`compute_metrics` (or of the evaluate module, with a ``confusion_matrix``).
        label_names: Class names; defaults to ``metrics["label_names"]``, else to the class indices.

    Returns:
        Overall accuracy, mean-class accuracy and macro-F1, then one line per class with its name, recall and
        support (``n/a`` as recall for a class with no sample).
    """
    recalls = list(metrics["per_class_recall"])
    if "confusion_matrix" in metrics:
        support: list[int | None] = [int(sum(row)) for row in metrics["confusion_matrix"]]
    elif "per_class" in metrics:
        support = [int(entry["support"]) for entry in metrics["per_class"]]
    else:
        support = [None] * len(recalls)
    if label_names is None:
        label_names = metrics.get("label_names") or [str(i) for i in range(len(recalls))]
    if len(label_names) != len(recalls):
        raise ValueError(f"{len(label_names)} label_names for {len(recalls)} classes in the metrics")

    total = sum(s for s in support if s is not None) if support and support[0] is not None else None
    width = max(12, *(len(str(name)) for name in label_names))
    lines = [
        f"{'accuracy':<20} {metrics['accuracy']:.4f}" + (f"   (n={total})" if total is not None else ""),
        f"{'mean-class accuracy':<20} {metrics['mean_class_accuracy']:.4f}",
        f"{'macro-F1':<20} {metrics['macro_f1']:.4f}",
        "",
        f"{'#':>2}  {'class':<{width}}  {'recall':>6}  {'support':>7}",
    ]
    for i, (name, recall, count) in enumerate(zip(label_names, recalls, support, strict=True)):
        shown = "   n/a" if count == 0 else f"{recall:6.4f}"
        lines.append(f"{i:>2}  {name!s:<{width}}  {shown}  {'' if count is None else count:>7}")
    return "\n".join(lines)

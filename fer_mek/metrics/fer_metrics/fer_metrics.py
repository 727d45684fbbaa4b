"""Facial-expression recognition metrics as a local ``evaluate`` module.

Loaded by path (``evaluate.load(".../fer_metrics")``), so it works offline. The file is copied flat into evaluate's
module cache: it must import nothing from fer_mek, and must keep one import per line (evaluate's dependency
scanner misreads ``import a, b``; ``from m import a, b`` is fine).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score

_CITATION = """\
@inproceedings{zhang2023mek,
  title     = {Leave No Stone Unturned: Mine Extra Knowledge for Imbalanced Facial Expression Recognition},
  author    = {Zhang, Yuhang and Li, Yaqi and Qin, Lixiong and Liu, Xuannan and Deng, Weihong},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2023}
}
@article{scikit-learn,
  title   = {Scikit-learn: Machine Learning in {P}ython},
  author  = {Pedregosa, F. and others},
  journal = {Journal of Machine Learning Research},
  volume  = {12},
  pages   = {2825--2830},
  year    = {2011}
}
"""

_DESCRIPTION = """\
Single-label classification metrics used to report facial-expression recognition (FER) results on imbalanced
datasets such as RAF-DB and FER-2013: overall accuracy, mean-class accuracy (the mean of per-class recalls, i.e.
balanced accuracy), macro-F1, per-class recall and the confusion matrix. All numbers are computed with scikit-learn
and equal accuracy_score, balanced_accuracy_score, recall_score(average=None) and f1_score(average="macro").
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `int`): Predicted class indices.
    references (`list` of `int`): Ground-truth class indices.
    num_labels (`int`, *optional*): Number of classes K. Defaults to `len(label_names)` when given, else to
        `max(predictions + references) + 1`. Every index must lie in `[0, K)`.
    label_names (`list` of `str`, *optional*): Class names; only used to infer and check K.

Returns:
    accuracy (`float`): Fraction of correct predictions (sklearn `accuracy_score`).
    mean_class_accuracy (`float`): Mean of the recalls of the classes present in `references` (sklearn
        `balanced_accuracy_score`; a class with no true sample is left out of the mean, without a warning).
    macro_f1 (`float`): Unweighted mean of per-class F1 over the classes that occur in `references` or
        `predictions` (sklearn `f1_score(average="macro")`; ill-defined precision/recall count as 0).
    per_class_recall (`list` of `float`): Recall of each class 0..K-1 (sklearn `recall_score(average=None,
        labels=range(K), zero_division=0)`): a class with no true sample has recall 0.0. Check its support
        (row sum of the confusion matrix) before reading it.
    confusion_matrix (`list` of `list` of `int`): K x K counts; row = true class, column = predicted class.

Examples:
    >>> metric = evaluate.load("path/to/fer_metrics")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_labels=3)["confusion_matrix"]
    [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
"""

# balanced_accuracy_score warns when a predicted class never occurs in the references; its result (the mean over
# the classes present in the references) is what we document, so the warning carries no information here.
_IGNORED_WARNING = "y_pred contains classes not in y_true"


def _resolve_num_labels(
    predictions: np.ndarray,
    references: np.ndarray,
    num_labels: int | None,
    label_names: Sequence[str] | None,
) -> int:
    """Return K and check that every index lies in ``[0, K)``.

    Raises:
        ValueError: K is inconsistent with ``label_names`` or not positive, or an index is out of range.
    """
    if label_names is not None:
        if num_labels is not None and num_labels != len(label_names):
            raise ValueError(f"num_labels={num_labels} but {len(label_names)} label_names were given")
        num_labels = len(label_names)
    if num_labels is None:
        num_labels = int(max(predictions.max(), references.max())) + 1
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
    for name, values in (("predictions", predictions), ("references", references)):
        bad = values[(values < 0) | (values >= num_labels)]
        if bad.size:
            raise ValueError(
                f"{name} contain class index {int(bad[0])} outside [0, {num_labels}) "
                f"({bad.size} such value(s)); num_labels={num_labels}"
            )
    return int(num_labels)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FERMetrics(evaluate.Metric):
    """Accuracy, mean-class accuracy, macro-F1, per-class recall and confusion matrix for FER."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                }
            ),
            format="numpy",
            reference_urls=[
                "https://arxiv.org/abs/2310.19636",
                "https://scikit-learn.org/stable/modules/model_evaluation.html#classification-metrics",
            ],
        )

    def _compute(
        self,
        predictions: Sequence[int],
        references: Sequence[int],
        num_labels: int | None = None,
        label_names: Sequence[str] | None = None,
    ) -> dict:
        """Compute the metrics; see the module's inputs description."""
        predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
        references = np.asarray(references, dtype=np.int64).reshape(-1)
        if predictions.shape != references.shape:
            raise ValueError(f"predictions and references differ in length: {predictions.size} vs {references.size}")
        if predictions.size == 0:
            raise ValueError("no predictions to evaluate: predictions and references are empty")
        k = _resolve_num_labels(predictions, references, num_labels, label_names)
        labels = np.arange(k)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_IGNORED_WARNING, category=UserWarning)
            mean_class_accuracy = balanced_accuracy_score(references, predictions)
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "mean_class_accuracy": float(mean_class_accuracy),
            "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0.0)),
            "per_class_recall": [
                float(r) for r in recall_score(references, predictions, labels=labels, average=None, zero_division=0.0)
            ],
            "confusion_matrix": confusion_matrix(references, predictions, labels=labels).astype(int).tolist(),
        }

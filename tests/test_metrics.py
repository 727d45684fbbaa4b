"""The fer_metrics evaluate module and its helpers: equality with scikit-learn, offline loading, errors."""

from __future__ import annotations

import socket
import threading
import warnings

import evaluate
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score

from fer_mek.labels import RAFDB_LABELS
from fer_mek.metrics import METRIC_PATH, compute_metrics, format_metrics_table, load_metric

K = len(RAFDB_LABELS)


@pytest.fixture(scope="module")
def metric() -> evaluate.EvaluationModule:
    return load_metric()


def _sklearn(references: np.ndarray, predictions: np.ndarray, k: int) -> dict:
    """The reference numbers, with scikit-learn's defaults (its warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": accuracy_score(references, predictions),
            "mean_class_accuracy": balanced_accuracy_score(references, predictions),
            "macro_f1": f1_score(references, predictions, average="macro"),
            "per_class_recall": recall_score(
                references, predictions, labels=list(range(k)), average=None, zero_division=0
            ).tolist(),
            "confusion_matrix": confusion_matrix(references, predictions, labels=list(range(k))).tolist(),
        }


def _imbalanced(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced references; noisy predictions in which class 1 is never predicted."""
    rng = np.random.default_rng(seed)
    references = rng.choice(K, size=n, p=[0.1, 0.05, 0.08, 0.4, 0.16, 0.06, 0.15])
    predictions = np.where(rng.random(n) < 0.6, references, rng.integers(0, K, size=n))
    predictions[predictions == 1] = 6
    return predictions, references


def _assert_no_sklearn_warning(record: list[warnings.WarningMessage]) -> None:
    messages = [str(w.message) for w in record if "sklearn" in w.filename or "y_pred" in str(w.message)]
    assert not messages, messages


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_equals_sklearn(metric: evaluate.EvaluationModule, seed: int) -> None:
    predictions, references = _imbalanced(seed)
    assert 1 not in predictions and 1 in references
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = metric.compute(predictions=predictions, references=references, num_labels=K)
    _assert_no_sklearn_warning(record)
    expected = _sklearn(references, predictions, K)
    assert set(result) == set(expected)
    for key, value in expected.items():
        assert result[key] == value, key  # exact, not approximate
    assert result["per_class_recall"][1] == 0.0


def test_class_absent_from_references(metric: evaluate.EvaluationModule) -> None:
    """A class predicted but never true: recall 0.0 by convention, left out of the mean-class accuracy."""
    references = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predictions = np.array([0, 3, 0, 1, 3, 2, 2, 1, 2])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = metric.compute(predictions=predictions, references=references, num_labels=5)
    _assert_no_sklearn_warning(record)
    assert result == _sklearn(references, predictions, 5)
    assert len(result["per_class_recall"]) == 5
    assert result["per_class_recall"][3] == result["per_class_recall"][4] == 0.0
    assert result["mean_class_accuracy"] == pytest.approx(np.mean([2 / 3, 1 / 2, 3 / 4]))
    assert np.array(result["confusion_matrix"])[4].sum() == 0


def test_confusion_matrix_rows_are_true_classes(metric: evaluate.EvaluationModule) -> None:
    result = metric.compute(predictions=[1, 1, 1, 2], references=[0, 0, 1, 1], num_labels=3)
    assert result["confusion_matrix"] == [[0, 2, 0], [0, 1, 1], [0, 0, 0]]
    assert all(isinstance(v, int) for row in result["confusion_matrix"] for v in row)
    assert result["per_class_recall"] == [0.0, 0.5, 0.0]


def test_num_labels_inferred(metric: evaluate.EvaluationModule) -> None:
    result = metric.compute(predictions=[0, 2], references=[0, 1])
    assert len(result["confusion_matrix"]) == 3
    result = metric.compute(predictions=[0, 1], references=[0, 1], label_names=["a", "b", "c", "d"])
    assert len(result["per_class_recall"]) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"predictions": [0, 1, 7], "references": [0, 1, 2], "num_labels": 7}, "predictions contain class index 7"),
        ({"predictions": [0, 1, 2], "references": [0, -1, 2], "num_labels": 7}, "references contain class index -1"),
        ({"predictions": [0, 1], "references": [0, 1], "num_labels": 3, "label_names": ["a", "b"]}, "num_labels=3"),
        ({"predictions": [0, 1], "references": [0, 1], "num_labels": 0}, "positive integer"),
    ],
)
def test_module_errors(metric: evaluate.EvaluationModule, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metric.compute(**kwargs)


def test_loads_by_path_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate.load on the shipped path works with the Hub marked offline and every socket refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True, raising=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for path in (METRIC_PATH, f"{METRIC_PATH}/fer_metrics.py"):
        module = evaluate.load(path, keep_in_memory=True)
        assert isinstance(module, evaluate.Metric)
        assert module.name == "fer_metrics"
        assert module.compute(predictions=[0, 1], references=[0, 1])["accuracy"] == 1.0
    assert "balanced_accuracy_score" in load_metric().inputs_description


def test_compute_metrics_per_class(metric: evaluate.EvaluationModule) -> None:
    predictions, references = _imbalanced(0)
    result = compute_metrics(predictions.tolist(), references, RAFDB_LABELS, metric=metric)
    assert result["label_names"] == list(RAFDB_LABELS)
    assert result["num_samples"] == len(references)
    assert [entry["label"] for entry in result["per_class"]] == list(RAFDB_LABELS)
    assert [entry["index"] for entry in result["per_class"]] == list(range(K))
    assert [entry["support"] for entry in result["per_class"]] == np.bincount(references, minlength=K).tolist()
    assert [entry["recall"] for entry in result["per_class"]] == result["per_class_recall"]
    assert result["accuracy"] == accuracy_score(references, predictions)


def test_compute_metrics_accepts_tensors() -> None:
    torch = pytest.importorskip("torch")
    result = compute_metrics(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), ["a", "b"])
    assert result["confusion_matrix"] == [[1, 1], [0, 1]]


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([0, 1, 1], [0, 1], "differ in length: 3 vs 2"),
        ([[0.1, 0.9], [0.8, 0.2]], [1, 0], "logits"),
        ([0.5, 1.0], [0, 1], "integer class indices"),
        ([], [], "no predictions"),
        ([0, 3], [0, 1], "predictions contain class index 3"),
    ],
)
def test_compute_metrics_errors(
    metric: evaluate.EvaluationModule, predictions: list, references: list, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(predictions, references, ["a", "b", "c"], metric=metric)


def test_format_metrics_table(metric: evaluate.EvaluationModule) -> None:
    references = [0, 0, 1, 3, 3, 3]
    predictions = [0, 1, 1, 3, 3, 0]
    names = ["surprise", "fear", "disgust", "happy"]
    table = format_metrics_table(compute_metrics(predictions, references, names, metric=metric))
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["accuracy", "0.6667"] and "(n=6)" in lines[0]
    assert "mean-class accuracy" in table and "macro-F1" in table
    row = {line.split()[1]: line.split()[2:] for line in lines if line[:2].strip().isdigit()}
    assert row == {
        "surprise": ["0.5000", "2"],
        "fear": ["1.0000", "1"],
        "disgust": ["n/a", "0"],
        "happy": ["0.6667", "3"],
    }
    assert len(lines) <= 24  # one screen for up to ~15 classes


def test_distributed_guard_and_sync(tmp_path) -> None:
    with pytest.raises(ValueError, match="experiment_id"):
        load_metric(num_process=2, process_id=0)
    # evaluate's own file-based gathering: two ranks (threads here) each add their shard, rank 0 gets the result.
    shards = {0: ([0, 1, 2], [0, 1, 1]), 1: ([2, 2], [2, 0])}
    modules = {
        r: load_metric(experiment_id="test", num_process=2, process_id=r, cache_dir=str(tmp_path)) for r in shards
    }
    out: dict[int, dict | None] = {}
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:
            modules[r].add_batch(predictions=shards[r][0], references=shards[r][1])
            out[r] = modules[r].compute(num_labels=3)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=rank, args=(r,)) for r in shards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert out[1] is None
    assert out[0] == _sklearn(np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 2]), 3)

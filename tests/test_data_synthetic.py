"""The embedded synthetic expression set: determinism, class balance, splits, cache."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest

from fer_mek.data import (
    RAFDB_TRAIN_COUNTS,
    SYNTHETIC_IMAGE_SIZE,
    SYNTHETIC_NUM_IMAGES,
    allocate_counts,
    class_counts,
    get_metadata,
    load_source,
    load_synthetic,
    render_face,
)
from fer_mek.data.synthetic import synthetic_split_counts
from fer_mek.labels import RAFDB_LABELS


def _pixels(data: datasets.DatasetDict, split: str) -> list[np.ndarray]:
    return [np.asarray(row["image"]) for row in data[split]]


def test_render_face_is_deterministic(tmp_path: Path) -> None:
    first, again = render_face(3, 48, [7, 1]), render_face(3, 48, [7, 1])
    assert first.mode == "RGB" and first.size == (48, 48)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(render_face(3, 48, [7, 2])))
    with pytest.raises(ValueError, match="label must be in"):
        render_face(len(RAFDB_LABELS), 48)


def test_synthetic_is_deterministic_and_cached(tmp_path: Path) -> None:
    first = load_synthetic(num_images=40, image_size=32, seed=3, cache_dir=tmp_path)
    cached = [p for p in (tmp_path / "synthetic").iterdir() if not p.name.startswith(".")]
    assert len(cached) == 1 and (cached[0] / "dataset_dict.json").is_file()
    again = load_synthetic(num_images=40, image_size=32, seed=3, cache_dir=tmp_path)
    fresh = load_synthetic(num_images=40, image_size=32, seed=3, cache=False)
    other = load_synthetic(num_images=40, image_size=32, seed=4, cache=False)
    for split in ("train", "validation", "test"):
        assert first[split]["label"][:] == again[split]["label"][:] == fresh[split]["label"][:]
        assert all(np.array_equal(a, b) for a, b in zip(_pixels(first, split), _pixels(fresh, split), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(_pixels(first, "train"), _pixels(other, "train"), strict=False))
    assert len(list((tmp_path / "synthetic").iterdir())) == 1  # no leftover staging folder


def test_synthetic_follows_rafdb_imbalance_and_splits(tmp_path: Path) -> None:
    data = load_synthetic(num_images=700, image_size=16, cache=False)
    assert data["train"].features["label"].names == list(RAFDB_LABELS)
    assert isinstance(data["train"].features["image"], datasets.Image)
    totals = np.sum([class_counts(data[s]) for s in data], axis=0)
    assert totals.sum() == 700
    expected = 700 * np.asarray(RAFDB_TRAIN_COUNTS) / sum(RAFDB_TRAIN_COUNTS)
    assert np.all(np.abs(totals - expected) <= 1.5)
    assert np.argmax(totals) == int(np.argmax(RAFDB_TRAIN_COUNTS)) and np.argmin(totals) == int(
        np.argmin(RAFDB_TRAIN_COUNTS)
    )
    train, val, test = (np.asarray(class_counts(data[s])) for s in ("train", "validation", "test"))
    assert np.all(np.abs(test - 0.2 * totals) <= 1)
    assert np.all(np.abs(val - 0.1 * (train + val)) <= 1)
    meta = get_metadata(data)
    assert meta["synthetic"] is True and meta["val_fraction"] == 0.1 and meta["seed"] == 0
    assert data["test"][0]["image"].size == (16, 16)


def test_synthetic_balanced_and_tiny() -> None:
    balanced = synthetic_split_counts(70, balanced=True)
    assert {sum(c) for c in zip(*balanced.values(), strict=True)} == {10}
    tiny = load_synthetic(num_images=12, image_size=16, cache=False)
    assert sum(len(s) for s in tiny.values()) == 12
    assert min(class_counts(tiny["train"])) >= 1 and len(tiny["validation"]) >= 1 and len(tiny["test"]) >= 1
    with pytest.raises(ValueError, match="at least the number of classes"):
        synthetic_split_counts(5)


def test_allocate_counts_largest_remainders_and_minimum() -> None:
    # The synthetic set's class totals: these exact numbers decide every image of the default run.
    assert allocate_counts(12000, RAFDB_TRAIN_COUNTS) == [1262, 275, 701, 4667, 1938, 689, 2468]
    assert allocate_counts(sum(RAFDB_TRAIN_COUNTS), RAFDB_TRAIN_COUNTS) == list(RAFDB_TRAIN_COUNTS)
    assert allocate_counts(10, [1, 1, 1]) == [4, 3, 3]  # remainder ties go in index order
    # Classes under the minimum take from the largest class, one at a time, the first largest on ties.
    assert allocate_counts(12, RAFDB_TRAIN_COUNTS) == [1, 1, 1, 4, 2, 1, 2]
    assert allocate_counts(30, RAFDB_TRAIN_COUNTS, minimum=3) == [3, 3, 3, 7, 5, 3, 6]
    assert allocate_counts(8, [5, 5, 0.1], minimum=2) == [3, 3, 2]
    with pytest.raises(ValueError, match=r"at least the number of classes \(7\) times 3"):
        allocate_counts(20, RAFDB_TRAIN_COUNTS, minimum=3)


def test_synthetic_defaults_are_those_of_the_default_run() -> None:
    import inspect

    parameters = inspect.signature(load_synthetic).parameters
    assert parameters["num_images"].default == SYNTHETIC_NUM_IMAGES == 12000
    assert parameters["image_size"].default == SYNTHETIC_IMAGE_SIZE == 64


def test_synthetic_through_load_source(tmp_path: Path) -> None:
    data = load_source("synthetic", num_images=30, image_size=16, cache_dir=str(tmp_path), skip_bad=True, seed=None)
    assert get_metadata(data)["source"] == "synthetic"

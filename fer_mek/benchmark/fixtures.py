"""The benchmark's data: a synthetic RAF-DB tree of JPEG faces, written once to the work folder and reused.

Class counts follow RAF-DB basic's official splits, scaled with :func:`fer_mek.data.allocate_counts`. Moved from
``scripts/benchmark.py`` (``proportional_counts``, ``fixture_counts``, ``prepare_data``, ``rafdb_files``); the
data-source figures (:mod:`fer_mek.benchmark.data`) use the same counts.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from fer_mek.data import RAFDB_TRAIN_COUNTS, allocate_counts
from fer_mek.data.fixtures import write_rafdb
from fer_mek.data.rafdb import RAFDB_LABEL_FILE

__all__ = ["FIXTURE_IMAGE_SIZE", "FIXTURE_VERSION", "MIN_PER_CLASS", "RAFDB_TEST_COUNTS", "fixture_counts",
           "prepare_data", "rafdb_files"]

#: RAF-DB basic's official test split per class, in ``RAFDB_LABELS`` order (3,068 images); the train counts are
#: ``fer_mek.data.RAFDB_TRAIN_COUNTS`` (12,271 images).
RAFDB_TEST_COUNTS: tuple[int, ...] = (329, 74, 160, 1185, 478, 162, 680)
#: Version of the tree written into the work folder; bump when what :func:`prepare_data` writes changes.
FIXTURE_VERSION = 1
FIXTURE_IMAGE_SIZE = 100  # RAF-DB's aligned faces are 100x100
MIN_PER_CLASS = 3  # the stratified validation split needs at least two training images of a class


def fixture_counts(num_images: int, test_minimum: int = MIN_PER_CLASS) -> tuple[list[int], list[int]]:
    """Train and test counts per class of a RAF-DB tree of ``num_images`` images in RAF-DB's proportions.

    Every class gets at least :data:`MIN_PER_CLASS` training and ``test_minimum`` test images.

    Raises:
        ValueError: when ``num_images`` is too few for those minimums.
    """
    train_total = round(num_images * sum(RAFDB_TRAIN_COUNTS) / (sum(RAFDB_TRAIN_COUNTS) + sum(RAFDB_TEST_COUNTS)))
    return (allocate_counts(train_total, RAFDB_TRAIN_COUNTS, MIN_PER_CLASS),
            allocate_counts(num_images - train_total, RAFDB_TEST_COUNTS, test_minimum))


def prepare_data(work_dir: Path, num_images: int) -> tuple[Path, dict[str, Any]]:
    """The synthetic RAF-DB tree of ``num_images`` JPEGs in ``work_dir``: written once, reused while it matches.

    Returns:
        ``(root, description)``; the description includes ``write_s`` (0 when the tree was reused).
    """
    train_counts, test_counts = fixture_counts(num_images)
    settings = {"version": FIXTURE_VERSION, "layout": "distributed", "style": "faces", "size": FIXTURE_IMAGE_SIZE,
                "seed": 0, "train_counts": train_counts, "test_counts": test_counts}
    root = work_dir / f"rafdb-{num_images}"
    marker = root / "fixture.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return root, {**settings, "root": str(root), "write_s": 0.0, "reused": True}
    if root.exists():
        shutil.rmtree(root)
    print(f"writing {num_images} synthetic {FIXTURE_IMAGE_SIZE}x{FIXTURE_IMAGE_SIZE} JPEG faces to {root} ...",
          flush=True)
    start = time.perf_counter()
    write_rafdb(root, train_counts, test_counts, layout="distributed", size=FIXTURE_IMAGE_SIZE, style="faces", seed=0)
    write_s = time.perf_counter() - start
    marker.write_text(json.dumps(settings))  # last: an interrupted write is redone
    return root, {**settings, "root": str(root), "write_s": write_s, "reused": False}


def rafdb_files(root: Path, split: str) -> tuple[list[Path], list[int]]:
    """Image paths and class indices (0-6) of one split of the RAF-DB tree written by :func:`prepare_data`."""
    paths, labels = [], []
    for line in (root / RAFDB_LABEL_FILE).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        name, label = line.split()
        if name.startswith(f"{split}_"):
            paths.append(root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg")
            labels.append(int(label) - 1)
    return paths, labels

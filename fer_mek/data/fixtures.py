"""Writers of small datasets in the real on-disk layouts (RAF-DB, FER-2013 CSV and folders, image folders).

For tests, benchmarks and demos: the loaders can be exercised end to end without the real data. Images are
synthetic faces (``style="faces"``) or flat gray squares whose level encodes the class (``style="flat"``:
level ``16 + 32 * k`` with ``k`` the class's index in ``RAFDB_LABELS`` - or in ``class_names`` for
:func:`write_image_folder`), so that a test can check the class of every loaded image.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from ..labels import FER2013_FOLDER_LABELS, FER2013_LABELS, RAFDB_LABELS
from .fer2013 import FER2013_USAGES
from .rafdb import RAFDB_LABEL_FILE
from .synthetic import render_face

__all__ = ["flat_level", "write_fer2013_csv", "write_fer2013_folders", "write_image_folder", "write_rafdb"]


def flat_level(k: int) -> int:
    """Gray level of a ``style="flat"`` image of class position ``k``."""
    return 16 + 32 * k


def _draw(k: int, size: int, seed: Sequence[int], style: str) -> PILImage.Image:
    if style == "flat":
        if not 0 <= flat_level(k) <= 255:
            raise ValueError(f"style='flat' encodes at most 8 classes (positions 0-7), got position {k}")
        return PILImage.new("RGB", (size, size), (flat_level(k),) * 3)
    if style == "faces":
        return render_face(k % len(RAFDB_LABELS), size, list(seed), supersample=1 if size < 64 else 2)
    raise ValueError(f"style must be 'faces' or 'flat', got {style!r}")


def _check_counts(counts: Sequence[int], k: int, what: str) -> None:
    if len(counts) != k or min(counts) < 0:
        raise ValueError(f"{what} needs {k} non-negative counts, got {list(counts)}")


def write_rafdb(
    root: str | Path,
    train_counts: Sequence[int],
    test_counts: Sequence[int],
    *,
    layout: str = "distributed",
    image_dir: str = "aligned",
    size: int = 100,
    style: str = "faces",
    seed: int = 0,
) -> Path:
    """A RAF-DB basic tree: ``EmoLabel/list_patition_label.txt`` + ``Image/<image_dir>/`` (``"distributed"``) or
    ``train/1..7/`` + ``test/1..7/`` (``"folders"``). Counts are per class in ``RAFDB_LABELS`` order."""
    root = Path(root)
    k = len(RAFDB_LABELS)
    _check_counts(train_counts, k, "train_counts")
    _check_counts(test_counts, k, "test_counts")
    lines: list[str] = []
    index = 0
    for split, counts in (("train", train_counts), ("test", test_counts)):
        number = 0
        for label, count in enumerate(counts):
            for _ in range(count):
                number += 1
                index += 1
                name = f"{split}_{number:05d}.jpg" if split == "train" else f"{split}_{number:04d}.jpg"
                image = _draw(label, size, (seed, index), style)
                if layout == "distributed":
                    stem = Path(name).stem + ("_aligned" if image_dir == "aligned" else "")
                    path = root / "Image" / image_dir / f"{stem}.jpg"
                    lines.append(f"{name} {label + 1}")
                elif layout == "folders":
                    path = root / split / str(label + 1) / name
                else:
                    raise ValueError(f"layout must be 'distributed' or 'folders', got {layout!r}")
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path, quality=95)
    if layout == "distributed":
        (root / RAFDB_LABEL_FILE).parent.mkdir(parents=True, exist_ok=True)
        (root / RAFDB_LABEL_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_fer2013_csv(
    path: str | Path, counts: Mapping[str, Sequence[int]], *, style: str = "faces", seed: int = 0
) -> Path:
    """A ``fer2013.csv`` (``emotion,pixels,Usage``; 48x48 grayscale). ``counts``: per ``Usage`` value, images per
    class in the CSV's ``emotion`` order (``FER2013_LABELS``); rows are interleaved across usages and classes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[int, str, str]] = []
    index = 0
    for usage, per_class in counts.items():
        if usage not in FER2013_USAGES:
            raise ValueError(f"unknown Usage {usage!r}; use {FER2013_USAGES}")
        _check_counts(per_class, len(FER2013_LABELS), f"counts[{usage!r}]")
        for emotion, count in enumerate(per_class):
            k = RAFDB_LABELS.index(FER2013_LABELS[emotion])
            for _ in range(count):
                index += 1
                gray = np.asarray(_draw(k, 48, (seed, index), style).convert("L"), dtype=np.uint8)
                rows.append((emotion, " ".join(map(str, gray.ravel().tolist())), usage))
    order = np.random.default_rng(seed).permutation(len(rows))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for i in order:
            writer.writerow(rows[i])
    return path


def write_fer2013_folders(
    root: str | Path,
    train_counts: Sequence[int],
    test_counts: Sequence[int],
    *,
    style: str = "faces",
    seed: int = 0,
) -> Path:
    """FER-2013 as image folders: ``train/<class>/`` and ``test/<class>/``, 48x48 grayscale JPEGs. Counts per class
    in the alphabetical folder order (``FER2013_FOLDER_LABELS``)."""
    names = list(FER2013_FOLDER_LABELS)
    class_positions = [RAFDB_LABELS.index(name) for name in names]
    return write_image_folder(
        root,
        names,
        train_counts,
        test_counts,
        size=48,
        style=style,
        seed=seed,
        grayscale=True,
        class_positions=class_positions,
    )


def write_image_folder(
    root: str | Path,
    class_names: Sequence[str],
    train_counts: Sequence[int],
    test_counts: Sequence[int] | None = None,
    *,
    size: int = 64,
    ext: str = ".jpg",
    style: str = "faces",
    seed: int = 0,
    grayscale: bool = False,
    class_positions: Sequence[int] | None = None,
) -> Path:
    """An image-folder tree ``root/train/<class>/`` + ``root/test/<class>/``, or - with ``test_counts=None`` -
    class folders directly under ``root``. ``style="flat"`` encodes ``class_positions[i]`` (default ``i``)."""
    root = Path(root)
    positions = list(class_positions) if class_positions is not None else list(range(len(class_names)))
    _check_counts(train_counts, len(class_names), "train_counts")
    splits = [("train", train_counts)] if test_counts is None else [("train", train_counts), ("test", test_counts)]
    index = 0
    for split, counts in splits:
        if test_counts is not None:
            _check_counts(counts, len(class_names), f"{split}_counts")
        base = root / split if test_counts is not None else root
        for c, (name, count) in enumerate(zip(class_names, counts, strict=True)):
            folder = base / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(count):
                index += 1
                image = _draw(positions[c], size, (seed, index), style)
                if grayscale:
                    image = image.convert("L")
                image.save(folder / f"{split}_{j:05d}{ext}", quality=95)
    return root

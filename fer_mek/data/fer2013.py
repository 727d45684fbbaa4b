"""FER-2013 (Goodfellow et al., 2013): the original ``fer2013.csv`` or the image-folder re-packaging."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image as PILImage

from fer_mek_cli.defaults import FER2013_TEST_SPLITS  # the test sets of the CSV (its docs)

from ..labels import FER2013_FOLDER_LABELS, FER2013_LABELS
from .common import TEXT_ENCODING, BadInputLog, DataError, check_val_split, finalize, make_split, not_utf8_error
from .folder import find_split_dirs, load_folder_tree

__all__ = ["FER2013_TEST_SPLITS", "FER2013_USAGES", "detect_fer2013_layout", "load_fer2013"]

#: Values of the ``Usage`` column of ``fer2013.csv``.
FER2013_USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
#: The test set of the image-folder release: its ``test/`` folder holds both CSV test sets.
_FOLDER_TEST = "PublicTest+PrivateTest"
_SIDE = 48
_CSV_NAMES = ("fer2013.csv", "fer2013/fer2013.csv", "icml_face_data.csv")
_LAYOUT_HELP = (
    "Expected the path of fer2013.csv (columns emotion,pixels,Usage), a folder containing it, or a folder with "
    f"train/<class>/ and test/<class>/ where <class> is one of {list(FER2013_FOLDER_LABELS)}."
)


def detect_fer2013_layout(path_or_root: str | Path) -> tuple[str, Path]:
    """``("csv", csv_path)`` or ``("folders", root)`` for a FER-2013 path.

    Raises:
        DataError: when the path matches neither layout; the message lists what was found.
    """
    path = Path(path_or_root).expanduser().resolve()
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path} is not a CSV file. {_LAYOUT_HELP}")
        return "csv", path
    if not path.is_dir():
        raise DataError(f"{path} does not exist. {_LAYOUT_HELP}")
    for name in _CSV_NAMES:
        if (path / name).is_file():
            return "csv", path / name
    if "train" in find_split_dirs(path):
        return "folders", path
    found = sorted(p.name for p in path.iterdir())[:20]
    raise DataError(f"{path} is not a FER-2013 root (found {found}). {_LAYOUT_HELP}")


def load_fer2013(
    path_or_root: str | Path,
    val_fraction: float = 0.1,
    seed: int = 0,
    test_split: str | None = None,
    skip_bad: bool = False,
    *,
    verify_images: bool = True,
    val_split: str = "stratified",
) -> datasets.DatasetDict:
    """FER-2013 as a ``DatasetDict``, from ``fer2013.csv`` or from image folders; each keeps its own class order.

    * CSV (``emotion,pixels,Usage``; 48x48 grayscale as 2,304 space-separated integers): classes in the CSV's
      ``emotion`` order (``fer_mek.labels.FER2013_LABELS``). Train = ``Training`` rows (minus a validation
      share), test = ``PrivateTest`` (the split papers report; the default), ``PublicTest``, or both
      (``PublicTest+PrivateTest``, in file order: the 7,178 images of the image-folder release's ``test/``); an
      unused test set's size is recorded in the metadata. Pixels are parsed once, at load time, into PNG-encoded
      ``datasets.Image`` rows.
    * Folders (``train/<class>/``, ``test/<class>/``, class folders ``angry``, ``disgust``, ...): classes in the
      alphabetical folder order (``fer_mek.labels.FER2013_FOLDER_LABELS``), a different order from the CSV's.
      The test split is the ``test/`` folder (Kaggle's ``msambare/fer2013``: PublicTest and PrivateTest).

    Args:
        path_or_root: ``fer2013.csv``, a folder containing it, or the root of the folder layout.
        val_fraction: Share of the training rows held out as validation.
        seed: Seed of the validation split.
        test_split: CSV: ``"PrivateTest"`` (``None``, the default), ``"PublicTest"`` or ``"PublicTest+PrivateTest"``
            (:data:`FER2013_TEST_SPLITS`). Folders: ``None`` or ``"PublicTest+PrivateTest"`` (what the release's
            ``test/`` holds); a single CSV test set is an error there (its rows cannot be told apart).
        skip_bad: Skip bad CSV rows / images instead of raising; they are listed in ``get_metadata(dd)["skipped"]``.
        verify_images: Decode every image of the folder layout once at load time.
        val_split: ``"stratified"`` (default), ``"permutation"`` (MEK-CV's plain NumPy permutation,
            :func:`~fer_mek.data.permutation_split`) or ``"none"`` (no validation split). The permutation indexes
            the training images in torchvision ``ImageFolder`` order: for the folder layout exactly
            ``ImageFolder(root/"train")``'s order (classes alphabetically, then sorted file names), so the split is
            MEK-CV's for the same tree; for the CSV, class-major in the CSV's class order, rows of a class in file
            order (the CSV has no file names, so MEK-CV's split of the folder release cannot be rebuilt from it).

    Raises:
        DataError: on a layout mismatch, a malformed CSV (missing column, wrong pixel count, non-numeric or
            out-of-range pixels, unknown emotion or Usage), a bad image, an empty split or a class without
            training images.
    """
    if test_split is not None and test_split not in FER2013_TEST_SPLITS:
        raise ValueError(f"test_split must be one of {list(FER2013_TEST_SPLITS)}, got {test_split!r}")
    check_val_split(val_split, val_fraction)
    layout, path = detect_fer2013_layout(path_or_root)
    if layout == "folders":
        if test_split not in (None, _FOLDER_TEST):
            raise DataError(
                f"test_split={test_split!r} needs fer2013.csv: {path} is the image-folder release, whose test/ folder "
                f"holds PublicTest and PrivateTest together ({_FOLDER_TEST!r}, 7,178 images in the original) and "
                f"cannot be split by Usage. Pass the CSV, or test_split=None / {_FOLDER_TEST!r} for the test/ folder."
            )
        return load_folder_tree(
            path,
            label_names=FER2013_FOLDER_LABELS,
            label_mapping=None,
            val_fraction=val_fraction,
            seed=seed,
            skip_bad=skip_bad,
            verify_images=verify_images,
            source="fer2013",
            unknown_hint=f"FER-2013 class folders are {list(FER2013_FOLDER_LABELS)}",
            allow_flat=False,
            layout_help=_LAYOUT_HELP,
            val_split=val_split,
        )
    return _load_csv(path, val_fraction, seed, test_split or "PrivateTest", skip_bad, val_split)


def parse_pixels(text: str) -> np.ndarray:
    """A 48x48 ``uint8`` image from FER-2013's space-separated pixel string.

    Raises:
        ValueError: on non-numeric values, a pixel count other than 2,304, or values outside 0-255.
    """
    try:
        values = np.fromstring(text, dtype=np.int32, sep=" ")
    except ValueError:
        bad = next((tok for tok in text.split() if not tok.isdigit()), "?")
        raise ValueError(f"'pixels' holds a non-numeric value {bad[:20]!r}") from None
    if values.size != _SIDE * _SIDE:
        raise ValueError(f"'pixels' has {values.size} values, expected {_SIDE * _SIDE} ({_SIDE}x{_SIDE})")
    if values.min() < 0 or values.max() > 255:
        raise ValueError(f"'pixels' has values outside 0-255 (min {values.min()}, max {values.max()})")
    return values.astype(np.uint8).reshape(_SIDE, _SIDE)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each CSV record (UTF-8, with or without a byte-order mark); a file that is not
    UTF-8 raises a :class:`DataError` naming its first bad line."""
    try:
        with path.open(newline="", encoding=TEXT_ENCODING) as handle:
            reader = csv.reader(handle)
            for record in reader:
                yield reader.line_num, record
    except UnicodeDecodeError as error:
        raise not_utf8_error(path, "FER-2013 CSV") from error


def _load_csv(
    path: Path, val_fraction: float, seed: int, test_split: str, skip_bad: bool, val_split: str
) -> datasets.DatasetDict:
    bad = BadInputLog(skip_bad)
    test_usages = test_split.split("+")
    rows: dict[str, tuple[list[dict[str, Any]], list[int]]] = {usage: ([], []) for usage in FER2013_USAGES}
    test_rows: tuple[list[dict[str, Any]], list[int]] = ([], [])  # every test usage, in file order
    records = _csv_records(path)
    header = [h.strip() for h in next(records, (1, []))[1]]
    missing = [c for c in ("emotion", "pixels", "Usage") if c not in header]
    if missing:
        raise DataError(
            f"{path}, line 1: missing column(s) {missing} (header {header}); the original fer2013.csv has "
            "emotion,pixels,Usage. Kaggle's challenge train.csv/test.csv lack Usage (and test.csv the labels): "
            "use the full fer2013.csv."
        )
    col = {name: header.index(name) for name in ("emotion", "pixels", "Usage")}
    for line, record in records:
        if not record or all(not field.strip() for field in record):
            continue
        if len(record) != len(header):
            bad.report(
                f"row has {len(record)} fields, expected {len(header)} ({','.join(header)})",
                hint="Restore the row from the original fer2013.csv or delete it.",
                file=path,
                line=line,
            )
            continue
        emotion, usage = record[col["emotion"]].strip(), record[col["Usage"]].strip()
        if not emotion.isdigit() or not 0 <= int(emotion) < len(FER2013_LABELS):
            key = ", ".join(f"{i}={n}" for i, n in enumerate(FER2013_LABELS))
            bad.report(
                f"unknown emotion {emotion!r} (expected 0-6: {key})",
                hint="Fix the label or delete the row.",
                file=path,
                line=line,
            )
            continue
        if usage not in rows:
            bad.report(
                f"unknown Usage {usage!r} (expected one of {list(FER2013_USAGES)})",
                hint="Fix the Usage value or delete the row.",
                file=path,
                line=line,
            )
            continue
        try:
            pixels = parse_pixels(record[col["pixels"]])
        except ValueError as err:
            bad.report(
                str(err), hint="Restore the row from the original fer2013.csv or delete it.", file=path, line=line
            )
            continue
        item = {"bytes": _png(pixels), "path": f"{path.name}:{line}"}
        rows[usage][0].append(item)
        rows[usage][1].append(int(emotion))
        if usage in test_usages:
            test_rows[0].append(item)
            test_rows[1].append(int(emotion))
    train = make_split(*rows["Training"], FER2013_LABELS)
    test = make_split(*test_rows, FER2013_LABELS)
    unused = [usage for usage in ("PublicTest", "PrivateTest") if usage not in test_usages]
    other = "PublicTest" if test_split == "PrivateTest" else "PrivateTest"
    metadata = {
        "source": "fer2013",
        "layout": "csv",
        "root": str(path),
        "test": f"Usage == {test_split}" if len(test_usages) == 1 else f"Usage in {{{', '.join(test_usages)}}}",
        "test_split": test_split,
        "unused_rows": {usage: len(rows[usage][1]) for usage in unused},
    }
    return finalize(
        train,
        test,
        metadata=metadata,
        bad=bad,
        val_fraction=val_fraction,
        seed=seed,
        val_split=val_split,
        empty_hints={
            "train": f"{path} has no usable row with Usage == Training.",
            "test": f"{path} has no usable row with Usage == {test_split} (try test_split='{other}').",
        },
        class_hint=f"Check the emotion column of {path}.",
    )

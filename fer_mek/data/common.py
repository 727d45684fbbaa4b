"""Shared pieces of the dataset loaders: errors, skipped-item bookkeeping, the split protocol, metadata, summaries.

Every loader of :mod:`fer_mek.data` returns a ``datasets.DatasetDict`` with the splits ``train``, ``validation`` and
``test``, an ``image`` column (``datasets.Image``) and a ``label`` column (``datasets.ClassLabel`` carrying the class
names). How it was built (source, validation fraction and seed, skipped items, ...) travels with the data as JSON in
each split's ``info.description``, so it survives ``save_to_disk`` / ``load_from_disk``; read it with
:func:`get_metadata`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image as PILImage

from fer_mek_cli.defaults import VAL_SPLITS

from ..labels import get_label_set
from ..losses import balance_weight_values

__all__ = [
    "SPLITS",
    "BadInputLog",
    "DataError",
    "TEXT_ENCODING",
    "VAL_SPLITS",
    "allocate_counts",
    "check_val_split",
    "class_counts",
    "format_summary",
    "get_metadata",
    "permutation_split",
    "set_metadata",
    "stratified_split",
    "summarize",
]

#: The splits every loader returns, in this order.
SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: How the validation split is made from train (``val_split`` of every loader): :data:`fer_mek_cli.defaults.VAL_SPLITS`.
#: Version of the metadata layout written into ``info.description``.
METADATA_VERSION = 1
_METADATA_MARKER = "fer_mek_metadata="
_SKIP_HINT = "To skip such items instead (they are counted and listed in the summary), pass skip_bad=True (--skip-bad)."


class DataError(ValueError):
    """Bad input data (layout, file, label, CSV row, split); the message names the item and says how to fix it."""


#: How fer-mek reads label lists and CSV files: UTF-8, with or without a byte-order mark (Excel and Notepad write one).
TEXT_ENCODING = "utf-8-sig"


def not_utf8_error(path: str | Path, what: str = "file") -> DataError:
    """The :class:`DataError` for a text file that is not UTF-8: the first line that does not decode, and the fix.

    Call it when reading ``path`` with :data:`TEXT_ENCODING` raised ``UnicodeDecodeError``.
    """
    path = Path(path)
    where, detail = f"{path}", "is not UTF-8 text"
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode(TEXT_ENCODING if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                where = f"{path}, line {number}"
                detail = f"is not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
                break
    return DataError(
        f"{where}: the {what} {detail}. Save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name} > "
        f"{path.name}.utf8 && mv {path.name}.utf8 {path.name}` for Latin-1 text), or restore the original file."
    )


@dataclass
class BadInputLog:
    """Raises on a bad input item, or records it when ``skip_bad`` is set.

    Attributes:
        skip_bad: Record and skip bad items instead of raising.
        items: The skipped items, as ``{"file", "line", "reason"}`` dicts (``line`` may be ``None``).
    """

    skip_bad: bool = False
    items: list[dict[str, Any]] = field(default_factory=list)

    def report(
        self,
        reason: str,
        *,
        hint: str,
        file: str | Path | None = None,
        line: int | None = None,
        cause: BaseException | None = None,
    ) -> None:
        """Raise :class:`DataError` for one bad item, or record it when skipping.

        Args:
            reason: What is wrong with the item.
            hint: What the user can do about it.
            file: The file concerned (image, label list or CSV).
            line: 1-based line number in ``file`` (label list, CSV), if any.
            cause: The underlying exception, chained to the error.
        """
        if not self.skip_bad:
            where = ""
            if file is not None:
                where = f"{file}" + (f", line {line}" if line is not None else "") + ": "
            raise DataError(f"{where}{reason}. {hint} {_SKIP_HINT}") from cause
        self.items.append({"file": None if file is None else str(file), "line": line, "reason": reason})


def allocate_counts(total: int, weights: Sequence[float], minimum: int = 1) -> list[int]:
    """Split ``total`` items over classes in proportion to ``weights``, at least ``minimum`` per class.

    Largest-remainder (Hamilton) allocation: each class gets the floor of its share ``total * w / sum(w)``, the
    items left go to the largest remainders (ties in index order). Then each class below ``minimum``, in index
    order, takes one item at a time from the currently largest class (the first one on ties). ``total ==
    sum(weights)`` with integer weights gives ``weights`` back. The synthetic set's class totals and the benchmarks'
    RAF-DB-shaped fixtures come from here.

    Raises:
        ValueError: when ``total`` cannot give every class ``minimum`` items.
    """
    k = len(weights)
    if total < k * minimum:
        raise ValueError(f"cannot give {k} classes at least {minimum} item(s) each out of {total}: the total must "
                         f"be at least the number of classes ({k}) times {minimum}")
    w = np.asarray(weights, dtype=np.float64)
    share = total * w / w.sum()
    counts = np.floor(share).astype(int)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    for short in range(k):
        while counts[short] < minimum:
            counts[int(np.argmax(counts))] -= 1
            counts[short] += 1
    return counts.tolist()


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (with the dot) that Pillow can open."""
    PILImage.init()
    return frozenset(ext.lower() for ext in PILImage.registered_extensions())


def check_image(path: str | Path) -> str | None:
    """Fully decode an image file; return ``None`` when it decodes, else a description of the decoder's error."""
    try:
        with PILImage.open(path) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                return f"image has an empty size {image.size}"
    except (OSError, ValueError, SyntaxError, EOFError, PILImage.DecompressionBombError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def features_for(label_names: Sequence[str]) -> datasets.Features:
    """The features of every split: ``image`` (``datasets.Image``) and ``label`` (``ClassLabel`` of ``label_names``)."""
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(label_names))})


def make_split(images: Sequence[Any], labels: Sequence[int], label_names: Sequence[str]) -> datasets.Dataset:
    """A split from image paths (or ``{"bytes", "path"}`` dicts / PIL images) and class indices."""
    return datasets.Dataset.from_dict(
        {"image": list(images), "label": [int(v) for v in labels]}, features=features_for(label_names)
    )


def resolve_label_names(label_names: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """``label_names`` as a tuple; a string names a known label set (``rafdb``, ``fer2013``, ``fer2013-folders``)."""
    if label_names is None:
        return None
    names = get_label_set(label_names) if isinstance(label_names, str) else tuple(str(n) for n in label_names)
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"label_names must hold at least two distinct class names, got {list(names)}")
    return names


def map_source_labels(
    source_names: Sequence[str],
    label_names: Sequence[str] | str | None,
    label_mapping: Mapping[str, str | None] | None,
    *,
    what: str,
    unknown_hint: str | None = None,
) -> tuple[tuple[str, ...], dict[str, int | None]]:
    """Map the class names found in a source (folder names, string labels, ...) onto the output classes.

    Args:
        source_names: The class names found in the source, in the order that defines the default class order.
        label_names: Output class names in index order (or a known label-set name). Default: the mapped names in
            the order of ``source_names``.
        label_mapping: ``{source name: output name or None}``; ``None`` drops that source class. Source names
            that are output names already need no entry; a case-insensitive match is accepted too.
        what: Where the names come from, for error messages.
        unknown_hint: What to tell the user about an unknown source name (default: how to use ``label_mapping``).

    Returns:
        The output class names and ``{source name: output index, or None when dropped}``.

    Raises:
        DataError: on a source name that maps to no output class.
    """
    mapping = dict(label_mapping or {})
    targets = resolve_label_names(label_names)
    if targets is None:
        found: list[str] = []
        for name in source_names:
            target = mapping.get(name, name)
            if target is not None and target not in found:
                found.append(target)
        targets = tuple(found)
    else:
        bad_values = [v for v in mapping.values() if v is not None and v not in targets]
        if bad_values:
            raise ValueError(f"label_mapping maps to {bad_values}, which are not in label_names {list(targets)}")
    lower = {t.lower(): t for t in targets}
    index: dict[str, int | None] = {}
    unknown: list[str] = []
    for name in source_names:
        if name in mapping:
            target = mapping[name]
        elif name in targets:
            target = name
        elif name.lower() in lower:
            target = lower[name.lower()]
        else:
            unknown.append(name)
            continue
        index[name] = None if target is None else targets.index(target)
    if unknown:
        example = unknown[0]
        hint = unknown_hint or (
            f"Map it to a class with label_mapping={{{example!r}: '<class name>'}}, drop it with "
            f"label_mapping={{{example!r}: None}}, or pass label_names including it"
        )
        raise DataError(f"unknown class {unknown} in {what}: expected one of {list(targets)}. {hint}.")
    return targets, index


def class_counts(split_dataset: datasets.Dataset, label_column: str = "label") -> list[int]:
    """Number of rows of each class, indexed like the split's ``ClassLabel`` (classes without rows count 0).

    Reads only the label column (no image is decoded), whatever transform or format the dataset has.
    """
    feature = split_dataset.features.get(label_column)
    if not isinstance(feature, datasets.ClassLabel):
        raise TypeError(
            f"column {label_column!r} must be a datasets.ClassLabel to count classes, got {feature!r}; "
            "load the data with a fer_mek.data loader or cast the column to ClassLabel(names=[...])"
        )
    labels = np.asarray(split_dataset.with_format("arrow", columns=[label_column])[label_column], dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= feature.num_classes):
        bad = int(np.sum((labels < 0) | (labels >= feature.num_classes)))
        raise ValueError(
            f"{bad} row(s) of column {label_column!r} hold no valid class index (e.g. -1 for 'no label'); "
            f"expected 0..{feature.num_classes - 1}. Remove or relabel them."
        )
    return np.bincount(labels, minlength=feature.num_classes).astype(int).tolist()


def label_names_of(split_dataset: datasets.Dataset, label_column: str = "label") -> list[str]:
    """The class names of a split's ``ClassLabel`` column."""
    feature = split_dataset.features.get(label_column)
    if not isinstance(feature, datasets.ClassLabel):
        raise TypeError(f"column {label_column!r} must be a datasets.ClassLabel, got {feature!r}")
    return list(feature.names)


def stratified_split(
    dataset: datasets.Dataset,
    fraction: float,
    seed: int,
    *,
    held_out: str = "validation",
    parameter: str = "val_fraction",
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split off a stratified ``fraction`` of ``dataset`` (``train_test_split(stratify_by_column="label")``).

    Deterministic: the same rows in the same order with the same ``seed`` give the same split on any machine
    (NumPy's PCG64). Each class's held-out count is within one sample of ``fraction`` of its count.

    Args:
        dataset: The rows to split (a ``ClassLabel`` ``label`` column).
        fraction: Share of the rows held out, in (0, 1).
        seed: Seed of the split.
        held_out: Name of the held-out split, for error messages.
        parameter: Name of the option that sets ``fraction``, for error messages.

    Returns:
        ``(kept, held_out)`` datasets.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{parameter} must be in (0, 1), got {fraction}")
    names = label_names_of(dataset)
    counts = class_counts(dataset)
    singles = [names[i] for i, n in enumerate(counts) if n == 1]
    if singles:
        raise DataError(
            f"cannot carve a stratified {held_out} split: class(es) {singles} have a single training image and a "
            "stratified split needs at least 2 per class. Add images of these classes (or drop the classes with "
            "label_mapping where the source allows it)."
        )
    present = sum(1 for n in counts if n > 0)
    n_total = len(dataset)
    n_held = math.ceil(fraction * n_total)
    if n_held < present or n_total - n_held < present:
        need = min(0.5, present / max(n_total, 1))
        raise DataError(
            f"cannot carve a stratified {held_out} split: {parameter}={fraction} of {n_total} images gives "
            f"{n_held} held-out and {n_total - n_held} kept images for {present} classes, and each side needs at "
            f"least one image per class. Use more images or raise {parameter} (to about {need:.2f})."
        )
    # datasets' own stratified split, run on an in-memory (label, row) table: the same indices as on the full
    # dataset, without touching the images and without writing indices files next to a disk-backed dataset.
    labels = np.asarray(dataset.with_format("arrow", columns=["label"])["label"], dtype=np.int64)
    index = datasets.Dataset.from_dict(
        {"label": labels, "row": np.arange(n_total, dtype=np.int64)},
        features=datasets.Features({"label": datasets.ClassLabel(names=names), "row": datasets.Value("int64")}),
    )
    parts = index.train_test_split(test_size=fraction, stratify_by_column="label", seed=seed, keep_in_memory=True)
    rows = {key: np.asarray(part.with_format("arrow")["row"], dtype=np.int64) for key, part in parts.items()}
    return dataset.select(rows["train"]), dataset.select(rows["test"])


def empty_like(dataset: datasets.Dataset) -> datasets.Dataset:
    """A split with ``dataset``'s features and no row, that ``save_to_disk`` / ``load_from_disk`` round-trip
    (``select([])`` gives one that ``datasets`` saves but cannot load back)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        return dataset.filter(lambda labels: [False] * len(labels), batched=True, input_columns=["label"],
                              keep_in_memory=True)
    finally:
        if not quiet:
            enable_progress_bars()


def check_val_split(val_split: str, val_fraction: float | None) -> None:
    """Raise ``ValueError`` on an unknown ``val_split`` or a ``val_fraction`` outside (0, 1) (any value with
    ``none``, which holds nothing out)."""
    if val_split not in VAL_SPLITS:
        raise ValueError(f"val_split must be one of {list(VAL_SPLITS)}, got {val_split!r}")
    if val_split != "none" and (val_fraction is None or not 0.0 < float(val_fraction) < 1.0):
        raise ValueError(f"val_fraction must be in (0, 1) with val_split={val_split!r}, got {val_fraction} "
                         "(val_split='none' trains on all of train without a validation split)")


def class_major_order(dataset: datasets.Dataset) -> np.ndarray:
    """Row indices of ``dataset`` sorted by class index, rows of a class in their order (a stable sort).

    The order :func:`permutation_split` uses when a source has no file names (FER-2013's CSV, Hub datasets, the
    synthetic set): ImageFolder's class-major order with the source's own item order in place of file names.
    """
    labels = np.asarray(dataset.with_format("arrow", columns=["label"])["label"], dtype=np.int64)
    return np.argsort(labels, kind="stable")


def permutation_split(
    dataset: datasets.Dataset, fraction: float, seed: int, *, order: Sequence[int] | None = None
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """MEK-CV's split: a plain (not stratified) random ``fraction`` of ``dataset`` held out.

    MEK-CV's training scripts (``kaggle/mek_resnet18.py``) do ``np.random.seed(SEED)``, ``idx =
    np.random.permutation(len(full))``, ``val_size = int(len(full) * VAL_SPLIT)``, ``val_idx = idx[:val_size]``,
    ``train_idx = idx[val_size:]`` over a torchvision ``ImageFolder``. This function draws the same permutation with
    ``np.random.RandomState(seed).permutation(n)`` - the same generator, seeding and algorithm as the legacy global
    functions, so the indices are identical - without touching NumPy's global random state. Index ``k`` of the
    permutation refers to the ``k``-th row of ``order`` (default: the rows as they are), and each returned split
    holds its rows in permutation order, as ``torch.utils.data.Subset(full, idx)`` does.

    Args:
        dataset: The training rows.
        fraction: Share held out, in (0, 1); ``int(len(dataset) * fraction)`` rows.
        seed: The legacy NumPy seed (MEK-CV: 42).
        order: Row indices of ``dataset`` in the order the permutation indexes (the ImageFolder order of the
            source's files, see the loaders); a permutation of ``range(len(dataset))``.

    Returns:
        ``(kept, held_out)`` datasets.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    n = len(dataset)
    rows = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    if rows.shape != (n,) or not np.array_equal(np.sort(rows), np.arange(n)):
        raise ValueError(f"order must be a permutation of the {n} row indices")
    idx = np.random.RandomState(seed).permutation(n)
    held = int(n * fraction)
    return dataset.select(rows[idx[held:]]), dataset.select(rows[idx[:held]])


def check_split(name: str, dataset: datasets.Dataset, hint: str) -> None:
    """Raise :class:`DataError` when a split has no row."""
    if len(dataset) == 0:
        raise DataError(f"split {name!r} is empty: {hint}")


def check_train_classes(train: datasets.Dataset, hint: str) -> None:
    """Raise :class:`DataError` when a class has no training row (its MEK balance weight would be infinite)."""
    names = label_names_of(train)
    missing = [f"{names[i]!r} (index {i})" for i, n in enumerate(class_counts(train)) if n == 0]
    if missing:
        raise DataError(
            f"class {', '.join(missing)} has no training image; every class needs training images (MEK's balance "
            f"weights are N / (10 n_c)). {hint}"
        )


def split_from_train(
    train: datasets.Dataset,
    val_split: str,
    val_fraction: float | None,
    seed: int,
    *,
    order: Sequence[int] | None = None,
    class_hint: str = "Add images of that class or check the labels.",
) -> tuple[datasets.Dataset, datasets.Dataset, dict[str, Any]]:
    """Make the validation split from the training rows by ``val_split`` (see :data:`VAL_SPLITS`).

    Args:
        train: All training rows.
        val_split: ``stratified``, ``permutation`` or ``none``.
        val_fraction: Share held out (ignored with ``none``).
        seed: Seed of the split.
        order: ``permutation`` only: the rows in the order the permutation indexes (default: class-major,
            :func:`class_major_order`).
        class_hint: What to do when a class has no training row left.

    Returns:
        ``(train, validation, metadata)``: the metadata keys ``val_split``, ``validation``, ``val_fraction``,
        ``seed`` and ``protocol``.
    """
    check_val_split(val_split, val_fraction)
    if val_split == "none":
        return train, empty_like(train), {
            "val_split": "none",
            "validation": "none",
            "val_fraction": None,
            "seed": int(seed),
            "protocol": "no validation split: train holds every training image; test used only for the final report",
        }
    assert val_fraction is not None
    if val_split == "stratified":
        kept, held = stratified_split(train, val_fraction, seed)
        protocol = f"validation = stratified {val_fraction:g} of train (seed {seed})"
        how = "stratified_from_train"
    else:
        kept, held = permutation_split(train, val_fraction, seed,
                                       order=class_major_order(train) if order is None else order)
        protocol = (f"validation = the first int(n * {val_fraction:g}) of NumPy's legacy permutation of train "
                    f"(seed {seed}, not stratified; MEK-CV's split)")
        how = "permutation_from_train"
        if len(held) == 0:
            raise DataError(f"val_split='permutation' holds out int({len(train)} * {val_fraction}) = 0 images: raise "
                            "val_fraction, or use val_split='none' to train without a validation split")
        check_train_classes(kept, f"{class_hint} (val_split='permutation' is not stratified: with few images a class "
                                   "can land in validation entirely; use val_split='stratified' or more images.)")
    return kept, held, {
        "val_split": val_split,
        "validation": how,
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "protocol": f"{protocol}; test used only for the final report",
    }


def finalize(
    train: datasets.Dataset,
    test: datasets.Dataset,
    *,
    metadata: dict[str, Any],
    bad: BadInputLog,
    val_fraction: float | None,
    seed: int,
    val_split: str = "stratified",
    validation: datasets.Dataset | None = None,
    permutation_order: Sequence[int] | None = None,
    empty_hints: Mapping[str, str] | None = None,
    class_hint: str = "Add images of that class or check the labels.",
) -> datasets.DatasetDict:
    """Check the splits, make the validation split from train when needed, attach the metadata.

    Args:
        train: All training rows (validation is carved from them unless ``validation`` is given).
        test: The test rows; never used for validation.
        metadata: Source description (source, layout, root, ...); completed with the split protocol.
        bad: The skipped items, listed in the metadata.
        val_fraction: Share of train held out as validation (ignored with ``val_split="none"``).
        seed: Seed of that split.
        val_split: ``stratified``, ``permutation`` or ``none`` (:data:`VAL_SPLITS`). A given ``validation`` is used
            as it is with ``stratified``, is an error with ``permutation`` (which carves its own), and is left out
            with ``none`` (its size is recorded as ``unused_validation_rows``).
        validation: An existing validation split (e.g. a ``val/`` folder); then nothing is carved.
        permutation_order: The rows of ``train`` in ImageFolder order, for ``permutation`` (default: class-major).
        empty_hints: Per split, what to check when it is empty.
        class_hint: What to do when a class has no training image.
    """
    check_val_split(val_split, val_fraction)
    hints = dict(empty_hints or {})
    default_hint = "no image of the source belongs to it; check the root and the layout."
    check_split("train", train, hints.get("train", default_hint))
    check_split("test", test, hints.get("test", default_hint))
    check_train_classes(train, class_hint)
    meta = dict(metadata)
    if validation is not None and val_split == "permutation":
        raise DataError(
            f"the source has its own validation split ({meta.get('validation', 'given')}, {len(validation)} images), "
            "but val_split='permutation' carves one from train. Use val_split='stratified' to keep the given split, "
            "or remove it (a val/ folder; use_validation_split=False for a Hub dataset) to carve MEK-CV's split."
        )
    if validation is not None and val_split == "none":
        meta["unused_validation_rows"] = len(validation)
        validation = None
    if validation is None:
        train, validation, how = split_from_train(train, val_split, val_fraction, seed, order=permutation_order,
                                                  class_hint=class_hint)
        meta.update(how)
    else:
        check_split("validation", validation, hints.get("validation", default_hint))
        meta.setdefault("validation", "given")
        meta.setdefault("val_split", val_split)
        meta.setdefault(
            "protocol", "validation = the source's own validation split; test used only for the final report"
        )
    meta.update(
        label_names=label_names_of(train),
        num_skipped=len(bad.items),
        skipped=list(bad.items),
        skip_bad=bool(bad.skip_bad),
    )
    dataset_dict = datasets.DatasetDict(train=train, validation=validation, test=test)
    set_metadata(dataset_dict, meta)
    return dataset_dict


def set_metadata(dataset_dict: datasets.DatasetDict | datasets.Dataset, metadata: Mapping[str, Any]) -> None:
    """Store ``metadata`` (JSON-serialisable) in the ``info.description`` of every split (kept by ``save_to_disk``)."""
    meta = {"fer_mek_data_version": METADATA_VERSION, **metadata}
    source = meta.get("source", "?")
    head = f"fer-mek {source} expression dataset. " + str(meta.get("protocol", ""))
    text = f"{head.strip()}\n{_METADATA_MARKER}{json.dumps(meta, sort_keys=True)}"
    splits = dataset_dict.values() if isinstance(dataset_dict, datasets.DatasetDict) else [dataset_dict]
    for split in splits:
        split.info.description = text


def get_metadata(dataset: datasets.DatasetDict | datasets.Dataset) -> dict[str, Any]:
    """The metadata a fer_mek loader attached (source, ``val_fraction``, ``seed``, ``skipped``, ...); ``{}`` if none.

    Example:
        >>> meta = get_metadata(load_source("synthetic"))
        >>> meta["val_fraction"], meta["seed"], meta["num_skipped"]
    """
    splits = list(dataset.values()) if isinstance(dataset, datasets.DatasetDict) else [dataset]
    for split in splits:
        text = split.info.description or ""
        at = text.find(_METADATA_MARKER)
        if at >= 0:
            return json.loads(text[at + len(_METADATA_MARKER) :].splitlines()[0])
    return {}


def summarize(dataset_dict: datasets.DatasetDict) -> dict[str, Any]:
    """Per-split class counts, MEK balance weights of the train counts, and the loader's metadata.

    Returns:
        ``{"label_names", "splits": {split: {"num_rows", "class_counts": {name: n}}}, "train_class_counts",
        "balance_weights" (None when a class has no training row), "num_skipped", "metadata"}``; JSON-serialisable.
        Print it with :func:`format_summary`.
    """
    if not dataset_dict:
        raise ValueError("summarize needs a DatasetDict with at least one split")
    first = next(iter(dataset_dict.values()))
    names = label_names_of(first)
    splits: dict[str, Any] = {}
    for split_name, split in dataset_dict.items():
        counts = class_counts(split)
        splits[split_name] = {"num_rows": len(split), "class_counts": dict(zip(names, counts, strict=True))}
    train_counts = list(splits["train"]["class_counts"].values()) if "train" in splits else None
    weights = None
    if train_counts is not None and all(n > 0 for n in train_counts):
        weights = balance_weight_values(train_counts)
    meta = get_metadata(dataset_dict)
    return {
        "label_names": names,
        "splits": splits,
        "train_class_counts": train_counts,
        "balance_weights": weights,
        "num_skipped": int(meta.get("num_skipped", 0)),
        "metadata": meta,
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """A printable table of :func:`summarize`'s output: one row per class, one column per split."""
    names = list(summary["label_names"])
    split_names = list(summary["splits"])
    weights = summary.get("balance_weights")
    header = ["class", *split_names] + (["weight"] if weights else [])
    rows = []
    for i, name in enumerate(names):
        row = [name, *(str(summary["splits"][s]["class_counts"][name]) for s in split_names)]
        if weights:
            row.append(f"{weights[i]:.3f}")
        rows.append(row)
    rows.append(["total", *(str(summary["splits"][s]["num_rows"]) for s in split_names)] + ([""] if weights else []))
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        )

    lines = [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows[:-1])]
    lines += ["  ".join("-" * w for w in widths), fmt(rows[-1])]
    meta = summary.get("metadata") or {}
    if meta.get("protocol"):
        lines.append(meta["protocol"])
    skipped = int(summary.get("num_skipped", 0))
    if skipped:
        lines.append(f"skipped {skipped} bad item(s); listed under metadata.skipped in the summary")
        for item in meta.get("skipped", [])[:10]:
            where = item.get("file") or "?"
            if item.get("line") is not None:
                where += f":{item['line']}"
            lines.append(f"  {where}: {item.get('reason')}")
        if skipped > 10:
            lines.append(f"  ... and {skipped - 10} more")
    return "\n".join(lines)

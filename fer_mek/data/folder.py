"""Image-folder trees and existing ``datasets`` (Hub or ``save_to_disk``) as fer-mek ``DatasetDict``\\ s."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image as PILImage

from .common import (
    TEXT_ENCODING,
    BadInputLog,
    DataError,
    check_image,
    check_val_split,
    finalize,
    get_metadata,
    image_extensions,
    make_split,
    map_source_labels,
    not_utf8_error,
    resolve_label_names,
    stratified_split,
)

__all__ = ["load_hub_dataset", "load_image_folder"]

_SPLIT_DIR_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid"),
    "test": ("test", "testing"),
}


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_split_dirs(root: Path) -> dict[str, Path]:
    """The ``train`` / ``validation`` / ``test`` folders directly under ``root`` (case-insensitive usual names)."""
    found: dict[str, Path] = {}
    for sub in _visible_dirs(root):
        for split, names in _SPLIT_DIR_NAMES.items():
            if sub.name.lower() in names and split not in found:
                found[split] = sub
    return found


def scan_class_dirs(split_dir: Path, bad: BadInputLog, *, root: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Image files of each class folder of ``split_dir`` (searched recursively, sorted).

    Returns:
        ``{class folder name: image paths}`` and the non-image files that were ignored (paths relative to root).
        Images lying directly in ``split_dir`` have no class: they are reported to ``bad``.
    """
    extensions = image_extensions()
    classes: dict[str, list[Path]] = {}
    ignored: list[str] = []
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.suffix.lower() in extensions:
                bad.report(
                    "image lies directly in a split folder, not in a class folder, so it has no label",
                    hint=f"Move it into {split_dir}/<class>/ or delete it.",
                    file=entry,
                )
            else:
                ignored.append(str(entry.relative_to(root)))
            continue
        files: list[Path] = []
        for path in sorted(entry.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(entry).parts) or not path.is_file():
                continue
            if path.suffix.lower() in extensions:
                files.append(path)
            else:
                ignored.append(str(path.relative_to(root)))
        classes[entry.name] = files
    return classes, ignored


def image_folder_key(class_folder: str, path: Path) -> tuple[str, str, str]:
    """The sort key of an image in torchvision ``ImageFolder``'s sample order: class folder name (ImageFolder's class
    index is the sorted position of the name), then directory, then file name - ``make_dataset`` walks
    ``sorted(class_to_idx)``, ``sorted(os.walk(class_dir))`` and ``sorted(fnames)``, comparing strings."""
    return class_folder, str(path.parent), path.name


def image_paths(dataset: datasets.Dataset, image_column: str = "image") -> list[str | None]:
    """The stored path of every row's image (``None`` for images held as bytes only), without decoding."""
    table = dataset.with_format("arrow", columns=[image_column])[image_column]
    return [item["path"] if isinstance(item, dict) else None for item in table.to_pylist()]


def load_folder_tree(
    root: str | Path,
    *,
    label_names: Sequence[str] | str | None,
    label_mapping: Mapping[str, str | None] | None,
    val_fraction: float,
    seed: int,
    skip_bad: bool,
    test_fraction: float | None = None,
    verify_images: bool = True,
    source: str = "folder",
    unknown_hint: str | None = None,
    allow_flat: bool = True,
    layout_help: str = "",
    val_split: str = "stratified",
) -> datasets.DatasetDict:
    """Shared loader of class-folder trees (generic folders, RAF-DB and FER-2013 as folders); see
    :func:`load_image_folder` for the arguments."""
    check_val_split(val_split, val_fraction)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root} is not a directory. {layout_help}".strip())
    split_dirs = find_split_dirs(root)
    layout = "splits"
    if "train" not in split_dirs:
        if not allow_flat:
            found = [p.name for p in _visible_dirs(root)]
            raise DataError(f"{root} has no train/ folder (found {found}). {layout_help}".strip())
        layout = "flat"
        split_dirs = {"all": root}
    elif "test" not in split_dirs and test_fraction is None:
        raise DataError(
            f"{root} has a {split_dirs['train'].name}/ folder but no test/ folder. Add one (test/<class>/...), or "
            "pass test_fraction=0.2 to carve a stratified test split out of train (before the validation split). "
            f"{layout_help}".strip()
        )
    if layout == "flat" and test_fraction is None:
        found = [p.name for p in _visible_dirs(root)]
        raise DataError(
            f"{root} has no train/ and test/ folders (found {found}). Expected root/train/<class>/*.jpg and "
            "root/test/<class>/*.jpg (optionally root/val/<class>/), or class folders directly under root together "
            f"with test_fraction=0.2 to carve a stratified test split. {layout_help}".strip()
        )
    bad = BadInputLog(skip_bad)
    scanned: dict[str, dict[str, list[Path]]] = {}
    ignored: list[str] = []
    if layout == "splits":  # anything next to the split folders is not read
        used = {p.name for p in split_dirs.values()}
        ignored += [p.name + ("/" if p.is_dir() else "") for p in sorted(root.iterdir())]
        ignored = [name for name in ignored if name.rstrip("/") not in used and not name.startswith(".")]
    for split, split_dir in split_dirs.items():
        classes, ignored_here = scan_class_dirs(split_dir, bad, root=root)
        scanned[split] = classes
        ignored += ignored_here
    source_names = sorted({name for classes in scanned.values() for name in classes})
    if not source_names:
        raise DataError(f"{root} holds no class folder. {layout_help}".strip())
    names, index = map_source_labels(
        source_names, label_names, label_mapping, what=f"the class folders of {root}", unknown_hint=unknown_hint
    )
    dropped: dict[str, int] = {}
    splits: dict[str, datasets.Dataset] = {}
    folder_keys: dict[str, tuple[str, str, str]] = {}
    for split, classes in scanned.items():
        images: list[str] = []
        labels: list[int] = []
        for class_name, files in classes.items():
            target = index[class_name]
            if target is None:
                dropped[class_name] = dropped.get(class_name, 0) + len(files)
                continue
            for path in files:
                if verify_images:
                    problem = check_image(path)
                    if problem is not None:
                        bad.report(
                            f"cannot decode the image ({problem})",
                            hint="Replace or re-extract the file, or delete it.",
                            file=path,
                        )
                        continue
                images.append(str(path))
                labels.append(target)
                folder_keys[str(path)] = image_folder_key(class_name, path)
        splits[split] = make_split(images, labels, names)
    if layout == "flat" or "test" not in splits:
        assert test_fraction is not None
        pool = splits.pop("all" if layout == "flat" else "train")
        train, test = stratified_split(pool, test_fraction, seed, held_out="test", parameter="test_fraction")
        splits["train"], splits["test"] = train, test
    metadata: dict[str, Any] = {
        "source": source,
        "layout": "folders" if layout == "splits" else "flat_folders",
        "root": str(root),
        "test": "folder" if test_fraction is None else f"stratified {test_fraction:g} of the training images",
        "test_fraction": test_fraction,
        "class_folders": {name: (None if index[name] is None else names[index[name]]) for name in source_names},
        "dropped": dropped,
        "ignored_files": ignored,
        "verify_images": verify_images,
    }
    if "validation" in splits:
        metadata["validation"] = f"folder {split_dirs['validation'].name}/"
    order = None
    if val_split == "permutation":
        train_keys = [folder_keys[path] for path in image_paths(splits["train"])]
        order = sorted(range(len(train_keys)), key=train_keys.__getitem__)
    return finalize(
        splits["train"],
        splits["test"],
        validation=splits.get("validation"),
        metadata=metadata,
        bad=bad,
        val_fraction=val_fraction,
        seed=seed,
        val_split=val_split,
        permutation_order=order,
        empty_hints={
            "train": f"no image under {root}/train/<class>/ (image extensions: .jpg, .png, ...).",
            "test": f"no image under {root}/test/<class>/.",
            "validation": f"no image under the validation folder of {root}.",
        },
        class_hint=(
            "Add training images of that class, or drop it with label_mapping={'<folder>': None} / label_names."
            if source == "folder"
            else "Add training images of that class (check the class folder names)."
        ),
    )


def load_image_folder(
    root: str | Path,
    label_names: Sequence[str] | str | None = None,
    label_mapping: Mapping[str, str | None] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    skip_bad: bool = False,
    *,
    test_fraction: float | None = None,
    verify_images: bool = True,
    val_split: str = "stratified",
) -> datasets.DatasetDict:
    """Any image-folder tree (AffectNet, CK+, JAFFE, your own) as a ``DatasetDict`` (train / validation / test).

    Layouts: ``root/train/<class>/...`` and ``root/test/<class>/...`` (``training``/``testing`` accepted; an optional
    ``root/val/<class>/`` - or ``validation``/``valid`` - is used as the validation split instead of carving one);
    or class folders directly under ``root`` with ``test_fraction``. Images are searched recursively in each class
    folder; hidden files are skipped and other non-image files listed in the metadata (``ignored_files``).

    Args:
        root: The dataset folder.
        label_names: Output class names in index order, or a known label set (``"rafdb"``, ``"fer2013"``,
            ``"fer2013-folders"``). Default: the mapped folder names in sorted folder order (like ImageFolder).
        label_mapping: ``{folder name: class name, or None to drop the folder}``, e.g. AffectNet-8 to 7 classes:
            ``{"contempt": None}``; number folders: ``{"0": "neutral", "1": "happy", ...}``.
        val_fraction: Stratified share of train held out as validation (unless a validation folder exists).
        seed: Seed of the stratified splits.
        skip_bad: Skip undecodable images and class-less images instead of raising; they are listed in
            ``get_metadata(dd)["skipped"]`` and in :func:`~fer_mek.data.summarize`.
        test_fraction: Carve a stratified test split of this share from train when there is no ``test/`` folder.
        verify_images: Decode every image once at load time so that a corrupt file fails here, not mid-training.
        val_split: ``"stratified"`` (default), ``"permutation"`` (MEK-CV's plain NumPy permutation,
            :func:`~fer_mek.data.permutation_split`, over the training images in torchvision ``ImageFolder`` order:
            class folder name, then directory and file name, as ``ImageFolder(root/"train")`` lists them - so the
            split is MEK-CV's for the same tree, provided every image is kept (no ``skip_bad`` skips, no dropped
            or hidden folders, only ImageFolder's extensions)) or ``"none"`` (no validation split; a ``val/``
            folder is then left out). ``permutation`` with a ``val/`` folder is an error.

    Returns:
        ``DatasetDict`` with ``image`` (``datasets.Image``, lazily read from the files) and ``label``
        (``ClassLabel``); the metadata (see :func:`~fer_mek.data.get_metadata`) records the split protocol.

    Raises:
        DataError: on a layout mismatch, an unknown class folder, a bad image, an empty split or a class without
            training images; the message says what to change.
    """
    return load_folder_tree(
        root,
        label_names=label_names,
        label_mapping=label_mapping,
        val_fraction=val_fraction,
        seed=seed,
        skip_bad=skip_bad,
        test_fraction=test_fraction,
        verify_images=verify_images,
        source="folder",
        val_split=val_split,
    )


def _find_column(features: datasets.Features, wanted: str | None, kind: type, fallbacks: Sequence[str]) -> str | None:
    if wanted is not None:
        return wanted if wanted in features else None
    for name, feature in features.items():
        if isinstance(feature, kind):
            return name
    for name in fallbacks:
        if name in features:
            return name
    return None


def _load_any(name_or_path: str | Path, revision: str | None, load_kwargs: dict[str, Any]) -> datasets.DatasetDict:
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
        loaded = datasets.load_from_disk(str(path))
    else:
        try:
            loaded = datasets.load_dataset(str(name_or_path), revision=revision, **load_kwargs)
        except UnicodeDecodeError as error:  # a label file (metadata.csv / .jsonl) that is not UTF-8
            raise _not_utf8_label_file(path, error) from error
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict(train=loaded)
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(
            f"{name_or_path} did not load as a DatasetDict (got {type(loaded).__name__}); streaming datasets are "
            "not supported, load it without streaming=True"
        )
    return loaded


def _not_utf8_label_file(path: Path, error: UnicodeDecodeError) -> DataError:
    """The error for a folder whose label files do not decode: the first such file, its line, and the fix."""
    if path.is_dir():
        for candidate in sorted(path.rglob("*")):
            if candidate.suffix.lower() in (".csv", ".jsonl", ".json", ".txt", ".tsv") and candidate.is_file():
                try:
                    candidate.read_text(encoding=TEXT_ENCODING)
                except UnicodeDecodeError:
                    return not_utf8_error(candidate, "label file")
    return DataError(f"{path}: a label file is not UTF-8 text ({error}); save the dataset's metadata files as UTF-8")


def load_hub_dataset(
    name_or_path: str | Path,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | str | None = None,
    label_mapping: Mapping[str, str | None] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    skip_bad: bool = False,
    train_split: str = "train",
    test_split: str = "test",
    test_fraction: float | None = None,
    use_validation_split: bool = True,
    verify_images: bool = False,
    revision: str | None = None,
    val_split: str = "stratified",
    **load_kwargs: Any,
) -> datasets.DatasetDict:
    """A Hub dataset (``datasets.load_dataset(name)``) or a ``save_to_disk`` folder as a fer-mek ``DatasetDict``.

    Keeps only an image and a label column, renamed ``image`` / ``label``, with the label as a ``ClassLabel``.
    A folder written by ``scripts/prepare_data.py`` loads back with its splits and metadata unchanged.

    Args:
        name_or_path: Hub dataset id, local dataset folder for ``load_dataset``, or a ``save_to_disk`` folder.
        image_column: The image column (default: the first ``datasets.Image`` column, else ``image``/``img``).
        label_column: The label column (default: the first ``ClassLabel`` column, else ``label``/``labels``/
            ``emotion``/``expression``).
        label_names: Output class names in index order (or a known label set). Required when the labels are bare
            integers (they index it); otherwise the default is the source's names.
        label_mapping: ``{source class name: output class name, or None to drop it}``.
        val_fraction: Stratified share of train held out as validation when none is reused.
        seed: Seed of the stratified splits.
        skip_bad: Skip rows with a missing label (or an undecodable image when ``verify_images``) and list them.
        train_split: Name of the training split.
        test_split: Name of the test split (e.g. ``"validation"`` for AffectNet-style sets whose val is the test).
        test_fraction: Carve a stratified test split from train when ``test_split`` does not exist.
        use_validation_split: Reuse an existing ``validation`` / ``valid`` / ``val`` split (other than the test
            split) instead of carving one from train.
        verify_images: Decode every image once at load time (slow on large sets; off by default).
        revision: Hub revision (branch, tag or commit) for ``load_dataset``.
        val_split: ``"stratified"`` (default), ``"permutation"`` (MEK-CV's plain NumPy permutation over the
            training rows in class-major order, rows of a class in the source's order) or ``"none"`` (no validation
            split). A reused validation split is kept with ``stratified``, left out with ``none`` and an error with
            ``permutation`` (pass ``use_validation_split=False``); an empty one (a set prepared with ``none``)
            counts as absent.
        **load_kwargs: Passed to ``datasets.load_dataset`` (e.g. ``name=`` for a configuration).

    Raises:
        DataError: on missing splits/columns, bare integer labels without ``label_names``, unknown labels, bad rows,
            empty splits or a class without training rows.
    """
    check_val_split(val_split, val_fraction)
    loaded = _load_any(name_or_path, revision, load_kwargs)
    available = list(loaded)
    if train_split not in loaded:
        raise DataError(f"{name_or_path} has no split {train_split!r} (splits: {available}); pass train_split=...")
    if test_split not in loaded and test_fraction is None:
        raise DataError(
            f"{name_or_path} has no split {test_split!r} (splits: {available}); pass test_split=<one of them> or "
            "test_fraction=0.2 to carve a stratified test split from train"
        )
    prior = get_metadata(loaded)
    features = loaded[train_split].features
    image_col = _find_column(features, image_column, datasets.Image, ("image", "img", "file", "path"))
    label_col = _find_column(features, label_column, datasets.ClassLabel, ("label", "labels", "emotion", "expression"))
    if image_col is None or label_col is None:
        which = "image" if image_col is None else "label"
        raise DataError(
            f"{name_or_path}: no {which} column found among {list(features)}; pass {which}_column=<column name>"
        )
    label_feature = features[label_col]
    given_names = resolve_label_names(label_names)
    if isinstance(label_feature, datasets.ClassLabel):
        source_names = list(label_feature.names)
        kind = "classlabel"
    elif isinstance(label_feature, datasets.Value) and label_feature.dtype == "string":
        kind = "string"
        source_names = sorted(
            {
                str(v)
                for split in loaded.values()
                for v in split.with_format("arrow", columns=[label_col])[label_col].to_pylist()
                if v is not None
            }
        )
    elif isinstance(label_feature, datasets.Value) and "int" in label_feature.dtype:
        if given_names is None:
            raise DataError(
                f"{name_or_path}: column {label_col!r} holds bare integers without class names; pass label_names=[...] "
                "(the class name of each integer, in order) so that the names travel with the labels"
            )
        kind = "int"
        source_names = list(given_names)
    else:
        raise DataError(f"{name_or_path}: label column {label_col!r} has unsupported type {label_feature!r}")
    names, index = map_source_labels(
        source_names,
        None if kind == "int" else given_names,  # bare integers: label_names are the source names
        label_mapping,
        what=f"column {label_col!r} of {name_or_path}",
    )
    bad = BadInputLog(skip_bad)
    dropped: dict[str, int] = {}

    def convert(split_name: str) -> datasets.Dataset:
        split = loaded[split_name].select_columns([image_col, label_col])
        raw = split.with_format("arrow", columns=[label_col])[label_col].to_pylist()
        keep: list[int] = []
        new_labels: list[int] = []
        for row, value in enumerate(raw):
            if value is None or (kind != "string" and not 0 <= int(value) < len(source_names)):
                bad.report(
                    f"row {row} of split {split_name!r} has no valid label ({value!r})",
                    hint=f"Fix the {label_col!r} column (expected 0..{len(source_names) - 1} or a class name).",
                    file=str(name_or_path),
                )
                continue
            source_name = str(value) if kind == "string" else source_names[int(value)]
            target = index[source_name]
            if target is None:
                dropped[source_name] = dropped.get(source_name, 0) + 1
                continue
            keep.append(row)
            new_labels.append(target)
        if len(keep) != len(raw):
            split = split.select(keep, keep_in_memory=True)
        split = split.remove_columns(label_col)
        if image_col != "image":
            split = split.rename_column(image_col, "image")
        if not isinstance(split.features["image"], datasets.Image):
            split = split.cast_column("image", datasets.Image())
        split = split.add_column("label", new_labels, feature=datasets.ClassLabel(names=list(names)))
        if verify_images:
            split = _verify_rows(split, split_name, bad, str(name_or_path))
        return split

    train = convert(train_split)
    validation = None
    if use_validation_split:
        for candidate in ("validation", "valid", "val"):
            if candidate in loaded and candidate != test_split and len(loaded[candidate]):
                validation = convert(candidate)
                break
    if test_split in loaded:
        test = convert(test_split)
    else:
        assert test_fraction is not None
        train, test = stratified_split(train, test_fraction, seed, held_out="test", parameter="test_fraction")
    metadata: dict[str, Any] = {
        **{k: v for k, v in prior.items() if k not in ("skipped", "num_skipped", "label_names", "skip_bad")},
        "source": "hub",
        "name_or_path": str(name_or_path),
        "revision": revision,
        "columns": {"image": image_col, "label": label_col},
        "splits_used": {"train": train_split, "test": test_split if test_split in loaded else None},
        "test_fraction": test_fraction,
        "dropped": dropped,
        "prepared_from": prior.get("source") if prior else None,
    }
    if validation is not None and prior.get("validation") in ("stratified_from_train", "permutation_from_train"):
        # keeps the recorded val_split / val_fraction / seed of the prepared set
        metadata["validation"] = prior["validation"]
    return finalize(
        train,
        test,
        validation=validation,
        metadata=metadata,
        bad=bad,
        val_fraction=val_fraction,
        seed=seed,
        val_split=val_split,
        class_hint="Add training rows of that class, or drop it with label_mapping={'<class>': None}.",
    )


def _verify_rows(split: datasets.Dataset, split_name: str, bad: BadInputLog, where: str) -> datasets.Dataset:
    undecoded = split.cast_column("image", datasets.Image(decode=False))
    keep: list[int] = []
    for row, item in enumerate(undecoded.with_format(None, columns=["image"])):
        image = item["image"]
        try:
            source = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image["path"]
            with PILImage.open(source) as opened:
                opened.load()
        except (OSError, ValueError, SyntaxError, EOFError, PILImage.DecompressionBombError) as err:
            bad.report(
                f"cannot decode the image of row {row} of split {split_name!r} ({type(err).__name__}: {err})",
                hint="Fix or remove that row.",
                file=image.get("path") or where,
                cause=err,
            )
            continue
        keep.append(row)
    return split if len(keep) == len(split) else split.select(np.asarray(keep, dtype=np.int64), keep_in_memory=True)

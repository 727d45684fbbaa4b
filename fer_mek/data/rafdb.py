"""RAF-DB basic (Li et al., CVPR 2017), as distributed or re-packaged as class folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from ..labels import RAFDB_LABELS
from .common import (
    TEXT_ENCODING,
    BadInputLog,
    DataError,
    check_image,
    check_val_split,
    finalize,
    make_split,
    not_utf8_error,
)
from .folder import find_split_dirs, load_folder_tree

__all__ = ["RAFDB_LABEL_FILE", "detect_rafdb_layout", "load_rafdb"]

#: The label list of the RAF-DB basic distribution, relative to its root (the misspelling is RAF-DB's).
RAFDB_LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
_LABEL_KEY = ", ".join(f"{i + 1}={name}" for i, name in enumerate(RAFDB_LABELS))
_LAYOUT_HELP = (
    "Expected a RAF-DB basic root with EmoLabel/list_patition_label.txt and Image/aligned/ (as distributed), or "
    f"train/1..7/ and test/1..7/ class folders numbered by RAF-DB label ({_LABEL_KEY})."
)


def detect_rafdb_layout(root: str | Path) -> tuple[str, Path]:
    """Which RAF-DB layout ``root`` holds: ``("distributed", basic_root)`` or ``("folders", root)``.

    The distributed layout is also found one level down, in ``root/basic``.

    Raises:
        DataError: when ``root`` matches neither layout; the message lists what was found.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"RAF-DB root {root} is not a directory. {_LAYOUT_HELP}")
    for candidate in (root, root / "basic"):
        if (candidate / RAFDB_LABEL_FILE).is_file():
            return "distributed", candidate
    splits = find_split_dirs(root)
    if "train" in splits:
        return "folders", root
    found = sorted(p.name for p in root.iterdir())[:20]
    raise DataError(f"{root} is not a RAF-DB root (found {found}). {_LAYOUT_HELP}")


def load_rafdb(
    root: str | Path,
    image_dir: str = "aligned",
    val_fraction: float = 0.1,
    seed: int = 0,
    skip_bad: bool = False,
    *,
    verify_images: bool = True,
    val_split: str = "stratified",
) -> datasets.DatasetDict:
    """RAF-DB basic as a ``DatasetDict``: the official train split (minus a validation share) and test.

    Two layouts are detected: the distribution (``EmoLabel/list_patition_label.txt`` with lines such as
    ``train_00001.jpg 5``, images in ``Image/aligned/train_00001_aligned.jpg`` or ``Image/original/train_00001.jpg``)
    and a re-packaging as folders (``train/1..7/*.jpg``, ``test/1..7/*.jpg``, numbered by RAF-DB label). Labels 1-7
    become class indices 0-6 of ``fer_mek.labels.RAFDB_LABELS`` in both.

    Args:
        root: The RAF-DB ``basic`` folder (or its parent), or the root of the class-folder re-packaging.
        image_dir: Image folder under ``Image/`` in the distributed layout: ``"aligned"`` (100x100 aligned faces)
            or ``"original"``.
        val_fraction: Share of the official train split held out as validation.
        seed: Seed of the validation split (MEK-CV: 42 with ``val_split="permutation"``).
        skip_bad: Skip missing/undecodable images and bad label lines instead of raising; they are listed in
            ``get_metadata(dd)["skipped"]``.
        verify_images: Decode every image once at load time (about a second per few thousand RAF-DB images).
        val_split: ``"stratified"`` (default), ``"permutation"`` (MEK-CV's plain NumPy permutation,
            :func:`~fer_mek.data.permutation_split`) or ``"none"`` (no validation split). The permutation indexes
            the training images in torchvision ``ImageFolder`` order: for the class-folder layout, exactly
            ``ImageFolder(root/"train")``'s order (class folders 1..7, then sorted directory and file names), so
            the split is MEK-CV's for the same folder tree; for the distributed layout, (label, image file name) -
            the order of the class-folder re-packaging whose files carry the same names (e.g.
            ``train_00001_aligned.jpg``).

    Returns:
        ``DatasetDict`` with ``train``, ``validation`` and ``test``; images are read lazily from the files.

    Raises:
        DataError: on a layout mismatch, a malformed label line, an unknown label, a missing or corrupt image,
            an empty split or a class without training images.
    """
    check_val_split(val_split, val_fraction)
    layout, base = detect_rafdb_layout(root)
    if layout == "folders":
        return load_folder_tree(
            base,
            label_names=RAFDB_LABELS,
            label_mapping={str(i + 1): name for i, name in enumerate(RAFDB_LABELS)},
            val_fraction=val_fraction,
            seed=seed,
            skip_bad=skip_bad,
            verify_images=verify_images,
            source="rafdb",
            unknown_hint=f"RAF-DB class folders are named by label number ({_LABEL_KEY})",
            allow_flat=False,
            layout_help=_LAYOUT_HELP,
            val_split=val_split,
        )
    return _load_distributed(base, image_dir, val_fraction, seed, skip_bad, verify_images, val_split)


def _image_candidates(image_root: Path, name: str, image_dir: str) -> list[Path]:
    stem, suffix = Path(name).stem, Path(name).suffix
    aligned = image_root / f"{stem}_aligned{suffix}"
    plain = image_root / name
    return [aligned, plain] if image_dir == "aligned" else [plain, aligned]


def _load_distributed(
    base: Path, image_dir: str, val_fraction: float, seed: int, skip_bad: bool, verify_images: bool, val_split: str
) -> datasets.DatasetDict:
    label_file = base / RAFDB_LABEL_FILE
    image_root = base / "Image" / image_dir
    if not image_root.is_dir():
        present = sorted(p.name for p in (base / "Image").iterdir()) if (base / "Image").is_dir() else []
        raise DataError(
            f"RAF-DB image folder {image_root} does not exist (Image/ holds {present}). Extract the images "
            "(aligned.zip / original.zip) into Image/, or pass image_dir='aligned' or 'original' to match."
        )
    bad = BadInputLog(skip_bad)
    rows: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    seen: dict[str, int] = {}
    try:
        lines = list(enumerate(label_file.read_text(encoding=TEXT_ENCODING).split("\n"), start=1))
    except UnicodeDecodeError as error:
        raise not_utf8_error(label_file, "RAF-DB label list") from error
    for line_no, raw in lines:
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            bad.report(
                f"expected '<image name> <label 1-7>', got {line!r}",
                hint="Restore the original label file from the RAF-DB archive.",
                file=label_file,
                line=line_no,
            )
            continue
        name, value = parts[0], int(parts[1])
        split = name.split("_", 1)[0].lower()
        if split not in rows:
            bad.report(
                f"image name {name!r} starts with neither 'train_' nor 'test_', so its split is unknown",
                hint="RAF-DB basic names are train_NNNNN.jpg / test_NNNN.jpg; fix or remove the line.",
                file=label_file,
                line=line_no,
            )
            continue
        if not 1 <= value <= len(RAFDB_LABELS):
            bad.report(
                f"label {value} of {name} is not a RAF-DB basic label ({_LABEL_KEY})",
                hint="Fix the label (1-7) or remove the line.",
                file=label_file,
                line=line_no,
            )
            continue
        if name in seen:
            bad.report(
                f"{name} is listed twice (first on line {seen[name]})",
                hint="Remove the duplicate line.",
                file=label_file,
                line=line_no,
            )
            continue
        seen[name] = line_no
        path = next((p for p in _image_candidates(image_root, name, image_dir) if p.is_file()), None)
        if path is None:
            expected = _image_candidates(image_root, name, image_dir)[0]
            bad.report(
                f"image {expected} listed for {name} is missing",
                hint=(
                    f"Check that the image archive was fully extracted into Image/{image_dir}/ and that "
                    "image_dir ('aligned' or 'original') matches it."
                ),
                file=label_file,
                line=line_no,
            )
            continue
        if verify_images:
            problem = check_image(path)
            if problem is not None:
                bad.report(
                    f"cannot decode the image ({problem}); it is listed on line {line_no} of {label_file}",
                    hint="Re-extract the file from the RAF-DB archive, or delete it and its label line.",
                    file=path,
                )
                continue
        rows[split][0].append(str(path))
        rows[split][1].append(value - 1)
    train = make_split(*rows["train"], RAFDB_LABELS)
    test = make_split(*rows["test"], RAFDB_LABELS)
    # ImageFolder order of the class-folder re-packaging: label, then image file name.
    paths, labels = rows["train"]
    order = sorted(range(len(paths)), key=lambda i: (labels[i], Path(paths[i]).name))
    metadata: dict[str, Any] = {
        "source": "rafdb",
        "layout": "distributed",
        "root": str(base),
        "image_dir": image_dir,
        "label_file": str(label_file),
        "test": "official test split",
        "verify_images": verify_images,
    }
    return finalize(
        train,
        test,
        metadata=metadata,
        bad=bad,
        val_fraction=val_fraction,
        seed=seed,
        val_split=val_split,
        permutation_order=order,
        empty_hints={
            "train": f"{label_file} lists no usable 'train_*' image.",
            "test": f"{label_file} lists no usable 'test_*' image.",
        },
        class_hint=f"Check {label_file} (labels 1-7: {_LABEL_KEY}).",
    )

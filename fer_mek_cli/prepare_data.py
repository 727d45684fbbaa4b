"""The command line of ``scripts/prepare_data.py``: turn a data source into a saved ``DatasetDict`` plus a summary.

Light (the standard library and :mod:`fer_mek_cli` only): ``--help``, ``--version`` and a usage error answer without
importing ``datasets`` or torch; :func:`main` then runs :func:`fer_mek.data.prepare.main`, the preparation itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .arguments import add_version_argument, positive_int, unit_interval
from .defaults import SOURCE_ROOTS, SYNTHETIC_IMAGE_SIZE, SYNTHETIC_NUM_IMAGES, VAL_SPLITS

__all__ = ["DESCRIPTION", "build_parser", "main"]

#: The command line's description (``--help`` shows its first paragraph).
DESCRIPTION = """Turn RAF-DB, FER-2013, an image folder, a Hub dataset or the synthetic set into a saved ``DatasetDict``.

Writes ``save_to_disk`` output (train / validation / test; ``image`` + ``label`` with the class names) and
``fer_mek_summary.json`` (per-split class counts, MEK balance weights, split protocol, skipped bad items) into
``--output``, prints the counts table, and optionally pushes the dataset to the Hub. Load the result again with
``fer_mek.data.load_source("hub", "<output>")`` or ``datasets.load_from_disk("<output>")``.

Examples:
    python scripts/prepare_data.py --output data/synthetic
    python scripts/prepare_data.py --source rafdb --root ~/data/RAF-DB/basic --output data/rafdb
    python scripts/prepare_data.py --source fer2013 --root ~/data/fer2013.csv --output data/fer2013 --skip-bad
    python scripts/prepare_data.py --source folder --root ~/data/AffectNet --label-mapping '{"contempt": null}' \\
        --output data/affectnet7 --push-to-hub me/affectnet7 --private
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", choices=sorted(SOURCE_ROOTS), default="synthetic", help="data source (default: synthetic)"
    )
    parser.add_argument("--root", help="; ".join(f"{name}: {text}" for name, text in SOURCE_ROOTS.items()))
    parser.add_argument("--output", required=True, type=Path, help="folder for save_to_disk and the summary JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing saved dataset in --output")
    parser.add_argument("--val-fraction", type=unit_interval, default=0.1, help="share of train used as validation")
    parser.add_argument(
        "--val-split",
        choices=VAL_SPLITS,
        default="stratified",
        help="how validation is made from train: stratified (default), permutation (MEK-CV's NumPy permutation "
        "over the ImageFolder order) or none (no validation split)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split (and of synthetic data)")
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip bad items (listed in the summary) instead of failing"
    )
    group = parser.add_argument_group("source options")
    group.add_argument("--image-dir", help="rafdb: Image/ subfolder, 'aligned' (default) or 'original'")
    group.add_argument(
        "--test-split",
        help="fer2013: PrivateTest (CSV default), PublicTest or PublicTest+PrivateTest (the image-folder release's "
        "test/); hub: test split name",
    )
    group.add_argument("--label-names", help="folder/hub: class names in index order (comma list) or a label set name")
    group.add_argument("--label-mapping", help="folder/hub: JSON {source: target|null}, a JSON file, or a=b,c= pairs")
    group.add_argument(
        "--test-fraction", type=unit_interval, help="folder/hub: carve a stratified test split when there is none"
    )
    group.add_argument("--num-images", type=positive_int, help=f"synthetic: total images (default {SYNTHETIC_NUM_IMAGES})")
    group.add_argument("--image-size", type=positive_int, help=f"synthetic: image side in pixels (default {SYNTHETIC_IMAGE_SIZE})")
    group.add_argument("--balanced", action="store_true", help="synthetic: equal class sizes instead of RAF-DB's")
    hub = parser.add_argument_group("Hub upload")
    hub.add_argument("--push-to-hub", metavar="REPO", help="also push the dataset (and the summary) to this Hub repo")
    hub.add_argument("--private", action="store_true", help="create the Hub repo as private")
    add_version_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scripts/prepare_data.py``; returns the exit status (:func:`fer_mek.data.prepare.main`: 0, or 2 with a
    one-line error)."""
    build_parser().parse_args(argv)  # --help, --version and usage errors answer here, before datasets loads
    from fer_mek.data.prepare import main as prepare

    return prepare(argv)

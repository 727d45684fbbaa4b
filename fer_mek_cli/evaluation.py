"""The command line of ``scripts/eval.py``: evaluate a fer-mek model on a dataset split.

Light (the standard library and :mod:`fer_mek_cli` only): ``--help``, ``--version`` and a usage error answer without
importing torch; :func:`main` then runs :func:`fer_mek.evaluation.cli_main`, the evaluation itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .arguments import add_version_argument, non_negative_int, positive_int, unit_interval
from .defaults import FER2013_TEST_SPLITS, SOURCE_ROOTS, SYNTHETIC_IMAGE_SIZE, SYNTHETIC_NUM_IMAGES, VAL_SPLITS
from .serving import add_serving_arguments

__all__ = ["DESCRIPTION", "build_parser", "main"]

#: The command line's description (``--help``).
DESCRIPTION = """Evaluate a fer-mek model on a dataset split: accuracy, mean-class accuracy, per-class recall, macro-F1,
confusion.

Examples:
    python scripts/eval.py --model runs/synthetic-mek/best                       # synthetic test split
    python scripts/eval.py --model runs/rafdb/best --source rafdb --data-root RAF-DB/basic --tta flip
    python scripts/eval.py --model user/fer-mek --source fer2013 --data-root fer2013.csv --tta tencrop \\
        --output metrics.json --predictions predictions.csv

The dataset options (source, root, split fraction and seed, synthetic set size) default to those of the training run
when ``--model`` is a run's ``best/`` or ``last/`` folder (read from the run's ``train_config.yaml``), so that the
split evaluated is the run's; options given on the command line win.

The model is served as its serving settings say (its preprocessor_config.json): grey-scale and CLAHE of every image
when they are on, and its default test-time augmentation; the options under "serving settings" override them.
--detect-faces crops every image to its largest face (MTCNN) with the model's face geometry, as a test pipeline
that runs a face detector does (e.g. MEK-CV's webcam checkpoint, tested on face crops with CLAHE); an image without a
detected face is used whole, as MEK-CV's FaceCrop does. The standard RAF-DB and FER-2013 test sets are face crops
already: evaluate them without --detect-faces.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line options; dataset options default to ``None`` (the run's value, else the default)."""
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_argument(parser)
    parser.add_argument("--model", required=True, help="a saved model folder (e.g. RUN/best) or a Hub model id")
    parser.add_argument("--source", choices=tuple(SOURCE_ROOTS), default=None, help="dataset source (default: the run's, else synthetic)")
    parser.add_argument("--data-root", default=None, help="dataset file, folder or Hub id (all sources but synthetic; default: the run's)")
    parser.add_argument("--split", choices=("test", "validation", "train"), default="test", help="split (default: test)")
    parser.add_argument("--val-fraction", type=unit_interval, default=None, help="validation fraction used in training (default: the run's, else 0.1)")
    parser.add_argument("--split-seed", type=int, default=None, help="split seed used in training (default: the run's, else 0)")
    parser.add_argument("--val-split", choices=VAL_SPLITS, default=None, help="how training made the validation split: stratified, permutation (MEK-CV) or none (default: the run's, else stratified)")
    parser.add_argument("--fer2013-test", choices=FER2013_TEST_SPLITS, default=None, help="fer2013 CSV: PrivateTest, PublicTest or PublicTest+PrivateTest (the 7,178 test images MEK-CV reports on) (default: the run's, else PrivateTest)")
    parser.add_argument("--synthetic-images", type=positive_int, default=None, help=f"synthetic source: number of images (default: the run's, else the synthetic set's {SYNTHETIC_NUM_IMAGES})")
    parser.add_argument("--synthetic-image-size", type=positive_int, default=None, help=f"synthetic source: image side (default: the run's, else the synthetic set's {SYNTHETIC_IMAGE_SIZE})")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="batch size (default: 128)")
    parser.add_argument("--num-workers", type=non_negative_int, default=2, help="DataLoader workers (default: 2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    parser.add_argument("--output", default=None, help="write the metrics to this JSON file")
    parser.add_argument("--predictions", default=None,
                        help="write every image's class probabilities to this .csv or .jsonl file")
    parser.add_argument("--detect-faces", action="store_true",
                        help="crop every image to its largest face (MTCNN) with the model's face geometry (--margin, "
                        "--square, --clip, --align override it); an image without a face is used whole")
    add_serving_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scripts/eval.py``; returns the exit status (:func:`fer_mek.evaluation.cli_main`: 0, 1 for an error, 2
    for a usage error or a model or device that is not there)."""
    build_parser().parse_args(argv)  # --help, --version and usage errors answer here, before torch loads
    from fer_mek.evaluation import cli_main

    return cli_main(None if argv is None else list(argv))

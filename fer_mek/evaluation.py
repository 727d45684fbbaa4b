"""Evaluation of a saved model on a dataset split, as the command line ``scripts/eval.py`` runs it.

Moved from ``scripts/evaluate.py`` (renamed: a script named ``evaluate`` shadowed the ``evaluate`` package). A run's
``best/`` or ``last/`` folder is evaluated on the run's own split: its data options come from the run
(:func:`fer_mek.runs.run_config_of_model`, :class:`fer_mek.runs.DataOptions`), the command line overrides them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from .data.common import VAL_SPLITS
from .data.fer2013 import FER2013_TEST_SPLITS as FER2013_TESTS
from .data.sources import SOURCES
from .data.synthetic import SYNTHETIC_IMAGE_SIZE, SYNTHETIC_NUM_IMAGES
from .runs import DataOptions, run_config_of_model
from .tta import TTA_MODES, tta_probabilities

__all__ = ["DESCRIPTION", "build_parser", "cli_main", "data_options", "main"]

#: The command line's description (``--help``).
DESCRIPTION = """Evaluate a fer-mek model on a dataset split: accuracy, mean-class accuracy, per-class recall, macro-F1,
confusion.

Examples:
    python scripts/eval.py --model runs/synthetic-mek/best                       # synthetic test split
    python scripts/eval.py --model runs/rafdb/best --source rafdb --data-root RAF-DB/basic --tta flip
    python scripts/eval.py --model user/fer-mek --source fer2013 --data-root fer2013.csv --tta tencrop \\
        --output metrics.json

The dataset options (source, root, split fraction and seed, synthetic set size) default to those of the training run
when ``--model`` is a run's ``best/`` or ``last/`` folder (read from the run's ``train_config.yaml``), so that the
split evaluated is the run's; options given on the command line win.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line options; dataset options default to ``None`` (the run's value, else the default)."""
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved model folder (e.g. RUN/best) or a Hub model id")
    parser.add_argument("--source", choices=tuple(SOURCES), default=None, help="dataset source (default: the run's, else synthetic)")
    parser.add_argument("--data-root", default=None, help="dataset file, folder or Hub id (all sources but synthetic; default: the run's)")
    parser.add_argument("--split", choices=("test", "validation", "train"), default="test", help="split (default: test)")
    parser.add_argument("--val-fraction", type=float, default=None, help="validation fraction used in training (default: the run's, else 0.1)")
    parser.add_argument("--split-seed", type=int, default=None, help="split seed used in training (default: the run's, else 0)")
    parser.add_argument("--val-split", choices=VAL_SPLITS, default=None, help="how training made the validation split: stratified, permutation (MEK-CV) or none (default: the run's, else stratified)")
    parser.add_argument("--fer2013-test", choices=FER2013_TESTS, default=None, help="fer2013 CSV: PrivateTest, PublicTest or PublicTest+PrivateTest (the 7,178 test images MEK-CV reports on) (default: the run's, else PrivateTest)")
    parser.add_argument("--synthetic-images", type=int, default=None, help=f"synthetic source: number of images (default: the run's, else the synthetic set's {SYNTHETIC_NUM_IMAGES})")
    parser.add_argument("--synthetic-image-size", type=int, default=None, help=f"synthetic source: image side (default: the run's, else the synthetic set's {SYNTHETIC_IMAGE_SIZE})")
    parser.add_argument("--tta", choices=TTA_MODES, default="none", help="test-time augmentation (default: none)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (default: 2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--output", default=None, help="write the metrics to this JSON file")
    return parser


def data_options(args: argparse.Namespace) -> DataOptions:
    """The split to evaluate: the run's data options when ``--model`` is a run's folder (else the defaults), with the
    options given on the command line applied over them."""
    options = DataOptions.from_config(run_config_of_model(args.model))
    return options.replace(source=args.source, data_root=args.data_root, val_fraction=args.val_fraction,
                           split_seed=args.split_seed, synthetic_images=args.synthetic_images,
                           synthetic_image_size=args.synthetic_image_size, val_split=args.val_split,
                           fer2013_test=args.fer2013_test)


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate ``--model`` on a split; print the metrics table and return the metrics (also ``--output``).

    Raises:
        ValueError: A source without its data root, or a model whose classes differ from the dataset's.
    """
    from torch.utils.data import DataLoader
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from .data import collate_fn, make_transform
    from .io import atomic_write_text
    from .metrics import compute_metrics, format_metrics_table

    args = build_parser().parse_args(argv)
    options = data_options(args)
    dataset = options.load()[args.split]
    if len(dataset) == 0 and args.split == "validation" and options.val_split == "none":
        raise ValueError(f"{args.model}: its run trained without a validation split (val_split none): evaluate "
                         "--split test (or train)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = AutoModelForImageClassification.from_pretrained(args.model).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(args.model)
    model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    data_labels = list(dataset.features["label"].names)
    if data_labels != model_labels:
        raise ValueError(f"the model's classes {model_labels} differ from the dataset's {data_labels} (names or "
                         "order); evaluate on the label set the model was trained with")

    loader = DataLoader(dataset.with_transform(make_transform(processor, train=False, with_flip=False)),
                        batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate_fn)
    predictions, references = [], []
    for batch in loader:
        probabilities = tta_probabilities(model, batch["pixel_values"].to(device), args.tta)
        predictions.append(probabilities.argmax(-1).cpu())
        references.append(batch["labels"])
    metrics = compute_metrics(torch.cat(predictions), torch.cat(references), model_labels)
    metrics.update({"model": str(args.model), "source": options.source, "split": args.split, "tta": args.tta})

    print(f"{args.model} on {options.source} {args.split} ({metrics['num_samples']} images, TTA {args.tta}):")
    print(format_metrics_table(metrics, model_labels))
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(metrics, indent=2))
        print(f"metrics written to {args.output}")
    return metrics


def cli_main(argv: list[str] | None = None) -> int:
    """The command line (``scripts/eval.py``): :func:`main` with its errors as one ``error: ...`` line."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0

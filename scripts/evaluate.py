#!/usr/bin/env python
"""Evaluate a fer-mek model on a dataset split: accuracy, mean-class accuracy, per-class recall, macro-F1, confusion.

Examples:
    python scripts/evaluate.py --model runs/synthetic-mek/best                       # synthetic test split
    python scripts/evaluate.py --model runs/rafdb/best --source rafdb --data-root RAF-DB/basic --tta flip
    python scripts/evaluate.py --model user/fer-mek --source fer2013 --data-root fer2013.csv --tta tencrop \\
        --output metrics.json

The dataset options (source, root, split fraction and seed, synthetic set size) default to those of the training run
when ``--model`` is a run's ``best/`` or ``last/`` folder (read from the run's ``train_config.yaml``), so that the
split evaluated is the run's; options given on the command line win.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

# scripts/evaluate.py would shadow the `evaluate` package that fer_mek.metrics imports: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from fer_mek.tta import TTA_MODES, tta_probabilities  # noqa: E402

SOURCES = ("synthetic", "rafdb", "fer2013", "folder", "hub")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved model folder (e.g. RUN/best) or a Hub model id")
    parser.add_argument("--source", choices=SOURCES, default=None, help="dataset source (default: the run's, else synthetic)")
    parser.add_argument("--data-root", default=None, help="dataset file, folder or Hub id (all sources but synthetic; default: the run's)")
    parser.add_argument("--split", choices=("test", "validation", "train"), default="test", help="split (default: test)")
    parser.add_argument("--val-fraction", type=float, default=None, help="validation fraction used in training (default: the run's, else 0.1)")
    parser.add_argument("--split-seed", type=int, default=None, help="split seed used in training (default: the run's, else 0)")
    parser.add_argument("--synthetic-images", type=int, default=None, help="synthetic source: number of images (default: the run's, else the default recipe's 12000)")
    parser.add_argument("--synthetic-image-size", type=int, default=None, help="synthetic source: image side (default: the run's, else the default recipe's 64)")
    parser.add_argument("--tta", choices=TTA_MODES, default="none", help="test-time augmentation (default: none)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (default: 2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--output", default=None, help="write the metrics to this JSON file")
    args = parser.parse_args(argv)
    fill_from_run(args)
    return args


#: Dataset options read from a run's train_config.yaml, with the fallback when there is no run.
RUN_OPTIONS = {"source": "synthetic", "data_root": None, "val_fraction": 0.1, "split_seed": 0,
               "synthetic_images": 12000, "synthetic_image_size": 64}


def fill_from_run(args: argparse.Namespace) -> None:
    """Options not given on the command line: from ``<model>/../train_config.yaml`` when the model is a run's
    folder, else :data:`RUN_OPTIONS`."""
    run_config: dict[str, Any] = {}
    saved = Path(args.model).expanduser().parent / "train_config.yaml"
    if Path(args.model).expanduser().is_dir() and saved.is_file():
        import yaml

        run_config = yaml.safe_load(saved.read_text()) or {}
    for name, fallback in RUN_OPTIONS.items():
        if getattr(args, name) is None:
            setattr(args, name, run_config.get(name, fallback))


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict[str, Any]:
    from torch.utils.data import DataLoader
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from fer_mek.data import collate_fn, load_source, make_transform
    from fer_mek.io import atomic_write_text
    from fer_mek.metrics import compute_metrics, format_metrics_table

    args = parse_args(argv)
    if args.source != "synthetic" and not args.data_root:
        raise ValueError(f"--source {args.source} needs --data-root")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = AutoModelForImageClassification.from_pretrained(args.model).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(args.model)
    model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    kwargs: dict[str, Any] = {"val_fraction": args.val_fraction, "seed": args.split_seed}
    if args.source == "synthetic":
        kwargs.update(num_images=args.synthetic_images, image_size=args.synthetic_image_size)
    dataset = load_source(args.source, args.data_root, **kwargs)[args.split]
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
    metrics.update({"model": str(args.model), "source": args.source, "split": args.split, "tta": args.tta})

    print(f"{args.model} on {args.source} {args.split} ({metrics['num_samples']} images, TTA {args.tta}):")
    print(format_metrics_table(metrics, model_labels))
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(metrics, indent=2))
        print(f"metrics written to {args.output}")
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"error: {error}")

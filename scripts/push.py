#!/usr/bin/env python
"""Publish a training run on the Hugging Face Hub: ``python scripts/push.py --run RUN_DIR --repo-id USER/NAME``.

The run's checkpoint becomes a model repository that loads with ``AutoModelForImageClassification`` (with the
fer-mek package, or with ``trust_remote_code=True`` without it) and ``pipeline("image-classification")``:

    model.safetensors, config.json, preprocessor_config.json, the model code (*.py), README.md (the model card,
    generated from MODEL_CARD.md and results.json), confusion_matrix.png, training_curves.png, results.json

Before uploading, the folder is reloaded both ways and must give the run's logits on a few validation images;
otherwise nothing is pushed. Runs without test results are refused unless --allow-no-results.

Log in first (`hf auth login`) or set HF_TOKEN; the token is never printed or written. Examples:

    python scripts/push.py --run runs/rafdb-resnet18-imagenet --repo-id alice/fer-mek-rafdb-resnet18
    python scripts/push.py --run runs/fer-mek --repo-id alice/fer-mek-demo --dry-run --output-dir hub-preview
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

# scripts/evaluate.py would shadow the `evaluate` package that fer_mek imports: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``push.py``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, metavar="RUN_DIR",
                        help="the run folder (scripts/train.py --output-dir), or a save_pretrained folder")
    parser.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the Hub model id, e.g. alice/fer-mek")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="which checkpoint of the run to publish (default: best, the one evaluated on test)")
    parser.add_argument("--private", action="store_true",
                        help="create the repository private (an existing repository keeps its visibility)")
    parser.add_argument("--revision", metavar="BRANCH", help="branch to commit to, created if missing (default: main)")
    parser.add_argument("--dry-run", action="store_true",
                        help="write the folder that would be uploaded to --output-dir and stop (no network)")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="where to write the folder (required with --dry-run; otherwise a record of the upload)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    parser.add_argument("--allow-no-results", action="store_true",
                        help="publish a checkpoint without test results (the card then claims no accuracy)")
    parser.add_argument("--commit-message", metavar="TEXT", help="commit title (default names the run)")
    parser.add_argument("--card-template", metavar="PATH",
                        help="the human-written part of the card (default: MODEL_CARD.md of the fer-mek repository)")
    parser.add_argument("--license", metavar="ID",
                        help="licence of the weights, overriding the one derived from the dataset (e.g. apache-2.0 "
                             "for a model trained on your own data)")
    parser.add_argument("--verify-on", choices=("auto", "synthetic"), default="auto",
                        help="images of the pre-upload check: the run's validation images when available (auto), "
                             "or generated synthetic faces")
    parser.add_argument("--endpoint", metavar="URL", help="Hub endpoint (default: $HF_ENDPOINT or huggingface.co)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 1 when publishing was refused or failed)."""
    args = build_parser().parse_args(argv)
    from fer_mek.publish import PublishError, publish

    try:
        publish(
            args.run,
            args.repo_id,
            checkpoint=args.checkpoint,
            private=args.private,
            revision=args.revision,
            dry_run=args.dry_run,
            output_dir=args.output_dir,
            overwrite=args.overwrite,
            allow_no_results=args.allow_no_results,
            commit_message=args.commit_message,
            card_template=args.card_template,
            license=args.license,
            verify_on=args.verify_on,
            endpoint=args.endpoint,
        )
    except (PublishError, OSError) as error:  # OSError: the output folder cannot be written, for instance
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

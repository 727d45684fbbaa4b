"""The command line of ``scripts/push.py``: publish a training run, or a converted checkpoint, on the Hugging Face Hub.

Light (the standard library and :mod:`fer_mek_cli` only): ``--help``, ``--version`` and a usage error answer without
importing torch or huggingface_hub; :func:`main` then runs :func:`fer_mek.publish.main`, the publishing itself.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from .arguments import add_version_argument
from .defaults import BEST, LAST

__all__ = ["DESCRIPTION", "build_parser", "main", "repository_card_template"]

#: The command line's description (``--help``).
DESCRIPTION = """\
Publish a training run, or a converted checkpoint, on the Hugging Face Hub:
``python scripts/push.py --run RUN_DIR --repo-id USER/NAME``.

The run's checkpoint becomes a model repository that loads with ``AutoModelForImageClassification`` (with the
fer-mek package, or with ``trust_remote_code=True`` without it) and ``pipeline("image-classification")``:

    model.safetensors, config.json, preprocessor_config.json, the model code (*.py), README.md (the model card,
    generated from MODEL_CARD.md and results.json), confusion_matrix.png, training_curves.png, results.json

The model code is the installed fer-mek's own, never the run folder's copy (which is neither run nor uploaded; a
note names each file of it that differs). Local paths (data root, run folder, home directory, any absolute path in
a message) are reduced in every text file and in the commit message.

A converted checkpoint (scripts/convert_checkpoint.py's output: a model folder with conversion.json) is published
with its conversion.json, and its card gives the figures its source reports, marked unverified (not measured by
fer-mek), with the source's training and serving settings and the command that re-measures them.

Before uploading, the folder is reloaded both ways and must give the run's logits on a few validation images
(generated faces for a folder without a run); otherwise nothing is pushed. Runs without test results (and converted
checkpoints whose source reports none) are refused unless --allow-no-results.

Log in first (`hf auth login`) or set HF_TOKEN; the token is never printed or written. Examples:

    python scripts/push.py --run runs/rafdb-resnet18-imagenet --repo-id alice/fer-mek-rafdb-resnet18
    python scripts/push.py --run runs/fer-mek --repo-id alice/fer-mek-demo --dry-run --output-dir hub-preview
    python scripts/push.py --run mek-resnet18-rafdb --repo-id alice/mek-resnet18-rafdb-msceleb   # a converted folder
"""


def build_parser(template: str | os.PathLike | None = None) -> argparse.ArgumentParser:
    """The command-line options (``template``: the default of ``--card-template``; without it, the card template
    packaged with fer-mek)."""
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, metavar="RUN_DIR",
                        help="the run folder (scripts/train.py --output-dir), a converted checkpoint folder (with "
                             "conversion.json), or a save_pretrained folder")
    parser.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the Hub model id, e.g. alice/fer-mek")
    parser.add_argument("--checkpoint", choices=(BEST, LAST), default=BEST,
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
                        help="publish a checkpoint without test results (the card then claims no accuracy); a "
                             "converted checkpoint whose conversion.json reports its source's figures needs no flag")
    parser.add_argument("--commit-message", metavar="TEXT", help="commit title (default names the run)")
    parser.add_argument("--card-template", metavar="PATH", default=None if template is None else str(template),
                        help="the human-written part of the card (default: "
                             + ("the MODEL_CARD.md packaged with fer-mek" if template is None else "%(default)s")
                             + ")")
    parser.add_argument("--license", metavar="ID",
                        help="licence of the weights, overriding the one derived from the dataset (e.g. apache-2.0 "
                             "for a model trained on your own data)")
    parser.add_argument("--verify-on", choices=("auto", "synthetic"), default="auto",
                        help="images of the pre-upload check: the run's validation images when available (auto), "
                             "or generated synthetic faces")
    parser.add_argument("--endpoint", metavar="URL", help="Hub endpoint (default: $HF_ENDPOINT or huggingface.co)")
    add_version_argument(parser)
    return parser


def repository_card_template(script: str | os.PathLike) -> Path:
    """The ``MODEL_CARD.md`` of the repository whose ``scripts/`` holds ``script``: the default card template of
    ``scripts/push.py`` (``main(template=repository_card_template(__file__))``)."""
    return Path(script).resolve().parents[1] / "MODEL_CARD.md"


def main(argv: Sequence[str] | None = None, template: str | os.PathLike | None = None) -> int:
    """Run ``scripts/push.py``; returns the exit status (:func:`fer_mek.publish.main`: 0, 1 when publishing was
    refused or failed, 2 for a usage error).

    Args:
        argv: The arguments (default ``sys.argv[1:]``).
        template: The default card template (``scripts/push.py`` passes the repository's ``MODEL_CARD.md``); without
            it, the template packaged with fer-mek.
    """
    build_parser(template).parse_args(argv)  # --help, --version and usage errors answer here, before torch loads
    from fer_mek.publish import main as publish

    return publish(argv, template=template)

"""The command line of ``scripts/demo.py``: use a trained fer-mek model the way a user would.

Light (the standard library and :mod:`fer_mek_cli` only): ``--help``, ``--version`` and a usage error answer without
importing torch; :func:`main` then runs :func:`fer_mek.demo.main`, the demo itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .arguments import add_version_argument, positive_int

__all__ = ["DEFAULT_MODEL", "DESCRIPTION", "build_parser", "main"]

#: The command line's description (``--help``).
DESCRIPTION = """Use a trained fer-mek model the way a user would: reload it through the transformers Auto classes and the
image-classification pipeline, check the two agree, and classify freshly drawn synthetic faces it has never seen.

``make demo`` runs the default training (``accelerate launch scripts/train.py``) and then this script on its
``best/`` folder.
"""
#: The folder ``make demo``'s training writes its best model to.
DEFAULT_MODEL = "runs/synthetic-mek/best"


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    add_version_argument(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"a saved model folder or Hub id (default: {DEFAULT_MODEL})")
    parser.add_argument("--per-class", type=positive_int, default=4, help="fresh faces drawn per class (default: 4)")
    parser.add_argument(
        "--face-size", type=positive_int, default=112, help="side of the drawn faces in pixels (default: 112)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scripts/demo.py``; returns the exit status (:func:`fer_mek.demo.main`: 0, 1 when the pipeline and the
    model disagree, 2 when there is no model)."""
    build_parser().parse_args(argv)  # --help, --version and usage errors answer here, before torch loads
    from fer_mek.demo import main as demo

    return demo(None if argv is None else list(argv))

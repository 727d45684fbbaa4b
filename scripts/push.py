#!/usr/bin/env python
"""Publish a training run on the Hugging Face Hub: ``python scripts/push.py --run RUN_DIR --repo-id USER/NAME``.

The command line of :func:`fer_mek.publish.main` (``--help`` lists the options); the card template is this
repository's ``MODEL_CARD.md``. Log in first (`hf auth login`) or set HF_TOKEN. Examples:

    python scripts/push.py --run runs/rafdb-resnet18-imagenet --repo-id alice/fer-mek-rafdb-resnet18
    python scripts/push.py --run runs/fer-mek --repo-id alice/fer-mek-demo --dry-run --output-dir hub-preview
"""

from pathlib import Path

from fer_mek.publish import main

if __name__ == "__main__":
    raise SystemExit(main(template=Path(__file__).resolve().parents[1] / "MODEL_CARD.md"))

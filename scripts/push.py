#!/usr/bin/env python
"""Publish a training run on the Hugging Face Hub: ``python scripts/push.py --run RUN_DIR --repo-id USER/NAME``.

The command line of :func:`fer_mek.publish.main` (``--help`` lists the options, :mod:`fer_mek_cli.push`); the card
template is this repository's ``MODEL_CARD.md``. Log in first (`hf auth login`) or set HF_TOKEN. Examples:

    python scripts/push.py --run runs/rafdb-resnet18-imagenet --repo-id alice/fer-mek-rafdb-resnet18
    python scripts/push.py --run runs/fer-mek --repo-id alice/fer-mek-demo --dry-run --output-dir hub-preview
"""

from fer_mek_cli.push import main, repository_card_template

if __name__ == "__main__":
    raise SystemExit(main(template=repository_card_template(__file__)))

"""``python -m fer_mek.train [options]``: the training command line (the same as ``scripts/train.py``)."""

from .command import cli_main

raise SystemExit(cli_main())

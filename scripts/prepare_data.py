#!/usr/bin/env python
"""Turn RAF-DB, FER-2013, an image folder, a Hub dataset or the synthetic set into a saved ``DatasetDict``:
``python scripts/prepare_data.py --source rafdb --root ~/data/RAF-DB/basic --output data/rafdb``.

Writes ``save_to_disk`` output and ``fer_mek_summary.json`` (class counts, balance weights, split protocol, skipped
items) into ``--output``; ``--push-to-hub REPO`` also uploads them. ``--help`` lists the options and examples
(:mod:`fer_mek_cli.prepare_data`); the logic is :func:`fer_mek.data.prepare.main`.
"""

from fer_mek_cli.prepare_data import main

if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Use a trained fer-mek model the way a user would: ``python scripts/demo.py --model runs/synthetic-mek/best``.

Reloads it through the transformers Auto classes and the image-classification pipeline, checks the two agree, and
classifies freshly drawn synthetic faces it has never seen. ``make demo`` runs the default training (``accelerate
launch scripts/train.py``) and then this script on its ``best/`` folder. The options are :mod:`fer_mek_cli.demo`'s,
the logic is :mod:`fer_mek.demo`.
"""

from fer_mek_cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Evaluate a fer-mek model on a dataset split: ``python scripts/eval.py --model RUN/best [--tta flip] [options]``.

Accuracy, mean-class accuracy, per-class recall, macro-F1 and the confusion matrix; a run's ``best/`` or ``last/``
folder is evaluated on the run's own split. ``--help`` lists the options (:mod:`fer_mek_cli.evaluation`); the logic
is :mod:`fer_mek.evaluation`.
"""

from fer_mek_cli.evaluation import main

if __name__ == "__main__":
    raise SystemExit(main())

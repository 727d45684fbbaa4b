#!/usr/bin/env python
"""Evaluate a fer-mek model on a dataset split: ``python scripts/eval.py --model RUN/best [--tta flip] [options]``.

Accuracy, mean-class accuracy, per-class recall, macro-F1 and the confusion matrix; a run's ``best/`` or ``last/``
folder is evaluated on the run's own split. ``--help`` lists the options; the logic is :mod:`fer_mek.evaluation`.
"""

from fer_mek.evaluation import cli_main

if __name__ == "__main__":
    raise SystemExit(cli_main())

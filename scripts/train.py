#!/usr/bin/env python
"""Train a MEK facial-expression classifier: ``accelerate launch scripts/train.py [--recipe NAME] [options]``.

With no arguments it runs the ``synthetic`` recipe (MEK on the embedded synthetic expression set) into
``runs/synthetic-mek``; ``--help`` lists every option and the packaged recipes' folder. The logic is
:mod:`fer_mek.train` (``python -m fer_mek.train`` is the same command line; from Python, ``fer_mek.train.main``).
Exit status: 0, 1 on a bad option, unreadable data or an unwritable folder (one ``error: ...`` line), 130 on Ctrl-C
and 143 on SIGTERM (a checkpoint was saved: continue with ``--resume``).
"""

from fer_mek_cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())

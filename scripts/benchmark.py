#!/usr/bin/env python
"""Training, inference and data throughput of fer-mek in one run: a table on stdout and a JSON file.

    python scripts/benchmark.py                                   # limit, loop, reference, inference figures
    python scripts/benchmark.py --only data,predict               # data sources; fer-mek predict in detail

``--help`` describes every figure and option. The logic is :mod:`fer_mek.benchmark` (from Python,
``fer_mek.benchmark.main``); this script passes its checkout so that the results name the source commit.
Exit status: 0, or 1 with one ``error: ...`` line when a figure cannot be measured.
"""

from pathlib import Path

from fer_mek.benchmark import cli_main

if __name__ == "__main__":
    raise SystemExit(cli_main(source_dir=Path(__file__).resolve().parents[1]))

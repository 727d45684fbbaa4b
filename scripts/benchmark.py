#!/usr/bin/env python
"""Training, inference and data throughput of fer-mek in one run: a table on stdout and a JSON file.

    python scripts/benchmark.py                                   # limit, loop, reference, inference figures
    python scripts/benchmark.py --only data,predict               # data sources; fer-mek predict in detail

``--help`` describes every figure and option (:mod:`fer_mek_cli.benchmark`). The logic is :mod:`fer_mek.benchmark`
(from Python, ``fer_mek.benchmark.main``); this script passes its checkout so that the results name the source commit.
Exit status: 0, 1 with one ``error: ...`` line when a figure cannot be measured, 2 for a usage error.
"""

from fer_mek_cli.benchmark import checkout_of, main

if __name__ == "__main__":
    raise SystemExit(main(source_dir=checkout_of(__file__)))

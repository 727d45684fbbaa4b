#!/usr/bin/env python
"""Decode + augment throughput (images/second) of every data source, on fixtures written in the real layouts.

For each source a small dataset is written to a temporary folder in its real on-disk layout (RAF-DB distribution,
fer2013.csv, FER-2013 folders, a generic image folder, a ``save_to_disk`` folder for ``hub``, the synthetic cache),
loaded with ``fer_mek.data.load_source`` (timed: scan + image verification + split), then read through
``with_transform`` in batches: decode only, decode + training augmentation + MEK flip pair, decode + evaluation
preprocessing. One process with ``torch.set_num_threads(1)``; with ``--workers N`` a DataLoader with N workers also
times the training pipeline (after its first batch). A benchmark, not a test: the figures depend on the machine
and its load.

    python scripts/benchmark_data.py                      # small default run (~10 s on 2 CPU cores)
    python scripts/benchmark_data.py --num-images 1000 --image-size 224 --workers 2 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from fer_mek import MEKImageProcessor
from fer_mek.data import RAFDB_TRAIN_COUNTS, collate_fn, load_source, make_transform
from fer_mek.data.fixtures import write_fer2013_csv, write_fer2013_folders, write_image_folder, write_rafdb
from fer_mek.labels import RAFDB_LABELS

ALL_SOURCES = ("rafdb", "fer2013-csv", "fer2013-folders", "folder", "hub", "synthetic")


def _counts(total: int, proportions: Sequence[int] = RAFDB_TRAIN_COUNTS) -> list[int]:
    """At least 3 per class, the rest in proportion."""
    k = len(proportions)
    extra = max(total - 3 * k, 0)
    return [3 + (extra * p) // sum(proportions) for p in proportions]


def build_fixture(source: str, base: Path, num_images: int) -> tuple[str, str | None, dict[str, Any]]:
    """Write ``source``'s fixture under ``base``; return ``(load_source name, root, options)``."""
    train = _counts(int(num_images * 0.8))
    test = _counts(num_images - sum(train))
    if source == "rafdb":
        return "rafdb", str(write_rafdb(base / "rafdb", train, test, size=100)), {}
    if source == "fer2013-csv":
        # The CSV is in FER2013_LABELS order; the class proportions only need to be plausible here.
        usage = {"Training": train, "PublicTest": test, "PrivateTest": test}
        return "fer2013", str(write_fer2013_csv(base / "fer" / "fer2013.csv", usage)), {}
    if source == "fer2013-folders":
        return "fer2013", str(write_fer2013_folders(base / "fer_folders", train, test)), {}
    if source == "folder":
        return "folder", str(write_image_folder(base / "folder", list(RAFDB_LABELS), train, test, size=96)), {}
    if source == "hub":
        data = load_source("rafdb", str(write_rafdb(base / "rafdb_for_hub", train, test, size=100)))
        data.save_to_disk(str(base / "hub"))
        return "hub", str(base / "hub"), {}
    if source == "synthetic":
        return "synthetic", None, {"num_images": num_images, "cache_dir": str(base / "cache")}
    raise ValueError(f"unknown source {source!r}; choose from {ALL_SOURCES}")


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _time_batches(dataset: Any, batch_size: int, limit: int, fetch: Callable[[Any, list[int]], Any]) -> float:
    n = min(limit, len(dataset))
    start = time.perf_counter()
    for first in range(0, n, batch_size):
        fetch(dataset, list(range(first, min(first + batch_size, n))))
    return _rate(n, time.perf_counter() - start)


def benchmark_source(source: str, base: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Load one source and time its decode / training / evaluation pipelines."""
    name, root, options = build_fixture(source, base, args.num_images)
    start = time.perf_counter()
    data = load_source(name, root, **options)
    load_s = time.perf_counter() - start
    train = data["train"]
    processor = MEKImageProcessor(size={"height": args.image_size, "width": args.image_size})
    decode = _time_batches(train, args.batch_size, args.limit, lambda ds, idx: [im.load() for im in ds[idx]["image"]])
    train_tf = train.with_transform(make_transform(processor, train=True, with_flip=True))
    augment = _time_batches(train_tf, args.batch_size, args.limit, lambda ds, idx: collate_fn(ds.__getitems__(idx)))
    eval_tf = train.with_transform(make_transform(processor, train=False))
    evaluate = _time_batches(eval_tf, args.batch_size, args.limit, lambda ds, idx: collate_fn(ds.__getitems__(idx)))
    row = {
        "source": source,
        "rows": sum(len(s) for s in data.values()),
        "load_s": round(load_s, 3),
        "decode_img_s": round(decode, 1),
        "train_aug_flip_img_s": round(augment, 1),
        "eval_img_s": round(evaluate, 1),
    }
    if args.workers > 0:
        loader = torch.utils.data.DataLoader(
            train_tf,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            collate_fn=collate_fn,
            persistent_workers=False,
        )
        batches = iter(loader)
        next(batches)  # worker start-up is not throughput: time from the first batch on
        start = time.perf_counter()
        seen = 0
        for batch in batches:
            seen += batch["pixel_values"].shape[0]
            if seen >= args.limit:
                break
        row[f"train_loader_{args.workers}w_img_s"] = round(_rate(seen, time.perf_counter() - start), 1)
    return row


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the benchmark rows."""
    keys = list(rows[0])
    cells = [keys] + [[str(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; prints a table (and writes ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", nargs="+", choices=ALL_SOURCES, default=list(ALL_SOURCES))
    parser.add_argument("--num-images", type=int, default=300, help="images per fixture, all splits (at least 100)")
    parser.add_argument("--limit", type=int, default=200, help="training images timed per pipeline")
    parser.add_argument("--image-size", type=int, default=112, help="model input size of the transforms")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="also time a DataLoader with this many workers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.num_images < 100:
        parser.error("--num-images must be at least 100 (a stratified 10% validation split needs 7+ images)")
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer_mek_bench_") as tmp:
        for source in args.sources:
            rows.append(benchmark_source(source, Path(tmp) / source, args))
            print(f"  {source}: done", file=sys.stderr)
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": args.threads,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "timed_images": args.limit,
    }
    print(f"fer-mek data benchmark, {info}")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data figures: load, decode and augmentation rates of every data source, on fixtures in their real layouts.

For each source a small data set is written to a temporary folder in its on-disk layout (RAF-DB distribution,
``fer2013.csv``, FER-2013 folders, a generic image folder, a ``save_to_disk`` folder for ``hub``, the synthetic
cache), loaded once with :func:`fer_mek.data.load_source` (timed cold: scan + image verification + split), then read
through ``with_transform`` in batches: decode only, decode + training augmentation + MEK flip pair, decode +
evaluation preprocessing; with ``--data-workers N`` also a ``DataLoader`` with N workers over the training pipeline.
These are the per-sample pipeline (``--data-pipeline per-sample`` of the trainer). Moved from
``scripts/benchmark_data.py``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fer_mek import MEKImageProcessor
from fer_mek.data import collate_fn, load_source, make_transform
from fer_mek.data.fixtures import write_fer2013_csv, write_fer2013_folders, write_image_folder, write_rafdb
from fer_mek.labels import RAFDB_LABELS
from fer_mek_cli.benchmark import DATA_SOURCES, MIN_DATA_IMAGES  # --data-sources' choices, --data-images' least

from .fixtures import fixture_counts
from .timing import cycle, figure, measure, rate

__all__ = ["DATA_SOURCES", "MIN_DATA_IMAGES", "build_fixture", "measure_data", "measure_source"]


def build_fixture(source: str, base: Path, num_images: int) -> tuple[str, str | None, dict[str, Any]]:
    """Write ``source``'s fixture of ``num_images`` images under ``base``; return ``(load_source name, root,
    options)``. Class counts follow RAF-DB's splits (:func:`fer_mek.benchmark.fixtures.fixture_counts`)."""
    train, test = fixture_counts(num_images, test_minimum=1)
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
    raise ValueError(f"unknown data source {source!r}; choose from {','.join(DATA_SOURCES)}")


def _passes(dataset: Any, batch_size: int, limit: int,
            fetch: Callable[[Any, list[int]], Any]) -> tuple[Callable[[], None], Callable[[], None], int]:
    """A pass over the first ``limit`` rows of ``dataset`` in batches, one batch (the warm-up) and the row count."""
    count = min(limit, len(dataset))
    batches = [list(range(first, min(first + batch_size, count))) for first in range(0, count, batch_size)]

    def one_pass() -> None:
        for indices in batches:
            fetch(dataset, indices)

    return one_pass, lambda: fetch(dataset, batches[0]), count


def measure_source(source: str, base: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Load one source (cold, once) and time its decode, training and evaluation pipelines."""
    name, root, options = build_fixture(source, base, args.data_images)
    start = time.perf_counter()
    data = load_source(name, root, **options)
    load_s = time.perf_counter() - start
    rows = sum(len(split) for split in data.values())
    details = {"source": source, "rows": rows, "image_size": args.image_size, "batch_size": args.batch_size}
    figures = {f"data/{source}/load": figure([rate(rows, load_s)], f"data {source}: load (scan, verify, split; once)",
                                             pipeline="load", load_s=load_s, **details)}
    train = data["train"]
    processor = MEKImageProcessor(size={"height": args.image_size, "width": args.image_size})

    def decode(ds: Any, indices: list[int]) -> None:
        for image in ds[indices]["image"]:
            image.load()

    def transformed(ds: Any, indices: list[int]) -> None:
        collate_fn(ds.__getitems__(indices))

    pipelines = (
        ("decode", "decode", train, decode),
        ("train", "decode + train augmentation + flip pair",
         train.with_transform(make_transform(processor, train=True, with_flip=True)), transformed),
        ("eval", "decode + eval preprocessing", train.with_transform(make_transform(processor, train=False)),
         transformed),
    )
    timing = {"warmup": args.warmup, "repeats": args.repeats}
    for key, what, dataset, fetch in pipelines:
        one_pass, warm, count = _passes(dataset, args.batch_size, args.data_limit, fetch)
        figures[f"data/{source}/{key}"] = measure(one_pass, count, label=f"data {source}: {what}", warm=warm,
                                                  **timing, pipeline=key, images=count, **details)
    if args.data_workers > 0:
        figures[f"data/{source}/loader"] = measure_loader(pipelines[1][2], source, args, details)
    return figures


def measure_loader(dataset: Any, source: str, args: argparse.Namespace, details: dict[str, Any]) -> dict[str, Any]:
    """A ``DataLoader`` with ``--data-workers`` workers over the training pipeline: each repetition pulls batches
    for at least ``--data-limit`` images; the warm-up batches include the workers' start-up."""
    batch_size = min(args.batch_size, len(dataset))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.data_workers, collate_fn=collate_fn, persistent_workers=True)
    per_pass = math.ceil(min(args.data_limit, len(dataset)) / batch_size)
    batches = cycle(loader)
    try:
        return measure(lambda: next(batches), batch_size, calls=per_pass, warmup=max(args.warmup, 1),
                       repeats=args.repeats, label=f"data {source}: train pipeline, DataLoader "
                       f"{args.data_workers} workers", pipeline="loader", workers=args.data_workers,
                       images=per_pass * batch_size, **{**details, "batch_size": batch_size})
    finally:
        batches.close()
        del loader


def measure_data(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The figures of every source of ``--data-sources``, fixtures in a temporary folder removed afterwards."""
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fer_mek_bench_") as tmp:
        for source in args.data_sources:
            figures.update(measure_source(source, Path(tmp) / source, args))
            print(f"  data {source}: done", file=sys.stderr, flush=True)
    return figures

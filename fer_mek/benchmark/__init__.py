"""Training, inference and data throughput of fer-mek, side by side in one run: a table on stdout and a JSON file.

    python scripts/benchmark.py                                   # RAF-DB-sized data, resnet18 at 224 px, batch 64
    python scripts/benchmark.py --only data --image-size 112 --batch-size 32 --threads 1     # every data source
    python scripts/benchmark.py --only ablation --seeds 0,1,2                                # MEK's parts, 3 seeds
    python scripts/benchmark.py --only distillation --teacher runs/synthetic-mek/best          # distilled vs hard

The figures (limit, loop, reference, inference, data, predict, ablation, distillation), what each times and how, are described in
``scripts/benchmark.py --help``: :data:`fer_mek_cli.benchmark.DESCRIPTION`, beside the parser
(:func:`fer_mek_cli.benchmark.build_parser`) and the names its options choose from, which this package imports from
there. From Python: :func:`main` (the results as a dict) or :func:`cli_main` (the exit status).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from fer_mek.environment import record
from fer_mek_cli.benchmark import (  # the command line's one place: light, so --help answers before torch loads
    DEFAULT_KINDS,
    FIGURE_KINDS,
    TRAINING_KINDS,
    build_parser,
    check_args,
    join_extra_train_args,
)

from .ablation import measure_ablation
from .data import measure_data
from .distillation import format_distillation, measure_distillation
from .fixtures import MIN_PER_CLASS, fixture_counts, prepare_data
from .inference import measure_inference, measure_predict
from .report import format_report, ratios_of, write_json
from .timing import release
from .training import build_model_trainer, measure_limit, measure_loop, measure_reference

__all__ = ["DEFAULT_KINDS", "FIGURE_KINDS", "build_parser", "cli_main", "main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the options (:func:`fer_mek_cli.benchmark.build_parser` and
    :func:`~fer_mek_cli.benchmark.check_args`, then whether ``--num-images`` fits the training figures).

    Raises:
        SystemExit: on an invalid option (argparse's usage error).
    """
    parser = build_parser()
    args = check_args(parser, parser.parse_args(join_extra_train_args(sys.argv[1:] if argv is None else argv)))
    if set(TRAINING_KINDS) & set(args.only):
        try:
            fixture_counts(args.num_images)
        except ValueError as error:
            parser.error(f"--num-images {args.num_images} is too few for {MIN_PER_CLASS} images per class and split "
                         f"({error}); use at least 110")
    return args


@contextmanager
def _run_settings(threads: int | None, cache: Path) -> Iterator[None]:
    """torch's thread count and the trainer's pixel cache (``FER_MEK_CACHE``) for the run, restored afterwards."""
    threads_before, cache_before = torch.get_num_threads(), os.environ.get("FER_MEK_CACHE")
    if threads:
        torch.set_num_threads(threads)
    os.environ["FER_MEK_CACHE"] = str(cache)  # emptied by the loop: its setup includes the cache build
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        if cache_before is None:
            os.environ.pop("FER_MEK_CACHE", None)
        else:
            os.environ["FER_MEK_CACHE"] = cache_before


def _training_figures(args: argparse.Namespace, results: dict[str, Any], work_dir: Path,
                      mixed_precision: str) -> dict[str, dict[str, Any]]:
    """The limit, loop, reference and inference figures chosen with ``--only``, on the RAF-DB tree."""
    data_root, data = prepare_data(work_dir, args.num_images)
    results["data"] = data
    results["settings"].update(train_images=sum(data["train_counts"]), test_images=sum(data["test_counts"]))
    figures: dict[str, dict[str, Any]] = {}
    if "loop" in args.only:
        figures["loop"] = measure_loop(args, data_root, work_dir, mixed_precision)
        release()
    if {"limit", "reference", "inference"} & set(args.only):
        trainer, results["model_trainer_setup"] = build_model_trainer(args, data_root, work_dir, mixed_precision)
        results["trainer_config"] = dataclasses.asdict(trainer.config)
        if "limit" in args.only:
            figures["limit"] = measure_limit(trainer, args)
        if "reference" in args.only:
            release()
            figures["reference"] = measure_reference(trainer, args, data_root)
        if "inference" in args.only:
            release()
            figures.update(measure_inference(trainer, args, data_root, work_dir))
        del trainer
        release()
    order = ("limit", "loop", "reference", "predictor", "pipeline", "model_alone")
    return {key: figures[key] for key in order if key in figures}


def main(argv: Sequence[str] | None = None, source_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run the figures chosen with ``--only``, print the report, write the JSON and return the results.

    Args:
        argv: Command-line options (default: ``sys.argv[1:]``).
        source_dir: The source checkout the benchmark runs from (``scripts/benchmark.py`` passes its own); its git
            commit goes into the results. The library never looks for a checkout itself.
    """
    args = parse_args(argv)
    work_dir = Path(args.work_dir).expanduser().resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json).expanduser().resolve() if args.json else work_dir / "benchmark.json"
    with _run_settings(args.threads, work_dir / "pixel-cache"):
        mixed_precision = args.mixed_precision or ("bf16" if torch.cuda.is_available() else "no")
        results: dict[str, Any] = record(source_dir)  # after --threads: it records torch's thread count
        results["settings"] = {
            **{k: v for k, v in vars(args).items() if k not in ("only", "json", "mixed_precision")},
            "only": args.only, "mixed_precision": mixed_precision,
        }
        results["json"] = str(json_path)
        figures: dict[str, dict[str, Any]] = {}
        if set(TRAINING_KINDS) & set(args.only):
            figures.update(_training_figures(args, results, work_dir, mixed_precision))
        if "data" in args.only:
            figures.update(measure_data(args))
            release()
        if "predict" in args.only:
            figures.update(measure_predict(args, work_dir))
            release()
        if "ablation" in args.only:
            results["ablation"] = measure_ablation(args, work_dir)
        if "distillation" in args.only:
            results["distillation"] = measure_distillation(args, work_dir)
        results["figures"] = figures
        results["ratios"] = ratios_of(figures)
    write_json(results, json_path)
    report = format_report(results)
    if "distillation" in results:  # after the report's own tables (fer_mek/benchmark/report.py knows the others)
        report = "\n".join([report, *format_distillation(results["distillation"])])
    print(report, flush=True)
    return results


def cli_main(argv: Sequence[str] | None = None, source_dir: str | os.PathLike | None = None) -> int:
    """The command line (``scripts/benchmark.py``): :func:`main` with its errors as one ``error: ...`` line.

    Returns the exit status: 0, or 1 when a figure could not be measured (too few images for the steps asked,
    scikit-image missing, ...).
    """
    try:
        main(argv, source_dir)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0

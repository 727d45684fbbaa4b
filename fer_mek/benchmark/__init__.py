"""Training, inference and data throughput of fer-mek, side by side in one run: a table on stdout and a JSON file.

    python scripts/benchmark.py                                   # RAF-DB-sized data, resnet18 at 224 px, batch 64
    python scripts/benchmark.py --image-size 64 --batch-size 32 --steps 10 --num-images 2000   # a quick CPU run
    python scripts/benchmark.py --only limit,loop --extra-train-args "--no-single-pass"
    python scripts/benchmark.py --only data --image-size 112 --batch-size 32 --threads 1     # every data source
    python scripts/benchmark.py --only predict --threads 1 --predict-device cpu              # fer-mek predict
    python scripts/benchmark.py --only ablation --seeds 0,1,2                                # MEK's parts, 3 seeds

``--only`` picks the figure kinds (default: limit,loop,reference,inference). The training and inference figures use
a synthetic face set written once to ``--work-dir`` as a RAF-DB tree of 100x100 JPEGs (the distributed layout,
RAF-DB's class proportions, by default RAF-DB's size: 12,271 train / 3,068 test images), so that JPEG decoding is
real. Run it offline (``HF_HUB_OFFLINE=1``): every model is randomly initialised, speed does not depend on the
weights. Figures (images per second count images, not image + flip pairs):

limit
    ``Trainer.train_step`` of ``fer_mek.train`` (forward, backward, clipping, optimizer and scheduler step) on
    random tensors already on the device: no data loading. The trainer is built from the same options as the loop,
    and its inputs pass through the trainer's own ``model_inputs`` (memory format, single-pass switch), so the step
    is exactly the loop's. The ceiling of any training loop with these settings.
loop
    fer-mek's training loop end to end: ``Trainer.run()`` on the JPEG folder (its data pipeline, loaders, workers,
    augmentation, the step, logging), for ``warmup + repeats x steps`` optimizer steps; throughput of each window of
    ``steps`` steps after the warm-up, from ``Trainer.step_times``. Its setup (data loading with image verification,
    the one-time pixel cache build - the cache is emptied first -, model, loaders, optimizer) is reported
    separately, cold, and again warm (cache present) for the trainer of the limit.
reference
    The pattern of the official MEK code: a ``Dataset`` that opens each JPEG with PIL, applies the per-sample
    training transform (``build_train_transform`` with the same augmentation settings) and builds the flipped copy
    per sample, a ``DataLoader`` (``--reference-workers`` workers, shuffle, drop_last), two separate forward passes
    per step (``model.mek(x)``, ``model.mek(x.flip(-1))``, then ``model.loss_fn``), fp32 on a CPU or fp16 autocast
    with a ``GradScaler`` on a GPU, plain (unfused) AdamW, gradient clipping at 5. Same model, batch and image size.
inference (predictor / pipeline / model alone)
    Inference on the same ``--inference-images`` test JPEGs, with the trainer's model saved with ``save_pretrained``:
    ``fer_mek.inference.FERPredictor(detector=None).predict_files`` (fer-mek's batch predictor, its default batch
    size, whole images as faces), ``transformers.pipeline("image-classification")`` with its default settings
    (``trust_remote_code=False``: the classes registered by ``fer_mek``, no question on the terminal), and
    the model alone (forward passes on preprocessed tensors on the device, the predictor's batch size): the limit.
data
    Every data source (``--data-sources``) on a fixture of ``--data-images`` images in its real layout: loading
    with ``fer_mek.data.load_source`` (cold, once), then decode, decode + training augmentation + flip pair, decode +
    evaluation preprocessing over ``--data-limit`` training images in batches of ``--batch-size`` at
    ``--image-size`` (the per-sample pipeline), and with ``--data-workers N`` a DataLoader with N workers.
predict
    ``fer-mek predict`` in detail (``--predict-model``, default a random MEK model over ``--backbone`` at
    ``--image-size``; MTCNN detector): face detection on a 512x512 photograph (scikit-image's astronaut), the model
    on one face crop, one face end to end, the model on batches of 16 crops (per face), and a 640x480 stream frame by
    frame (frames/s). Each repetition is ``--steps`` calls.
ablation
    Not a speed figure: what MEK's parts buy. Cross-entropy, cross-entropy + balanced sampler, RSL only, RAC only
    (with cross-entropy), MEK and MEK + balanced sampler, each trained once per ``--seeds`` seed with the options of
    ``--extra-train-args`` (default: the default recipe on the synthetic set; on RAF-DB e.g.
    ``--extra-train-args "--recipe rafdb-resnet18-imagenet --data-root /data/RAF-DB/DATASET"``): mean ± std of test
    accuracy, mean-class accuracy and the recall of the two rarest classes (:mod:`fer_mek.benchmark.ablation`).

Ratios: loop/limit (how close the loop comes to the step alone), loop/reference (speed-up over the reference
pattern), predictor/pipeline. Every figure is the median over ``--repeats`` repetitions after ``--warmup`` untimed
calls (the data loading is timed once, cold); the runs themselves are in the JSON, with the machine, the library
versions, the date and the source commit. A benchmark, not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from fer_mek.arguments import add_version_argument, positive_int
from fer_mek.environment import record

from .ablation import ABLATION_VARIANTS, measure_ablation, parse_seeds
from .data import DATA_SOURCES, MIN_DATA_IMAGES, measure_data
from .fixtures import MIN_PER_CLASS, fixture_counts, prepare_data
from .inference import measure_inference, measure_predict
from .report import format_report, ratios_of, write_json
from .timing import release
from .training import build_model_trainer, measure_limit, measure_loop, measure_reference

__all__ = ["DEFAULT_KINDS", "FIGURE_KINDS", "build_parser", "cli_main", "main", "parse_args"]

#: What ``--only`` chooses from, in the order the figures are reported.
FIGURE_KINDS = ("limit", "loop", "reference", "inference", "data", "predict", "ablation")
#: What runs without ``--only``.
DEFAULT_KINDS = ("limit", "loop", "reference", "inference")
#: The kinds that need the RAF-DB tree and a trainer.
TRAINING_KINDS = ("limit", "loop", "reference", "inference")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (every one has a default; see ``--help``)."""
    parser = argparse.ArgumentParser(prog="benchmark.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--only", default=",".join(DEFAULT_KINDS), help=f"comma list of the figure kinds to time, from "
        f"{','.join(FIGURE_KINDS)} (default: %(default)s)")
    add("--backbone", default="resnet18", help="timm backbone (default: %(default)s)")
    add("--image-size", type=positive_int, default=224, help="model input side in pixels; also the data transforms' size "
        "(default: %(default)s)")
    add("--batch-size", type=positive_int, default=64, help="training batch size; also the data figures' batch "
        "(default: %(default)s)")
    add("--method", choices=("mek", "baseline"), default="mek",
        help="mek (image + flip pair) or baseline (plain cross-entropy, no flip) (default: %(default)s)")
    add("--steps", type=positive_int, default=20, help="timed training steps per repetition; predict: timed calls per "
        "repetition (default: %(default)s)")
    add("--warmup", type=positive_int, default=3, help="untimed training steps (or calls, or batches) first, at least 1 "
        "(default: %(default)s)")
    add("--repeats", type=positive_int, default=3, help="repetitions of each measurement; the median is reported "
        "(default: %(default)s)")
    add("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's choice, one per core; "
        "on a CPU shared with other jobs fewer threads avoid oversubscription, which can slow torch many times)")
    add("--work-dir", default=str(Path(tempfile.gettempdir()) / "fer-mek-benchmark"), help="folder for the data "
        "(written once, reused while its settings match), run folders, pixel cache and JSON (default: %(default)s)")
    add("--json", default=None, help="where to write the results (default: benchmark.json in the work dir)")
    add_version_argument(parser)

    training = parser.add_argument_group("limit, loop, reference and inference (the default --only)")
    add = training.add_argument
    add("--num-images", type=positive_int, default=15339, help="images of the synthetic RAF-DB tree, train + test in RAF-DB's "
        "proportions (default: %(default)s = RAF-DB's 12,271 train + 3,068 test)")
    add("--workers", type=int, default=None, help="the loop's DataLoader workers (train.py --num-workers; default: "
        "the trainer's default)")
    add("--reference-workers", type=int, default=2, help="DataLoader workers of the reference pattern "
        "(default: %(default)s)")
    add("--mixed-precision", choices=("no", "bf16", "fp16"), default=None, help="fer-mek's mixed precision "
        "(default: no on a CPU, bf16 on CUDA); the reference always uses fp32 on a CPU, fp16 autocast on a GPU")
    add("--auto-augment", default="rand-m9-mstd0.5-inc1", help="timm RandAugment policy of the loop and the "
        "reference, '' for none (default: %(default)s, the official MEK setting)")
    add("--re-prob", type=float, default=0.25, help="random erasing probability (default: %(default)s)")
    add("--inference-images", type=positive_int, default=256, help="test JPEGs classified by the inference figures "
        "(default: %(default)s)")
    add("--extra-train-args", default="", help="further scripts/train.py options for the limit and the loop, and the "
        "options common to every run of the ablation (a recipe, --data-root, ...), as one string, e.g. "
        "\"--no-single-pass --data-pipeline per-sample\" (default: none)")

    data = parser.add_argument_group("data (--only data)")
    add = data.add_argument
    add("--data-sources", default=",".join(DATA_SOURCES), help="comma list of the data sources to time "
        "(default: %(default)s)")
    add("--data-images", type=int, default=300, help=f"images per source fixture, all splits, at least "
        f"{MIN_DATA_IMAGES} (default: %(default)s)")
    add("--data-limit", type=int, default=200, help="training images timed per pass of each pipeline "
        "(default: %(default)s)")
    add("--data-workers", type=int, default=0, help="also time a DataLoader with this many workers over the "
        "training pipeline; 0: not (default: %(default)s)")

    ablation = parser.add_argument_group("ablation (--only ablation; fer_mek/benchmark/ablation.py)")
    add = ablation.add_argument
    add("--seeds", type=parse_seeds, default=parse_seeds("0,1,2"), metavar="0,1,2", help="training seeds of each "
        "variant (default: 0,1,2)")
    add("--variants", default=",".join(ABLATION_VARIANTS), help="comma list of the variants to train, from "
        f"{','.join(ABLATION_VARIANTS)} (default: all)")

    predict = parser.add_argument_group("predict (--only predict)")
    add = predict.add_argument
    add("--predict-model", default=None, help="model folder or Hub id (default: a random MEK model over --backbone "
        "at --image-size)")
    add("--predict-device", default=None, help="cpu, cuda, ... (default: CUDA when available, else the CPU)")
    return parser


def join_extra_train_args(argv: Sequence[str]) -> list[str]:
    """``--extra-train-args VALUE`` as ``--extra-train-args=VALUE``: argparse would take a value such as
    ``--no-single-pass`` for an option of its own."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        if item == "--extra-train-args":
            value = next(items, None)
            out.append(item if value is None else f"{item}={value}")
        else:
            out.append(item)
    return out


def _comma_list(parser: argparse.ArgumentParser, option: str, value: str, choices: Sequence[str]) -> list[str]:
    """The names of a comma-list option, in the order of ``choices``; a usage error on an unknown or no name."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(choices))
    if unknown or not names:
        parser.error(f"{option}: unknown or no name(s) {unknown}; choose from {','.join(choices)}")
    return [name for name in choices if name in names]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the options.

    Raises:
        SystemExit: on an invalid option (argparse's usage error).
    """
    parser = build_parser()
    args = parser.parse_args(join_extra_train_args(sys.argv[1:] if argv is None else argv))
    args.only = _comma_list(parser, "--only", args.only, FIGURE_KINDS)
    args.data_sources = _comma_list(parser, "--data-sources", args.data_sources, DATA_SOURCES)
    args.variants = _comma_list(parser, "--variants", args.variants, tuple(ABLATION_VARIANTS))
    # --image-size, --batch-size, --steps, --warmup, --repeats, --inference-images and --threads are positive_int
    if args.data_limit < 1:
        parser.error("--data-limit must be at least 1")
    if args.reference_workers < 0 or args.data_workers < 0 or (args.workers is not None and args.workers < -1):
        parser.error("--workers must be -1 (automatic) or at least 0, --reference-workers and --data-workers at "
                     "least 0")
    if args.data_images < MIN_DATA_IMAGES:
        parser.error(f"--data-images must be at least {MIN_DATA_IMAGES} (every class needs training images for the "
                     "stratified validation split)")
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
        results["figures"] = figures
        results["ratios"] = ratios_of(figures)
    write_json(results, json_path)
    print(format_report(results), flush=True)
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

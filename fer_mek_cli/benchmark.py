"""The command line of the benchmark, ``scripts/benchmark.py``: its parser, the names its options choose from, and its
entry point. Light: standard library only until the figures run (:func:`fer_mek.benchmark.cli_main`), so ``--help``,
``--version`` and usage errors answer without loading torch.

The choices live here and :mod:`fer_mek.benchmark` imports them under the same names: the figure kinds, the data
sources (:data:`DATA_SOURCES`, :data:`MIN_DATA_IMAGES`: :mod:`fer_mek.benchmark.data`), the ablation's variants
with their training switches (:data:`ABLATION_VARIANTS`, :func:`parse_seeds`: :mod:`fer_mek.benchmark.ablation`) and
the distillation's student (:data:`DEFAULT_STUDENT`: :mod:`fer_mek.benchmark.distillation`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .arguments import add_version_argument, positive_int

__all__ = [
    "ABLATION_VARIANTS",
    "DATA_SOURCES",
    "DEFAULT_KINDS",
    "DEFAULT_STUDENT",
    "DESCRIPTION",
    "FIGURE_KINDS",
    "MIN_DATA_IMAGES",
    "TRAINING_KINDS",
    "build_parser",
    "check_args",
    "checkout_of",
    "join_extra_train_args",
    "main",
    "parse_seeds",
]

#: What ``--only`` chooses from, in the order the figures are reported.
FIGURE_KINDS = ("limit", "loop", "reference", "inference", "data", "predict", "ablation", "distillation")
#: What runs without ``--only``.
DEFAULT_KINDS = ("limit", "loop", "reference", "inference")
#: The kinds that need the RAF-DB tree and a trainer.
TRAINING_KINDS = ("limit", "loop", "reference", "inference")
#: The data sources timed by ``--only data`` (``--data-sources`` picks some; :mod:`fer_mek.benchmark.data`).
DATA_SOURCES = ("rafdb", "fer2013-csv", "fer2013-folders", "folder", "hub", "synthetic")
#: The fewest images per data-source fixture: every class needs training images for the stratified validation split.
MIN_DATA_IMAGES = 100
#: The ablation's variants and the training options each adds to the common ones (``--variants`` picks some;
#: :mod:`fer_mek.benchmark.ablation` describes them).
#: Each variant sets the sampler both ways, so that a recipe's own ``balanced_sampler`` (the default recipe's is on)
#: does not leak into the variants without it.
ABLATION_VARIANTS: dict[str, tuple[str, ...]] = {
    "ce": ("--method", "baseline", "--no-balanced-sampler"),
    "ce+sampler": ("--method", "baseline", "--balanced-sampler"),
    "rsl": ("--method", "mek", "--attention-weight", "0", "--no-balanced-sampler"),
    "rac+ce": ("--method", "mek", "--smoothing", "0", "--no-balanced-sampler"),
    "mek": ("--method", "mek", "--no-balanced-sampler"),
    "mek+sampler": ("--method", "mek", "--balanced-sampler"),
}

#: The student backbone of ``--only distillation`` (EfficientFace, 1.28 M parameters: fer_mek/efficientface.py).
DEFAULT_STUDENT = "efficientface"

#: The command line's description (``--help``): every figure, what it times and how.
DESCRIPTION = """Training, inference and data throughput of fer-mek, side by side in one run: a table on stdout and a JSON file.

    python scripts/benchmark.py                                   # RAF-DB-sized data, resnet18 at 224 px, batch 64
    python scripts/benchmark.py --image-size 64 --batch-size 32 --steps 10 --num-images 2000   # a quick CPU run
    python scripts/benchmark.py --only limit,loop --extra-train-args "--no-single-pass"
    python scripts/benchmark.py --only data --image-size 112 --batch-size 32 --threads 1     # every data source
    python scripts/benchmark.py --only predict --threads 1 --predict-device cpu              # fer-mek predict
    python scripts/benchmark.py --only ablation --seeds 0,1,2                                # MEK's parts, 3 seeds
    python scripts/benchmark.py --only distillation --teacher runs/synthetic-mek/best --seeds 0,1,2   # distillation

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
distillation
    Not a speed figure either: what a teacher's distributions buy a small student. Per ``--seeds`` seed, the
    ``--student`` backbone (default efficientface) trained twice with the options of ``--extra-train-args``: on the
    hard labels (the recipe's own method) and distilled from ``--teacher`` (``--method ldt --teacher PATH`` plus
    ``--distill-train-args``): mean ± std of test accuracy, mean-class accuracy and the recall of the two rarest
    classes, the student's parameters and its CPU latency per face (batch 1, median of ``--latency-runs`` calls after
    ``--warmup``), beside the teacher's (:mod:`fer_mek.benchmark.distillation`).

Ratios: loop/limit (how close the loop comes to the step alone), loop/reference (speed-up over the reference
pattern), predictor/pipeline. Every figure is the median over ``--repeats`` repetitions after ``--warmup`` untimed
calls (the data loading is timed once, cold); the runs themselves are in the JSON, with the machine, the library
versions, the date and the source commit. A benchmark, not a test: figures depend on the machine and its load.
"""


def parse_seeds(text: str) -> list[int]:
    """argparse type of ``--seeds``: a comma list of distinct non-negative integers, e.g. ``0,1,2``."""
    try:
        seeds = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one seed, each >= 0 and each once")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (every one has a default; see ``--help``)."""
    parser = argparse.ArgumentParser(prog="benchmark.py", description=DESCRIPTION,
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
        "options common to every run of the ablation and of the distillation (a recipe, --data-root, ...), as one string, e.g. "
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
        "variant, of the ablation and of the distillation (default: 0,1,2)")
    add("--variants", default=",".join(ABLATION_VARIANTS), help="comma list of the variants to train, from "
        f"{','.join(ABLATION_VARIANTS)} (default: all)")
    add("--reuse-runs", action="store_true", help="ablation and distillation: reuse a variant's run folder under --work-dir when it holds a "
        "finished run trained with exactly the same options (its train_config.yaml), instead of training it again: "
        "to finish an interrupted ablation, or to assemble one that ran as several commands in parallel (same "
        "fer-mek version only)")

    distillation = parser.add_argument_group("distillation (--only distillation; fer_mek/benchmark/distillation.py; "
                                             "also --seeds, --extra-train-args, --reuse-runs, --warmup, --threads)")
    add = distillation.add_argument
    add("--teacher", default=None, help="the teacher: a trained fer-mek model folder (e.g. runs/NAME/best), a "
        "transformers image-classification folder or a Hub id (required by --only distillation)")
    add("--student", default=DEFAULT_STUDENT, help="timm backbone of the student, trained on hard labels and "
        "distilled (default: %(default)s)")
    add("--distill-train-args", default="", help="further scripts/train.py options of the distilled runs only, as one "
        "string, e.g. \"--distill-weight 0.9 --distill-temperature 2\" (default: none: --method ldt's defaults)")
    add("--latency-runs", type=positive_int, default=25, help="timed calls of each model's CPU latency per face; the "
        "median is reported (default: %(default)s)")

    predict = parser.add_argument_group("predict (--only predict)")
    add = predict.add_argument
    add("--predict-model", default=None, help="model folder or Hub id (default: a random MEK model over --backbone "
        "at --image-size)")
    add("--predict-device", default=None, help="cpu, cuda, ... (default: CUDA when available, else the CPU)")
    return parser


def join_extra_train_args(argv: Sequence[str]) -> list[str]:
    """``--extra-train-args VALUE`` (and ``--distill-train-args VALUE``) as ``--extra-train-args=VALUE``: argparse
    would take a value such as ``--no-single-pass`` for an option of its own."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        if item in ("--extra-train-args", "--distill-train-args"):
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


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The checks of the parsed options that need nothing but the options, as usage errors of ``parser``; the comma
    lists become lists of names (in the order of their choices). Returns ``args``.

    Raises:
        SystemExit: on an invalid option (argparse's usage error).
    """
    args.only = _comma_list(parser, "--only", args.only, FIGURE_KINDS)
    args.data_sources = _comma_list(parser, "--data-sources", args.data_sources, DATA_SOURCES)
    args.variants = _comma_list(parser, "--variants", args.variants, tuple(ABLATION_VARIANTS))
    # --image-size, --batch-size, --steps, --warmup, --repeats, --inference-images and --threads are positive_int
    if args.data_limit < 1:
        parser.error("--data-limit must be at least 1")
    if args.reference_workers < 0 or args.data_workers < 0 or (args.workers is not None and args.workers < -1):
        parser.error("--workers must be -1 (automatic) or at least 0, --reference-workers and --data-workers at "
                     "least 0")
    if "distillation" in args.only and not args.teacher:
        parser.error("--only distillation needs --teacher: a trained fer-mek model folder (e.g. runs/NAME/best), a "
                     "transformers image-classification folder or a Hub id")
    if args.data_images < MIN_DATA_IMAGES:
        parser.error(f"--data-images must be at least {MIN_DATA_IMAGES} (every class needs training images for the "
                     "stratified validation split)")
    return args


def checkout_of(script: str) -> Path:
    """The source checkout of a file of its ``scripts/`` folder (``scripts/benchmark.py`` passes ``__file__``)."""
    return Path(script).resolve().parents[1]


def main(argv: Sequence[str] | None = None, source_dir: str | Path | None = None) -> int:
    """Parse and check ``argv`` (default: ``sys.argv[1:]``; ``--help``, ``--version`` and usage errors answer here,
    before the model stack loads), then run the figures: :func:`fer_mek.benchmark.cli_main`'s exit status (0, or 1
    with one ``error: ...`` line when a figure cannot be measured). ``source_dir``: the checkout whose git commit
    goes into the results (``scripts/benchmark.py`` passes its own)."""
    parser = build_parser()
    check_args(parser, parser.parse_args(join_extra_train_args(sys.argv[1:] if argv is None else argv)))
    from fer_mek.benchmark import cli_main

    return cli_main(argv, source_dir)

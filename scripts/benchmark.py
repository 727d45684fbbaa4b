#!/usr/bin/env python
"""Training and inference throughput of fer-mek, side by side in one run: a table on stdout and a JSON file.

    python scripts/benchmark.py                                   # RAF-DB-sized data, resnet18 at 224 px, batch 64
    python scripts/benchmark.py --image-size 64 --batch-size 32 --steps 10 --num-images 2000   # a quick CPU run
    python scripts/benchmark.py --only limit,loop --extra-train-args "--no-single-pass"

The data is a synthetic face set written once to ``--work-dir`` as a RAF-DB tree of 100x100 JPEGs (the distributed
layout, RAF-DB's class proportions, by default RAF-DB's size: 12,271 train / 3,068 test images), so that JPEG
decoding is real. Run it offline (``HF_HUB_OFFLINE=1``): every model is randomly initialised, speed does not depend on
the weights. Figures (images per second count images, not image + flip pairs):

limit
    ``Trainer.train_step`` of ``scripts/train.py`` (forward, backward, clipping, optimizer and scheduler step) on
    random tensors already on the device: no data loading. The trainer is built from the same options as the loop,
    and its inputs pass through the trainer's own ``model_inputs`` (memory format, single-pass switch), so the step
    is exactly the loop's. The ceiling of any training loop with these settings.
loop
    fer-mek's training loop end to end: ``Trainer.run()`` of ``scripts/train.py`` on the JPEG folder (its data
    pipeline, loaders, workers, augmentation, the step, logging), for ``warmup + repeats x steps`` optimizer steps;
    throughput of each window of ``steps`` steps after the warm-up, from ``Trainer.step_times``. Its setup (data
    loading with image verification, the one-time pixel cache build - the cache is emptied first -, model, loaders,
    optimizer) is reported separately, cold, and again warm (cache present) for the trainer of the limit.
reference
    The pattern of the official MEK code: a ``Dataset`` that opens each JPEG with PIL, applies the per-sample
    training transform (``build_train_transform`` with the same augmentation settings) and builds the flipped copy
    per sample, a ``DataLoader`` (``--reference-workers`` workers, shuffle, drop_last), two separate forward passes
    per step (``model.mek(x)``, ``model.mek(x.flip(-1))``, then ``model.loss_fn``), fp32 on a CPU or fp16 autocast
    with a ``GradScaler`` on a GPU, plain (unfused) AdamW, gradient clipping at 5. Same model, batch and image size.
predictor / pipeline / model alone
    Inference on the same ``--inference-images`` test JPEGs, with the trainer's model saved with ``save_pretrained``:
    ``fer_mek.inference.FERPredictor(detector=None).predict_files`` (fer-mek's batch predictor, its default batch
    size, whole images as faces), ``transformers.pipeline("image-classification")`` with its default settings
    (``trust_remote_code=False``: the classes registered by ``fer_mek``, no question on the terminal), and
    the model alone (forward passes on preprocessed tensors on the device, the predictor's batch size): the limit.

Ratios: loop/limit (how close the loop comes to the step alone), loop/reference (speed-up over the reference
pattern), predictor/pipeline. Every figure is the median over ``--repeats`` repetitions after ``--warmup``; the
runs themselves are in the JSON. A benchmark, not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import importlib.util
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

# scripts/evaluate.py would shadow the `evaluate` package that fer_mek.metrics imports: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("limit", "loop", "reference", "inference")
#: RAF-DB basic's official test split per class, in ``RAFDB_LABELS`` order (3,068 images); the train counts are
#: ``fer_mek.data.RAFDB_TRAIN_COUNTS`` (12,271 images).
RAFDB_TEST_COUNTS: tuple[int, ...] = (329, 74, 160, 1185, 478, 162, 680)
#: Version of the fixture written into the work directory; bump when what :func:`prepare_data` writes changes.
FIXTURE_VERSION = 1
FIXTURE_IMAGE_SIZE = 100  # RAF-DB's aligned faces are 100x100
MIN_PER_CLASS = 3  # the stratified validation split needs at least two images of a class


# ----------------------------------------------------------------------------------------------- options
def build_parser() -> argparse.ArgumentParser:
    """The command-line options (every one has a default; see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--backbone", default="resnet18", help="timm backbone (default: %(default)s)")
    add("--image-size", type=int, default=224, help="model input side in pixels (default: %(default)s)")
    add("--batch-size", type=int, default=64, help="training batch size (default: %(default)s)")
    add("--method", choices=("mek", "baseline"), default="mek",
        help="mek (image + flip pair) or baseline (plain cross-entropy, no flip) (default: %(default)s)")
    add("--steps", type=int, default=20, help="timed training steps per repetition (default: %(default)s)")
    add("--warmup", type=int, default=3, help="untimed training steps first, at least 1 (default: %(default)s)")
    add("--repeats", type=int, default=3, help="repetitions of each measurement; the median is reported "
        "(default: %(default)s)")
    add("--num-images", type=int, default=15339, help="images of the synthetic RAF-DB tree, train + test in RAF-DB's "
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
    add("--inference-images", type=int, default=256, help="test JPEGs classified by the inference figures "
        "(default: %(default)s)")
    add("--only", default=",".join(FIGURES), help=f"comma list of the measurements to run, from {','.join(FIGURES)} "
        "(default: all)")
    add("--work-dir", default=str(Path(tempfile.gettempdir()) / "fer-mek-benchmark"), help="folder for the data "
        "(written once, reused while its settings match), run folders, pixel cache and JSON (default: %(default)s)")
    add("--json", default=None, help="where to write the results (default: benchmark.json in the work dir)")
    add("--extra-train-args", default="", help="further scripts/train.py options for the limit and the loop, as one "
        "string, e.g. \"--no-single-pass --data-pipeline per-sample\" (default: none)")
    add("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice, one per core; "
        "on a CPU shared with other jobs fewer threads avoid oversubscription, which can slow torch many times)")
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the options.

    Raises:
        SystemExit: on an invalid option (argparse's usage error).
    """
    parser = build_parser()
    args = parser.parse_args(join_extra_train_args(sys.argv[1:] if argv is None else argv))
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(FIGURES))
    if unknown or not only:
        parser.error(f"--only: unknown or no measurement(s) {unknown}; choose from {','.join(FIGURES)}")
    args.only = [name for name in FIGURES if name in only]
    for name in ("image_size", "batch_size", "steps", "warmup", "repeats", "inference_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.reference_workers < 0 or (args.workers is not None and args.workers < -1):
        parser.error("--workers must be -1 (automatic) or at least 0, --reference-workers at least 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    try:
        fixture_counts(args.num_images)
    except ValueError as error:
        parser.error(f"--num-images {args.num_images} is too few for {MIN_PER_CLASS} images per class and split "
                     f"({error}); use at least 110")
    return args


# ----------------------------------------------------------------------------------------------- helpers
def load_train_script() -> ModuleType:
    """``scripts/train.py`` as a module, imported by file path (``scripts/`` never goes on ``sys.path``)."""
    name = "fer_mek_scripts.train"  # the name tests/conftest.py::load_script gives it: one copy per process
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "train.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {REPO_ROOT / 'scripts' / 'train.py'}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the script executes
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(images: int, seconds: float) -> float:
    """Images per second (infinite for a zero duration: a clock too coarse for the work timed)."""
    return images / seconds if seconds > 0 else math.inf


def figure(runs: Sequence[float], **details: Any) -> dict[str, Any]:
    """A figure from the images/s of each repetition: median, ms/image, best and the runs themselves."""
    median = statistics.median(runs)
    return {"images_per_s": median, "ms_per_image": 1000.0 / median, "best_images_per_s": max(runs),
            "runs_images_per_s": list(runs), **details}


def proportional_counts(total: int, proportions: Sequence[int], minimum: int = MIN_PER_CLASS) -> list[int]:
    """``total`` split over classes in proportion to ``proportions`` (largest remainders), at least ``minimum`` each:
    a class below it takes images from the largest class. ``total == sum(proportions)`` gives ``proportions``.

    Raises:
        ValueError: when ``total`` cannot give every class ``minimum``.
    """
    k = len(proportions)
    if total < minimum * k:
        raise ValueError(f"{total} images cannot give {k} classes {minimum} each")
    whole = sum(proportions)
    shares = [total * p / whole for p in proportions]
    counts = [math.floor(share) for share in shares]
    by_remainder = sorted(range(k), key=lambda i: shares[i] - counts[i], reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    for i in range(k):
        while counts[i] < minimum:
            counts[max(range(k), key=counts.__getitem__)] -= 1
            counts[i] += 1
    return counts


def fixture_counts(num_images: int) -> tuple[list[int], list[int]]:
    """Train and test counts per class of a RAF-DB tree of ``num_images`` images in RAF-DB's proportions."""
    from fer_mek.data import RAFDB_TRAIN_COUNTS

    train_total = round(num_images * sum(RAFDB_TRAIN_COUNTS) / (sum(RAFDB_TRAIN_COUNTS) + sum(RAFDB_TEST_COUNTS)))
    return (proportional_counts(train_total, RAFDB_TRAIN_COUNTS),
            proportional_counts(num_images - train_total, RAFDB_TEST_COUNTS))


def prepare_data(work_dir: Path, num_images: int) -> tuple[Path, dict[str, Any]]:
    """The synthetic RAF-DB tree of ``num_images`` JPEGs in ``work_dir``: written once, reused while it matches.

    Returns:
        ``(root, description)``; the description includes ``write_s`` (0 when the tree was reused).
    """
    from fer_mek.data.fixtures import write_rafdb

    train_counts, test_counts = fixture_counts(num_images)
    settings = {"version": FIXTURE_VERSION, "layout": "distributed", "style": "faces", "size": FIXTURE_IMAGE_SIZE,
                "seed": 0, "train_counts": train_counts, "test_counts": test_counts}
    root = work_dir / f"rafdb-{num_images}"
    marker = root / "fixture.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return root, {**settings, "root": str(root), "write_s": 0.0, "reused": True}
    if root.exists():
        shutil.rmtree(root)
    print(f"writing {num_images} synthetic {FIXTURE_IMAGE_SIZE}x{FIXTURE_IMAGE_SIZE} JPEG faces to {root} ...",
          flush=True)
    start = time.perf_counter()
    write_rafdb(root, train_counts, test_counts, layout="distributed", size=FIXTURE_IMAGE_SIZE, style="faces", seed=0)
    write_s = time.perf_counter() - start
    marker.write_text(json.dumps(settings))  # last: an interrupted write is redone
    return root, {**settings, "root": str(root), "write_s": write_s, "reused": False}


def rafdb_files(root: Path, split: str) -> tuple[list[Path], list[int]]:
    """Image paths and class indices (0-6) of one split of the RAF-DB tree written by :func:`prepare_data`."""
    from fer_mek.data.rafdb import RAFDB_LABEL_FILE

    paths, labels = [], []
    for line in (root / RAFDB_LABEL_FILE).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        name, label = line.split()
        if name.startswith(f"{split}_"):
            paths.append(root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg")
            labels.append(int(label) - 1)
    return paths, labels


def git_state() -> dict[str, Any]:
    """The repository's commit and whether the working tree differs from it (``None`` when git cannot tell)."""
    state: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        state["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, check=True,
                                         capture_output=True, text=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                check=True, capture_output=True, text=True).stdout
        state["dirty"] = bool(status.strip())
    except (OSError, subprocess.CalledProcessError) as error:  # not a checkout, or no git: say so in the results
        state["error"] = f"{type(error).__name__}: {error}"
    return state


def environment() -> dict[str, Any]:
    """Machine, library versions and date."""
    import accelerate
    import PIL
    import timm
    import transformers

    import fer_mek

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "usable_cores": cores, "torch_threads": torch.get_num_threads(),
               "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
    versions = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                "transformers": transformers.__version__, "accelerate": accelerate.__version__,
                "pillow": PIL.__version__, "fer_mek": fer_mek.__version__}
    return {"machine": machine, "versions": versions, "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "git": git_state()}


def timed_methods(obj: Any, names: Sequence[str], into: dict[str, float]) -> None:
    """Wrap ``obj``'s methods ``names`` (those it has) so that each call adds its duration to ``into[name]``."""
    for name in names:
        method = getattr(obj, name, None)
        if method is None:
            continue

        def wrapper(*args: Any, _method: Callable[..., Any] = method, _name: str = name, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                into[_name] = into.get(_name, 0.0) + time.perf_counter() - start

        setattr(obj, name, wrapper)


SETUP_PHASES = ("setup", "load_data", "build_model", "build_loaders", "build_optimization")


def release() -> None:
    """Collect what the last measurement left (models, DataLoader workers in reference cycles) and free its memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- measurements
def trainer_argv(args: argparse.Namespace, data_root: Path, output_dir: Path, mixed_precision: str,
                 max_steps: int | None = None) -> list[str]:
    """The ``scripts/train.py`` options of a benchmark trainer (``--extra-train-args`` last: they win)."""
    argv = ["--source", "rafdb", "--data-root", str(data_root), "--backbone", args.backbone,
            "--image-size", str(args.image_size), "--batch-size", str(args.batch_size), "--method", args.method,
            "--mixed-precision", mixed_precision, "--auto-augment", args.auto_augment, "--re-prob", str(args.re_prob),
            "--lr", "1e-4", "--log-with", "none", "--overwrite", "--output-dir", str(output_dir)]
    if args.workers is not None:
        argv += ["--num-workers", str(args.workers)]
    if max_steps is not None:
        argv += ["--max-steps", str(max_steps), "--epochs", "1"]
    return argv + shlex.split(args.extra_train_args)


def trainer_details(trainer: Any) -> dict[str, Any]:
    """What a trainer actually ran with: its resolved options, workers and device."""
    config = trainer.config
    return {"device": str(trainer.accelerator.device), "num_workers": getattr(trainer, "num_workers", None),
            "data_pipeline": getattr(config, "data_pipeline", None), "single_pass": getattr(config, "single_pass", None),
            "channels_last": getattr(config, "channels_last", None), "mixed_precision": config.mixed_precision}


def measure_loop(train: ModuleType, args: argparse.Namespace, data_root: Path, work_dir: Path,
                 mixed_precision: str) -> dict[str, Any]:
    """fer-mek's training loop end to end (``Trainer.run``), with its cold setup time.

    Raises:
        ValueError: when the train split has fewer batches than the run needs, or the loop stopped early.
    """
    needed = args.warmup + args.repeats * args.steps
    argv = trainer_argv(args, data_root, work_dir / "run-loop", mixed_precision, max_steps=needed)
    config = train.parse_config(argv)
    train_images = sum(fixture_counts(args.num_images)[0])
    batches = (train_images - math.ceil(config.val_fraction * train_images)) // config.batch_size
    if batches < needed:
        raise ValueError(f"the loop needs {needed} steps (--warmup + --repeats x --steps) in one epoch, but the train "
                         f"split gives {batches} batches of {config.batch_size}: raise --num-images or lower the steps")
    cache = Path(os.environ["FER_MEK_CACHE"])
    if cache.exists():
        shutil.rmtree(cache)  # the setup time includes the one-time cache build of a first run
    trainer = train.Trainer(config)
    phases: dict[str, float] = {}
    timed_methods(trainer, SETUP_PHASES, phases)
    start = time.perf_counter()
    trainer.run()
    run_s = time.perf_counter() - start
    times = list(trainer.step_times)
    if len(times) < needed:
        raise ValueError(f"the loop stopped after {len(times)} of {needed} steps (an epoch shorter than expected?)")
    # step_times[i] is taken after step i + 1: window r spans the steps warmup + r * steps + 1 ... + steps.
    base = args.warmup - 1
    runs = [rate(config.batch_size * args.steps, times[base + (r + 1) * args.steps] - times[base + r * args.steps])
            for r in range(args.repeats)]
    return figure(runs, steps=len(times), setup_s=phases.get("setup"),
                  setup_phases_s={k: v for k, v in phases.items() if k != "setup"},
                  run_s=run_s, **trainer_details(trainer), train_options=argv)


def build_model_trainer(train: ModuleType, args: argparse.Namespace, data_root: Path, work_dir: Path,
                        mixed_precision: str) -> tuple[Any, dict[str, Any]]:
    """A set-up trainer (same options as the loop) whose step, model and processor the other figures use."""
    argv = trainer_argv(args, data_root, work_dir / "run-limit", mixed_precision)
    trainer = train.Trainer(train.parse_config(argv))
    phases: dict[str, float] = {}
    timed_methods(trainer, SETUP_PHASES, phases)
    trainer.setup()
    return trainer, {"setup_s": phases["setup"], "setup_phases_s": {k: v for k, v in phases.items() if k != "setup"},
                     "train_options": argv}


def measure_limit(trainer: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``Trainer.train_step`` on random tensors already on the device."""
    device, config, model = trainer.accelerator.device, trainer.config, trainer.model
    batch_size = config.batch_size  # the trainer's: --extra-train-args may override the benchmark's options
    num_labels = trainer.accelerator.unwrap_model(model).config.num_labels
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch_size, 3, config.image_size, config.image_size, generator=generator).to(device)
    raw: dict[str, Any] = {"pixel_values": pixels,
                           "labels": torch.randint(0, num_labels, (batch_size,), generator=generator).to(device)}
    if config.method == "mek":
        raw["flipped_pixel_values"] = pixels.flip(-1)
    # The loop hands the step what model_inputs makes of a batch (channels-last, the single-pass switch).
    via_model_inputs = hasattr(trainer, "model_inputs")
    inputs = trainer.model_inputs(raw) if via_model_inputs else raw
    model.train()
    for _ in range(args.warmup):
        trainer.train_step(inputs)
    synchronize(device)
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(inputs)
        synchronize(device)
        runs.append(rate(batch_size * args.steps, time.perf_counter() - start))
    return figure(runs, inputs_via_model_inputs=via_model_inputs,
                  single_pass_input=inputs.get("single_pass"), **trainer_details(trainer))


class ReferenceDataset(torch.utils.data.Dataset):
    """The official MEK code's training set: per sample, open the JPEG, augment it, build its flipped copy.

    Args:
        paths: Image files.
        labels: Class index of each image.
        transform: Per-image training transform (PIL image -> normalised tensor).
        with_flip: Also return ``x.flip(-1)`` of the augmented tensor (MEK); a baseline does not need it.
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Callable[[Any], torch.Tensor],
                 with_flip: bool) -> None:
        self.paths, self.labels, self.transform, self.with_flip = list(paths), list(labels), transform, with_flip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        from PIL import Image

        with Image.open(self.paths[index]) as file:
            image = file.convert("RGB")
        pixels = self.transform(image)
        label = torch.tensor(self.labels[index])
        return (pixels, label, pixels.flip(-1)) if self.with_flip else (pixels, label)


def cycle(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """The loader's batches, epoch after epoch (a new epoch restarts its workers, as in the reference code)."""
    while True:
        yield from loader


def measure_reference(trainer: Any, args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    """The official MEK pattern: per-sample PIL decoding and augmentation in workers, two forward passes per step."""
    from fer_mek import MEKForImageClassification
    from fer_mek.data.transforms import build_train_transform

    device, settings = trainer.accelerator.device, trainer.config  # the loop's settings, --extra-train-args included
    mek = settings.method == "mek"
    paths, labels = rafdb_files(data_root, "train")
    transform = build_train_transform(trainer.processor, auto_augment=settings.auto_augment or None,
                                      re_prob=settings.re_prob)
    dataset = ReferenceDataset(paths, labels, transform, with_flip=mek)
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.reference_workers, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    config = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.model).config)
    model = MEKForImageClassification(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=False)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step(batch: tuple[torch.Tensor, ...]) -> float:
        x, y = batch[0].to(device), batch[1].to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            output = model.mek(x)
            if mek:
                flipped = model.mek(batch[2].to(device))
                loss = model.loss_fn(output.logits, y, output.attention_maps, flipped.attention_maps)
            else:
                loss = model.loss_fn(output.logits, y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())  # the reference logs its running loss every step

    batches = cycle(loader)
    try:
        for _ in range(args.warmup):
            step(next(batches))
        synchronize(device)
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.steps):
                step(next(batches))
            synchronize(device)
            runs.append(rate(settings.batch_size * args.steps, time.perf_counter() - start))
    finally:
        batches.close()  # shuts the loader's workers down
    return figure(runs, device=str(device), workers=args.reference_workers,
                  precision="fp16 autocast + GradScaler" if amp else "fp32", forward_passes_per_step=2 if mek else 1,
                  train_images=len(dataset), steps_per_epoch=len(loader))


def measure_inference(trainer: Any, args: argparse.Namespace, data_root: Path, work_dir: Path) -> dict[str, Any]:
    """fer-mek's batch predictor, the transformers pipeline and the model alone on the same test JPEGs."""
    from PIL import Image
    from transformers import pipeline

    from fer_mek.inference import FERPredictor

    folder = work_dir / "inference-model"
    if folder.exists():
        shutil.rmtree(folder)
    trainer.accelerator.unwrap_model(trainer.model).save_pretrained(folder)
    trainer.processor.save_pretrained(folder)
    paths = rafdb_files(data_root, "test")[0][: args.inference_images]
    count = len(paths)

    predictor = FERPredictor(str(folder), detector=None, device=trainer.accelerator.device)
    device = predictor.device

    def run_predictor() -> None:
        results = list(predictor.predict_files(paths))
        failed = [r.error for r in results if r.error is not None]
        if failed:
            raise RuntimeError(f"the predictor failed on {len(failed)} image(s), first: {failed[0]}")

    # Default settings, but trust_remote_code=False: without it pipeline() asks on the terminal whether to run the
    # folder's code; False uses the classes the imported fer_mek registers (the same code), without asking.
    classifier = pipeline("image-classification", model=str(folder), trust_remote_code=False)
    names = [str(p) for p in paths]

    def run_pipeline() -> None:
        classifier(names)

    model, processor = predictor.models[0], predictor.processors[0]
    images = []
    for path in paths:
        with Image.open(path) as file:
            images.append(file.convert("RGB"))
    dtype = next(model.parameters()).dtype
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device, dtype=dtype)
    chunks = list(torch.split(pixels, predictor.batch_size))

    @torch.inference_mode()
    def run_model() -> None:
        for chunk in chunks:
            model(pixel_values=chunk)

    figures = {}
    warm = {"predictor": lambda: list(predictor.predict_files(paths[: predictor.batch_size])),
            "pipeline": lambda: classifier(names[:4]), "model_alone": lambda: run_model()}
    for name, function in (("predictor", run_predictor), ("pipeline", run_pipeline), ("model_alone", run_model)):
        for _ in range(args.warmup if name != "model_alone" else 1):
            warm[name]()
        synchronize(device)
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            function()
            synchronize(device)
            runs.append(rate(count, time.perf_counter() - start))
        figures[name] = figure(runs, images=count)
    figures["predictor"].update(batch_size=predictor.batch_size, device=str(device), detector=None)
    figures["pipeline"].update(batch_size=getattr(classifier, "_batch_size", None) or 1,
                               device=str(classifier.device))
    figures["model_alone"].update(batch_size=predictor.batch_size, device=str(device), dtype=str(dtype))
    return figures


# ----------------------------------------------------------------------------------------------- report
ROWS = (
    ("limit", "limit: train step on device tensors (no data)"),
    ("loop", "fer-mek training loop (data + step)"),
    ("reference", "reference pattern (per-sample PIL, 2 passes)"),
    ("predictor", "inference: fer-mek batch predictor"),
    ("pipeline", "inference: transformers pipeline"),
    ("model_alone", "inference: model alone (preprocessed tensors)"),
)


def ratios_of(figures: dict[str, dict[str, Any]]) -> dict[str, float]:
    """loop/limit, loop/reference and predictor/pipeline, for the figures that were measured."""
    out = {}
    for numerator, denominator in (("loop", "limit"), ("loop", "reference"), ("predictor", "pipeline"),
                                   ("predictor", "model_alone")):
        if numerator in figures and denominator in figures:
            out[f"{numerator}/{denominator}"] = figures[numerator]["images_per_s"] / figures[denominator]["images_per_s"]
    return out


def format_report(results: dict[str, Any]) -> str:
    """The header and the table printed at the end of a run."""
    machine, versions, settings = results["machine"], results["versions"], results["settings"]
    git = results["git"]
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
    lines = [
        "fer-mek benchmark",
        f"machine: {machine['platform']} ({machine['processor']}), {machine['cpu_count']} CPUs "
        f"({machine['usable_cores']} usable), {machine['torch_threads']} torch threads{gpu}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"date: {results['date']}   git: {git.get('commit') or 'unknown'}"
        + (" (+ uncommitted changes)" if git.get("dirty") else ""),
        f"settings: {settings['backbone']} {settings['image_size']}px, batch {settings['batch_size']}, "
        f"{settings['method']}, mixed precision {settings['mixed_precision']}, auto-augment "
        f"{settings['auto_augment']!r}, re-prob {settings['re_prob']}, {settings['warmup']} warm-up + "
        f"{settings['repeats']} x {settings['steps']} steps, data {settings['num_images']} JPEGs "
        f"({settings['train_images']} train / {settings['test_images']} test)"
        + (f", extra train args {settings['extra_train_args']!r}" if settings["extra_train_args"] else ""),
        "",
    ]
    figures, ratios = results["figures"], results["ratios"]
    ratio_text = {
        "loop": "; ".join(f"{k} {v:.2f}" for k, v in ratios.items() if k.startswith("loop/")),
        "predictor": "; ".join(f"{k} {v:.2f}" for k, v in ratios.items() if k.startswith("predictor/")),
    }
    header = ("figure", "images/s", "ms/image", "ratio")
    rows = [(label, f"{figures[key]['images_per_s']:,.1f}", f"{figures[key]['ms_per_image']:.2f}",
             ratio_text.get(key, "")) for key, label in ROWS if key in figures]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines.append("-|-".join("-" * w for w in widths))
    for row in rows:
        lines.append(" | ".join(cell.rjust(w) if 0 < i < 3 else cell.ljust(w)
                                for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    lines.append("")
    if "loop" in figures:
        loop = figures["loop"]
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in loop["setup_phases_s"].items())
        cold = "cold, pixel cache built" if loop["data_pipeline"] == "cached" else "cold"
        lines.append(f"loop setup ({cold}): {loop['setup_s']:.1f} s ({phases}); data pipeline "
                     f"{loop['data_pipeline']}, {loop['num_workers']} workers, single pass {loop['single_pass']}")
    if "model_trainer_setup" in results:
        lines.append(f"setup of the limit's trainer (warm when the loop ran first): "
                     f"{results['model_trainer_setup']['setup_s']:.1f} s")
    if results["data"]["write_s"]:
        lines.append(f"writing the JPEG tree: {results['data']['write_s']:.1f} s (once; reused by later runs)")
    lines.append(f"results: {results['json']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the measurements chosen with ``--only``, print the report, write the JSON and return the results."""
    args = parse_args(argv)
    work_dir = Path(args.work_dir).expanduser().resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json).expanduser().resolve() if args.json else work_dir / "benchmark.json"
    threads_before = torch.get_num_threads()
    cache_before = os.environ.get("FER_MEK_CACHE")
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ["FER_MEK_CACHE"] = str(work_dir / "pixel-cache")  # the trainer's pixel cache, emptied for the loop
    try:
        mixed_precision = args.mixed_precision or ("bf16" if torch.cuda.is_available() else "no")
        train = load_train_script()
        data_root, data = prepare_data(work_dir, args.num_images)
        results: dict[str, Any] = environment()
        results["settings"] = {
            **{k: v for k, v in vars(args).items() if k not in ("only", "json", "mixed_precision")},
            "only": args.only, "mixed_precision": mixed_precision,
            "train_images": sum(data["train_counts"]), "test_images": sum(data["test_counts"]),
        }
        results["data"] = data
        results["json"] = str(json_path)
        figures: dict[str, dict[str, Any]] = {}
        if "loop" in args.only:
            figures["loop"] = measure_loop(train, args, data_root, work_dir, mixed_precision)
            release()
        if {"limit", "reference", "inference"} & set(args.only):
            trainer, results["model_trainer_setup"] = build_model_trainer(train, args, data_root, work_dir,
                                                                          mixed_precision)
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
        results["figures"] = {key: figures[key] for key, _ in ROWS if key in figures}
        results["ratios"] = ratios_of(figures)
    finally:
        torch.set_num_threads(threads_before)
        if cache_before is None:
            os.environ.pop("FER_MEK_CACHE", None)
        else:
            os.environ["FER_MEK_CACHE"] = cache_before
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str))
    print(format_report(results), flush=True)
    return results


if __name__ == "__main__":
    main()

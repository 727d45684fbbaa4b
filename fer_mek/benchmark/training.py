"""Training figures: the step alone (limit), fer-mek's loop end to end (loop) and the official MEK pattern (reference).

The limit and the loop run :class:`fer_mek.train.Trainer` itself, built from ``scripts/train.py``-style options
(:func:`trainer_argv`); the reference reimplements the official MEK code's training loop with the same model, batch,
image size and augmentation settings. Moved from ``scripts/benchmark.py``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from fer_mek.train import Trainer, parse_config
from fer_mek.train.config import augmentation_options

from .fixtures import fixture_counts, rafdb_files
from .timing import cycle, figure, measure, rate

__all__ = ["SETUP_PHASES", "ReferenceDataset", "build_model_trainer", "measure_limit", "measure_loop",
           "measure_reference", "timed_methods", "trainer_argv", "trainer_details"]

#: Trainer methods whose durations make up the setup time (``setup`` calls the others).
SETUP_PHASES = ("setup", "load_data", "build_model", "build_loaders", "build_optimization")


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


def trainer_argv(args: argparse.Namespace, data_root: Path, output_dir: Path, mixed_precision: str,
                 max_steps: int | None = None) -> list[str]:
    """The training options of a benchmark trainer (``--extra-train-args`` last: they win)."""
    argv = ["--source", "rafdb", "--data-root", str(data_root), "--backbone", args.backbone,
            "--image-size", str(args.image_size), "--batch-size", str(args.batch_size), "--method", args.method,
            "--mixed-precision", mixed_precision, "--auto-augment", args.auto_augment, "--re-prob", str(args.re_prob),
            "--lr", "1e-4", "--log-with", "none", "--overwrite", "--output-dir", str(output_dir)]
    if args.workers is not None:
        argv += ["--num-workers", str(args.workers)]
    if max_steps is not None:
        argv += ["--max-steps", str(max_steps), "--epochs", "1"]
    return argv + shlex.split(args.extra_train_args)


def trainer_details(trainer: Trainer) -> dict[str, Any]:
    """What a trainer actually ran with: its resolved options, workers and device."""
    config = trainer.config
    return {"device": str(trainer.accelerator.device), "num_workers": getattr(trainer, "num_workers", None),
            "data_pipeline": getattr(config, "data_pipeline", None), "single_pass": getattr(config, "single_pass", None),
            "channels_last": getattr(config, "channels_last", None), "mixed_precision": config.mixed_precision}


def measure_loop(args: argparse.Namespace, data_root: Path, work_dir: Path, mixed_precision: str) -> dict[str, Any]:
    """fer-mek's training loop end to end (``Trainer.run``), with its cold setup time.

    The throughput of each window of ``--steps`` steps after the warm-up comes from ``Trainer.step_times`` (the
    trainer reads the loss of every step, which waits for the device).

    Raises:
        ValueError: when the train split has fewer batches than the run needs, or the loop stopped early.
    """
    needed = args.warmup + args.repeats * args.steps
    argv = trainer_argv(args, data_root, work_dir / "run-loop", mixed_precision, max_steps=needed)
    config = parse_config(argv)
    train_images = sum(fixture_counts(args.num_images)[0])
    batches = (train_images - math.ceil(config.val_fraction * train_images)) // config.batch_size
    if batches < needed:
        raise ValueError(f"the loop needs {needed} steps (--warmup + --repeats x --steps) in one epoch, but the train "
                         f"split gives {batches} batches of {config.batch_size}: raise --num-images or lower the steps")
    cache = Path(os.environ["FER_MEK_CACHE"])
    if cache.exists():
        shutil.rmtree(cache)  # the setup time includes the one-time cache build of a first run
    trainer = Trainer(config)
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
    return figure(runs, "fer-mek training loop (data + step)", steps=len(times), setup_s=phases.get("setup"),
                  setup_phases_s={k: v for k, v in phases.items() if k != "setup"},
                  run_s=run_s, **trainer_details(trainer), train_options=argv)


def build_model_trainer(args: argparse.Namespace, data_root: Path, work_dir: Path,
                        mixed_precision: str) -> tuple[Trainer, dict[str, Any]]:
    """A set-up trainer (same options as the loop) whose step, model and processor the other figures use."""
    argv = trainer_argv(args, data_root, work_dir / "run-limit", mixed_precision)
    trainer = Trainer(parse_config(argv))
    phases: dict[str, float] = {}
    timed_methods(trainer, SETUP_PHASES, phases)
    trainer.setup()
    return trainer, {"setup_s": phases["setup"], "setup_phases_s": {k: v for k, v in phases.items() if k != "setup"},
                     "train_options": argv}


def measure_limit(trainer: Trainer, args: argparse.Namespace) -> dict[str, Any]:
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
    return measure(lambda: trainer.train_step(inputs), batch_size, label="limit: train step on device tensors (no data)",
                   calls=args.steps, warmup=args.warmup, repeats=args.repeats, sync=device,
                   inputs_via_model_inputs=via_model_inputs, single_pass_input=inputs.get("single_pass"),
                   **trainer_details(trainer))


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


def measure_reference(trainer: Trainer, args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    """The official MEK pattern: per-sample PIL decoding and augmentation in workers, two forward passes per step."""
    from fer_mek import MEKForImageClassification
    from fer_mek.data.transforms import build_train_transform

    device, settings = trainer.accelerator.device, trainer.config  # the loop's settings, --extra-train-args included
    mek = settings.method == "mek"
    paths, labels = rafdb_files(data_root, "train")
    transform = build_train_transform(trainer.processor, **augmentation_options(settings))
    dataset = ReferenceDataset(paths, labels, transform, with_flip=mek)
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.reference_workers, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    config = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.model).config)
    model = MEKForImageClassification(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=False)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    batches = cycle(loader)  # a new epoch restarts the workers, as in the reference code

    def step() -> float:
        batch = next(batches)
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

    try:
        return measure(step, settings.batch_size, label="reference pattern (per-sample PIL, 2 passes)",
                       calls=args.steps, warmup=args.warmup, repeats=args.repeats, sync=device,
                       device=str(device), workers=args.reference_workers, precision="fp16 autocast + GradScaler" if amp else "fp32",
                       forward_passes_per_step=2 if mek else 1, train_images=len(dataset),
                       steps_per_epoch=len(loader))
    finally:
        batches.close()  # shuts the loader's workers down

#!/usr/bin/env python
"""Train a MEK facial-expression classifier: ``accelerate launch scripts/train.py [--recipe NAME] [options]``.

With no arguments it runs the ``synthetic`` recipe: MEK on the embedded synthetic expression set, leaving a complete,
loadable, evaluated run folder. A recipe (``configs/<name>.yaml`` or a path) sets the published configurations;
command-line options override the recipe; options no recipe sets keep the defaults below, which are the official MEK
hyper-parameters. Runs on one CPU, one GPU or many (``accelerate config`` / ``accelerate launch``).

Run folder (``--output-dir``):
    best/, last/                 save_pretrained folders (safetensors, config with id2label, preprocessor, code)
    checkpoint/                  accelerate state for --resume (model, optimizer, scheduler, RNG, sampler, EMA)
    results.json                 validation and test metrics, class counts, balance weights, init, versions, time
    confusion_matrix.png         test confusion matrix of the chosen checkpoint (row-normalised)
    training_curves.png          losses and validation metrics per epoch
    train_config.yaml            the resolved configuration
    logs/                        TensorBoard logs (when tensorboard is installed)

The test split is evaluated once, at the end, on the checkpoint chosen on validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

# scripts/evaluate.py would shadow the `evaluate` package that fer_mek.metrics imports: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from fer_mek.data.transforms import RAND_AUGMENT, RE_PROB  # noqa: E402  (the official MEK augmentation)

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPE_DIR = REPO_ROOT / "configs"
# Options that may change between a run and its resumption; every other option must match the saved run.
RESUMABLE_OPTIONS = {"resume", "overwrite", "epochs", "num_workers", "log_with", "checkpoint_every", "max_steps",
                     "channels_last", "compile"}


@dataclass
class TrainConfig:
    """Every option of a training run. Field metadata holds the command-line help."""

    recipe: str = field(default="synthetic", metadata={"help": "recipe name in configs/ (e.g. rafdb-resnet18-imagenet) or a YAML path; options given on the command line override it"})
    # Data
    source: str = field(default="synthetic", metadata={"help": "dataset source: synthetic, rafdb, fer2013, folder or hub"})
    data_root: str | None = field(default=None, metadata={"help": "dataset root (file, folder or Hub id) for every source but synthetic"})
    val_fraction: float = field(default=0.1, metadata={"help": "stratified fraction of train held out for validation"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/validation split (recorded in results.json)"})
    synthetic_images: int = field(default=4000, metadata={"help": "synthetic source: number of images (train+validation+test)"})
    synthetic_image_size: int = field(default=112, metadata={"help": "synthetic source: side of the generated images (draw them at the model's input size to skip a resize)"})
    data_pipeline: str = field(default="cached", metadata={"help": "cached: decode and resize every image once into a memory-mapped uint8 cache, augment whole batches on the device (fast); per-sample: PIL decode + timm transforms per image in DataLoader workers (any timm auto-augment policy)"})
    skip_bad: bool = field(default=False, metadata={"help": "skip unreadable images and bad rows (listed in results.json) instead of stopping"})
    # Model
    backbone: str = field(default="resnet18", metadata={"help": "timm backbone name, e.g. resnet18, resnet34, swin_tiny_patch4_window7_224"})
    head: str = field(default="linear", metadata={"help": "linear (MEK reference) or conv_bn (published MEK ResNet layout)"})
    init: str = field(default="random", metadata={"help": "backbone init: random, timm (timm's pretrained weights, needs the Hub or its cache) or a state_dict path (e.g. an MS-Celeb-1M ResNet)"})
    image_size: int = field(default=224, metadata={"help": "input side in pixels (the published recipes use 224)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout before the classifier"})
    drop_path: float = field(default=0.0, metadata={"help": "stochastic depth rate of the backbone (timm drop_path_rate)"})
    method: str = field(default="mek", metadata={"help": "mek (RSL + attention consistency on the flipped pair) or baseline (plain cross-entropy)"})
    smoothing: float = field(default=0.3, metadata={"help": "MEK re-balanced label smoothing epsilon"})
    attention_weight: float = field(default=0.1, metadata={"help": "MEK attention consistency weight lambda"})
    single_pass: bool = field(default=True, metadata={"help": "MEK: one forward pass over [x; flip(x)] instead of the reference's two (BatchNorm statistics then span both halves; measured faster at 64-112 px and slower at 224 px on a 2-core CPU: see BENCHMARKS.md)"})
    # Optimisation
    epochs: int = field(default=40, metadata={"help": "number of epochs"})
    batch_size: int = field(default=64, metadata={"help": "batch size per process"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    optimizer: str = field(default="adamw", metadata={"help": "adamw, adam or sgd (timm create_optimizer_v2)"})
    lr: float | None = field(default=None, metadata={"help": "learning rate; default: 5e-4 x total batch / 512 (official MEK rule)"})
    weight_decay: float = field(default=0.05, metadata={"help": "weight decay"})
    scheduler: str = field(default="cosine", metadata={"help": "cosine (with warm-up), exponential (x gamma per epoch) or constant"})
    warmup_epochs: float = field(default=1.0, metadata={"help": "linear warm-up length in epochs (cosine)"})
    gamma: float = field(default=0.9, metadata={"help": "per-epoch decay of the exponential scheduler"})
    clip_grad_norm: float = field(default=5.0, metadata={"help": "gradient norm clipping (0: off)"})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16"})
    channels_last: bool = field(default=True, metadata={"help": "channels-last memory format for model and inputs (faster convolutions)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (slow start, faster steps on a GPU)"})
    ema_decay: float = field(default=0.0, metadata={"help": "EMA of the weights (timm ModelEmaV3) with this decay; 0: off. Evaluation and saved weights use the EMA"})
    balanced_sampler: bool = field(default=False, metadata={"help": "sample classes equally often (WeightedRandomSampler)"})
    auto_augment: str = field(default=RAND_AUGMENT, metadata={"help": "timm RandAugment policy ('' for none)"})
    re_prob: float = field(default=RE_PROB, metadata={"help": "random erasing probability"})
    # Selection and stopping
    select_metric: str = field(default="mean_class_accuracy", metadata={"help": "validation metric that chooses the best checkpoint"})
    early_stopping_patience: int = field(default=0, metadata={"help": "stop after this many epochs without improvement (0: off)"})
    # Run
    output_dir: str = field(default="runs/fer-mek", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing run folder"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --output-dir from its last checkpoint"})
    checkpoint_every: int = field(default=0, metadata={"help": "also checkpoint every N optimizer steps (0: at epoch ends only)"})
    max_steps: int = field(default=0, metadata={"help": "stop after N optimizer steps in total (0: no limit; for smoke tests)"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, sampling and augmentation"})
    num_workers: int = field(default=-1, metadata={"help": "DataLoader workers per process; -1: automatic (the CPU cores a process can spare)"})
    log_with: str = field(default="tensorboard", metadata={"help": "tracker: tensorboard or none"})


CHOICES = {
    "source": ("synthetic", "rafdb", "fer2013", "folder", "hub"),
    "data_pipeline": ("cached", "per-sample"),
    "head": ("linear", "conv_bn"),
    "method": ("mek", "baseline"),
    "optimizer": ("adamw", "adam", "sgd"),
    "scheduler": ("cosine", "exponential", "constant"),
    "mixed_precision": ("no", "bf16", "fp16"),
    "select_metric": ("mean_class_accuracy", "accuracy", "macro_f1"),
    "log_with": ("tensorboard", "none"),
}


# ----------------------------------------------------------------------------------------------- configuration
def list_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """The options of a recipe: a name in ``configs/`` or a YAML path. Unknown keys are an error."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown recipe {name_or_path!r}; choose one of {list_recipes()} or give a YAML path")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of option: value")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {unknown}; valid options are the long flags of --help")
    values.pop("recipe", None)
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS
    )
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        help_text = f"{f.metadata['help']} (default: {default})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        parser.add_argument(flag, type=kind, choices=CHOICES.get(f.name), help=help_text, metavar=None)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Recipe values, then command-line options, over the dataclass defaults; validated."""
    given = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {"recipe": given.get("recipe", TrainConfig.recipe)}
    values.update(load_recipe(values["recipe"]))
    values.update(given)
    config = TrainConfig(**values)
    validate_config(config)
    return config


def validate_config(config: TrainConfig) -> None:
    for name, allowed in CHOICES.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"--{name.replace('_', '-')} must be one of {allowed}, got {getattr(config, name)!r}")
    if config.source != "synthetic" and not config.data_root:
        raise ValueError(f"--source {config.source} needs --data-root (the dataset's file, folder or Hub id)")
    if config.resume and config.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    for name in ("epochs", "batch_size", "grad_accum", "image_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if config.num_workers < -1:
        raise ValueError(f"--num-workers must be -1 (automatic) or at least 0, got {config.num_workers}")
    if config.data_pipeline == "cached" and config.auto_augment:
        from fer_mek.data.batch_augment import parse_rand_augment

        parse_rand_augment(config.auto_augment)  # a policy the batched pipeline cannot run fails here, not later
    if not 0.0 < config.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {config.val_fraction}")
    if config.init not in ("random", "timm") and not Path(config.init).is_file():
        raise ValueError(f"--init {config.init!r}: not random, timm, nor an existing state_dict file")


def check_run_folder(config: TrainConfig) -> None:
    """Refuse to mix runs: a non-empty folder needs --resume (same settings) or --overwrite."""
    run = Path(config.output_dir)
    if not run.exists() or not any(run.iterdir()):
        if config.resume:
            raise ValueError(f"--resume: {run} holds no run to resume")
        return
    if config.overwrite:
        return
    if not config.resume:
        raise ValueError(f"{run} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                         "or choose another --output-dir")
    saved_path = run / "train_config.yaml"
    if not (run / "checkpoint").is_dir() or not saved_path.is_file():
        raise ValueError(f"--resume: {run} has no checkpoint/ and train_config.yaml to resume from")
    saved = yaml.safe_load(saved_path.read_text())
    differing = sorted(
        key for key, value in dataclasses.asdict(config).items()
        if key not in RESUMABLE_OPTIONS | {"recipe"} and saved.get(key) != value
    )
    if differing:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {getattr(config, key)!r}" for key in differing)
        raise ValueError(f"--resume: {run} is a different run ({details}); use the same options or another --output-dir")


# ----------------------------------------------------------------------------------------------- training pieces
class TrainerState:
    """Progress that a checkpoint must carry besides the accelerate state (saved as JSON, never pickled)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_metric = -math.inf
        self.best_epoch = -1
        self.epochs_without_improvement = 0
        self.history: list[dict[str, Any]] = []

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(self, key, value)


class SeededAugmentation(torch.utils.data.Dataset):
    """Training samples whose random augmentation is a pure function of ``(seed, epoch, index)``.

    The sampler (:class:`EpochSampler`) encodes the epoch into the index it yields. Each sample is transformed under
    its own seed, inside a forked RNG, so the augmentation of a sample does not depend on which worker or process
    draws it, on DataLoader look-ahead, or on a resume mid-epoch — and the global RNG (dropout) is left untouched.
    """

    def __init__(self, dataset: Any, transform: Any, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int) -> dict[str, Any]:
        import random

        import numpy as np

        epoch, index = divmod(int(key), len(self.dataset))
        row = self.dataset[index]
        sample_seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed)
                random.seed(sample_seed)
                np.random.seed(sample_seed)  # timm's RandAugment draws its operations with numpy
                out = self.transform({key: [value] for key, value in row.items()})
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        return {key: values[0] for key, values in out.items()}


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffled (or class-balanced, with ``weights``) order of one epoch from ``seed + epoch``; yields
    ``epoch * N + index`` so that :class:`SeededAugmentation` knows the epoch."""

    def __init__(self, num_samples: int, seed: int, weights: list[float] | None = None):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.double)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        return iter((order + self.epoch * self.num_samples).tolist())


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    from transformers import get_constant_schedule, get_cosine_schedule_with_warmup

    total = config.epochs * steps_per_epoch
    if config.scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, round(config.warmup_epochs * steps_per_epoch), total)
    if config.scheduler == "exponential":
        # The published MEK ResNet checkpoints: lr x gamma after every epoch.
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: config.gamma ** (step // steps_per_epoch))
    return get_constant_schedule(optimizer)


def versions() -> dict[str, str]:
    import accelerate
    import datasets
    import timm
    import transformers

    import fer_mek

    return {
        "fer_mek": fer_mek.__version__, "torch": torch.__version__, "timm": timm.__version__,
        "transformers": transformers.__version__, "accelerate": accelerate.__version__,
        "datasets": datasets.__version__, "python": platform.python_version(),
    }


class Trainer:
    """One training run, from data to results.json. ``run()`` returns the results."""

    def __init__(self, config: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

        self.config = config
        self.run_dir = Path(config.output_dir)
        log_with = config.log_with
        if log_with == "tensorboard" and not _tensorboard_available():
            log_with = "none"  # said once below, not a silent change: results.json records the tracker used
        self.tracker = log_with
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.grad_accum,
            log_with=None if log_with == "none" else log_with,
            project_config=ProjectConfiguration(project_dir=str(self.run_dir), logging_dir=str(self.run_dir / "logs")),
            # Shuffling is a function of (seed, epoch) (EpochSampler; seedable samplers for any other loader):
            # exact resume, the same order on every process.
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        )
        set_seed(config.seed, device_specific=False)
        self.state = TrainerState()
        self.interrupted = False
        self.step_times: list[float] = []  # perf_counter() after each training step (benchmarks read it)

    # -- logging helpers
    def print(self, *args: Any) -> None:
        self.accelerator.print(*args)

    # -- setup
    def prepare_run_folder(self) -> None:
        if self.accelerator.is_main_process:
            if self.config.overwrite and self.run_dir.exists():
                shutil.rmtree(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            saved = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in ("resume", "overwrite")}
            (self.run_dir / "train_config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
        self.accelerator.wait_for_everyone()

    def load_data(self) -> None:
        from fer_mek.data import class_counts, get_metadata, load_source

        config = self.config
        kwargs: dict[str, Any] = {"val_fraction": config.val_fraction, "seed": config.split_seed}
        if config.source == "synthetic":
            kwargs.update(num_images=config.synthetic_images, image_size=config.synthetic_image_size)
        else:
            kwargs["skip_bad"] = config.skip_bad
        # Main process first: it builds caches (synthetic images, parsed CSVs) that the others then read.
        with self.accelerator.main_process_first():
            self.dataset = load_source(config.source, config.data_root, **kwargs)
        train = self.dataset["train"]
        self.label_names = list(train.features["label"].names)
        self.class_counts = {split: class_counts(self.dataset[split]) for split in self.dataset}
        self.data_metadata = get_metadata(self.dataset)

    def build_model(self) -> None:
        from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor
        from fer_mek.convert import load_backbone_weights

        config = self.config
        baseline = config.method == "baseline"
        model_config = MEKConfig(
            backbone=config.backbone,
            backbone_kwargs={"drop_path_rate": config.drop_path} if config.drop_path else None,
            head=config.head,
            dropout=config.dropout,
            image_size=config.image_size,
            id2label=dict(enumerate(self.label_names)),
            # Plain cross-entropy is RSL with no smoothing and no attention term.
            smoothing=0.0 if baseline else config.smoothing,
            attention_weight=0.0 if baseline else config.attention_weight,
            class_counts=self.class_counts["train"],
        )
        self.model = MEKForImageClassification(model_config)
        self.init_report = {"source": "random"}
        if config.init != "random":
            self.init_report = load_backbone_weights(self.model, config.init)
        self.processor = MEKImageProcessor.from_model_config(model_config)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def resolve_num_workers(self) -> int:
        """--num-workers, or with -1 the cores this process can spare: the cached pipeline only copies batches out of
        a memory map, so on a CPU device workers would just compete with the model; per-sample decoding needs them."""
        if self.config.num_workers >= 0:
            return self.config.num_workers
        per_process = max(1, usable_cores() // self.accelerator.num_processes)
        if self.config.data_pipeline == "cached":
            return 0 if self.accelerator.device.type == "cpu" else min(2, per_process)
        return min(8, max(1, per_process - 1))

    def build_loaders(self) -> None:
        from torch.utils.data import DataLoader

        config = self.config
        self.num_workers = self.resolve_num_workers()
        loader_kwargs: dict[str, Any] = {
            "batch_size": config.batch_size, "num_workers": self.num_workers,
            "pin_memory": self.accelerator.device.type == "cuda", "persistent_workers": self.num_workers > 0,
        }
        weights = None
        if config.balanced_sampler:
            counts = self.class_counts["train"]
            weights = [1.0 / counts[label] for label in self.dataset["train"]["label"]]
        self.train_sampler = EpochSampler(len(self.dataset["train"]), config.seed, weights)
        if config.data_pipeline == "cached":
            from fer_mek.data import identity_collate

            train, evals = self._cached_datasets()
            loader_kwargs["collate_fn"] = identity_collate
        else:
            from fer_mek.data import collate_fn, make_transform

            train_transform = make_transform(self.processor, train=True, with_flip=config.method == "mek",
                                             auto_augment=config.auto_augment or None, re_prob=config.re_prob)
            train = SeededAugmentation(self.dataset["train"], train_transform, config.seed)
            eval_transform = make_transform(self.processor, train=False, with_flip=False)
            evals = {split: self.dataset[split].with_transform(eval_transform) for split in ("validation", "test")}
            loader_kwargs["collate_fn"] = collate_fn
        self.train_loader = DataLoader(train, sampler=self.train_sampler, drop_last=True, **loader_kwargs)
        self.eval_loaders = {split: DataLoader(data, shuffle=False, **loader_kwargs) for split, data in evals.items()}
        if len(self.train_loader) == 0:
            raise ValueError(f"the train split has {len(self.dataset['train'])} images, fewer than one batch "
                             f"(--batch-size {config.batch_size}); lower the batch size")

    def _cached_datasets(self) -> tuple[Any, dict[str, Any]]:
        """Pixel caches of every split (built once, by the main process first) and the batched augmentation."""
        from fer_mek.data import BatchAugmentation, CachedImages, cached_pixels, default_cache_dir
        from fer_mek.data.cache import describe_cache
        from fer_mek.data.transforms import processor_settings

        config, accelerator = self.config, self.accelerator
        settings = processor_settings(self.processor)
        size = (settings["height"], settings["width"])
        interpolation = str(getattr(settings["interpolation"], "value", settings["interpolation"]))
        pixels = {}
        with accelerator.main_process_first():
            for split in ("train", "validation", "test"):
                pixels[split] = cached_pixels(
                    self.dataset[split], size, interpolation=interpolation, cache_dir=default_cache_dir(),
                    show_progress=accelerator.is_local_main_process,
                )
        self.print(f"pixel cache: train {describe_cache(pixels['train'])}")
        self.augment = BatchAugmentation(
            size, settings["mean"], settings["std"], auto_augment=config.auto_augment or None,
            re_prob=config.re_prob, normalize=settings["normalize"],
        ).to(accelerator.device)
        self.eval_mean = self.augment.mean if settings["normalize"] else torch.zeros_like(self.augment.mean)
        self.eval_std = self.augment.std if settings["normalize"] else torch.ones_like(self.augment.std)
        train = CachedImages(pixels["train"], self.dataset["train"]["label"], seed=config.seed)
        evals = {split: CachedImages(pixels[split], self.dataset[split]["label"]) for split in ("validation", "test")}
        return train, evals

    def build_optimization(self) -> None:
        import timm.optim

        config = self.config
        total_batch = config.batch_size * config.grad_accum * self.accelerator.num_processes
        self.lr = config.lr if config.lr is not None else 5e-4 * total_batch / 512
        # torch's fused Adam(W) kernels: one kernel per step instead of one per tensor on a GPU; on a CPU the
        # optimizer step of a ResNet-18 drops from about 25 to 11 ms (BENCHMARKS.md).
        fused = {"fused": True} if config.optimizer in ("adam", "adamw") and self.accelerator.device.type in ("cuda", "cpu") else {}
        self.optimizer = timm.optim.create_optimizer_v2(
            self.model, opt=config.optimizer, lr=self.lr, weight_decay=config.weight_decay, **fused
        )
        # Scheduler steps are optimizer steps of one process; accelerate scales them for N processes.
        self.steps_per_epoch = math.ceil(len(self.train_loader) / config.grad_accum)
        self.scheduler = build_scheduler(config, self.optimizer, self.steps_per_epoch)
        (self.model, self.optimizer, self.train_loader, self.scheduler) = self.accelerator.prepare(
            self.model, self.optimizer, self.train_loader, self.scheduler
        )
        if config.compile:
            # The wrapped module's forward is compiled in place: checkpoints, unwrap_model and save_pretrained keep
            # the plain module and its parameter names.
            self.accelerator.unwrap_model(self.model).compile()
        self.eval_loaders = {k: self.accelerator.prepare_data_loader(v) for k, v in self.eval_loaders.items()}
        self.ema = None
        if config.ema_decay > 0:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.accelerator.unwrap_model(self.model), decay=config.ema_decay)
            self.accelerator.register_for_checkpointing(self.ema)

    # -- checkpoints
    def save_checkpoint(self) -> None:
        """accelerate state + trainer state into checkpoint/, through a staging folder and a rename."""
        from fer_mek.io import replace_directory

        staging = self.run_dir / f".tmp-checkpoint-{self.state.global_step}"
        if self.accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)
        self.accelerator.wait_for_everyone()
        try:
            self.accelerator.save_state(str(staging), safe_serialization=True)
            if self.accelerator.is_main_process:
                (staging / "trainer_state.json").write_text(json.dumps(self.state.to_dict(), indent=1))
                replace_directory(staging, self.run_dir / "checkpoint")
        finally:
            if self.accelerator.is_main_process and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self) -> None:
        checkpoint = self.run_dir / "checkpoint"
        self.accelerator.load_state(str(checkpoint))
        self.state.load(json.loads((checkpoint / "trainer_state.json").read_text()))
        self.print(f"resumed from {checkpoint}: epoch {self.state.epoch + 1}, step {self.state.step_in_epoch} "
                   f"of {len(self.train_loader)} in that epoch, {self.state.global_step} optimizer steps done")

    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def save_model(self, name: str) -> None:
        """best/ or last/: a save_pretrained folder (the EMA weights when EMA is on), written atomically."""
        from fer_mek.io import atomic_directory

        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.eval_model())
            with atomic_directory(self.run_dir / name, overwrite=True) as staging:
                model.save_pretrained(staging, safe_serialization=True)
                self.processor.save_pretrained(staging)
        self.accelerator.wait_for_everyone()

    # -- evaluation
    @torch.no_grad()
    def evaluate(self, split: str, model: torch.nn.Module | None = None) -> dict[str, Any]:
        from fer_mek.metrics import compute_metrics

        model = model if model is not None else self.eval_model()
        was_training = model.training
        model.eval()
        predictions, references = [], []
        for batch in self.eval_loaders[split]:
            with self.accelerator.autocast():
                logits = model(pixel_values=self.eval_pixel_values(batch)).logits
            # gather_for_metrics drops the samples that pad the last batch of an uneven split across processes.
            preds, refs = self.accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
            predictions.append(preds.cpu())
            references.append(refs.cpu())
        model.train(was_training)
        return compute_metrics(torch.cat(predictions), torch.cat(references), self.label_names)

    # -- the loop
    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The model's training inputs from a batch of the train loader (already on the device): the cached
        pipeline's uint8 images are augmented here, on the device; the flip pair is built after augmentation."""
        if "images" in batch:
            pixel_values = self.augment(batch["images"], batch["uniforms"])
            inputs: dict[str, Any] = {"pixel_values": pixel_values, "labels": batch["labels"]}
            if self.config.method == "mek":
                inputs["flipped_pixel_values"] = pixel_values.flip(-1)
        else:
            inputs = {key: batch[key] for key in ("pixel_values", "labels", "flipped_pixel_values") if key in batch}
        if self.config.channels_last:
            for key in ("pixel_values", "flipped_pixel_values"):
                if key in inputs:
                    inputs[key] = inputs[key].contiguous(memory_format=torch.channels_last)
        if "flipped_pixel_values" in inputs:
            inputs["single_pass"] = self.config.single_pass
        return inputs

    def eval_pixel_values(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalised evaluation inputs of an evaluation batch: the cached pipeline's uint8 images on the device,
        converted with the evaluation transform's operations (bit-identical to the per-sample pipeline)."""
        if "images" not in batch:
            return batch["pixel_values"]
        pixels = batch["images"].contiguous()  # the cache is NHWC: a permuted view would switch conv kernels
        return pixels.float().mul_(1.0 / 255.0).sub_(self.eval_mean).div_(self.eval_std)

    def train_step(self, inputs: dict[str, torch.Tensor]) -> Any:
        """Forward, backward, clipping and (at accumulation boundaries) one optimizer and scheduler step on model
        inputs already on the device (``pixel_values``, ``labels``, optional ``flipped_pixel_values``)."""
        config, accelerator = self.config, self.accelerator
        with accelerator.accumulate(self.model):
            outputs = self.model(**inputs)
            accelerator.backward(outputs.loss)
            if accelerator.sync_gradients and config.clip_grad_norm > 0:
                accelerator.clip_grad_norm_(self.model.parameters(), config.clip_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return outputs

    def train_epoch(self, epoch: int) -> dict[str, float]:
        from tqdm.auto import tqdm

        config, accelerator = self.config, self.accelerator
        self.model.train()
        loader = self.train_loader
        if self.state.step_in_epoch:
            loader = accelerator.skip_first_batches(loader, self.state.step_in_epoch)
        # accelerate's loaders push their own epoch counter into the sampler at every iteration (and the loader of
        # skip_first_batches starts it at 0): set it on the loader that is iterated.
        loader.set_epoch(epoch)
        sums = {"loss": 0.0, "smooth_label_loss": 0.0, "attention_loss": 0.0}
        seen = 0
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", initial=self.state.step_in_epoch,
                        total=len(self.train_loader), disable=not accelerator.is_local_main_process, leave=False)
        for batch in progress:
            outputs = self.train_step(self.model_inputs(batch))
            self.state.step_in_epoch += 1
            for key in sums:
                value = getattr(outputs, key, None)
                if value is not None:
                    sums[key] += float(value.detach())  # also waits for the device: step_times are real
            seen += 1
            self.step_times.append(time.perf_counter())
            if accelerator.sync_gradients:
                self.state.global_step += 1
                if self.ema is not None:
                    self.ema.update(accelerator.unwrap_model(self.model), step=self.state.global_step)
                if self.state.global_step % 10 == 0:
                    accelerator.log({"train/loss": float(outputs.loss.detach()),
                                     "train/lr": self.scheduler.get_last_lr()[0]}, step=self.state.global_step)
                progress.set_postfix(loss=f"{float(outputs.loss.detach()):.3f}")
                if config.checkpoint_every and self.state.global_step % config.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.interrupted or (config.max_steps and self.state.global_step >= config.max_steps):
                    break
        progress.close()
        return {f"train_{k}": v / max(seen, 1) for k, v in sums.items() if v or k == "loss"}

    def setup(self) -> None:
        """Run folder, data, model, loaders, optimizer and scheduler: everything before the first step."""
        self.prepare_run_folder()
        self.load_data()
        self.build_model()
        self.build_loaders()
        self.build_optimization()

    def run(self) -> dict[str, Any]:
        config, accelerator, state = self.config, self.accelerator, self.state
        started = time.time()
        self.setup()
        if config.resume:
            self.load_checkpoint()
        accelerator.init_trackers("fer-mek", config={k: v for k, v in dataclasses.asdict(config).items()
                                                     if isinstance(v, (int, float, str, bool))})
        if self.tracker != config.log_with:
            self.print("note: tensorboard is not installed; training curves go to training_curves.png only")
        self.print(self.describe())
        self.warn_single_thread()

        previous = signal.signal(signal.SIGINT, self._on_interrupt) if accelerator.is_main_process else None
        try:
            while state.epoch < config.epochs and not self.interrupted:
                epoch = state.epoch
                train_stats = self.train_epoch(epoch)
                if self.interrupted:
                    break
                epoch_finished = state.step_in_epoch >= len(self.train_loader)
                if not epoch_finished:  # --max-steps reached inside the epoch
                    self.save_checkpoint()
                    break
                val = self.evaluate("validation")
                row = {"epoch": epoch + 1, **train_stats, "lr": self.scheduler.get_last_lr()[0],
                       **{f"val_{k}": val[k] for k in ("accuracy", "mean_class_accuracy", "macro_f1")}}
                state.history.append(row)
                accelerator.log({k.replace("val_", "val/"): v for k, v in row.items() if k.startswith("val_")},
                                step=state.global_step)
                improved = val[config.select_metric] > state.best_metric
                if improved:
                    state.best_metric, state.best_epoch = val[config.select_metric], epoch + 1
                    state.epochs_without_improvement = 0
                    self.save_model("best")
                else:
                    state.epochs_without_improvement += 1
                self.print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  val acc {val['accuracy']:.4f}  "
                           f"val mean-class acc {val['mean_class_accuracy']:.4f}" + ("  (best)" if improved else ""))
                state.epoch, state.step_in_epoch = epoch + 1, 0
                self.save_checkpoint()
                if config.early_stopping_patience and state.epochs_without_improvement >= config.early_stopping_patience:
                    self.print(f"early stopping: no {config.select_metric} gain for "
                               f"{config.early_stopping_patience} epochs")
                    break
                if config.max_steps and state.global_step >= config.max_steps:
                    break
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if self.interrupted:
            self.save_checkpoint()
            self.print(f"interrupted: checkpoint saved in {self.run_dir / 'checkpoint'}; continue with --resume")
            accelerator.end_training()
            return {"interrupted": True}
        if state.best_epoch < 0:
            # No epoch finished (--max-steps inside the first epoch): nothing was selected, nothing is reported.
            accelerator.end_training()
            return {"finished": False, "global_step": state.global_step}
        self.save_model("last")
        results = self.finish(time.time() - started)
        accelerator.end_training()
        return results

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        if self.interrupted:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.interrupted = True
        print("\nCtrl-C: finishing the current step, saving a checkpoint, then exiting (Ctrl-C again to abort)",
              file=sys.stderr)

    def warn_single_thread(self) -> None:
        """`accelerate launch` gives every process one CPU thread unless told otherwise: on a CPU that halves (or
        worse) the speed of a single-process run without a word."""
        if self.accelerator.device.type != "cpu":
            return
        spare = usable_cores() // self.accelerator.num_processes
        if torch.get_num_threads() < spare:
            self.print(f"note: {torch.get_num_threads()} CPU thread(s) per process but {spare} core(s) available; "
                       f"`accelerate launch --num_cpu_threads_per_process {spare}` (or OMP_NUM_THREADS={spare}) "
                       "uses them all")

    def describe(self) -> str:
        c = self.config
        counts = ", ".join(f"{n} {k}" for k, n in zip(self.label_names, self.class_counts["train"], strict=True))
        return (f"fer-mek training: {c.method} on {c.source} ({len(self.dataset['train'])} train / "
                f"{len(self.dataset['validation'])} val / {len(self.dataset['test'])} test), {c.backbone} "
                f"(init {self.init_report['source']}), {c.image_size}px, {c.epochs} epochs x {self.steps_per_epoch} "
                f"steps, lr {self.lr:.2e}, {self.accelerator.num_processes} process(es) on {self.accelerator.device} "
                f"({torch.get_num_threads()} CPU threads each), "
                f"mixed precision {c.mixed_precision}\ntrain classes: {counts}")

    def finish(self, train_seconds: float) -> dict[str, Any]:
        """Evaluate the chosen checkpoint on validation and, once, on test; write results, plots and summary."""
        from fer_mek import MEKForImageClassification
        from fer_mek.metrics import format_metrics_table
        from fer_mek.plots import plot_confusion_matrix, plot_training_curves

        accelerator, state = self.accelerator, self.state
        # Contiguous, as scripts/evaluate.py and users load it: the reported numbers are theirs to the last bit.
        best = MEKForImageClassification.from_pretrained(self.run_dir / "best").to(accelerator.device)
        val = self.evaluate("validation", best)
        test = self.evaluate("test", best)
        results = {
            "run": self.run_dir.name,
            "recipe": self.config.recipe,
            "method": self.config.method,
            "dataset": {"source": self.config.source, "root": self.config.data_root, **self.data_metadata,
                        "val_fraction": self.config.val_fraction, "split_seed": self.config.split_seed},
            "label_names": self.label_names,
            "class_counts": self.class_counts,
            "balance_weights": best.config.get_balance_weights(),
            "init": self.init_report,
            "selection": {"metric": self.config.select_metric, "best_epoch": state.best_epoch,
                          "checkpoint": "best", "ema": self.ema is not None},
            "validation": val,
            "test": test,
            "history": state.history,
            "config": dataclasses.asdict(self.config),
            "environment": {**versions(), "num_processes": accelerator.num_processes,
                            "device": str(accelerator.device), "mixed_precision": self.config.mixed_precision,
                            "tracker": self.tracker, "platform": platform.platform()},
            "train_seconds": round(train_seconds, 1),
        }
        if accelerator.is_main_process:
            from fer_mek.io import atomic_write_text

            atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2, default=str))
            plot_confusion_matrix(test["confusion_matrix"], self.label_names, self.run_dir / "confusion_matrix.png",
                                  title=f"{self.config.source} test, epoch {state.best_epoch}")
            plot_training_curves(state.history, self.run_dir / "training_curves.png", best_epoch=state.best_epoch)
            self.print("\n" + "=" * 72)
            self.print(f"run {self.run_dir} — best epoch {state.best_epoch} of {len(state.history)} "
                       f"(on validation {self.config.select_metric}); {train_seconds / 60:.1f} min")
            self.print(f"validation: accuracy {val['accuracy']:.4f}, mean-class accuracy "
                       f"{val['mean_class_accuracy']:.4f}")
            self.print("test (evaluated once, on the chosen checkpoint):")
            self.print(format_metrics_table(test, self.label_names))
            if self.config.source == "synthetic":
                self.print("(synthetic expression set: these numbers say nothing about real FER accuracy)")
            self.print(f"model: {self.run_dir / 'best'}   results: {self.run_dir / 'results.json'}")
            self.print("=" * 72)
        return results


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse options, check them and the run folder, train. Returns the results (also in results.json)."""
    config = parse_config(argv)
    check_run_folder(config)
    return Trainer(config).run()


if __name__ == "__main__":
    try:
        outcome = main()
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    sys.exit(130 if outcome.get("interrupted") else 0)

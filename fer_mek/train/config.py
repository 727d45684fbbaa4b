"""The options of a training run: :class:`TrainConfig`, the packaged recipes, the command line and its checks.

Precedence: the dataclass defaults (the official MEK hyper-parameters), then the recipe (``--recipe``: a name in
:data:`RECIPE_DIR` or a YAML path), then the options given on the command line. :func:`parse_config` resolves and
validates them; :func:`check_run_folder` refuses to mix two runs in one ``--output-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.sources import SOURCES
from ..data.synthetic import SYNTHETIC_IMAGE_SIZE, SYNTHETIC_NUM_IMAGES
from ..data.transforms import RAND_AUGMENT, RE_PROB  # the official MEK augmentation
from ..runs import CHECKPOINT, TRAIN_CONFIG, RunError, read_train_config

__all__ = [
    "CHOICES",
    "DESCRIPTION",
    "RECIPE_DIR",
    "RESUMABLE_OPTIONS",
    "TrainConfig",
    "build_parser",
    "check_run_folder",
    "list_recipes",
    "load_recipe",
    "parse_config",
    "validate_config",
]

#: The command line's description (``--help``).
DESCRIPTION = """Train a MEK facial-expression classifier: ``accelerate launch scripts/train.py [--recipe NAME] [options]``
(or ``python -m fer_mek.train``).

With no arguments it runs the ``synthetic`` recipe: MEK on the embedded synthetic expression set, leaving a complete,
loadable, evaluated run folder. A recipe (``fer_mek/train/recipes/<name>.yaml`` or a path) sets the published
configurations; command-line options override the recipe; options no recipe sets keep the defaults below, which are
the official MEK hyper-parameters. Runs on one CPU, one GPU or many (``accelerate config`` / ``accelerate launch``).

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

#: The packaged recipes (package data): ``<name>.yaml`` per published configuration.
RECIPE_DIR = Path(__file__).parent / "recipes"
#: Options that may change between a run and its resumption; every other option must match the saved run.
RESUMABLE_OPTIONS = {"resume", "overwrite", "epochs", "num_workers", "log_with", "checkpoint_every", "max_steps",
                     "channels_last", "compile"}
#: Options of the synthetic set only: they do not describe a run on any other source.
_SYNTHETIC_OPTIONS = {"synthetic_images", "synthetic_image_size"}


@dataclass
class TrainConfig:
    """Every option of a training run. Field metadata holds the command-line help."""

    recipe: str = field(default="synthetic", metadata={"help": "recipe name in fer_mek/train/recipes/ (e.g. rafdb-resnet18-imagenet) or a YAML path; options given on the command line override it"})
    # Data
    source: str = field(default="synthetic", metadata={"help": "dataset source: synthetic, rafdb, fer2013, folder or hub"})
    data_root: str | None = field(default=None, metadata={"help": "dataset root (file, folder or Hub id) for every source but synthetic"})
    val_fraction: float = field(default=0.1, metadata={"help": "stratified fraction of train held out for validation"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/validation split (recorded in results.json)"})
    synthetic_images: int = field(default=SYNTHETIC_NUM_IMAGES, metadata={"help": "synthetic source: number of images (train+validation+test)"})
    synthetic_image_size: int = field(default=SYNTHETIC_IMAGE_SIZE, metadata={"help": "synthetic source: side of the generated images (draw them at the model's input size to skip a resize)"})
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
    "source": tuple(SOURCES),
    "data_pipeline": ("cached", "per-sample"),
    "head": ("linear", "conv_bn"),
    "method": ("mek", "baseline"),
    "optimizer": ("adamw", "adam", "sgd"),
    "scheduler": ("cosine", "exponential", "constant"),
    "mixed_precision": ("no", "bf16", "fp16"),
    "select_metric": ("mean_class_accuracy", "accuracy", "macro_f1"),
    "log_with": ("tensorboard", "none"),
}


# ----------------------------------------------------------------------------------------------- recipes
def list_recipes(recipe_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the recipes in ``recipe_dir`` (default: the packaged :data:`RECIPE_DIR`)."""
    folder = Path(recipe_dir) if recipe_dir is not None else RECIPE_DIR
    return sorted(path.stem for path in folder.glob("*.yaml"))


def load_recipe(name_or_path: str, recipe_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The options of a recipe: a name in ``recipe_dir`` (default: the packaged :data:`RECIPE_DIR`) or a YAML path.
    Unknown keys are an error."""
    folder = Path(recipe_dir) if recipe_dir is not None else RECIPE_DIR
    path = Path(name_or_path)
    if not path.suffix:
        path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown recipe {name_or_path!r}; choose one of {list_recipes(folder)} or give a YAML path")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of option: value")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {unknown}; valid options are the long flags of --help")
    values.pop("recipe", None)
    return values


# ----------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """One ``--long-flag`` per :class:`TrainConfig` field (booleans also take ``--no-...``); unset flags stay
    absent from the parsed namespace, so a recipe's values are only overridden by options actually given."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS
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


def parse_config(argv: list[str] | None = None, recipe_dir: str | os.PathLike | None = None) -> TrainConfig:
    """Recipe values, then command-line options, over the dataclass defaults; validated.

    Args:
        argv: Command-line options (default: ``sys.argv[1:]``).
        recipe_dir: Where recipe names are looked up (default: the packaged :data:`RECIPE_DIR`).
    """
    given = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {"recipe": given.get("recipe", TrainConfig.recipe)}
    values.update(load_recipe(values["recipe"], recipe_dir))
    values.update(given)
    config = TrainConfig(**values)
    validate_config(config)
    return config


def validate_config(config: TrainConfig) -> None:
    """Raise ``ValueError`` (naming the option and its allowed values) on an option that cannot work."""
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
        from ..data.batch_augment import parse_rand_augment

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
    if not (run / CHECKPOINT).is_dir() or not (run / TRAIN_CONFIG).is_file():
        raise ValueError(f"--resume: {run} has no {CHECKPOINT}/ and {TRAIN_CONFIG} to resume from")
    try:
        saved = read_train_config(run)
    except RunError as error:
        raise ValueError(f"--resume: {error}") from error
    # The synthetic set's options say nothing about a run on another source (and their defaults may change).
    ignored = RESUMABLE_OPTIONS | {"recipe"} | (_SYNTHETIC_OPTIONS if config.source != "synthetic" else set())
    differing = sorted(
        key for key, value in dataclasses.asdict(config).items()
        if key not in ignored and saved.get(key) != value
    )
    if differing:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {getattr(config, key)!r}" for key in differing)
        raise ValueError(f"--resume: {run} is a different run ({details}); use the same options or another --output-dir")

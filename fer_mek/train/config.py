"""The options of a training run: :class:`TrainConfig`, the packaged recipes, the command line and its checks.

:class:`TrainConfig`, the choices, :data:`RECIPE_DIR`, :func:`list_recipes` and :func:`build_parser` are written in
:mod:`fer_mek_cli.train` (the light command line, which answers ``--help`` without torch) and re-exported here under
the same names; this module adds the recipes' loading, the validation, ``--print-config`` and the run-folder checks.

Precedence: the dataclass defaults (the official MEK hyper-parameters), then the recipe (``--recipe``: a name in
:data:`RECIPE_DIR` or a YAML path), then the options given on the command line. :func:`parse_config` resolves and
validates them; :func:`check_run_folder` refuses to mix two runs in one ``--output-dir``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from fer_mek_cli.train import (
    CHOICES,
    DESCRIPTION,
    DICT_OPTIONS,
    LIST_OPTIONS,
    RECIPE_DIR,
    TrainConfig,
    _field_default,
    build_parser,
    list_recipes,
)

from ..runs import CHECKPOINT, RESULTS, TRAIN_CONFIG, RunError, read_train_config

__all__ = [
    "CHOICES",
    "DESCRIPTION",
    "DICT_OPTIONS",
    "LIST_OPTIONS",
    "RECIPE_DIR",
    "RESUMABLE_OPTIONS",
    "TrainConfig",
    "augmentation_options",
    "build_parser",
    "check_batched_augmentation",
    "check_per_sample_augmentation",
    "check_run_folder",
    "format_config",
    "list_recipes",
    "load_recipe",
    "parse_command_line",
    "parse_config",
    "print_resolved_config",
    "validate_config",
]

#: Options that may change between a run and its resumption; every other option must match the saved run.
RESUMABLE_OPTIONS = {"resume", "overwrite", "epochs", "num_workers", "log_with", "checkpoint_every", "max_steps",
                     "channels_last", "compile", "fused_optimizer"}
#: Options of the synthetic set only: they do not describe a run on any other source.
_SYNTHETIC_OPTIONS = {"synthetic_images", "synthetic_image_size"}
#: Schedulers that ``--warmup-*``, ``--min-lr`` and ``--schedule-unit`` shape.
COSINE_SCHEDULERS = ("cosine", "timm-cosine")
#: Schedulers that ``--gamma`` shapes (``--step-size`` shapes ``step`` only).
DECAY_SCHEDULERS = ("exponential", "step")


def _defaults() -> dict[str, Any]:
    return {f.name: _field_default(f) for f in dataclasses.fields(TrainConfig)}


# ----------------------------------------------------------------------------------------------- recipes
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
def parse_command_line(
    argv: list[str] | None = None, recipe_dir: str | os.PathLike | None = None
) -> tuple[TrainConfig, bool]:
    """The resolved, validated :class:`TrainConfig` and whether ``--print-config`` was given.

    With ``--print-config`` the options are checked but not the files and folders they name (``--data-root``,
    ``--init``): a recipe can be printed on a machine without its data.
    """
    given = vars(build_parser().parse_args(argv))
    print_config = bool(given.pop("print_config", False))
    values: dict[str, Any] = {"recipe": given.get("recipe", TrainConfig.recipe)}
    values.update(load_recipe(values["recipe"], recipe_dir))
    values.update(given)
    config = TrainConfig(**values)
    validate_config(config, check_paths=not print_config)
    return config, print_config


def parse_config(argv: list[str] | None = None, recipe_dir: str | os.PathLike | None = None) -> TrainConfig:
    """Recipe values, then command-line options, over the dataclass defaults; validated.

    Args:
        argv: Command-line options (default: ``sys.argv[1:]``).
        recipe_dir: Where recipe names are looked up (default: the packaged :data:`RECIPE_DIR`).
    """
    return parse_command_line(argv, recipe_dir)[0]


def format_config(config: TrainConfig) -> str:
    """``--print-config``: every option of ``config`` with its value, as YAML in field order (loadable as a recipe:
    ``--recipe printed.yaml`` gives the same configuration)."""
    lines = [f"# fer-mek training configuration (recipe {config.recipe!r}, then the command line); "
             "every option of `scripts/train.py --help`"]
    for line in yaml.safe_dump(dataclasses.asdict(config), sort_keys=False, width=1000).splitlines():
        if line == "lr: null":
            line += "  # 5e-4 x total batch / 512 (batch size x gradient accumulation x processes)"
        elif line == "epochs: " + str(config.epochs) and config.train_steps:
            line += f"  # unused: --train-steps {config.train_steps} sets the length"
        lines.append(line)
        if line.startswith("teacher: ") and config.teacher:
            lines.extend(_teacher_comment(config.teacher))
    return "\n".join(lines) + "\n"


def _teacher_comment(teacher: str) -> list[str]:
    """``--print-config``: a comment under ``teacher:`` with the weights digest of a local teacher folder (a Hub
    teacher's commit is resolved when the run starts)."""
    path = Path(teacher).expanduser()
    if not path.is_dir():
        return []
    from .teacher import weights_digest

    try:
        return [f"# teacher weights: {weights_digest(path)}"]
    except (OSError, ValueError) as error:
        return [f"# teacher weights: not readable ({error})"]


def print_resolved_config(config: TrainConfig) -> None:
    """``--print-config``: the configuration as YAML on stdout (once, under ``accelerate launch`` too: only the
    process of rank 0 prints), and on stderr what training would still need (a data root, an init file)."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) != 0:
        return
    sys.stdout.write(format_config(config))
    sys.stdout.flush()
    try:
        validate_config(config)
    except ValueError as error:
        print(f"# note: to train with this configuration: {error}", file=sys.stderr)


def _check_list(config: TrainConfig, name: str) -> list[float] | None:
    value = getattr(config, name)
    flag = "--" + name.replace("_", "-")
    if value is None and name in ("image_mean", "image_std"):
        return None
    counts = LIST_OPTIONS[name]
    if not isinstance(value, (list, tuple)) or len(value) not in counts or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        wanted = " or ".join(str(n) for n in counts)
        raise ValueError(f"{flag} takes {wanted} numbers, got {value!r}")
    return [float(v) for v in value]


def validate_config(config: TrainConfig, check_paths: bool = True) -> None:
    """Raise ``ValueError`` (naming the option and its allowed values) on an option that cannot work.

    Args:
        config: The configuration.
        check_paths: Also check that the dataset root is given and that an ``--init`` file exists (off for
            ``--print-config``).
    """
    for name, allowed in CHOICES.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"--{name.replace('_', '-')} must be one of {allowed}, got {getattr(config, name)!r}")
    if check_paths and config.source != "synthetic" and not config.data_root:
        raise ValueError(f"--source {config.source} needs --data-root (the dataset's file, folder or Hub id)")
    if config.resume and config.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    for name in ("epochs", "batch_size", "grad_accum", "image_size", "grad_scaler_growth_interval"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("epoch_size", "train_steps", "warmup_steps", "crop_padding", "max_steps", "checkpoint_every",
                 "early_stopping_patience"):
        if getattr(config, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(config, name)}")
    if config.num_workers < -1:
        raise ValueError(f"--num-workers must be -1 (automatic) or at least 0, got {config.num_workers}")
    _validate_split(config)
    _validate_model(config)
    _validate_augmentation(config)
    _validate_schedule(config)
    _validate_distillation(config, check_paths)
    if check_paths:
        from ..finetune import check_init

        check_init(config.init)  # a backbone file, or a fer-mek model folder / Hub id (fine-tuning)
    if config.init.startswith("timm:") and not config.init[len("timm:"):]:
        raise ValueError("--init timm:NAME.TAG needs a timm model name with its pretrained tag, e.g. "
                         "timm:resnet18.tv_in1k")


def _validate_split(config: TrainConfig) -> None:
    if config.val_split != "none" and not 0.0 < config.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {config.val_fraction} (or --val-split none: no "
                         "validation split)")
    if config.fer2013_test != "PrivateTest" and config.source != "fer2013":
        raise ValueError(f"--fer2013-test {config.fer2013_test} applies to --source fer2013 only (got --source "
                         f"{config.source}); leave it at PrivateTest")
    if config.fer2013_val:
        if config.source != "fer2013":
            raise ValueError(f"--fer2013-val {config.fer2013_val} applies to --source fer2013 only")
        if config.fer2013_val in config.fer2013_test.split("+"):
            raise ValueError(f"--fer2013-val {config.fer2013_val} is also in --fer2013-test {config.fer2013_test}: "
                             "validate and test on different rows (the FER-2013 sources: --fer2013-val PrivateTest "
                             "--fer2013-test PublicTest)")
    if config.val_split == "none" and not config.fer2013_val and config.early_stopping_patience:
        raise ValueError("--early-stopping-patience needs a validation split; with --val-split none the run trains "
                         "for its full length and reports the final checkpoint")


def _validate_model(config: TrainConfig) -> None:
    if not isinstance(config.backbone_kwargs, dict) or not all(isinstance(k, str) for k in config.backbone_kwargs):
        raise ValueError(f"--backbone-kwargs must be a mapping of timm.create_model keyword arguments, got "
                         f"{config.backbone_kwargs!r}")
    if config.drop_path and "drop_path_rate" in config.backbone_kwargs:
        raise ValueError(f"--drop-path {config.drop_path} and --backbone-kwargs drop_path_rate "
                         f"{config.backbone_kwargs['drop_path_rate']} both set the drop-path rate; give one")
    for name in ("image_mean", "image_std"):
        _check_list(config, name)
    if config.image_std is not None and any(v <= 0 for v in config.image_std):
        raise ValueError(f"--image-std must be positive, got {config.image_std}")


def _validate_augmentation(config: TrainConfig) -> None:
    scale, ratio, re_scale = (_check_list(config, n) for n in ("crop_scale", "crop_ratio", "re_scale"))
    jitter = _check_list(config, "color_jitter")
    if not 0.0 < scale[0] <= scale[1] <= (math.inf if config.crop == "ncrop" else 1.0):
        raise ValueError(f"--crop-scale must be two numbers with 0 < min <= max <= 1 (max above 1 with --crop ncrop, "
                         f"as torchvision allows), got {config.crop_scale}")
    if not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"--crop-ratio must be two numbers with 0 < min <= max, got {config.crop_ratio}")
    if not 0.0 < re_scale[0] <= re_scale[1] < 1.0:
        raise ValueError(f"--re-scale must be two numbers with 0 < min <= max < 1, got {config.re_scale}")
    if any(v < 0 for v in jitter) or (len(jitter) == 4 and jitter[3] > 0.5):
        raise ValueError(f"--color-jitter values must be >= 0 (hue <= 0.5), got {config.color_jitter}")
    if config.crop_padding and config.crop != "padded":
        raise ValueError(f"--crop-padding {config.crop_padding} applies to --crop padded (got --crop {config.crop})")
    if not 0.0 <= config.rotation < 180.0:
        raise ValueError(f"--rotation must be in [0, 180) degrees, got {config.rotation}")
    for name in ("hflip", "re_prob"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} is a probability, in [0, 1]; got {getattr(config, name)}")
    if config.eval_crops != 1 and config.data_pipeline != "per-sample":
        raise ValueError(f"--eval-crops {config.eval_crops} crops every evaluation image per sample; it needs "
                         "--data-pipeline per-sample")
    if (config.crop == "ncrop" or config.eval_crops != 1) and config.ncrop_resize < config.image_size:
        raise ValueError(f"--ncrop-resize {config.ncrop_resize} is smaller than the crops of --image-size "
                         f"{config.image_size} cut from it")
    if config.data_pipeline == "cached":
        if config.auto_augment:
            from ..data.batch_augment import parse_rand_augment

            parse_rand_augment(config.auto_augment)  # a policy the batched pipeline cannot run fails here, not later
        check_batched_augmentation(config)
    else:
        check_per_sample_augmentation(config)


def check_batched_augmentation(config: TrainConfig) -> None:
    """``ValueError`` naming the options that the cached (batched, on-device) pipeline cannot run, and the fix
    (``--data-pipeline per-sample``)."""
    from ..data import batched_augmentation_supports

    reason = batched_augmentation_supports(**augmentation_options(config))
    if reason is not None:
        raise ValueError(reason)


def check_per_sample_augmentation(config: TrainConfig) -> None:
    """``ValueError`` (from :func:`fer_mek.data.transforms.build_train_transform`) when the per-sample transform
    cannot be built with ``config``'s augmentation options: raised before training, not when the loaders are built."""
    from types import SimpleNamespace

    from ..data.transforms import build_train_transform

    processor = SimpleNamespace(image_size=config.image_size, image_mean=config.image_mean or [0.5] * 3,
                                image_std=config.image_std or [0.5] * 3)
    build_train_transform(processor, **augmentation_options(config))


def augmentation_options(config: TrainConfig) -> dict[str, Any]:
    """The training augmentation options of ``config``: keyword arguments of
    :func:`fer_mek.data.transforms.build_train_transform` (the per-sample pipeline) and of
    :func:`fer_mek.data.batched_augmentation_kwargs` (the cached one). The size, mean and std come from the model's
    image processor."""
    return {
        "crop": config.crop,
        "crop_scale": tuple(config.crop_scale),
        "crop_ratio": tuple(config.crop_ratio),
        "crop_padding": config.crop_padding,
        "train_interpolation": config.train_interpolation,
        "rotation": config.rotation,
        "rotation_interpolation": config.rotation_interpolation,
        "hflip": config.hflip,
        "color_jitter": tuple(config.color_jitter),
        "auto_augment": config.auto_augment or None,
        "re_prob": config.re_prob,
        "re_scale": tuple(config.re_scale),
        "re_mode": config.re_mode,
        "ncrop_resize": config.ncrop_resize,
        "train_crops": config.train_crops,
        "color_jitter_prob": config.color_jitter_prob,
        "translate": config.translate,
        "translate_prob": config.translate_prob,
        "rotation_prob": config.rotation_prob,
    }


def _validate_schedule(config: TrainConfig) -> None:
    cosine = config.scheduler in COSINE_SCHEDULERS
    for name in ("warmup_lr", "min_lr"):
        value = getattr(config, name)
        if value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if value and not cosine:
            raise ValueError(f"--{name.replace('_', '-')} shapes the cosine schedules; --scheduler "
                             f"{config.scheduler} does not use it")
    if config.schedule_unit == "epoch" and config.warmup_steps:
        raise ValueError("--warmup-steps counts optimizer steps; with --schedule-unit epoch give --warmup-epochs")
    # --gamma and --step-size shape the per-epoch decays (exponential: x gamma every epoch; step: torch StepLR, x gamma
    # every step_size epochs); set to another value than the default with another scheduler they would do nothing.
    if config.scheduler in DECAY_SCHEDULERS and not config.gamma > 0:
        raise ValueError(f"--gamma must be > 0 (the learning rate is multiplied by it), got {config.gamma}")
    if config.scheduler not in DECAY_SCHEDULERS and config.gamma != _defaults()["gamma"]:
        raise ValueError(f"--gamma shapes --scheduler exponential and step; --scheduler {config.scheduler} does not "
                         "use it")
    if isinstance(config.step_size, bool) or not isinstance(config.step_size, int) or config.step_size < 1:
        raise ValueError(f"--step-size must be a whole number of epochs >= 1, got {config.step_size!r}")
    if config.scheduler != "step" and config.step_size != _defaults()["step_size"]:
        raise ValueError(f"--step-size shapes --scheduler step; --scheduler {config.scheduler} does not use it")
    if config.lr is not None and config.scheduler in COSINE_SCHEDULERS and config.min_lr > config.lr:
        raise ValueError(f"--min-lr {config.min_lr} is above --lr {config.lr}")
    if config.scheduler == "plateau":
        if config.val_split == "none" and not config.fer2013_val:
            raise ValueError("--scheduler plateau steps on a validation metric; it needs a validation split "
                             "(not --val-split none)")
        if not 0.0 < config.plateau_factor < 1.0:
            raise ValueError(f"--plateau-factor must be in (0, 1), got {config.plateau_factor}")
        for name in ("plateau_patience", "plateau_cooldown", "plateau_threshold", "plateau_min_lr"):
            if getattr(config, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(config, name)}")
    if config.optimizer != "sgd" and (config.momentum != 0.9 or not config.nesterov):
        raise ValueError(f"--momentum and --no-nesterov shape --optimizer sgd; --optimizer {config.optimizer} does "
                         "not use them")
    if config.optimizer == "sgd" and not 0.0 <= config.momentum < 1.0:
        raise ValueError(f"--momentum must be in [0, 1), got {config.momentum}")
    if config.optimizer == "sgd" and config.nesterov and config.momentum == 0:
        raise ValueError("--nesterov needs a momentum > 0 (torch.optim.SGD); give --momentum or --no-nesterov")
    if config.mixup_alpha < 0:
        raise ValueError(f"--mixup-alpha must be 0 (off) or more, got {config.mixup_alpha}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f"--label-smoothing must be in [0, 1), got {config.label_smoothing}")
    if config.method == "ldt" and config.mixup_alpha:
        raise ValueError(f"--mixup-alpha {config.mixup_alpha} does not combine with --method ldt: the teacher's "
                         "distribution is computed on the unmixed image; drop --mixup-alpha")
    if config.method == "ldt" and config.label_smoothing:
        raise ValueError("--label-smoothing is the baseline's uniform smoothing; --method ldt smooths with the "
                         "teacher's distribution (and, with --distill-weight below 1, MEK's --smoothing)")
    if config.label_smoothing and config.method != "baseline":
        raise ValueError("--label-smoothing is the baseline's uniform smoothing; MEK smooths with its re-balanced "
                         "targets (--smoothing)")
    if config.scheduler == "timm-cosine" and config.schedule_unit == "epoch" and config.warmup_epochs != int(
        config.warmup_epochs
    ):
        raise ValueError(f"--scheduler timm-cosine --schedule-unit epoch needs a whole number of --warmup-epochs, "
                         f"got {config.warmup_epochs}")


#: The options of label-distribution training; every one but ``method`` needs ``--method ldt``.
DISTILL_OPTIONS = ("teacher", "teacher_revision", "teacher_label_map", "distill_temperature", "distill_weight",
                   "distill_reduction", "distill_attention")


def _validate_distillation(config: TrainConfig, check_paths: bool = True) -> None:
    """``--method ldt`` and its options (:data:`DISTILL_OPTIONS`)."""
    if config.method != "ldt":
        defaults = _defaults()
        given = [name for name in DISTILL_OPTIONS if getattr(config, name) != defaults[name]]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"{flags} appl{'ies' if len(given) == 1 else 'y'} to --method ldt (label-distribution "
                             f"training), not --method {config.method}; add --method ldt or drop "
                             f"{'it' if len(given) == 1 else 'them'}")
        return
    if not isinstance(config.teacher, str) or not config.teacher.strip():
        raise ValueError("--method ldt needs --teacher: a fer-mek model folder (e.g. runs/NAME/best), a transformers "
                         "image-classification folder or a Hub id")
    temperature = config.distill_temperature
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"--distill-temperature must be a finite number > 0, got {temperature!r}")
    weight = config.distill_weight
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise ValueError(f"--distill-weight (alpha) must be in [0, 1] (1: the teacher's distribution only), got "
                         f"{weight!r}")
    if config.distill_attention and not config.attention_weight > 0:
        raise ValueError(f"--distill-attention adds MEK's attention consistency weighted by --attention-weight, which "
                         f"is {config.attention_weight}; give --attention-weight > 0 (MEK: 0.1) or drop "
                         "--distill-attention")
    from .teacher import parse_label_map

    parse_label_map(config.teacher_label_map)  # a malformed map fails here, not after the data is loaded
    if check_paths:
        from .teacher import check_teacher

        check_teacher(config.teacher, config.teacher_revision)


def _saved_run_options(run: Path) -> dict[str, Any]:
    """The options a run was started with: the copy saved with its checkpoint (complete with it), else (checkpoints
    of earlier versions) ``train_config.yaml``."""
    from .checkpoint import read_checkpoint_config

    try:
        saved = read_checkpoint_config(run)
        return saved if saved is not None else read_train_config(run)
    except RunError as error:
        raise ValueError(f"--resume: {error}") from error


def check_run_folder(config: TrainConfig) -> None:
    """Refuse to mix runs: a non-empty folder needs --resume (same settings) or --overwrite."""
    run = Path(config.output_dir)
    if not run.exists() or not any(run.iterdir()):
        if config.resume:
            raise ValueError(f"--resume: {run} holds no run to resume")
        return
    if config.overwrite:
        if not any((run / name).exists() for name in (TRAIN_CONFIG, CHECKPOINT, RESULTS)):
            raise ValueError(f"--overwrite: {run} is not empty and holds no fer-mek run ({TRAIN_CONFIG}, {CHECKPOINT}/ "
                             f"or {RESULTS}); it is not deleted. Choose an empty or new --output-dir")
        return
    if not config.resume:
        raise ValueError(f"{run} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                         "or choose another --output-dir")
    if not (run / CHECKPOINT).is_dir() or not ((run / TRAIN_CONFIG).is_file()
                                                or (run / CHECKPOINT / TRAIN_CONFIG).is_file()):
        raise ValueError(f"--resume: {run} has no {CHECKPOINT}/ and {TRAIN_CONFIG} to resume from")
    saved = _saved_run_options(run)
    # The synthetic set's options say nothing about a run on another source (and their defaults may change).
    # The folder is the run: --output-dir itself may be spelt differently (relative, absolute, moved).
    ignored = (RESUMABLE_OPTIONS | {"recipe", "output_dir"}
               | (_SYNTHETIC_OPTIONS if config.source != "synthetic" else set()))
    # An option that a run saved by an older fer-mek lacks had its default then (options are only ever added with
    # the default that keeps the earlier behaviour).
    defaults = _defaults()
    differing = sorted(
        key for key, value in dataclasses.asdict(config).items()
        if key not in ignored and saved.get(key, defaults[key]) != value
    )
    if differing:
        details = ", ".join(f"{key}: {saved.get(key, defaults[key])!r} -> {getattr(config, key)!r}"
                            for key in differing)
        raise ValueError(f"--resume: {run} is a different run ({details}); use the same options or another --output-dir")

"""Training of MEK facial-expression classifiers on accelerate: options, recipes, the trainer and its entry point.

Moved from ``scripts/train.py``, which is now a thin entry point; so is ``python -m fer_mek.train``. From Python, the
way open_clip's tests drive its trainer::

    >>> from fer_mek.train import main
    >>> results = main(["--recipe", "synthetic", "--epochs", "1", "--output-dir", "runs/try"])  # doctest: +SKIP

Pieces: :class:`TrainConfig` (every option, with its help), the packaged recipes (:data:`RECIPE_DIR`,
:func:`list_recipes`, :func:`load_recipe`), :func:`parse_config` (defaults < recipe < command line; ``--print-config``
prints the result, :func:`format_config`), the sampling (:class:`EpochSampler`, :class:`SeededAugmentation`) and
schedules (:func:`build_scheduler`, :class:`StepSchedule`), and :class:`Trainer` (``setup`` / ``train_step`` /
``train_epoch`` / ``evaluate`` / ``run`` / ``finish``, which the benchmark drives step by step), its checkpoints
(:mod:`fer_mek.train.checkpoint`: written through renames, recovered after a kill, read without unpickling code) and
the command line (:mod:`fer_mek.train.command`: :func:`main`, :func:`cli_main`). The run folder it writes is
:mod:`fer_mek.runs`' contract.

Importing this subpackage imports torch, timm and ``datasets`` (not accelerate: the :class:`Trainer` does, when
created); ``import fer_mek`` does not import it.
"""

from .command import cli_main, main
from .config import (
    CHOICES,
    RECIPE_DIR,
    RESUMABLE_OPTIONS,
    TrainConfig,
    build_parser,
    check_run_folder,
    format_config,
    list_recipes,
    load_recipe,
    parse_command_line,
    parse_config,
    validate_config,
)
from .sampling import EpochSampler, SeededAugmentation
from .schedule import StepSchedule, build_scheduler, timm_cosine_lr
from .trainer import NO_VALIDATION_REASON, Trainer, TrainerState

__all__ = [
    "CHOICES",
    "NO_VALIDATION_REASON",
    "RECIPE_DIR",
    "RESUMABLE_OPTIONS",
    "EpochSampler",
    "SeededAugmentation",
    "StepSchedule",
    "TrainConfig",
    "Trainer",
    "TrainerState",
    "build_parser",
    "build_scheduler",
    "check_run_folder",
    "cli_main",
    "format_config",
    "list_recipes",
    "load_recipe",
    "main",
    "parse_command_line",
    "parse_config",
    "timm_cosine_lr",
    "validate_config",
]

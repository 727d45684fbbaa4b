"""The checkpoint of a training run (``RUN/checkpoint/``): writing it, checking it, loading it, and recovering it after
a kill.

What it holds: accelerate's state (``model.safetensors``, ``optimizer.bin``, ``scheduler.bin`` when accelerate steps
the schedule, ``random_states_<process>.pkl``, ``scaler.pt`` with fp16) and fer-mek's own, never pickled:
``trainer_state.json`` (:class:`~fer_mek.train.state.TrainerState`), ``schedule.json`` (a
:class:`~fer_mek.train.schedule.StepSchedule`), ``ema.safetensors`` (the EMA weights), ``train_config.yaml`` (a
copy of the run's options, against which ``--resume`` checks the command line) and, with ``--method ldt``,
``teacher.json`` (the teacher's source, revision, commit and weights digest: a resumed run refuses a teacher whose
weights changed, since the rest of the run would distil another model).

Nothing in a checkpoint is unpickled with code execution allowed: before anything is loaded every file is opened the
way it will be read (JSON, YAML, safetensors headers, and torch's ``weights_only`` unpickler, which runs no code, for
accelerate's ``.bin``/``.pkl``/``.pt`` files), and a file that fails is refused with a line naming it. Checkpoints of
earlier fer-mek versions pickled the EMA and the step schedule through accelerate (``custom_checkpoint_<i>.pkl``,
which accelerate unpickles with ``weights_only=False``): they are read here with ``weights_only=True`` and rewritten
as safetensors / JSON.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..io import recover_directory, remove_partial_files, replace_directory, writing
from ..runs import BEST, CHECKPOINT, CONFUSION_MATRIX, LAST, RESULTS, TRAIN_CONFIG, TRAINING_CURVES

__all__ = ["CONFIG_COPY", "EMA_WEIGHTS", "SCHEDULE_STATE", "TEACHER_IDENTITY", "TRAINER_STATE", "CheckpointError",
           "check_checkpoint", "check_teacher_identity",
           "load_checkpoint", "read_checkpoint_config", "recover_run_folder", "save_checkpoint", "saved_options"]

TRAINER_STATE = "trainer_state.json"
SCHEDULE_STATE = "schedule.json"
EMA_WEIGHTS = "ema.safetensors"
#: ``--method ldt``: the teacher the run distils (model, revision, commit, digest).
TEACHER_IDENTITY = "teacher.json"
#: The run's options, as in ``RUN/train_config.yaml``; written with every checkpoint (complete with it).
CONFIG_COPY = TRAIN_CONFIG
_LEGACY = re.compile(r"^custom_checkpoint_(\d+)\.pkl$")
_REFUSED = "it is not loaded; restore the checkpoint from a copy, or start the run again with --overwrite"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely; the message names it."""


def saved_options(config: Any) -> dict[str, Any]:
    """The options of a run as ``train_config.yaml`` holds them (all but ``resume`` and ``overwrite``)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in ("resume", "overwrite")}


# ------------------------------------------------------------------------------------------------- recovery
def recover_run_folder(run_dir: str | Path) -> list[str]:
    """Put back a checkpoint (and best/, last/) that a kill between two renames left aside, and remove the leftovers
    of interrupted saves (:func:`fer_mek.io.recover_directory`, :func:`~fer_mek.io.remove_partial_files`). Only while
    no other process writes the run."""
    run_dir = Path(run_dir)
    lines = [line for name in (CHECKPOINT, BEST, LAST) for line in recover_directory(run_dir / name)]
    return lines + [line for name in (RESULTS, TRAIN_CONFIG, CONFUSION_MATRIX, TRAINING_CURVES)
                    for line in remove_partial_files(run_dir / name)]


# ------------------------------------------------------------------------------------------------- checking
def _torch_state(path: Path) -> Any:
    """A torch-saved file read with torch's ``weights_only`` unpickler (no code runs), as accelerate reads it."""
    from accelerate.utils import load

    return load(path, map_location="cpu", weights_only=True)


def _check_file(path: Path) -> None:
    try:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".yaml":
            if not isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict):
                raise ValueError("not a mapping of option: value")
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt"):
                pass
        else:
            from accelerate.utils import load

            load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - whatever the reader says, the file is refused by name
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"--resume: {path} cannot be read safely ({reason[:200]}); {_REFUSED}") from error


def check_checkpoint(folder: str | Path) -> None:
    """Open every file of a checkpoint folder the way it will be read, without running any code it may hold.

    Raises:
        CheckpointError: a file is not what its name says (e.g. a pickle that would run code), or a folder is inside.
    """
    folder = Path(folder)
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            raise CheckpointError(f"--resume: {path} is not a file of a fer-mek checkpoint; {_REFUSED}")
        _check_file(path)


def read_checkpoint_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The copy of the run's options saved with its checkpoint (``None`` for checkpoints of earlier versions)."""
    path = Path(run_dir) / CHECKPOINT / CONFIG_COPY
    if not path.is_file():
        return None
    _check_file(path)
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------- save and load
def save_checkpoint(trainer: Any) -> None:
    """accelerate state + fer-mek's state (JSON, safetensors) into ``checkpoint/``, through a staging folder and
    renames (:func:`fer_mek.io.replace_directory`): a kill or a full disk leaves the previous checkpoint intact."""
    from safetensors.torch import save_file

    accelerator, state, run_dir = trainer.accelerator, trainer.state, trainer.run_dir
    main = accelerator.is_main_process
    staging = run_dir / f".tmp-{CHECKPOINT}-{state.global_step}"
    if main and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    try:
        with writing(staging, "the checkpoint", intact=f"{run_dir / CHECKPOINT} (if any) is intact"):
            accelerator.save_state(str(staging), safe_serialization=True)
            if main:
                (staging / TRAINER_STATE).write_text(json.dumps(state.to_dict(), indent=1))
                (staging / CONFIG_COPY).write_text(yaml.safe_dump(saved_options(trainer.config), sort_keys=False))
                if trainer.step_schedule:
                    (staging / SCHEDULE_STATE).write_text(json.dumps(trainer.scheduler.state_dict(), indent=1))
                if getattr(trainer, "teacher", None) is not None:
                    (staging / TEACHER_IDENTITY).write_text(json.dumps(_teacher_identity(trainer.teacher), indent=1))
                if trainer.ema is not None:
                    save_file({k: v.detach().contiguous().cpu() for k, v in trainer.ema.state_dict().items()},
                              str(staging / EMA_WEIGHTS))
                replace_directory(staging, run_dir / CHECKPOINT)
    finally:
        if main and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()


def _teacher_identity(teacher: Any) -> dict[str, Any]:
    return {"model": teacher.source, "revision": teacher.revision or None, "commit": teacher.commit,
            "digest": teacher.digest}


def check_teacher_identity(checkpoint: Path, teacher: Any) -> None:
    """``--resume`` of an ldt run: the teacher must be the one the checkpoint was trained with (same weights digest,
    same Hub commit).

    Raises:
        CheckpointError: the checkpoint records no teacher, or another one (both digests shown).
    """
    path = Path(checkpoint) / TEACHER_IDENTITY
    if not path.is_file():
        raise CheckpointError(f"--resume: {checkpoint} records no teacher ({TEACHER_IDENTITY}) although this run "
                              "distils one (--method ldt); start the run again with --overwrite")
    saved = json.loads(path.read_text(encoding="utf-8"))
    current = _teacher_identity(teacher)
    changed = [key for key in ("digest", "commit") if saved.get(key) != current[key]]
    if changed:
        details = ", ".join(f"{key} {saved.get(key)} -> {current[key]}" for key in changed)
        raise CheckpointError(
            f"--resume: the teacher {teacher.source} is not the one this run was trained with ({details}); a "
            "resumed run must distil the same teacher: restore its weights (or give its --teacher-revision), or "
            "start the run again with --overwrite")


def _convert_legacy_states(checkpoint: Path, trainer: Any) -> bool:
    """Rewrite the EMA / step-schedule states that earlier versions pickled (``custom_checkpoint_<i>.pkl``, registered
    in that order) as ``ema.safetensors`` / ``schedule.json``, read with ``weights_only=True``; whether there were
    any. The pickles are deleted once their replacements are written (accelerate refuses unregistered ones)."""
    from safetensors.torch import save_file

    files = sorted((p for p in checkpoint.iterdir() if _LEGACY.match(p.name)),
                   key=lambda p: int(_LEGACY.match(p.name).group(1)))
    if not files:
        return False
    owners = [name for name, present in (("schedule", trainer.step_schedule), ("ema", trainer.ema is not None))
              if present]
    if len(files) != len(owners):
        raise CheckpointError(f"--resume: {checkpoint} holds {len(files)} custom_checkpoint_*.pkl file(s) but this run "
                              f"keeps {len(owners)} such state(s) ({', '.join(owners) or 'none'}); {_REFUSED}")
    if trainer.accelerator.is_main_process:
        for owner, path in zip(owners, files, strict=True):
            values = _torch_state(path)
            if owner == "schedule":
                (checkpoint / SCHEDULE_STATE).write_text(json.dumps(values, indent=1))
            else:
                save_file({k: v.contiguous() for k, v in values.items()}, str(checkpoint / EMA_WEIGHTS))
        for path in files:
            path.unlink()
    trainer.accelerator.wait_for_everyone()
    return True


def load_checkpoint(trainer: Any) -> None:
    """Restore a run from its ``checkpoint/`` (after :func:`check_checkpoint`), EMA and step schedule included."""
    from safetensors.torch import load_file

    checkpoint = trainer.run_dir / CHECKPOINT
    check_checkpoint(checkpoint)
    if getattr(trainer, "teacher", None) is not None:
        check_teacher_identity(checkpoint, trainer.teacher)
    if _convert_legacy_states(checkpoint, trainer):
        trainer.print(f"note: {checkpoint} was saved by an earlier fer-mek: its pickled EMA / schedule states were "
                      "read without running code and rewritten as safetensors / JSON")
    trainer.accelerator.load_state(str(checkpoint))
    trainer.state.load(json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8")))
    for name, wanted in ((SCHEDULE_STATE, trainer.step_schedule), (EMA_WEIGHTS, trainer.ema is not None)):
        if wanted and not (checkpoint / name).is_file():
            raise CheckpointError(f"--resume: {checkpoint} has no {name} although this run needs it; restore the "
                                  "checkpoint, or start the run again with --overwrite")
    if trainer.step_schedule:
        trainer.scheduler.load_state_dict(json.loads((checkpoint / SCHEDULE_STATE).read_text(encoding="utf-8")))
    if trainer.ema is not None:
        trainer.ema.load_state_dict(load_file(str(checkpoint / EMA_WEIGHTS)))

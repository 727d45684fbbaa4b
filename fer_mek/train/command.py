"""The training command line: :func:`main` (options, run-folder checks and recovery, the run) and :func:`cli_main`
(``scripts/train.py``, ``python -m fer_mek.train``: errors as one line, exit statuses)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from ..io import writing
from ..runs import CHECKPOINT
from .checkpoint import check_checkpoint, recover_run_folder
from .config import check_run_folder, parse_command_line, print_resolved_config
from .trainer import Trainer

__all__ = ["cli_main", "main"]


def main(argv: list[str] | None = None, recipe_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Parse options, check them and the run folder, train. Returns the results (also in results.json).

    Args:
        argv: Command-line options (default: ``sys.argv[1:]``), e.g. ``["--recipe", "rafdb-resnet18-imagenet",
            "--data-root", "RAF-DB/basic"]``.
        recipe_dir: Where recipe names are looked up (default: the packaged recipes).

    Returns:
        The results of ``results.json``; ``{"interrupted": True, "signal": "SIGINT"}`` after Ctrl-C (or
        ``"SIGTERM"``; a checkpoint was saved), or
        ``{"finished": False, "global_step": N}`` when ``--max-steps`` stopped the run inside its first epoch.
        With ``--print-config`` (as with ``--help``) it prints and raises ``SystemExit(0)``: nothing is trained or
        written.

    On a CPU the run uses its share of the cores (:func:`fer_mek.environment.cpu_threads_per_process`), whatever
    launched it; the thread count before is restored on return.

    Raises:
        ValueError: A bad option, a run folder in the way, a checkpoint that cannot be read safely, or data that
            cannot be read (the message says what to change).
        fer_mek.io.WriteError: The run folder cannot be written (full disk, read-only folder); one line.
    """
    config, print_config = parse_command_line(argv, recipe_dir)
    if print_config:  # like --help: print, then exit 0 (argparse raises SystemExit(0) for --help too)
        print_resolved_config(config)
        raise SystemExit(0)
    if not config.resume:
        check_run_folder(config)
    trainer = Trainer(config)
    if config.resume:
        _check_resumed_run(trainer)
    threads = trainer.use_cpu_cores()
    try:
        return trainer.run()
    finally:
        torch.set_num_threads(threads)


def _check_resumed_run(trainer: Trainer) -> None:
    """--resume: put back what a kill between two renames left aside (main process, first), then check the run
    folder and its checkpoint (every process, without running anything a checkpoint file may hold)."""
    config, accelerator = trainer.config, trainer.accelerator
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            with writing(config.output_dir, "the run folder (--output-dir)"):
                lines = recover_run_folder(config.output_dir)
            for line in lines:
                print(line)
        check_run_folder(config)
        check_checkpoint(Path(config.output_dir) / CHECKPOINT)


def cli_main(argv: list[str] | None = None) -> int:
    """The command line (``scripts/train.py``, ``python -m fer_mek.train``): :func:`main` with its errors as one
    ``error: ...`` line, Ctrl-C at any moment without a traceback. Returns the exit status: 0, 1 on an error, 128 +
    the signal when interrupted (130 Ctrl-C, 143 SIGTERM; a checkpoint was saved unless it came before training)."""
    from ..io import WriteError

    try:
        outcome = main(argv)
    except (ValueError, FileNotFoundError, WriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the loop's handler is in place, or a second one: no traceback
        print("interrupted: stopped at once, nothing more was saved (a run with a checkpoint continues with --resume)",
              file=sys.stderr)
        return 130
    if outcome.get("interrupted"):  # 128 + the signal, as a shell reports a process it stopped
        return 128 + signal.Signals[outcome.get("signal", "SIGINT")]
    return 0

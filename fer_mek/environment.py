"""Where a run or a benchmark ran: CPU cores, library versions, machine, date and source commit, in one record.

The trainer writes :func:`versions` into ``results.json``; the benchmark prints :func:`record`. Both use
:func:`usable_cores`, the one count of CPU cores fer-mek goes by (worker counts, thread notes, decoding threads).
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["git_state", "machine", "record", "usable_cores", "versions"]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def versions() -> dict[str, str]:
    """Versions of fer-mek, Python and the libraries a training run depends on.

    accelerate and datasets are read from their installed metadata, not imported: recording a version must not load
    the training stack.
    """
    from importlib.metadata import version

    import PIL
    import timm
    import torch
    import transformers

    from . import __version__

    return {
        "fer_mek": __version__, "torch": torch.__version__, "timm": timm.__version__,
        "transformers": transformers.__version__, "accelerate": version("accelerate"),
        "datasets": version("datasets"), "pillow": PIL.__version__, "python": platform.python_version(),
    }


def machine() -> dict[str, Any]:
    """Platform, processor, CPU counts, torch threads and the GPU (when there is one)."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "usable_cores": usable_cores(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def git_state(source_dir: str | os.PathLike | None) -> dict[str, Any]:
    """Commit of the git checkout at ``source_dir`` and whether tracked files differ from it.

    The library never looks for a checkout itself: a script that runs from one passes its folder. ``commit`` and
    ``dirty`` are ``None`` (with ``error`` saying why) when there is no checkout or no git.
    """
    state: dict[str, Any] = {"commit": None, "dirty": None}
    if source_dir is None:
        state["error"] = "no source folder given"
        return state

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(Path(source_dir)), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()

    try:
        state["commit"] = git("rev-parse", "--short", "HEAD")
        state["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError) as error:  # not a checkout, or no git: say so in the record
        state["error"] = f"{type(error).__name__}: {error}"
    return state


def record(source_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Machine, versions, local date and (with ``source_dir``) the source commit: the header of a benchmark."""
    return {"machine": machine(), "versions": versions(),
            "date": datetime.now().astimezone().isoformat(timespec="seconds"), "git": git_state(source_dir)}

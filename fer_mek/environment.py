"""Where a run or a benchmark ran: CPU cores, library versions, machine, date and source commit, in one record.

The trainer writes :func:`versions` into ``results.json``; the benchmark prints :func:`record`. Both use
:func:`usable_cores`, the one count of CPU cores fer-mek goes by (worker counts, thread counts, decoding threads);
:func:`cpu_threads_per_process` divides it among the processes of a run.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "CPU_BF16_FLAGS",
    "bf16_support",
    "cpu_threads_of_run",
    "cpu_threads_per_process",
    "git_state",
    "machine",
    "record",
    "resolve_mixed_precision",
    "training_device_type",
    "usable_cores",
    "versions",
]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_threads_per_process(num_processes: int = 1) -> int:
    """torch threads for each of ``num_processes`` processes that share this machine's CPU: their share of
    :func:`usable_cores`, at least 1 (``accelerate launch`` gives one thread to a CPU process unless told otherwise)."""
    return max(1, usable_cores() // max(1, num_processes))


def cpu_threads_of_run(num_processes: int = 1, environ: Mapping[str, str] | None = None) -> int | None:
    """torch threads for a process of a CPU training run: :func:`cpu_threads_per_process`, whatever launched it, or
    ``None`` (keep torch's count) when the user chose one with ``OMP_NUM_THREADS``.

    ``accelerate launch`` always sets ``OMP_NUM_THREADS`` (1 unless given ``--num_cpu_threads_per_process``) together
    with ``ACCELERATE_DYNAMO_BACKEND``; there the variable says nothing about the user's wish and the cores are used.
    To use fewer cores under it, restrict the process's CPUs (``taskset``): :func:`usable_cores` follows them.
    """
    environ = os.environ if environ is None else environ
    if environ.get("OMP_NUM_THREADS") and "ACCELERATE_DYNAMO_BACKEND" not in environ:
        return None
    return cpu_threads_per_process(num_processes)


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

    from fer_mek_cli.version import __version__

    return {
        "fer_mek": __version__, "torch": torch.__version__, "timm": timm.__version__,
        "transformers": transformers.__version__, "accelerate": version("accelerate"),
        "datasets": version("datasets"), "pillow": PIL.__version__, "python": platform.python_version(),
    }


#: The CPU flags (Linux ``/proc/cpuinfo``) of native bf16 arithmetic: AVX-512 BF16 and AMX BF16. Without them torch
#: emulates bf16 on the CPU, which is slower than fp32.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_support(device_type: str, cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> tuple[bool, str]:
    """Whether bf16 autocast runs natively on a ``"cuda"`` or ``"cpu"`` device, and why, in words for the run's output.

    CUDA: ``torch.cuda.is_bf16_supported(including_emulation=False)`` (compute capability 8.0 and later). CPU: one of
    :data:`CPU_BF16_FLAGS` in ``cpuinfo`` (Linux; elsewhere the answer is no, said so). Other devices: no.
    """
    if device_type == "cuda":
        import torch

        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{torch.cuda.get_device_name()} computes in bf16"
        return False, f"{torch.cuda.get_device_name()} has no native bf16"
    if device_type != "cpu":
        return False, f"bf16 autocast is not used automatically on {device_type}"
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False, f"cannot tell whether this CPU has bf16 instructions (no {cpuinfo})"
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    if found:
        return True, f"this CPU has bf16 instructions ({', '.join(found)})"
    return False, "this CPU has no bf16 instructions (bf16 would be emulated, slower than fp32)"


def training_device_type(use_cpu: bool = False) -> str:
    """The kind of device accelerate will train on, known before the ``Accelerator`` exists (its precision must be
    chosen first): ``"cpu"`` with ``use_cpu`` (the trainer passes accelerate's ``ACCELERATE_USE_CPU`` flag), else
    ``"cuda"`` when a GPU is visible, else ``"mps"`` / ``"xpu"`` likewise, else ``"cpu"``. (Creating accelerate's
    ``PartialState`` early for this breaks the synchronisation of a multi-process run, so its rule is followed here.)"""
    import torch

    if use_cpu:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    for kind in ("mps", "xpu"):
        backend = getattr(torch, kind, None) if kind == "xpu" else getattr(torch.backends, kind, None)
        if backend is not None and backend.is_available():
            return kind
    return "cpu"


def resolve_mixed_precision(requested: str, device_type: str, **kwargs: Any) -> tuple[str, str]:
    """The precision a run uses for ``--mixed-precision`` (``no``, ``bf16``, ``fp16`` or ``auto``), and why.

    ``auto`` is bf16 where the device computes in bf16 natively (:func:`bf16_support`: a recent GPU, a CPU with
    AVX-512 BF16 or AMX), else ``no`` (fp32). Results then depend on the machine's precision, which the run prints
    and records (``results.json`` ``environment.mixed_precision``); the other values are taken as they are.
    """
    if requested != "auto":
        return requested, "as configured"
    native, why = bf16_support(device_type, **kwargs)
    return ("bf16" if native else "no"), f"auto: {why}"


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

"""How the benchmark times anything, and the one shape of a figure.

Every figure of :mod:`fer_mek.benchmark` is an images-per-second rate made by :func:`figure` from the rate of each
repetition, most of them timed by :func:`measure`: untimed warm-up calls, then ``repeats`` repetitions of ``calls``
calls each, the device synchronised before each clock reading. (The training loop's figure comes from the trainer's
own step clock instead: see :func:`fer_mek.benchmark.training.measure_loop`.) Taken from the timing code that
``scripts/benchmark.py``, ``scripts/benchmark_data.py`` and ``scripts/benchmark_predict.py`` each had.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch

__all__ = ["cycle", "figure", "measure", "rate", "release", "synchronize"]

T = TypeVar("T")


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on a CPU or without a device."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def rate(images: int, seconds: float) -> float:
    """Images per second (infinite for a zero duration: a clock too coarse for the work timed)."""
    return images / seconds if seconds > 0 else math.inf


def figure(runs: Sequence[float], label: str, **details: Any) -> dict[str, Any]:
    """A figure from the images/s of each repetition: median, ms/image, best, the runs themselves and what was timed.

    Args:
        runs: Images per second of each repetition.
        label: What was timed, as the report's table shows it.
        details: Settings the figure ran with (device, batch size, ...), kept in the JSON.
    """
    if not runs:
        raise ValueError(f"no timed repetition for the figure {label!r}: --repeats must be at least 1")
    median = statistics.median(runs)
    return {"label": label, "images_per_s": median, "ms_per_image": 1000.0 / median,
            "best_images_per_s": max(runs), "runs_images_per_s": list(runs), **details}


def measure(call: Callable[[], Any], images_per_call: int, *, label: str, calls: int = 1, warmup: int = 0,
            repeats: int = 1, warm: Callable[[], Any] | None = None, sync: torch.device | str | None = None,
            **details: Any) -> dict[str, Any]:
    """Time ``call`` and return its :func:`figure`.

    ``warmup`` untimed calls of ``warm`` (default: ``call`` itself) come first; then each of ``repeats``
    repetitions times ``calls`` calls of ``call``, each handling ``images_per_call`` images, with the device
    ``sync`` synchronised before the clock is read (CUDA kernels run asynchronously). ``details`` go to the figure.
    """
    for _ in range(warmup):
        (warm or call)()
    synchronize(sync)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        synchronize(sync)
        runs.append(rate(images_per_call * calls, time.perf_counter() - start))
    return figure(runs, label, **details)


def cycle(batches: Iterable[T]) -> Iterator[T]:
    """``batches`` (a DataLoader), epoch after epoch; a timed loop pulls as many as it needs.

    Closing the generator ends the current epoch's iteration (and so a non-persistent loader's workers).

    Raises:
        ValueError: when an epoch gives no batch (a ``drop_last`` loader over fewer items than one batch).
    """
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader gives no batch: fewer items than one batch (lower --batch-size)")


def release() -> None:
    """Collect what the last measurement left (models, DataLoader workers in reference cycles) and free its memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

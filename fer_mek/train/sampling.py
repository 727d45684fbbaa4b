"""The order and augmentation of training samples, as pure functions of ``(seed, epoch, position)``.

:class:`EpochSampler` draws an epoch's order from ``torch.Generator().manual_seed(seed + epoch)`` (shuffle, or
class-balanced draws with replacement), optionally over the train list repeated to ``epoch_size`` entries (the
official MEK loop: ``randperm(1,000,000)`` over its repeated list). :class:`SeededAugmentation` augments each sample
under a seed of its own. Together they make a resumed run equal an uninterrupted one.

Keys. A sampler yields integer keys, ``key = virtual_epoch * N + index`` with ``N`` the number of training samples:
``index`` is the sample, and ``virtual_epoch = epoch * R + r`` where ``R = ceil(epoch_size / N)`` (1 without
``epoch_size``) and ``r`` the repetition (block of ``N`` positions) of the epoch the draw falls in. The datasets
(:class:`SeededAugmentation`, :class:`fer_mek.data.CachedImages`) read ``divmod(key, N)``: each repetition of a sample
in a long epoch gets an augmentation of its own, and without ``epoch_size`` the keys are ``epoch * N + index``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["EpochSampler", "SeededAugmentation"]


class SeededAugmentation(torch.utils.data.Dataset):
    """Training samples whose random augmentation is a pure function of ``(seed, epoch, index)``.

    The sampler (:class:`EpochSampler`) encodes the epoch into the key it yields (module docstring). Each sample is
    transformed under its own seed, inside a forked RNG, so the augmentation of a sample does not depend on which
    worker or process draws it, on DataLoader look-ahead, or on a resume mid-epoch — and the global RNG (dropout) is
    left untouched.
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
    """Shuffled (or class-balanced, with ``weights``) order of one epoch from ``seed + epoch``.

    Args:
        num_samples: ``N``, the number of training samples.
        seed: The run's seed; epoch ``e`` draws from ``torch.Generator().manual_seed(seed + e)``.
        weights: Per-sample weights (e.g. ``1 / n_label``): draw ``epoch_size`` indices with replacement
            (``torch.multinomial``, as ``WeightedRandomSampler``); ``None``: a permutation.
        epoch_size: Entries per epoch, ``0`` for ``N``. Without weights the epoch is ``randperm(epoch_size)`` over the
            train list repeated in order to ``epoch_size`` entries (position ``v`` is sample ``v % N``), which is
            exactly the official MEK ``DistributedSampler`` order (one process, ``seed`` 2048).

    Yields the keys of the module docstring (``epoch * N + index`` without ``epoch_size``).
    """

    def __init__(self, num_samples: int, seed: int, weights: list[float] | None = None, epoch_size: int = 0):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0
        self.epoch_size = int(epoch_size) or num_samples
        # Repetitions of the train list per epoch: the key range of one epoch is repetitions * N.
        self.repetitions = max(1, math.ceil(self.epoch_size / num_samples)) if num_samples else 1
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.double)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.epoch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        offset = self.epoch * self.repetitions * self.num_samples
        if self.weights is None:
            # Position v of the repeated list is sample v % N in repetition v // N: key offset + v.
            order = torch.randperm(self.epoch_size, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.epoch_size, replacement=True, generator=generator)
            if self.repetitions > 1:  # draw p falls in repetition p // N
                order = order + torch.arange(self.epoch_size) // self.num_samples * self.num_samples
        return iter((order + offset).tolist())

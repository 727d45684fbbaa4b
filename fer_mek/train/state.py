"""The progress a checkpoint carries besides the accelerate state: :class:`TrainerState` (saved as JSON, never
pickled, in ``checkpoint/trainer_state.json``)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["TrainerState"]


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
        # The running sums of the epoch's losses and its steps so far: a run resumed mid-epoch logs the whole epoch.
        self.epoch_loss_sums: dict[str, float] = {}
        self.epoch_steps = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(self, key, value)

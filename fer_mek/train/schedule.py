"""Learning-rate schedules of a training run: :func:`build_scheduler` and :class:`StepSchedule`.

Two kinds of scheduler, chosen by :func:`uses_step_schedule`:

- the default ones (``cosine`` with its default shape, ``constant``) are torch ``LambdaLR``
  schedules that accelerate prepares and steps (``num_processes`` scheduler steps per optimizer step, over the steps
  of the whole, unsharded train loader);
- :class:`StepSchedule` (``timm-cosine``, ``exponential``, ``step``, and ``cosine`` with a floor, a warm-up start,
  per-epoch changes): the
  learning rate of every optimizer step is a pure function of the number of optimizer steps done, whatever the number
  of processes, and it counts the steps that fp16's GradScaler skips (as the official MEK loop does). The trainer
  steps it once per optimizer step and checkpoints it with the run (it is not handed to ``accelerator.prepare``).

``plateau`` (:class:`PlateauSchedule`, torch's ``ReduceLROnPlateau``) is the third kind: also checkpointed by the
trainer, a no-op after optimizer steps, stepped once per epoch on the validation ``--plateau-metric`` (the FER-2013
single-network sources').

``timm-cosine`` is the official MEK schedule: timm's ``CosineLRScheduler(t_initial=total, lr_min=min_lr,
warmup_t=warmup, warmup_lr_init=warmup_lr, cycle_limit=1, t_in_epochs=False, warmup_prefix=False)``, on which the
official loop calls ``step_update(global_step)`` after every optimizer step (``train_exp.py:257-258``): optimizer
step 0 runs at the scheduler's initial value (``warmup_lr``, or the base lr without warm-up) and step ``k >= 1`` at
``lr(k - 1)``. With ``schedule_unit: epoch`` it is timm's per-epoch use instead: epoch ``e`` runs at ``lr(e)``.

``step`` is torch's ``StepLR(step_size, gamma)`` stepped once per epoch: epoch ``e`` runs at
``base_lr * gamma ** (e // step_size)``. It is EfficientFace's ``adjust_learning_rate`` (``main.py:296-300``:
``lr = args.lr * (args.factor ** (epoch // args.af))``, set at the start of every epoch, ``main.py:127``; ``--factor``
0.1 and ``--af`` 30 by default, ``main.py:32-33``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["PlateauSchedule", "StepSchedule", "build_scheduler", "cosine_lr", "timm_cosine_lr", "uses_step_schedule"]


def timm_cosine_lr(base_lr: float, t: int, total: int, warmup: int = 0, warmup_lr: float = 0.0,
                   min_lr: float = 0.0) -> float:
    """timm ``CosineLRScheduler._get_lr(t)`` (one cycle, ``cycle_mul = cycle_decay = k_decay = 1``, no noise,
    ``warmup_prefix=False``): the same operations in the same order, so the same float.

    Linear warm-up ``warmup_lr + t * (base_lr - warmup_lr) / warmup`` for ``t < warmup``; then
    ``min_lr + 0.5 * (base_lr - min_lr) * (1 + cos(pi * t / total))`` with ``t`` counted from 0 (not from the end
    of the warm-up); ``min_lr`` from ``t >= total`` on.
    """
    if t < warmup:
        return warmup_lr + t * ((base_lr - warmup_lr) / warmup)
    cycle = t // total
    t_curr = t - total * cycle
    if cycle < 1:
        return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t_curr ** 1.0 / total ** 1.0))
    return min_lr


def cosine_lr(base_lr: float, t: float, total: float, warmup: float = 0.0, warmup_lr: float = 0.0,
              min_lr: float = 0.0) -> float:
    """The ``cosine`` schedule (transformers' ``get_cosine_schedule_with_warmup`` shape) with a warm-up start and a
    floor: linear from ``warmup_lr`` to ``base_lr`` over ``warmup``, then a half cosine from ``base_lr`` to ``min_lr``
    over the rest (``total`` counts the warm-up)."""
    if t < warmup:
        return warmup_lr + (base_lr - warmup_lr) * float(t) / float(max(1.0, warmup))
    progress = float(t - warmup) / float(max(1.0, total - warmup))
    return min_lr + (base_lr - min_lr) * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def uses_step_schedule(config: Any) -> bool:
    """Whether ``config``'s schedule is a :class:`StepSchedule` (else a ``LambdaLR`` that accelerate steps).
    The default ``cosine`` (per step, from 0 to 0) stays transformers' schedule, exactly as before these options."""
    if config.scheduler in ("timm-cosine", "exponential", "step", "plateau"):
        # exponential, step: lr x gamma once per epoch (every step_size epochs), counted in optimizer steps including
        # those fp16's GradScaler skips (accelerate would not step a prepared scheduler on a skipped step, moving every
        # decay off the epoch boundary, unlike the sources' ExponentialLR / adjust_learning_rate once per epoch).
        return True
    return config.scheduler == "cosine" and (config.schedule_unit == "epoch" or config.warmup_lr > 0 or config.min_lr > 0)


class PlateauSchedule(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ``ReduceLROnPlateau``, stepped once per epoch on a validation metric (``--scheduler plateau``).

    Both FER-2013 single-network sources train with ``ReduceLROnPlateau(optimizer, mode='max', factor=0.75,
    patience=5)`` stepped after every epoch on the validation (PrivateTest, ten-crop) accuracy
    (LetheSec ``train.py:95-97, 117-118``; usef-kh/fer ``train.py:34, 55``). The trainer calls :meth:`step` after every
    optimizer step like every other schedule: without a metric that leaves the rate alone; :meth:`step_metric` (once
    per epoch, after validation) is torch's ``step(metric)``. The state (best value, bad epochs, cooldown, current
    rates) is a JSON-able dict, checkpointed with the run as a :class:`StepSchedule`'s is.
    """

    def step(self, metrics: Any = None, epoch: Any = None) -> None:  # noqa: D401 - torch's signature
        if metrics is None:
            return  # an optimizer step: the rate only changes at epoch ends
        super().step(metrics)

    def step_metric(self, value: float) -> None:
        """The end of an epoch: torch's ``ReduceLROnPlateau.step(value)``."""
        super().step(float(value))

    def state_dict(self) -> dict[str, Any]:
        # torch's state minus the optimizer, with math.inf as a string for strict JSON readers too
        state = {key: value for key, value in super().state_dict().items() if key != "optimizer"}
        return {key: (repr(value) if isinstance(value, float) and math.isinf(value) else value)
                for key, value in state.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        values = {key: (float(value) if value in ("inf", "-inf") else value) for key, value in state_dict.items()}
        super().load_state_dict(values)


class StepSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Learning rate of optimizer step ``k`` (``last_epoch`` = optimizer steps done) as a pure function of ``k``.

    Args:
        optimizer: The (unwrapped) optimizer; each parameter group's initial lr is its base lr.
        kind: ``"timm-cosine"``, ``"cosine"``, ``"exponential"`` (``base_lr * gamma ** epoch``) or ``"step"``
            (``base_lr * gamma ** (epoch // step_size)``, torch's ``StepLR`` stepped once per epoch).
        total: Length of the schedule, in optimizer steps (``per_epoch=False``) or epochs.
        warmup: Warm-up length in the same unit.
        warmup_lr: Learning rate the warm-up starts from.
        min_lr: Floor of the cosine.
        steps_per_epoch: Optimizer steps per epoch (of one process): the epoch of step ``k`` is
            ``k // steps_per_epoch``.
        per_epoch: Change the rate at epoch starts only.
        gamma: Decay per epoch of ``"exponential"``, per ``step_size`` epochs of ``"step"``.
        step_size: Epochs between two decays of ``"step"``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, total: int, warmup: float = 0, warmup_lr: float = 0.0,
                 min_lr: float = 0.0, steps_per_epoch: int = 1, per_epoch: bool = False, gamma: float = 1.0,
                 step_size: int = 1):
        if kind not in ("timm-cosine", "cosine", "exponential", "step"):
            raise ValueError(f"StepSchedule kind must be timm-cosine, cosine, exponential or step, got {kind!r}")
        if total < 1 or steps_per_epoch < 1:
            raise ValueError(f"the schedule needs total >= 1 and steps_per_epoch >= 1, got {total}, {steps_per_epoch}")
        if step_size < 1:
            raise ValueError(f"the step schedule needs step_size >= 1 (epochs), got {step_size}")
        self.kind, self.total, self.warmup = kind, int(total), warmup
        self.warmup_lr, self.min_lr = float(warmup_lr), float(min_lr)
        self.steps_per_epoch, self.per_epoch, self.gamma = int(steps_per_epoch), bool(per_epoch), float(gamma)
        self.step_size = int(step_size)
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based) for a group whose base lr is ``base_lr``."""
        if self.kind == "exponential":  # ExponentialLR stepped once per epoch (MEK-CV)
            return base_lr * self.gamma ** (step // self.steps_per_epoch)
        if self.kind == "step":  # StepLR(step_size, gamma) stepped once per epoch (EfficientFace main.py:297)
            return base_lr * self.gamma ** (step // self.steps_per_epoch // self.step_size)
        if self.kind == "timm-cosine":
            if self.per_epoch:  # timm's per-epoch use: epoch e at lr(e)
                return timm_cosine_lr(base_lr, step // self.steps_per_epoch, self.total, int(self.warmup),
                                      self.warmup_lr, self.min_lr)
            if step == 0:  # before the first step_update: CosineLRScheduler's __init__ value
                return self.warmup_lr if self.warmup else base_lr
            return timm_cosine_lr(base_lr, step - 1, self.total, int(self.warmup), self.warmup_lr, self.min_lr)
        t = step // self.steps_per_epoch if self.per_epoch else step
        return cosine_lr(base_lr, t, self.total, self.warmup, self.warmup_lr, self.min_lr)

    def get_lr(self) -> list[float]:
        return [self.lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]


def build_scheduler(config: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    num_epochs: int | None = None, num_processes: int = 1):
    """The learning-rate scheduler of a run.

    Args:
        config: The :class:`~fer_mek.train.TrainConfig`.
        optimizer: The optimizer (unwrapped, for a :class:`StepSchedule`).
        steps_per_epoch: Optimizer steps per epoch: of the whole (unsharded) train loader for the ``LambdaLR``
            schedules, which accelerate steps ``num_processes`` times per optimizer step; of one process for a
            :class:`StepSchedule`.
        num_epochs: Epochs of the run (default ``config.epochs``; with ``train_steps`` the cut run's count).
        num_processes: Processes of the run: ``train_steps`` and ``warmup_steps`` count optimizer steps, i.e.
            ``num_processes`` steps of an accelerate-stepped schedule.
    """
    from transformers import get_constant_schedule, get_cosine_schedule_with_warmup

    num_epochs = config.epochs if num_epochs is None else num_epochs
    if config.scheduler == "plateau":
        return PlateauSchedule(optimizer, mode=config.plateau_mode, factor=config.plateau_factor,
                               patience=config.plateau_patience, threshold=config.plateau_threshold,
                               threshold_mode=config.plateau_threshold_mode, cooldown=config.plateau_cooldown,
                               min_lr=config.plateau_min_lr)
    if uses_step_schedule(config):
        per_epoch = config.schedule_unit == "epoch"
        if per_epoch:
            total, warmup = num_epochs, config.warmup_epochs
        else:
            total = config.train_steps or num_epochs * steps_per_epoch
            warmup = config.warmup_steps or round(config.warmup_epochs * steps_per_epoch)
        return StepSchedule(optimizer, config.scheduler, total, warmup, config.warmup_lr, config.min_lr,
                            steps_per_epoch, per_epoch, gamma=config.gamma, step_size=config.step_size)
    if config.scheduler == "cosine":
        total = config.train_steps * num_processes if config.train_steps else num_epochs * steps_per_epoch
        warmup = (config.warmup_steps * num_processes if config.warmup_steps
                  else round(config.warmup_epochs * steps_per_epoch))
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)
    return get_constant_schedule(optimizer)

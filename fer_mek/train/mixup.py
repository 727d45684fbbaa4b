"""Mixup and the FER-2013 sources' uniform label smoothing, drawn so that a resumed run equals a straight one.

The two FER-2013 single-network sources (read for the facts, not copied):

- LetheSec/Fer2013-Facial-Emotion-Recognition-Pytorch trains with mixup and label smoothing together
  (``train.py:27-30``: ``label_smooth`` True, ``label_smooth_value`` 0.1, ``mixup`` True, ``mixup_alpha`` 1.0).
  Its mixup (``utils.py:69-81``) draws ``lam = np.random.beta(alpha, alpha)`` and a permutation of the batch
  (``torch.randperm``), mixes ``lam * x + (1 - lam) * x[perm]`` - over the crops of the batch, after the five crops
  of every image are laid out as samples (``train.py:160-167``); its loss (``utils.py:84-85``) is
  ``lam * L(out, y) + (1 - lam) * L(out, y[perm])`` with ``L`` the KL divergence, mean over the batch, between the
  smoothed one-hot targets and ``softmax(out)`` (``utils.py:11-13``), and the targets ``smooth_one_hot``
  (``utils.py:16-36``) give the true class ``1 - s`` and every other class ``s / (K - 1)`` (not ``s / K`` as
  ``torch.nn.CrossEntropyLoss(label_smoothing=s)``).
- usef-kh/fer uses neither (``train.py:39``: plain ``nn.CrossEntropyLoss``).

fer-mek draws ``lam`` and the permutation not from global random state but from ``(seed, epoch, step in the epoch,
process)`` (:func:`draw_mixup`): the same distributions, and a run interrupted and resumed from its checkpoint mixes
exactly the batches the uninterrupted one does.

With ``--method mek`` the mixed image and its exact flip go through the model as usual (the attention consistency
term compares the maps of the mixed image with those of its flip, which needs no label), and the re-balanced
smooth-label term is mixed as the source mixes its loss: ``lam * RSL(y) + (1 - lam) * RSL(y[perm])``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["draw_mixup", "mix", "mixed_forward", "mixed_soft_target_loss", "smooth_one_hot", "soft_target_kl"]


def draw_mixup(alpha: float, batch_size: int, seed: int, epoch: int, step: int, process: int = 0
               ) -> tuple[float, np.ndarray]:
    """``lam ~ Beta(alpha, alpha)`` and a permutation of ``range(batch_size)``, a pure function of
    ``(seed, epoch, step, process)`` (numpy's ``default_rng`` of that seed sequence). ``alpha <= 0``: ``lam = 1`` and
    the identity, as the source's ``mixup_data`` with ``alpha = 0``."""
    if alpha <= 0:
        return 1.0, np.arange(batch_size)
    rng = np.random.default_rng([int(seed), int(epoch), int(step), int(process), 0x6D697875])  # "mixu"
    lam = float(rng.beta(alpha, alpha))
    return lam, rng.permutation(batch_size)


def mix(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """``lam * x + (1 - lam) * x[perm]`` (the source's order of operations)."""
    return lam * x + (1 - lam) * x[perm]


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """The sources' smoothed one-hot targets: ``1 - smoothing`` on the true class, ``smoothing / (K - 1)`` on each
    other class (LetheSec ``utils.py:16-36``). ``smoothing = 0``: one-hot."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    targets = torch.full((labels.numel(), num_classes), smoothing / (num_classes - 1), dtype=torch.float32,
                         device=labels.device)
    return targets.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing)


def soft_target_kl(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``KLDivLoss(reduction='batchmean')(log_softmax(logits), targets)`` in float32 (LetheSec ``utils.py:11-13``):
    cross-entropy with soft targets minus their entropy (a constant), so the same gradient."""
    return F.kl_div(F.log_softmax(logits.float(), dim=-1), targets, reduction="batchmean")


def mixed_soft_target_loss(logits: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor | None, lam: float,
                           smoothing: float) -> torch.Tensor:
    """The baseline's loss with label smoothing and/or mixup: ``lam * KL(y) + (1 - lam) * KL(y[perm])`` on
    :func:`smooth_one_hot` targets (LetheSec ``train.py:178-191``); without mixup ``KL(y)``."""
    num_classes = logits.shape[-1]
    loss = soft_target_kl(logits, smooth_one_hot(labels, num_classes, smoothing))
    if perm is None:
        return loss
    other = soft_target_kl(logits, smooth_one_hot(labels[perm], num_classes, smoothing))
    return lam * loss + (1 - lam) * other


def mixed_forward(trainer: Any, inputs: dict[str, Any]) -> Any:
    """A training forward pass of ``trainer`` (:class:`~fer_mek.train.Trainer`) with mixup and/or the baseline's
    uniform label smoothing; the model output with its ``loss``. ``lam`` and the permutation come from ``(seed, epoch,
    step in the epoch, process)``: the trainer's state when the step starts."""
    from ..losses import rebalanced_smooth_label_loss
    from ..modeling_mek import MEKImageClassifierOutput

    config, state, model = trainer.config, trainer.state, trainer.model
    inputs = dict(inputs)
    labels = inputs["labels"]
    lam, perm = 1.0, None
    if config.mixup_alpha > 0:
        lam, order = draw_mixup(config.mixup_alpha, labels.shape[0], config.seed, state.epoch,
                                state.step_in_epoch, trainer.accelerator.process_index)
        perm = torch.as_tensor(order, device=labels.device)
        pixel_values = mix(inputs["pixel_values"], lam, perm)
        if config.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        inputs["pixel_values"] = pixel_values
        if "flipped_pixel_values" in inputs:  # the exact flip of the mixed image (= the mix of the flips)
            inputs["flipped_pixel_values"] = pixel_values.flip(-1)
    if config.method == "baseline":
        output = model(pixel_values=inputs["pixel_values"])
        loss = mixed_soft_target_loss(output.logits, labels, perm, lam, config.label_smoothing)
        return MEKImageClassifierOutput(loss=loss, logits=output.logits, smooth_label_loss=loss)
    output = model(**inputs)
    if perm is None:
        return output
    loss_fn = trainer.accelerator.unwrap_model(model).loss_fn
    other = rebalanced_smooth_label_loss(output.logits, labels[perm], loss_fn.balance_weights, loss_fn.smoothing)
    smooth = lam * output.smooth_label_loss + (1 - lam) * other
    output.loss = output.loss - output.smooth_label_loss + smooth
    output.smooth_label_loss = smooth
    return output

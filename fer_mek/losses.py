"""The MEK losses: re-balanced smooth labels (RSL) and re-balanced attention consistency (RAC).

Zhang et al., "Leave No Stone Unturned: Mine Extra Knowledge for Imbalanced Facial Expression Recognition",
NeurIPS 2023. The formulas follow the official training code; ``tests/test_losses.py`` checks them against reference
values computed with it. Also the label-distribution loss of EfficientFace (Zhao et al., AAAI'21), which trains a
student on a frozen teacher's class distributions (:func:`label_distribution_loss`).

This module only imports torch: it is copied flat next to the model code for ``trust_remote_code=True`` loading.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BALANCE_WEIGHT_RULES",
    "DISTILL_REDUCTIONS",
    "MEKLoss",
    "attention_consistency_loss",
    "balance_weight_values",
    "balance_weights",
    "label_distribution_loss",
    "rebalanced_smooth_label_loss",
    "rebalanced_smooth_targets",
]


#: The balance-weight rules: ``official`` is MEK's ``N / (10 n_c)`` (the official code's constants), ``mean1`` the
#: inverse frequency normalised to mean 1 (MEK-CV's Kaggle scripts, which trained the published ResNet checkpoints).
BALANCE_WEIGHT_RULES = ("official", "mean1")


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (as ``torch.Tensor.float()`` does), returned as a Python float."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _numpy_sum(values: Sequence[float]) -> float:
    """The float64 sum of ``values`` in NumPy's order (pairwise, eight accumulators), so that it is NumPy's result
    bit for bit; MEK-CV sums its inverse counts with ``ndarray.sum``."""
    n = len(values)
    if n < 8:
        total = 0.0
        for value in values:
            total += value
        return total
    if n <= 128:
        partial = list(values[:8])
        i = 8
        while i < n - n % 8:
            for j in range(8):
                partial[j] += values[i + j]
            i += 8
        total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]))
        for value in values[i:]:
            total += value
        return total
    half = n // 2
    half -= half % 8
    return _numpy_sum(values[:half]) + _numpy_sum(values[half:])


def balance_weight_values(class_counts: Sequence[int] | torch.Tensor, rule: str = "official") -> list[float]:
    """Per-class balance weights of MEK; rare classes get large weights.

    Rules:

    * ``"official"``: ``w_c = N / (10 * n_c)`` with ``N`` the number of training samples, the official MEK code's
      rule. With RAF-DB's train counts it reproduces the constants hard-coded there.
    * ``"mean1"``: ``w_c = (1 / n_c) * K / sum_j (1 / n_j)``, the inverse frequency normalised to mean 1, as MEK-CV's
      scripts (the published ResNet checkpoints) compute it: in float64, then rounded to float32
      (``torch.from_numpy(_inv * (K / _inv.sum())).float()``), so that the values are the source's bit for bit.

    Both rules weight classes in the same proportions; they differ by a constant factor (about 1.45 with RAF-DB's
    counts), which scales the attention term against the smooth-label term (whose targets are renormalised per
    sample and so do not depend on the scale).

    Plain Python on purpose: configs are read inside transformers' meta-device context, where tensors hold no data.

    Args:
        class_counts: Number of training samples of each class, in the model's label order.
        rule: ``"official"`` (default) or ``"mean1"``.

    Raises:
        ValueError: for an unknown rule, if a class has no training sample (its weight would be infinite), a count is
            negative, or fewer than two classes are given.
    """
    if rule not in BALANCE_WEIGHT_RULES:
        raise ValueError(f"unknown balance-weight rule {rule!r}; choose one of {BALANCE_WEIGHT_RULES}")
    counts = [float(n) for n in (class_counts.tolist() if isinstance(class_counts, torch.Tensor) else class_counts)]
    if len(counts) < 2:
        raise ValueError(f"class_counts must list one count per class (at least two classes), got {counts}")
    bad = [i for i, n in enumerate(counts) if not n > 0]
    if bad:
        raise ValueError(
            f"class_counts has no training sample (or a negative count) for class index(es) {bad}: {counts}. "
            "Every class needs at least one training image for MEK's balance weights; add samples of that class, "
            "drop the class from the label set, or pass explicit balance_weights."
        )
    if rule == "mean1":
        inverse = [1.0 / n for n in counts]
        scale = len(counts) / _numpy_sum(inverse)
        return [_float32(value * scale) for value in inverse]
    total = sum(counts)
    return [total / (10.0 * n) for n in counts]


def balance_weights(class_counts: Sequence[int] | torch.Tensor, rule: str = "official") -> torch.Tensor:
    """:func:`balance_weight_values` as a float32 tensor of shape ``[K]``."""
    return torch.tensor(balance_weight_values(class_counts, rule), dtype=torch.float32)


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D tensor of class indices, got shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] for {num_classes} classes, "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def rebalanced_smooth_targets(
    labels: torch.Tensor, balance_weights: torch.Tensor, smoothing: float
) -> torch.Tensor:
    """Soft targets of MEK's re-balanced smooth labels.

    The true class gets ``1 - smoothing``; ``smoothing`` is spread over the other classes in proportion to their
    balance weights, renormalised per sample, so that rare classes receive more of the smoothed mass.

    Args:
        labels: Class indices, shape ``[B]``.
        balance_weights: Per-class weights, shape ``[K]`` (see :func:`balance_weights`).
        smoothing: The smoothing mass ``epsilon`` in ``[0, 1)``.

    Returns:
        Targets of shape ``[B, K]`` whose rows sum to one.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    weights = torch.as_tensor(balance_weights, dtype=torch.float32, device=labels.device)
    _check_labels(labels, weights.numel())
    others = weights.expand(labels.numel(), -1).clone()
    others.scatter_(1, labels.long().unsqueeze(1), 0.0)
    targets = others / others.sum(dim=1, keepdim=True) * smoothing
    return targets.scatter_(1, labels.long().unsqueeze(1), 1.0 - smoothing)


def rebalanced_smooth_label_loss(
    logits: torch.Tensor, labels: torch.Tensor, balance_weights: torch.Tensor, smoothing: float
) -> torch.Tensor:
    """Cross-entropy between ``softmax(logits)`` and :func:`rebalanced_smooth_targets`, averaged over the batch."""
    targets = rebalanced_smooth_targets(labels, balance_weights, smoothing)
    # Computed in float32: under bf16/fp16 autocast log_softmax of small logits loses the smoothed classes.
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return -(targets * log_probs).sum(dim=-1).mean()


def attention_consistency_loss(
    attention_maps: torch.Tensor,
    attention_maps_of_flipped: torch.Tensor,
    balance_weights: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """MEK's re-balanced attention consistency between an image and its horizontal flip.

    For each sample: the squared difference between its class attention maps and the maps of the flipped image,
    flipped back, averaged over positions, then summed over classes with the balance weights.

    Args:
        attention_maps: Maps of the images, ``[B, K, h, w]``.
        attention_maps_of_flipped: Maps of the horizontally flipped images, ``[B, K, h, w]``, *not* flipped back
            (this function flips them back along the width).
        balance_weights: Per-class weights, ``[K]``.
        reduction: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` for the per-sample values ``[B]``.
    """
    if attention_maps.shape != attention_maps_of_flipped.shape or attention_maps.ndim != 4:
        raise ValueError(
            "attention_maps and attention_maps_of_flipped must both be [B, K, h, w] of the same shape, got "
            f"{tuple(attention_maps.shape)} and {tuple(attention_maps_of_flipped.shape)}"
        )
    weights = torch.as_tensor(balance_weights, dtype=torch.float32, device=attention_maps.device)
    if weights.numel() != attention_maps.shape[1]:
        raise ValueError(f"got {weights.numel()} balance weights for {attention_maps.shape[1]} classes")
    difference = attention_maps.float() - attention_maps_of_flipped.float().flip(-1)
    per_sample = (difference.pow(2).mean(dim=(2, 3)) * weights).sum(dim=1)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


#: The reductions of :func:`label_distribution_loss`.
DISTILL_REDUCTIONS = ("batchmean", "elementwise")


def label_distribution_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """Cross-entropy between a teacher's class distribution and the student's: EfficientFace's label-distribution
    training (Zhao et al., AAAI'21).

    EfficientFace ``main.py:181-189`` computes ``output_prob = softmax(student(images))`` and, without gradient,
    ``soft_label_prob = softmax(teacher(images))``, and its loss ``cross_entropy`` (``main.py:247-248``) is
    ``torch.mean(-true_label * torch.log(predict_label))`` with ``true_label`` the teacher's probabilities: a mean
    over batch *and* classes. Here ``log(softmax(s))`` is computed as ``log_softmax(s)`` (the same value, without the
    ``log(0) = -inf`` of a saturated softmax), in float32 whatever the autocast.

    Args:
        student_logits: The student's logits ``[B, K]`` (gradients flow through them).
        teacher_logits: The teacher's logits ``[B, K]``, in the student's class order (no gradient flows into them:
            they are detached).
        temperature: ``T > 0``: ``softmax(teacher / T)`` against ``log_softmax(student / T)``; when ``T != 1`` the loss
            is multiplied by ``T**2`` (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015: the
            gradients keep their scale as ``T`` changes). ``T = 1`` is EfficientFace's.
        reduction: ``"batchmean"``: ``sum_k -p_t log p_s`` per sample, averaged over the batch (a cross-entropy, on
            the scale of the hard-label loss); ``"elementwise"``: ``torch.mean`` over batch x classes of
            ``-p_t log p_s``, EfficientFace's formula (``main.py:248``), i.e. the batchmean value divided by ``K``.

    Returns:
        A scalar float32 tensor.
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits and teacher_logits must both be [B, K] of the same shape, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if reduction not in DISTILL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {DISTILL_REDUCTIONS}, got {reduction!r}")
    student, teacher = student_logits.float(), teacher_logits.detach().float()
    if temperature != 1.0:
        student, teacher = student / temperature, teacher / temperature
    elementwise = -F.softmax(teacher, dim=-1) * F.log_softmax(student, dim=-1)
    loss = torch.mean(elementwise) if reduction == "elementwise" else elementwise.sum(dim=-1).mean()
    if temperature != 1.0:
        loss = loss * (temperature * temperature)
    return loss


class MEKLoss(nn.Module):
    """Total MEK loss: ``RSL(smoothing) + attention_weight * RAC``.

    Args:
        balance_weights: Per-class weights ``[K]`` (see :func:`balance_weights`).
        smoothing: Mass of the re-balanced smooth labels (reference: 0.3).
        attention_weight: Weight ``lambda`` of the attention consistency term (reference: 0.1).

    ``forward`` returns the total loss, or with ``output_dict=True`` a dict with ``loss``, ``smooth_label_loss`` and
    (when flipped maps are given) ``attention_loss``.
    """

    balance_weights: torch.Tensor

    def __init__(self, balance_weights: Sequence[float] | torch.Tensor, smoothing: float = 0.3, attention_weight: float = 0.1):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if attention_weight < 0:
            raise ValueError(f"attention_weight must be >= 0, got {attention_weight}")
        values = [float(w) for w in (balance_weights.tolist() if isinstance(balance_weights, torch.Tensor) else balance_weights)]
        if len(values) < 2 or not all(0.0 < w < float("inf") for w in values):
            raise ValueError(f"balance_weights must list a finite positive number per class, got {values}")
        self.register_buffer("balance_weights", torch.tensor(values, dtype=torch.float32), persistent=False)
        self.smoothing = smoothing
        self.attention_weight = attention_weight

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        attention_maps: torch.Tensor | None = None,
        attention_maps_of_flipped: torch.Tensor | None = None,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        terms = {"smooth_label_loss": rebalanced_smooth_label_loss(logits, labels, self.balance_weights, self.smoothing)}
        loss = terms["smooth_label_loss"]
        if (attention_maps is None) != (attention_maps_of_flipped is None):
            raise ValueError("pass both attention_maps and attention_maps_of_flipped, or neither")
        if attention_maps is not None:
            terms["attention_loss"] = attention_consistency_loss(
                attention_maps, attention_maps_of_flipped, self.balance_weights
            )
            loss = loss + self.attention_weight * terms["attention_loss"]
        if output_dict:
            return {"loss": loss, **terms}
        return loss

    def extra_repr(self) -> str:
        return f"num_classes={self.balance_weights.numel()}, smoothing={self.smoothing}, attention_weight={self.attention_weight}"

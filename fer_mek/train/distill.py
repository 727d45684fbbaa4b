"""Label-distribution training (``--method ldt``): the training forward pass with a frozen teacher.

EfficientFace (``zengqunzhao/EfficientFace``, read for the facts, not copied) trains its student on the teacher's
distribution alone: ``main.py:180-189`` computes ``softmax`` of the student's and, without gradient, of the teacher's
outputs on the same batch, and its loss is ``torch.mean(-teacher_prob * log(student_prob))`` (``main.py:247-248``).
fer-mek generalises it the way distillation is usually combined with a hard-label loss (Hinton et al., 2015)::

    loss = alpha * LD(student, teacher; T) + (1 - alpha) * RSL(labels; --smoothing) [+ lambda * RAC]

with ``alpha`` = ``--distill-weight``, ``T`` = ``--distill-temperature`` (:func:`fer_mek.losses.label_distribution_loss`),
RSL MEK's re-balanced smooth labels and RAC MEK's attention consistency on the image and its flip
(``--distill-attention``, weight ``--attention-weight``). Only the terms of non-zero weight enter the loss: with
``alpha = 1`` and no attention term the loss *is* EfficientFace's (with ``--distill-reduction elementwise``) and so is
its gradient.
"""

from __future__ import annotations

from typing import Any

from ..losses import label_distribution_loss

__all__ = ["build_teacher", "distill_formula", "distilled_forward", "teacher_record", "uses_flips"]


def uses_flips(config: Any) -> bool:
    """Whether training pairs every image with its horizontal flip (MEK's attention consistency): ``--method mek``,
    or ``--method ldt --distill-attention``."""
    return config.method == "mek" or (config.method == "ldt" and bool(config.distill_attention))


def build_teacher(trainer: Any) -> Any:
    """``--method ldt``: the run's frozen teacher (:class:`fer_mek.train.teacher.Teacher`: its own preprocessing, its
    classes mapped onto the run's) on the run's device, else ``None``. Never prepared by accelerate: no DDP wrapper,
    no optimizer."""
    config = trainer.config
    if config.method != "ldt":
        return None
    import torch

    from .teacher import load_teacher

    teacher = load_teacher(config.teacher, trainer.processor, trainer.label_names, revision=config.teacher_revision,
                           label_map=config.teacher_label_map)
    teacher.to(trainer.accelerator.device, torch.channels_last if config.channels_last else None)
    return teacher


def distill_formula(config: Any) -> str:
    """``--method ldt``: the loss as a formula of the given weights (the start banner)."""
    alpha = config.distill_weight
    reduction = "mean over batch x classes" if config.distill_reduction == "elementwise" else "batch mean"
    terms = [f"{'' if alpha == 1 else f'{alpha:g} x '}LD(T={config.distill_temperature:g}, {reduction})"] if alpha else []
    if alpha < 1:
        terms.append(f"{1 - alpha:g} x RSL(eps={config.smoothing:g})")
    if config.distill_attention:
        terms.append(f"{config.attention_weight:g} x RAC")
    return " + ".join(terms)


def teacher_record(trainer: Any) -> dict[str, Any]:
    """``results.json``'s ``teacher``: the teacher (model, revision, commit, digest, classes, preprocessing) and the
    distillation options (label map, temperature, weight, reduction, attention)."""
    config = trainer.config
    return {**trainer.teacher.record(), "temperature": config.distill_temperature, "weight": config.distill_weight,
            "reduction": config.distill_reduction, "attention": bool(config.distill_attention),
            "attention_weight": config.attention_weight if config.distill_attention else 0.0}


def distilled_forward(trainer: Any, inputs: dict[str, Any]) -> Any:
    """A training forward pass of ``trainer`` (:class:`~fer_mek.train.Trainer`) with its teacher: the student's
    output with ``loss`` (the combination above), ``distill_loss`` (the distillation term, unweighted) and, for the
    logs, the model's ``smooth_label_loss`` (RSL of the hard labels, whether or not it enters the loss) and
    ``attention_loss`` (with ``--distill-attention``)."""
    config, model = trainer.config, trainer.model
    # The teacher sees the same augmented batch as the student, under the run's autocast, without gradient.
    teacher_logits = trainer.teacher.logits(inputs["pixel_values"], autocast=trainer.accelerator.autocast)
    output = model(**inputs)  # labels (and the flip pair): RSL (and RAC) for the logs and the weighted terms
    distill = label_distribution_loss(output.logits, teacher_logits, config.distill_temperature,
                                      config.distill_reduction)
    alpha = float(config.distill_weight)
    terms = []
    if alpha > 0:
        terms.append(distill if alpha == 1.0 else alpha * distill)
    if alpha < 1:
        terms.append((1.0 - alpha) * output.smooth_label_loss)
    if config.distill_attention:
        terms.append(config.attention_weight * output.attention_loss)
    loss = terms[0]
    for term in terms[1:]:
        loss = loss + term
    output.loss = loss
    output.distill_loss = distill
    return output

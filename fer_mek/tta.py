"""Test-time augmentation: class probabilities averaged over views of the same normalised images.

``flip``: the image and its mirror. ``tencrop``: the four corner crops and the centre crop of the image enlarged by
8/7, and their mirrors — the ten-crop averaging of the FER-2013 literature, applied after the model's own
preprocessing so that the views keep the model's input size.

One implementation serves evaluation (:func:`tta_probabilities`, ``fer_mek.evaluation``) and prediction
(:func:`tta_forward`, which also returns attention maps; ``fer_mek.inference.FERPredictor`` and ``fer-mek predict
--tta``). Probabilities (softmax outputs), not logits, are averaged, as MEK-CV's ``demo.py`` does for its flip TTA
(``probs = 0.5 * (logits.softmax(1) + logits_f.softmax(1))``). A model's own choice is its processor's
``default_tta``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

# The modes are defined where a model's default_tta is validated (the image processor, a flat remote-code file).
from .image_processing_mek import TTA_MODES

#: One of :data:`TTA_MODES`.
TTAMode = Literal["none", "flip", "tencrop"]


def tta_views(pixel_values: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a batch ``[B, 3, H, W]`` that ``mode`` averages over, each ``[B, 3, H, W]``."""
    if mode == "none":
        return [pixel_values]
    if mode == "flip":
        return [pixel_values, pixel_values.flip(-1)]
    if mode == "tencrop":
        height, width = pixel_values.shape[-2:]
        enlarged = F.interpolate(pixel_values, size=(round(height * 8 / 7), round(width * 8 / 7)), mode="bilinear",
                                 align_corners=False, antialias=False)
        big_h, big_w = enlarged.shape[-2:]
        top, left = (big_h - height) // 2, (big_w - width) // 2
        corners = [(0, 0), (0, big_w - width), (big_h - height, 0), (big_h - height, big_w - width), (top, left)]
        crops = [enlarged[..., y : y + height, x : x + width] for y, x in corners]
        return crops + [crop.flip(-1) for crop in crops]
    raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of {TTA_MODES}")


def tta_forward(
    model: nn.Module, pixel_values: torch.Tensor, mode: str = "none", attention_maps: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax probabilities ``[B, K]`` of ``model`` averaged over the views of ``mode``, and its attention maps.

    All views go through the model in one batch. With ``attention_maps``, the second value is the class attention
    maps ``[B, K, h, w]`` of the whole image: for ``"none"`` its own; for ``"flip"`` and ``"tencrop"`` averaged with
    those of the mirror image, flipped back, so that a mirrored face gets the mirrored map. Ten-crop's views are
    crops, so there the whole image and its mirror join the batch for their maps only: they do not count in the
    probabilities. The maps are ``None`` without ``attention_maps`` or when the model gives none (non-MEK models).
    """
    count = pixel_values.shape[0]
    views = tta_views(pixel_values, mode)
    whole = tta_views(pixel_values, "flip") if attention_maps and mode not in ("none", "flip") else []
    output = model(pixel_values=torch.cat(views + whole))
    probabilities = output.logits.float().softmax(-1).view(len(views) + len(whole), count, -1)[: len(views)].mean(0)
    maps = getattr(output, "attention_maps", None) if attention_maps else None
    if maps is None:
        return probabilities, None
    maps = maps.float()
    if mode == "none":
        return probabilities, maps
    first = len(views) * count if whole else 0  # where the whole image and its mirror sit in the batch
    image, mirror = maps[first : first + count], maps[first + count : first + 2 * count]
    return probabilities, (image + mirror.flip(-1)) / 2


@torch.no_grad()
def tta_probabilities(model: nn.Module, pixel_values: torch.Tensor, mode: str = "none") -> torch.Tensor:
    """Softmax probabilities ``[B, K]`` of ``model`` averaged over the views of ``mode``."""
    return tta_forward(model, pixel_values, mode)[0]


__all__ = ["TTA_MODES", "TTAMode", "tta_forward", "tta_probabilities", "tta_views"]

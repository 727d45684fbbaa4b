"""Test-time augmentation: class probabilities averaged over views of the same normalised images.

``flip``: the image and its mirror. ``tencrop``: the four corner crops and the centre crop of the image enlarged by
8/7, and their mirrors — the ten-crop averaging of the FER-2013 literature, applied after the model's own
preprocessing so that the views keep the model's input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TTA_MODES = ("none", "flip", "tencrop")


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


@torch.no_grad()
def tta_probabilities(model: nn.Module, pixel_values: torch.Tensor, mode: str = "none") -> torch.Tensor:
    """Softmax probabilities ``[B, K]`` of ``model`` averaged over the views of ``mode``."""
    views = tta_views(pixel_values, mode)
    logits = model(pixel_values=torch.cat(views)).logits.float()
    return logits.softmax(-1).view(len(views), pixel_values.shape[0], -1).mean(0)

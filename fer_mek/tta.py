"""Test-time augmentation: class probabilities averaged over views of the same normalised images.

``flip``: the image and its mirror. ``tencrop``: the four corner crops and the centre crop of the image enlarged by
8/7, and their mirrors — the ten-crop averaging of the FER-2013 literature, applied after the model's own
preprocessing so that the views keep the model's input size.

One implementation serves evaluation (:func:`tta_probabilities`, ``fer_mek.evaluation``) and prediction
(:func:`tta_forward`, which also returns attention maps; ``fer_mek.inference.FERPredictor`` and ``fer-mek predict
--tta``). Probabilities (softmax outputs), not logits, are averaged, as MEK-CV's ``demo.py`` does for its flip TTA
(``probs = 0.5 * (logits.softmax(1) + logits_f.softmax(1))``). A model's own choice is its processor's
``default_tta``.

``tencrop_source``: the ten-crop of the two FER-2013 single-network references, exactly as they evaluate
(LetheSec/Fer2013-Facial-Emotion-Recognition-Pytorch ``dataset.py:82-89`` + ``evaluate.py:51-61`` / ``train.py:229-239``;
usef-kh/fer ``data/fer2013.py:52-57`` + ``utils/loops.py:57-65``): no resize (the 48-px image itself), torchvision's
``TenCrop(40)`` (the four corners and the centre of the image, then of its mirror image: ``five_crop(img) +
five_crop(hflip(img))``, centre offset ``round((48 - 40) / 2)``), one forward pass of the ten crops, and the **logits**
averaged (``torch.sum(outputs, dim=1) / ncrops``), whose argmax is the prediction; the probabilities returned are the
softmax of the averaged logits. The crop side is the model's input side (``config.image_size``, 40 for the
references); the image comes at :func:`tta_input_size`, 6/5 of it (48 = FER-2013's own size: evaluation feeds the
images unresized). A batch already at the model's size (prediction, whose processor resizes to it) is first enlarged
bilinearly to 6/5 of it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

# The modes are defined where a model's default_tta is validated (the image processor, a flat remote-code file).
from .image_processing_mek import TTA_MODES

#: One of :data:`TTA_MODES`.
TTAMode = Literal["none", "flip", "tencrop", "tencrop_source"]

#: The references' ten-crop: crops of the model's side from images 6/5 of it (40 of 48 px).
SOURCE_TENCROP_RATIO = 6 / 5


def tta_input_size(mode: str, image_size: int) -> int:
    """The side of the images ``mode`` takes for a model of input side ``image_size``: ``image_size``, except for
    ``tencrop_source`` (``round(image_size * 6 / 5)``: 48 for the references' 40)."""
    return round(image_size * SOURCE_TENCROP_RATIO) if mode == "tencrop_source" else int(image_size)


def five_crop(images: torch.Tensor, size: int) -> list[torch.Tensor]:
    """torchvision's ``five_crop`` of a batch ``[B, C, H, W]``: top-left, top-right, bottom-left, bottom-right and
    centre crops of side ``size`` (centre offset ``int(round((H - size) / 2))``, torchvision's ``center_crop``)."""
    height, width = images.shape[-2:]
    if size > min(height, width):
        raise ValueError(f"crop side {size} is larger than the images ({height}x{width})")
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size), (top, left)]
    return [images[..., y : y + size, x : x + size] for y, x in corners]


def source_tencrop_views(images: torch.Tensor, size: int) -> list[torch.Tensor]:
    """torchvision's ``TenCrop(size)`` of a batch: ``five_crop(images) + five_crop(images mirrored)``."""
    return five_crop(images, size) + five_crop(images.flip(-1), size)


def tta_views(pixel_values: torch.Tensor, mode: str, crop_size: int | None = None) -> list[torch.Tensor]:
    """The views of a batch ``[B, 3, H, W]`` that ``mode`` averages over, each ``[B, 3, H, W]``; for
    ``tencrop_source`` each ``[B, 3, crop_size, crop_size]`` (default: ``round(H * 5 / 6)``, 40 of 48)."""
    if mode == "tencrop_source":
        side = min(pixel_values.shape[-2:])
        return source_tencrop_views(pixel_values, crop_size or round(side / SOURCE_TENCROP_RATIO))
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
    if mode == "tencrop_source":
        return _source_tencrop_forward(model, pixel_values, attention_maps)
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


def _model_side(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    size = getattr(config, "image_size", None)
    return int(size) if size else None


def _source_tencrop_forward(model: nn.Module, pixel_values: torch.Tensor,
                            attention_maps: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``tencrop_source`` (module text): softmax of the logits averaged over the ten crops; the maps are those of the
    centre crop averaged with those of the mirror image's centre crop, flipped back."""
    count, side = pixel_values.shape[0], min(pixel_values.shape[-2:])
    crop = _model_side(model) or round(side / SOURCE_TENCROP_RATIO)
    if side <= crop:  # images at the model's size (prediction): enlarged to the references' 6/5 first
        full = tta_input_size("tencrop_source", crop)
        pixel_values = F.interpolate(pixel_values, size=(full, full), mode="bilinear", align_corners=False,
                                     antialias=False)
    views = source_tencrop_views(pixel_values, crop)
    output = model(pixel_values=torch.cat(views))
    logits = output.logits.float().view(len(views), count, -1).sum(0) / len(views)
    maps = getattr(output, "attention_maps", None) if attention_maps else None
    if maps is None:
        return logits.softmax(-1), None
    maps = maps.float().view(len(views), count, *maps.shape[1:])
    return logits.softmax(-1), (maps[4] + maps[9].flip(-1)) / 2


@torch.no_grad()
def tta_probabilities(model: nn.Module, pixel_values: torch.Tensor, mode: str = "none") -> torch.Tensor:
    """Softmax probabilities ``[B, K]`` of ``model`` averaged over the views of ``mode``."""
    return tta_forward(model, pixel_values, mode)[0]


__all__ = [
    "SOURCE_TENCROP_RATIO",
    "TTA_MODES",
    "TTAMode",
    "five_crop",
    "source_tencrop_views",
    "tta_forward",
    "tta_input_size",
    "tta_probabilities",
    "tta_views",
]

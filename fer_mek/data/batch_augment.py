"""The MEK training augmentation on whole batches of ``uint8`` images, on their device (the GPU where there is one).

:func:`~fer_mek.data.transforms.build_train_transform` augments one PIL image at a time in DataLoader workers: right
for any dataset, but per-sample Python that competes with the model for CPU cores and starves a GPU.
:class:`BatchAugmentation` applies the same recipe — rotation, random resized crop, horizontal flip, RandAugment
(timm's ``rand-m9-mstd0.5-inc1`` policy: its 15 "increasing" operations, magnitudes and probabilities) or colour
jitter, normalisation, random erasing — to a ``[B, 3, H, W]`` batch with tensor operations:

- rotation, crop, resize and flip are one affine resampling (``affine_grid`` + ``grid_sample``): one interpolation
  instead of two;
- every random choice is read from ``uniforms`` ``[B, NUM_UNIFORMS]``, numbers in [0, 1) drawn per sample by the
  caller (:class:`~fer_mek.data.CachedImages` seeds them from ``(seed, epoch, index)``): a sample's augmentation
  does not depend on its batch, its worker, its process or a resume;
- RandAugment operations are applied to the samples that drew them, each with its own magnitude.

Differences from the per-sample pipeline (documented, not hidden): pixel operations run in float instead of PIL's
8-bit steps; colour jitter applies brightness, contrast, saturation in that fixed order (torchvision draws an
order); an impossible crop is clipped to the image instead of retried. The MEK flip pair is built after this, as
in the per-sample pipeline: ``flipped = augmented.flip(-1)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .transforms import (
    COLOR_JITTER,
    CROP,
    CROP_RATIO,
    CROP_SCALE,
    HFLIP,
    RAND_AUGMENT,
    RE_MODE,
    RE_PROB,
    RE_SCALE,
    ROTATION,
    ROTATION_INTERPOLATION,
    TRAIN_INTERPOLATION,
    jitter_strengths,
)

__all__ = [
    "NUM_UNIFORMS",
    "BatchAugmentation",
    "batched_augmentation_kwargs",
    "batched_augmentation_supports",
    "parse_rand_augment",
]

#: Random numbers each sample needs (geometry 6, RandAugment 4 per layer for up to 3 layers, jitter 3, erasing 5).
NUM_UNIFORMS = 32
_MAX_LEVEL = 10.0
# timm's `_RAND_INCREASING_TRANSFORMS` (the "inc1" policy), in timm's order.
RAND_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)


def parse_rand_augment(policy: str) -> dict[str, float]:
    """timm's RandAugment string (``"rand-m9-mstd0.5-inc1"``) as ``{m, n, mstd, p}``.

    Only the increasing-magnitude operation set is implemented on batches (``inc1``, what MEK uses).
    """
    parts = policy.split("-")
    if parts[0] != "rand":
        raise ValueError(f"batched augmentation supports timm 'rand-...' policies, got {policy!r}; "
                         "use --data-pipeline per-sample for other auto-augment policies")
    values = {"m": 10.0, "n": 2.0, "mstd": 0.0, "p": 0.5, "inc": 0.0, "mmax": _MAX_LEVEL}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|mmax|inc|m|n|p)([\d.]+)", part)
        if match is None:
            raise ValueError(f"RandAugment policy {policy!r}: cannot read {part!r}")
        values[match.group(1)] = float(match.group(2))
    if not values["inc"]:
        raise ValueError(f"RandAugment policy {policy!r}: the batched pipeline implements the 'inc1' operation set; "
                         "add -inc1 or use --data-pipeline per-sample")
    if not 1 <= values["n"] <= 3:
        raise ValueError(f"RandAugment policy {policy!r}: n (operations per image) must be 1 to 3 on batches")
    return values


_PER_SAMPLE = "use --data-pipeline per-sample (the per-sample transforms implement every augmentation option)"


def batched_augmentation_supports(
    *,
    crop: str = CROP,
    crop_scale: Sequence[float] = CROP_SCALE,
    crop_ratio: Sequence[float] = CROP_RATIO,
    crop_padding: int = 0,
    train_interpolation: str = TRAIN_INTERPOLATION,
    rotation: float = ROTATION,
    rotation_interpolation: str = ROTATION_INTERPOLATION,
    hflip: float = HFLIP,
    color_jitter: float | Sequence[float] | None = COLOR_JITTER,
    auto_augment: str | None = RAND_AUGMENT,
    re_prob: float = RE_PROB,
    re_scale: Sequence[float] = RE_SCALE,
    re_mode: str = RE_MODE,
    ncrop_resize: int = 48,
    train_crops: int = 5,
    color_jitter_prob: float = 1.0,
    translate: float = 0.0,
    translate_prob: float = 1.0,
    rotation_prob: float = 1.0,
    re_count: int = 1,
) -> str | None:
    """Why :class:`BatchAugmentation` cannot run these augmentation options, or ``None`` when it can.

    Takes the keyword arguments of :func:`~fer_mek.data.transforms.build_train_transform`. The batched path runs
    fer-mek's default chain (rotation, random resized crop, flip, ``rand-...-inc1`` RandAugment or colour jitter of
    equal brightness / contrast / saturation, timm's constant-fill erasing of 2 %-33 % of the image); MEK-CV's
    padded crop, nearest-neighbour rotation, torchvision erasing and the like need the per-sample path.

    Returns:
        A sentence naming the first unsupported option and pointing at ``--data-pipeline per-sample``, or ``None``.
    """
    reasons: list[str] = []
    if crop == "ncrop":
        reasons.append("crop='ncrop' (the FER-2013 sources' five / ten crops per image)")
    elif crop != "random-resized":
        reasons.append(f"crop={crop!r} (MEK-CV's resize + padded random crop)")
    elif crop_padding:
        reasons.append(f"crop_padding={crop_padding}")
    if train_interpolation not in ("bilinear", "bicubic"):
        reasons.append(f"train_interpolation={train_interpolation!r} (bilinear or bicubic on batches)")
    if rotation and rotation_interpolation != "bilinear":
        reasons.append(f"rotation_interpolation={rotation_interpolation!r} (rotation and crop are one bilinear or "
                       "bicubic resampling on batches)")
    if auto_augment:
        try:
            parse_rand_augment(auto_augment)
        except ValueError as error:
            reasons.append(f"auto_augment={auto_augment!r} ({error})")
    else:
        jitter = jitter_strengths(color_jitter)
        if jitter is not None and (len(set(jitter[:3])) != 1 or (len(jitter) == 4 and jitter[3])):
            reasons.append(f"color_jitter={list(jitter)} (batches jitter brightness, contrast and saturation with "
                           "one strength and no hue)")
    for name, value in (("color_jitter_prob", color_jitter_prob), ("translate_prob", translate_prob),
                        ("rotation_prob", rotation_prob)):
        if value != 1.0:
            reasons.append(f"{name}={value}")
    if translate:
        reasons.append(f"translate={translate}")
    if re_prob > 0:
        if re_mode != "const":
            reasons.append(f"re_mode={re_mode!r} (batches erase with timm's constant zero fill)")
        if tuple(float(v) for v in re_scale) != RE_SCALE:
            reasons.append(f"re_scale={list(re_scale)} (batches erase 2 %-33 % of the image, timm's default)")
        if re_count != 1:
            reasons.append(f"re_count={re_count} (batches erase one box)")
    if not reasons:
        return None
    return f"the cached data pipeline's batched augmentation does not implement {'; '.join(reasons)}: {_PER_SAMPLE}"


def batched_augmentation_kwargs(**options: Any) -> dict[str, Any]:
    """The :class:`BatchAugmentation` keyword arguments for ``build_train_transform``-style ``options``.

    Raises:
        ValueError: with :func:`batched_augmentation_supports`'s reason when the batched path cannot run them.
    """
    reason = batched_augmentation_supports(**options)
    if reason is not None:
        raise ValueError(reason)
    jitter = jitter_strengths(options.get("color_jitter", COLOR_JITTER))
    return {
        "auto_augment": options.get("auto_augment", RAND_AUGMENT) or None,
        "re_prob": float(options.get("re_prob", RE_PROB)),
        "scale": tuple(float(v) for v in options.get("crop_scale", CROP_SCALE)),
        "ratio": tuple(float(v) for v in options.get("crop_ratio", CROP_RATIO)),
        "rotation": float(options.get("rotation", ROTATION)),
        "hflip": float(options.get("hflip", HFLIP)),
        "color_jitter": None if jitter is None else jitter[0],
        "interpolation": options.get("train_interpolation", TRAIN_INTERPOLATION),
    }


def _blend(image: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL's ImageEnhance: other + factor * (image - other), clipped.
    return (other + factor.view(-1, 1, 1, 1) * (image - other)).clamp_(0.0, 1.0)


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _affine(image: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor, size: Sequence[int] | None = None,
            mode: str = "bilinear") -> torch.Tensor:
    """Resample ``image`` at ``theta @ [x, y, 1]`` (normalised output coordinates); outside the image: ``fill``."""
    out_size = (image.shape[0], image.shape[1], *(size or image.shape[-2:]))
    grid = F.affine_grid(theta.to(image.dtype), list(out_size), align_corners=False)
    shifted = F.grid_sample(image - fill, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return shifted + fill


class BatchAugmentation(nn.Module):
    """Per-sample random training augmentation of a ``uint8`` batch, normalised float out.

    The defaults equal :func:`~fer_mek.data.transforms.build_train_transform`'s.

    Args:
        size: Output ``(H, W)``.
        mean: Normalisation mean (also the fill of RandAugment's geometric operations, as in timm).
        std: Normalisation standard deviation.
        auto_augment: timm RandAugment policy (``"rand-m9-mstd0.5-inc1"``); ``None`` for colour jitter instead.
        re_prob: Random-erasing probability (constant zero fill after normalisation, area 2%-33%, timm's).
        scale: Area range of the random resized crop.
        ratio: Aspect-ratio range of the random resized crop.
        rotation: Maximum rotation in degrees, before the crop (fill black).
        hflip: Probability of a horizontal flip.
        color_jitter: Brightness, contrast and saturation strength (only without ``auto_augment``, as timm).
        interpolation: ``"bilinear"`` or ``"bicubic"``.
        normalize: Normalise with ``mean`` and ``std`` (else values in [0, 1]).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        auto_augment: str | None = RAND_AUGMENT,
        re_prob: float = RE_PROB,
        scale: tuple[float, float] = CROP_SCALE,
        ratio: tuple[float, float] = CROP_RATIO,
        rotation: float = ROTATION,
        hflip: float = HFLIP,
        color_jitter: float | None = COLOR_JITTER,
        interpolation: str = "bilinear",
        normalize: bool = True,
    ):
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be bilinear or bicubic on batches, got {interpolation!r}")
        self.rand = parse_rand_augment(auto_augment) if auto_augment else None
        self.re_prob, self.scale, self.ratio = float(re_prob), tuple(scale), tuple(ratio)
        self.rotation, self.hflip, self.interpolation = float(rotation), float(hflip), interpolation
        self.color_jitter = float(color_jitter or 0.0)
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return (f"size={self.size}, auto_augment={self.rand}, re_prob={self.re_prob}, scale={self.scale}, "
                f"rotation={self.rotation}, hflip={self.hflip}, color_jitter={self.color_jitter}")

    @torch.no_grad()
    def forward(self, images: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Args:
        images: ``uint8`` ``[B, 3, H, W]`` (or float in [0, 1]).
        uniforms: ``[B, NUM_UNIFORMS]`` numbers in [0, 1), drawn per sample.

        Returns:
            Augmented, normalised ``float32`` ``[B, 3, *size]``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        if uniforms.shape != (images.shape[0], NUM_UNIFORMS):
            raise ValueError(f"uniforms must be [B, {NUM_UNIFORMS}], got {tuple(uniforms.shape)}")
        x = images.float().mul_(1.0 / 255.0) if images.dtype == torch.uint8 else images.float()
        u = uniforms.to(device=x.device, dtype=torch.float32)
        x = self._geometry(x, u[:, 0:6])
        if self.rand is not None:
            x = self._rand_augment(x, u[:, 6:18])
        elif self.color_jitter > 0:
            x = self._color_jitter(x, u[:, 18:21])
        if self.normalize:
            x = (x - self.mean) / self.std
        if self.re_prob > 0:
            x = self._random_erasing(x, u[:, 21:26])
        return x.contiguous()

    # -- rotation + random resized crop + flip, as one resampling
    def _geometry(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        _, _, in_h, in_w = x.shape
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
        # Crop size as fractions of the input (timm's RandomResizedCrop: w = sqrt(area * ratio) in pixels).
        frac_w = torch.sqrt(area * aspect * in_h / in_w).clamp(max=1.0)
        frac_h = torch.sqrt(area / aspect * in_w / in_h).clamp(max=1.0)
        centre_x = (1.0 - frac_w) * (2.0 * u[:, 2] - 1.0)
        centre_y = (1.0 - frac_h) * (2.0 * u[:, 3] - 1.0)
        flip = torch.where(u[:, 5] < self.hflip, -1.0, 1.0)
        angle = torch.deg2rad(self.rotation * (2.0 * u[:, 4] - 1.0))
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Normalised output (x, y) -> crop in the rotated image -> the input (rotation in pixel units).
        crop = torch.zeros(x.shape[0], 3, 3, device=x.device)
        crop[:, 0, 0], crop[:, 0, 2] = frac_w * flip, centre_x
        crop[:, 1, 1], crop[:, 1, 2] = frac_h, centre_y
        crop[:, 2, 2] = 1.0
        rotate = torch.zeros_like(crop)
        aspect_wh = in_w / in_h
        rotate[:, 0, 0], rotate[:, 0, 1] = cos, -sin / aspect_wh
        rotate[:, 1, 0], rotate[:, 1, 1] = sin * aspect_wh, cos
        rotate[:, 2, 2] = 1.0
        theta = (rotate @ crop)[:, :2]
        return _affine(x, theta, torch.zeros(1, 3, 1, 1, device=x.device), self.size, self.interpolation)

    # -- RandAugment (timm's increasing operation set)
    def _rand_augment(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        rand = self.rand
        assert rand is not None
        for layer in range(int(rand["n"])):
            choice, apply, level, sign = u[:, 4 * layer : 4 * layer + 4].unbind(1)
            op_index = (choice * len(RAND_OPS)).long().clamp_(max=len(RAND_OPS) - 1)
            magnitude = torch.full_like(level, rand["m"])
            if rand["mstd"] > 0:
                # timm: gauss(m, mstd) per application, clipped to [0, mmax]; the inverse normal CDF of a uniform.
                normal = torch.special.ndtri(level.clamp(1e-6, 1 - 1e-6))
                magnitude = magnitude + rand["mstd"] * normal
            magnitude = magnitude.clamp(0.0, min(rand["mmax"], _MAX_LEVEL)) / _MAX_LEVEL
            signs = torch.where(sign < 0.5, -1.0, 1.0)
            active = apply < rand["p"]
            for index, name in enumerate(RAND_OPS):
                rows = (active & (op_index == index)).nonzero().squeeze(1)
                if rows.numel():
                    x[rows] = self._rand_op(name, x[rows], magnitude[rows], signs[rows])
        return x

    def _rand_op(self, name: str, x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        if name == "AutoContrast":
            low = x.amin(dim=(2, 3), keepdim=True)
            high = x.amax(dim=(2, 3), keepdim=True)
            scale = torch.where(high > low, 1.0 / (high - low).clamp_min(1e-6), torch.ones_like(high))
            return torch.where(high > low, (x - low) * scale, x).clamp_(0.0, 1.0)
        if name == "Equalize":
            from torchvision.transforms.v2 import functional as TF

            return TF.equalize(x.mul(255.0).round_().to(torch.uint8)).float().div_(255.0)
        if name == "Invert":
            return 1.0 - x
        if name == "PosterizeIncreasing":
            bits = 4 - (level * 4).long()  # timm: 4 - int(level * 4) bits kept
            step = (2 ** (8 - bits)).view(-1, 1, 1, 1).float()
            return torch.floor(x * 255.0 / step) * step / 255.0
        if name == "SolarizeIncreasing":
            threshold = (256 - (level * 256).long()).float().view(-1, 1, 1, 1) / 255.0
            return torch.where(x >= threshold, 1.0 - x, x)
        if name == "SolarizeAdd":
            add = (level * 110).long().float().view(-1, 1, 1, 1) / 255.0
            return torch.where(x < 128.0 / 255.0, (x + add).clamp(max=1.0), x)
        factor = 1.0 + level * 0.9 * sign  # timm's enhance "increasing" levels
        if name == "ColorIncreasing":
            return _blend(x, _grayscale(x).expand_as(x), factor)
        if name == "ContrastIncreasing":
            mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
            return _blend(x, mean.expand_as(x), factor)
        if name == "BrightnessIncreasing":
            return _blend(x, torch.zeros_like(x), factor)
        if name == "SharpnessIncreasing":
            # PIL's SMOOTH kernel, border pixels unchanged.
            kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13.0
            smooth = F.conv2d(x, kernel.expand(3, 1, 3, 3), padding=1, groups=3)
            smooth[..., 0, :], smooth[..., -1, :] = x[..., 0, :], x[..., -1, :]
            smooth[..., :, 0], smooth[..., :, -1] = x[..., :, 0], x[..., :, -1]
            return _blend(x, smooth, factor)
        # Geometric operations: fill with the mean colour (timm passes img_mean), zero after normalisation.
        theta = torch.eye(3, device=x.device).repeat(x.shape[0], 1, 1)[:, :2].clone()
        height, width = x.shape[-2:]
        if name == "Rotate":
            angle = torch.deg2rad(level * 30.0 * sign)
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
            theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
        elif name == "ShearX":
            theta[:, 0, 1] = level * 0.3 * sign * height / width
        elif name == "ShearY":
            theta[:, 1, 0] = level * 0.3 * sign * width / height
        elif name == "TranslateXRel":
            theta[:, 0, 2] = 2.0 * level * 0.45 * sign
        elif name == "TranslateYRel":
            theta[:, 1, 2] = 2.0 * level * 0.45 * sign
        else:  # pragma: no cover - RAND_OPS is exhaustive
            raise KeyError(name)
        return _affine(x, theta, self.mean.to(x.device), None, self.interpolation).clamp_(0.0, 1.0)

    # -- colour jitter (without RandAugment, as timm)
    def _color_jitter(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        strength = self.color_jitter
        factors = (1.0 - strength) + 2.0 * strength * u  # U[1 - s, 1 + s]
        factors = factors.clamp_min(0.0)
        x = _blend(x, torch.zeros_like(x), factors[:, 0])
        x = _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), factors[:, 1])
        return _blend(x, _grayscale(x).expand_as(x), factors[:, 2])

    # -- random erasing (timm's RandomErasing, mode "const", one box)
    def _random_erasing(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        area = (0.02 + (1.0 / 3.0 - 0.02) * u[:, 1]) * height * width
        log_ratio = math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u[:, 2]
        aspect = torch.exp(log_ratio)
        box_h = torch.sqrt(area * aspect).round().clamp(1, height)
        box_w = torch.sqrt(area / aspect).round().clamp(1, width)
        top = ((height - box_h + 1) * u[:, 3]).floor()
        left = ((width - box_w + 1) * u[:, 4]).floor()
        rows = torch.arange(height, device=x.device).view(1, height, 1)
        cols = torch.arange(width, device=x.device).view(1, 1, width)
        inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
                  & (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1)))
        erase = inside & (u[:, 0] < self.re_prob).view(batch, 1, 1)
        return x.masked_fill(erase.unsqueeze(1), 0.0)

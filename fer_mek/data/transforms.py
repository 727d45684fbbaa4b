"""Training / evaluation transforms from a model's image processor, and the MEK flip pairing for ``with_transform``.

Every chain starts with :func:`~fer_mek.image_processing_mek.to_rgb8`, the decoding that the pixel cache, the image
processor and ``fer-mek predict`` share (8-bit RGB and grey images: PIL's ``convert("RGB")``; transparency on white;
16-bit and float images scaled). The training augmentation (:func:`build_train_transform`) has two chains: fer-mek's
default, ``to_rgb8`` and ``RandomRotation`` followed by timm's ``create_transform``
(random resized crop, horizontal flip, RandAugment or colour jitter, random erasing) - with the right options the
official MEK code's own transform; and MEK-CV's, torchvision v1 ``Resize`` -> padded ``RandomCrop`` ->
``RandomRotation`` -> ``ColorJitter`` -> ``ToTensor`` -> ``Normalize`` -> ``RandomErasing`` in that order, so that the
same random state gives the same tensor as the source. The evaluation transform is the torchvision v2 equivalent of
the image processor (RGB, resize to its size with its resampling filter, rescale, normalise), so that evaluation
sees what inference sees.

MEK trains on each augmented image together with its exact horizontal flip: :class:`MEKBatchTransform` builds the
pair *after* augmentation, ``flipped_pixel_values = pixel_values.flip(-1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from timm.data import create_transform
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import v2

from fer_mek_cli.defaults import (  # the MEK augmentation, written once there
    COLOR_JITTER,
    CROP,
    CROP_RATIO,
    CROP_SCALE,
    CROPS,
    HFLIP,
    RAND_AUGMENT,
    RE_MODE,
    RE_MODES,
    RE_PROB,
    RE_RATIO,
    RE_SCALE,
    ROTATION,
    ROTATION_INTERPOLATION,
    TRAIN_INTERPOLATION,
)

from ..image_processing_mek import to_rgb8

__all__ = [
    "AUGMENTATION_OPTIONS",
    "CROPS",
    "RE_MODES",
    "MEKBatchTransform",
    "build_eval_transform",
    "build_train_transform",
    "collate_fn",
    "make_transform",
    "processor_settings",
]

#: The augmentation options of :func:`build_train_transform` (and :func:`~fer_mek.data.batched_augmentation_supports`)
#: that are training-configuration fields of the same name: ``{name: getattr(config, name) for name in ...}``.
AUGMENTATION_OPTIONS: tuple[str, ...] = (
    "crop", "crop_scale", "crop_ratio", "crop_padding", "train_interpolation", "rotation", "rotation_interpolation",
    "hflip", "color_jitter", "auto_augment", "re_prob", "re_scale", "re_mode",
)  # fmt: skip

_INTERPOLATIONS = {
    0: v2.InterpolationMode.NEAREST,
    1: v2.InterpolationMode.LANCZOS,
    2: v2.InterpolationMode.BILINEAR,
    3: v2.InterpolationMode.BICUBIC,
    4: v2.InterpolationMode.BOX,
    5: v2.InterpolationMode.HAMMING,
}


def _size_value(size: Any, key: str) -> int | None:
    if size is None:
        return None
    value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
    return None if value is None else int(value)


def processor_settings(image_processor: Any) -> dict[str, Any]:
    """``{"height", "width", "mean", "std", "interpolation", "normalize"}`` of an image processor.

    Accepts a :class:`~fer_mek.MEKImageProcessor` (or any transformers image processor with ``size`` as
    ``{"height", "width"}`` or ``{"shortest_edge"}``, ``image_mean``, ``image_std``, ``resample``) or a
    :class:`~fer_mek.MEKConfig` (``image_size``, ``image_mean``, ``image_std``).
    """
    if hasattr(image_processor, "image_size") and not hasattr(image_processor, "size"):
        height = width = int(image_processor.image_size)
    else:
        size = getattr(image_processor, "size", None)
        if isinstance(size, int):
            height = width = size
        else:
            height, width = _size_value(size, "height"), _size_value(size, "width")
            if height is None or width is None:
                edge = _size_value(size, "shortest_edge")
                if edge is None:
                    raise ValueError(f"cannot read an image size from {type(image_processor).__name__}.size = {size!r}")
                height = width = edge
    mean = [float(v) for v in image_processor.image_mean]
    std = [float(v) for v in image_processor.image_std]
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"image_mean and image_std need 3 values (RGB), got {mean} and {std}")
    resample = getattr(image_processor, "resample", 2)
    interpolation = _INTERPOLATIONS.get(int(resample) if resample is not None else 2, v2.InterpolationMode.BILINEAR)
    normalize = bool(getattr(image_processor, "do_normalize", True))
    return {
        "height": height,
        "width": width,
        "mean": mean,
        "std": std,
        "interpolation": interpolation,
        "normalize": normalize,
    }


def _pair(values: Sequence[float], name: str) -> tuple[float, float]:
    pair = tuple(float(v) for v in values)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ValueError(f"{name} must be two numbers (low, high) with low <= high, got {list(values)}")
    return pair  # type: ignore[return-value]


def jitter_strengths(color_jitter: float | Sequence[float] | None) -> tuple[float, ...] | None:
    """Colour-jitter ``brightness, contrast, saturation[, hue]`` as a tuple; ``None`` when off (``None``, an empty
    list or all zeros). A single number ``s`` means ``(s, s, s)``, as in timm."""
    if color_jitter is None:
        return None
    if isinstance(color_jitter, (int, float)):
        values: tuple[float, ...] = (float(color_jitter),) * 3
    else:
        values = tuple(float(v) for v in color_jitter)
        if not values:
            return None
        if len(values) not in (3, 4):
            raise ValueError("color_jitter must be one number or 3-4 numbers (brightness, contrast, saturation[, hue]), "
                             f"got {list(color_jitter)}")
    if min(values) < 0 or (len(values) == 4 and values[3] > 0.5):
        raise ValueError(f"color_jitter strengths must be >= 0 (hue <= 0.5), got {list(values)}")
    return values if any(values) else None


def _check_choice(value: str, name: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def build_train_transform(
    image_processor: Any,
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
    re_count: int = 1,
) -> Callable[[Any], torch.Tensor]:
    """The training augmentation for a model's image processor (PIL image in, normalised ``[3, H, W]`` tensor out).

    The output size, mean and std are the processor's. Two chains (``crop``):

    * ``"random-resized"`` (default, fer-mek's): ``to_rgb8 -> RandomRotation(rotation) -> timm create_transform(
      is_training=True)`` = random resized crop (``crop_scale``, ``crop_ratio``, ``train_interpolation``) ->
      horizontal flip (``hflip``) -> ``auto_augment`` (RandAugment) or, without it, colour jitter -> tensor ->
      normalise -> random erasing. With ``rotation=0``, ``crop_scale=crop_ratio=(1, 1)``,
      ``train_interpolation="bicubic"``, ``color_jitter=0.4``, ``re_mode="pixel"`` and mean = std = 0.5 this is
      exactly the official MEK code's ``create_transform(input_size=112, ...)`` (its ``configs/exp.py``).
    * ``"padded"`` (MEK-CV's ``kaggle/mek_resnet18.py``), torchvision v1 operations on the PIL image in this order:
      ``to_rgb8 -> Resize((H, W), train_interpolation) -> RandomCrop((H, W), padding=crop_padding, fill 0) ->
      RandomHorizontalFlip(hflip) (only when hflip > 0) -> RandomRotation(rotation, rotation_interpolation, fill 0)
      -> auto_augment or ColorJitter(*color_jitter) -> ToTensor -> Normalize -> random erasing``. With
      ``crop_padding=8``, ``rotation_interpolation="nearest"``, ``hflip=0``, ``color_jitter=[c, c, 0, 0]``,
      ``auto_augment=None``, ``re_mode="torchvision"`` and ``re_scale=(0.02, 0.2)`` the same torch random state
      gives the same tensor as MEK-CV's ``Compose`` (torchvision draws from torch's generator only). The random
      crop is there even with ``crop_padding=0`` (a crop of the whole resized image that still draws its offsets).

    Colour jitter of all-zero strengths is left out (timm would add a no-op ``ColorJitter`` that still draws).

    Args:
        image_processor: The model's image processor (or config), see :func:`processor_settings`.
        crop: ``"random-resized"`` or ``"padded"`` (:data:`CROPS`).
        crop_scale: Area range of the random resized crop (``(1, 1)`` keeps the whole face); ``random-resized`` only.
        crop_ratio: Aspect-ratio range of the random resized crop; ``random-resized`` only.
        crop_padding: Zero padding of each side before the random crop; ``padded`` only.
        train_interpolation: Resampling of the crop / resize (and of RandAugment's geometric operations):
            ``"bilinear"``, ``"bicubic"``, ``"nearest"`` (``padded``) or timm's ``"random"`` (``random-resized``).
        rotation: Maximum rotation in degrees (``0`` to disable): before the crop with ``random-resized``, after it
            with ``padded``; black fill.
        rotation_interpolation: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
        hflip: Probability of a horizontal flip (MEK's paired flip is separate: :class:`MEKBatchTransform`).
        color_jitter: Brightness, contrast, saturation[, hue] strengths (one number ``s`` = ``(s, s, s)``);
            applied only when ``auto_augment`` is off, as in timm; ``None``, ``[]`` or zeros: off.
        auto_augment: timm auto-augment policy (``"rand-m9-mstd0.5-inc1"`` = RandAugment); ``None`` / ``""`` off.
        re_prob: Probability of random erasing (after normalisation); ``0`` off.
        re_scale: Area range of the erased box, as a fraction of the image.
        re_mode: timm's fill ``"const"`` (zero), ``"rand"`` (one normal colour per box), ``"pixel"`` (normal noise),
            or ``"torchvision"``: ``torchvision.transforms.RandomErasing(re_prob, re_scale, ratio=(0.3, 3.3),
            value=0)`` (:data:`RE_MODES`).
        re_count: Number of erased boxes (timm modes; ``torchvision`` erases one).

    Raises:
        ValueError: on an unknown choice, or an option that does not apply to ``crop`` set to another value than
            its default (``crop_padding`` with ``random-resized``; ``crop_scale`` / ``crop_ratio`` with ``padded``).
    """
    from torchvision import transforms as v1

    _check_choice(crop, "crop", CROPS)
    _check_choice(re_mode, "re_mode", RE_MODES)
    _check_choice(rotation_interpolation, "rotation_interpolation", ("bilinear", "nearest", "bicubic"))
    interpolations = ("bilinear", "bicubic", "random") if crop == "random-resized" else ("bilinear", "bicubic", "nearest")
    _check_choice(train_interpolation, f"train_interpolation (crop={crop!r})", interpolations)
    scale, ratio, erase_scale = _pair(crop_scale, "crop_scale"), _pair(crop_ratio, "crop_ratio"), _pair(re_scale, "re_scale")
    if not 0.0 < erase_scale[0] <= erase_scale[1] < 1.0:
        raise ValueError(f"re_scale must lie in (0, 1), got {list(re_scale)}")
    if crop == "random-resized" and crop_padding:
        raise ValueError(f"crop_padding={crop_padding} applies to crop='padded' only")
    if crop == "padded" and (scale != CROP_SCALE or ratio != CROP_RATIO):
        raise ValueError("crop_scale and crop_ratio apply to crop='random-resized' only; crop='padded' resizes to the "
                         "model's size and crops it back after padding")
    if crop_padding < 0:
        raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
    if re_mode == "torchvision" and re_count != 1:
        raise ValueError(f"re_mode='torchvision' erases one box; got re_count={re_count}")
    jitter = jitter_strengths(color_jitter)
    auto_augment = auto_augment or None
    settings = processor_settings(image_processor)
    height, width = settings["height"], settings["width"]
    rotate_mode = v1.InterpolationMode(rotation_interpolation)

    erasing: list[Callable[[Any], Any]] = []
    if re_prob > 0 and settings["normalize"]:  # as timm: no erasing on unnormalised output
        if re_mode == "torchvision":
            erasing.append(v1.RandomErasing(p=re_prob, scale=erase_scale, ratio=RE_RATIO, value=0))
        else:
            erasing.append(RandomErasing(re_prob, min_area=erase_scale[0], max_area=erase_scale[1], mode=re_mode,
                                         max_count=re_count, num_splits=0, device="cpu"))

    if crop == "random-resized":
        timm_transform = create_transform(
            input_size=(3, height, width),
            is_training=True,
            scale=scale,
            ratio=ratio,
            hflip=hflip,
            color_jitter=jitter,
            auto_augment=auto_augment,
            interpolation=train_interpolation,
            mean=tuple(settings["mean"]),
            std=tuple(settings["std"]),
            re_prob=0.0,  # appended below, with re_scale and the torchvision mode
            normalize=settings["normalize"],
        )
        steps: list[Callable[[Any], Any]] = [to_rgb8]
        if rotation:
            steps.append(v2.RandomRotation(rotation, interpolation=rotate_mode))
        return v2.Compose([*steps, timm_transform, *erasing])

    chain: list[Callable[[Any], Any]] = [
        to_rgb8,  # = PIL's convert("RGB") for 8-bit RGB / grey, as torchvision's ImageFolder loader
        v1.Resize((height, width), interpolation=v1.InterpolationMode(train_interpolation)),
        v1.RandomCrop((height, width), padding=crop_padding, fill=0),
    ]
    if hflip > 0:
        chain.append(v1.RandomHorizontalFlip(p=hflip))
    if rotation:
        chain.append(v1.RandomRotation(rotation, interpolation=rotate_mode, fill=0))
    if auto_augment:
        chain.append(_auto_augment(auto_augment, (height, width), settings["mean"], train_interpolation))
    elif jitter is not None:
        chain.append(v1.ColorJitter(*jitter))
    chain.append(v1.ToTensor())
    if settings["normalize"]:
        chain.append(v1.Normalize(settings["mean"], settings["std"]))
    return v1.Compose([*chain, *erasing])


def _auto_augment(policy: str, size: tuple[int, int], mean: Sequence[float], interpolation: str) -> Callable[[Any], Any]:
    """timm's auto-augment transform with the parameters its ``create_transform`` gives it."""
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform
    from timm.data.transforms import str_to_pil_interp

    params: dict[str, Any] = {"translate_const": int(min(size) * 0.45),
                              "img_mean": tuple(min(255, round(255 * x)) for x in mean)}
    if interpolation != "random":
        params["interpolation"] = str_to_pil_interp(interpolation)
    if policy.startswith("rand"):
        return rand_augment_transform(policy, params)
    if policy.startswith("augmix"):
        return augment_and_mix_transform(policy, {**params, "translate_pct": 0.3})
    return auto_augment_transform(policy, params)


def build_eval_transform(image_processor: Any) -> v2.Compose:
    """The evaluation transform: the image processor's preprocessing as torchvision v2 steps.

    ``to_rgb8 -> Resize((H, W), processor's filter, antialias) -> float in [0, 1] -> Normalize(mean, std)``; matches
    ``image_processor(images)["pixel_values"]`` of a :class:`~fer_mek.MEKImageProcessor`.
    """
    settings = processor_settings(image_processor)
    steps: list[Callable[[Any], Any]] = [
        to_rgb8,
        v2.Resize((settings["height"], settings["width"]), interpolation=settings["interpolation"], antialias=True),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if settings["normalize"]:
        steps.append(v2.Normalize(mean=settings["mean"], std=settings["std"]))
    return v2.Compose(steps)


class MEKBatchTransform:
    """A ``datasets`` batch transform (for ``with_transform`` / ``set_transform``) producing MEK model inputs.

    Takes a batch ``{"image": [PIL images], "label": [ints]}`` and returns ``{"pixel_values": [FloatTensor[3, H, W]],
    "labels": [int]}``, plus ``"flipped_pixel_values"`` (the exact horizontal flip of each *augmented* tensor) when
    ``with_flip``. Rows without a label column give no ``labels``. Picklable, so it works in DataLoader workers.

    Args:
        transform: Per-image transform (PIL image -> tensor), e.g. :func:`build_train_transform`.
        with_flip: Also return ``flipped_pixel_values``.
        image_column: Name of the image column.
        label_column: Name of the label column.

    Example:
        >>> train = dataset_dict["train"].with_transform(make_transform(processor, train=True))
        >>> loader = torch.utils.data.DataLoader(train, batch_size=64, collate_fn=collate_fn, num_workers=2)
    """

    def __init__(
        self,
        transform: Callable[[Any], torch.Tensor],
        *,
        with_flip: bool = False,
        image_column: str = "image",
        label_column: str = "label",
    ) -> None:
        self.transform = transform
        self.with_flip = with_flip
        self.image_column = image_column
        self.label_column = label_column

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
        """Transform one batch (dict of columns)."""
        pixel_values = [self.transform(image) for image in batch[self.image_column]]
        out: dict[str, list[Any]] = {"pixel_values": pixel_values}
        if self.with_flip:
            out["flipped_pixel_values"] = [pv.flip(-1) for pv in pixel_values]
        if self.label_column in batch:
            out["labels"] = [int(label) for label in batch[self.label_column]]
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(with_flip={self.with_flip}, transform={self.transform!r})"


def make_transform(
    image_processor: Any, train: bool, with_flip: bool | None = None, **train_kwargs: Any
) -> MEKBatchTransform:
    """A :class:`MEKBatchTransform` with the training or evaluation transform of ``image_processor``.

    Args:
        image_processor: The model's image processor (or config).
        train: Training augmentation (:func:`build_train_transform`) or evaluation preprocessing.
        with_flip: Return ``flipped_pixel_values`` too; defaults to ``train`` (MEK's training needs the pair).
        **train_kwargs: Options of :func:`build_train_transform` (only with ``train=True``).
    """
    if train:
        transform = build_train_transform(image_processor, **train_kwargs)
    else:
        if train_kwargs:
            raise TypeError(f"augmentation options {sorted(train_kwargs)} only apply with train=True")
        transform = build_eval_transform(image_processor)
    return MEKBatchTransform(transform, with_flip=train if with_flip is None else with_flip)


def collate_fn(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack examples of :class:`MEKBatchTransform` into ``pixel_values`` ``[B, 3, H, W]``,
    ``flipped_pixel_values`` (when present) and ``labels`` ``[B]`` (``int64``, when present)."""
    if not examples:
        raise ValueError("collate_fn got an empty batch")
    batch = {"pixel_values": torch.stack([ex["pixel_values"] for ex in examples])}
    if "flipped_pixel_values" in examples[0]:
        batch["flipped_pixel_values"] = torch.stack([ex["flipped_pixel_values"] for ex in examples])
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([int(ex["labels"]) for ex in examples], dtype=torch.long)
    return batch

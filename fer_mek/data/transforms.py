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
    "NCROP_COUNTS",
    "build_eval_transform",
    "build_ncrop_eval_transform",
    "build_train_transform",
    "collate_fn",
    "make_transform",
    "processor_settings",
]

#: The augmentation options of :func:`build_train_transform` (and :func:`~fer_mek.data.batched_augmentation_supports`)
#: that are training-configuration fields of the same name: ``{name: getattr(config, name) for name in ...}``.
AUGMENTATION_OPTIONS: tuple[str, ...] = (
    "crop", "crop_scale", "crop_ratio", "crop_padding", "train_interpolation", "rotation", "rotation_interpolation",
    "hflip", "color_jitter", "auto_augment", "re_prob", "re_scale", "re_mode", "ncrop_resize", "train_crops",
    "color_jitter_prob", "translate", "translate_prob", "rotation_prob",
)  # fmt: skip
#: The crops of the FER-2013 sources' ``Ncrop`` training and testing: torchvision's ``FiveCrop`` / ``TenCrop``.
NCROP_COUNTS: tuple[int, ...] = (5, 10)


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
    ncrop_resize: int = 48,
    train_crops: int = 5,
    color_jitter_prob: float = 1.0,
    translate: float = 0.0,
    translate_prob: float = 1.0,
    rotation_prob: float = 1.0,
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

    * ``"ncrop"`` (the FER-2013 single-network sources: LetheSec ``dataset.py:91-107``, usef-kh/fer
      ``data/fer2013.py:60-70``), torchvision v1 operations on the PIL image in this order: ``to_rgb8 ->
      RandomResizedCrop(ncrop_resize, crop_scale, crop_ratio, train_interpolation) -> RandomApply([ColorJitter(
      *color_jitter)], color_jitter_prob) -> RandomApply([RandomAffine(0, translate=(t, t))], translate_prob) ->
      RandomHorizontalFlip(hflip) -> RandomApply([RandomRotation(rotation, rotation_interpolation)], rotation_prob)
      -> FiveCrop / TenCrop(H, W) (train_crops) -> per crop ToTensor -> Normalize -> random erasing``; the output is
      ``[train_crops, 3, H, W]``, every crop a training sample (the trainer lays them out as ``B x train_crops``
      samples, labels repeated, as the sources' ``repeat_interleave``). A step whose probability is 1 is applied
      without ``RandomApply`` (which would draw); one whose strength is 0 is left out. ``crop_scale`` may exceed 1
      here, as torchvision allows (the sources use ``(0.8, 1.2)``).

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
        ncrop_resize: ``ncrop``: side of the random resized crop the crops are cut from.
        train_crops: ``ncrop``: 5 (``FiveCrop``) or 10 (``TenCrop``: the five and their horizontal flips).
        color_jitter_prob: ``ncrop``: probability of the colour jitter.
        translate: ``ncrop``: maximal random translation, a fraction of the side (``RandomAffine``); ``0`` off.
        translate_prob: ``ncrop``: probability of the translation.
        rotation_prob: ``ncrop``: probability of the rotation.
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
    ncrop = crop == "ncrop"
    for name, value in (("color_jitter_prob", color_jitter_prob), ("translate_prob", translate_prob),
                        ("rotation_prob", rotation_prob)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} is a probability, in [0, 1]; got {value}")
        if value != 1.0 and not ncrop:
            raise ValueError(f"{name}={value} applies to crop='ncrop' only")
    if not 0.0 <= translate < 1.0:
        raise ValueError(f"translate must be in [0, 1), got {translate}")
    if translate and not ncrop:
        raise ValueError(f"translate={translate} applies to crop='ncrop' only")
    if ncrop and train_crops not in NCROP_COUNTS:
        raise ValueError(f"train_crops must be one of {NCROP_COUNTS} (FiveCrop / TenCrop), got {train_crops}")
    if ncrop and auto_augment:
        raise ValueError("crop='ncrop' (the FER-2013 sources' chain) has no auto-augment step; set auto_augment to ''")
    _check_choice(train_interpolation, f"train_interpolation (crop={crop!r})", interpolations)
    scale, ratio, erase_scale = _pair(crop_scale, "crop_scale"), _pair(crop_ratio, "crop_ratio"), _pair(re_scale, "re_scale")
    if not 0.0 < erase_scale[0] <= erase_scale[1] < 1.0:
        raise ValueError(f"re_scale must lie in (0, 1), got {list(re_scale)}")
    if crop == "random-resized" and crop_padding:
        raise ValueError(f"crop_padding={crop_padding} applies to crop='padded' only")
    if ncrop and crop_padding:
        raise ValueError(f"crop_padding={crop_padding} applies to crop='padded' only")
    if ncrop and ncrop_resize < min(height_width := _processor_side(image_processor)):
        raise ValueError(f"ncrop_resize={ncrop_resize} is smaller than the crops ({height_width[0]} x "
                         f"{height_width[1]}) cut from it")
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

    if ncrop:
        return _ncrop_train_chain(
            settings, erasing, resize=ncrop_resize, scale=scale, ratio=ratio,
            interpolation=v1.InterpolationMode(train_interpolation), jitter=jitter,
            jitter_prob=color_jitter_prob, translate=translate, translate_prob=translate_prob, hflip=hflip,
            rotation=rotation, rotate_mode=rotate_mode, rotation_prob=rotation_prob, crops=train_crops,
        )

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


def _processor_side(image_processor: Any) -> tuple[int, int]:
    settings = processor_settings(image_processor)
    return settings["height"], settings["width"]


class _PerCrop:
    """Apply ``steps`` (tensor -> tensor, or PIL -> tensor) to each crop of a sequence and stack the results: the
    sources' ``Lambda(lambda crops: torch.stack([step(crop) for crop in crops]))``, one step after the other over all
    crops (so the random draws come in the sources' order: every crop's erasing after every crop's conversion)."""

    def __init__(self, steps: Sequence[Callable[[Any], Any]]) -> None:
        self.steps = list(steps)

    def __call__(self, crops: Sequence[Any]) -> torch.Tensor:
        values: Any = crops
        for step in self.steps:
            values = torch.stack([step(crop) for crop in values])
        return values

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.steps!r})"


def _ncrop_train_chain(settings: Mapping[str, Any], erasing: Sequence[Callable[[Any], Any]], *, resize: int,
                       scale: tuple[float, float], ratio: tuple[float, float], interpolation: Any,
                       jitter: tuple[float, ...] | None, jitter_prob: float, translate: float, translate_prob: float,
                       hflip: float, rotation: float, rotate_mode: Any, rotation_prob: float, crops: int) -> Any:
    from torchvision import transforms as v1

    def maybe(step: Callable[[Any], Any], p: float) -> Callable[[Any], Any]:
        return step if p >= 1.0 else v1.RandomApply([step], p=p)

    chain: list[Callable[[Any], Any]] = [
        to_rgb8,
        v1.RandomResizedCrop(resize, scale=scale, ratio=ratio, interpolation=interpolation),
    ]
    if jitter is not None and jitter_prob > 0:
        chain.append(maybe(v1.ColorJitter(*jitter), jitter_prob))
    if translate and translate_prob > 0:
        chain.append(maybe(v1.RandomAffine(0, translate=(translate, translate)), translate_prob))
    if hflip > 0:
        chain.append(v1.RandomHorizontalFlip(p=hflip))
    if rotation and rotation_prob > 0:
        chain.append(maybe(v1.RandomRotation(rotation, interpolation=rotate_mode, fill=0), rotation_prob))
    size = (settings["height"], settings["width"])
    chain.append(v1.FiveCrop(size) if crops == 5 else v1.TenCrop(size))
    per_crop: list[Callable[[Any], Any]] = [v1.ToTensor()]
    if settings["normalize"]:
        per_crop.append(v1.Normalize(settings["mean"], settings["std"]))
    # One Lambda per step, as the sources: all crops to tensors, then all normalised, then each one erased.
    chain.extend(_PerCrop([step]) for step in [*per_crop, *erasing])
    return v1.Compose(chain)


def build_ncrop_eval_transform(image_processor: Any, resize: int = 48, crops: int = 10) -> Callable[[Any], torch.Tensor]:
    """The FER-2013 sources' ``Ncrop`` evaluation input (LetheSec ``dataset.py:82-89``, usef-kh/fer
    ``data/fer2013.py:52-57``): ``to_rgb8 -> Resize((resize, resize))`` (a no-op for FER-2013's 48-px images, which
    the sources crop directly) ``-> TenCrop / FiveCrop(H, W) -> per crop ToTensor -> Normalize``; ``[crops, 3, H, W]``.
    The trainer averages the crops' logits (``sum / crops``, the sources' ``evaluate``)."""
    from torchvision import transforms as v1

    if crops not in NCROP_COUNTS:
        raise ValueError(f"crops must be one of {NCROP_COUNTS}, got {crops}")
    settings = processor_settings(image_processor)
    size = (settings["height"], settings["width"])
    if resize < min(size):
        raise ValueError(f"resize={resize} is smaller than the crops ({size[0]} x {size[1]})")
    per_crop: list[Callable[[Any], Any]] = [v1.ToTensor()]
    if settings["normalize"]:
        per_crop.append(v1.Normalize(settings["mean"], settings["std"]))
    return v1.Compose([
        to_rgb8,
        v1.Resize((resize, resize), interpolation=v1.InterpolationMode(settings["interpolation"].value)),
        v1.FiveCrop(size) if crops == 5 else v1.TenCrop(size),
        *(_PerCrop([step]) for step in per_crop),
    ])


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
    """Stack examples of :class:`MEKBatchTransform` into ``pixel_values`` ``[B, 3, H, W]`` (``[B, N, 3, H, W]`` for
    transforms that give ``N`` crops per image, e.g. ``crop="ncrop"``), ``flipped_pixel_values`` (when present) and
    ``labels`` ``[B]`` (``int64``, when present)."""
    if not examples:
        raise ValueError("collate_fn got an empty batch")
    batch = {"pixel_values": torch.stack([ex["pixel_values"] for ex in examples])}
    if "flipped_pixel_values" in examples[0]:
        batch["flipped_pixel_values"] = torch.stack([ex["flipped_pixel_values"] for ex in examples])
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([int(ex["labels"]) for ex in examples], dtype=torch.long)
    return batch

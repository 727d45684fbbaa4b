"""Training / evaluation transforms from a model's image processor, and the MEK flip pairing for ``with_transform``.

The training augmentation is timm's ``create_transform`` (random resized crop, horizontal flip, RandAugment,
random erasing) preceded by torchvision v2 ``RGB`` (grayscale, palette and RGBA images become RGB) and
``RandomRotation``; the evaluation transform is the torchvision v2 equivalent of the image processor (RGB, resize to
its size with its resampling filter, rescale, normalise), so that evaluation sees what inference sees.

MEK trains on each augmented image together with its exact horizontal flip: :class:`MEKBatchTransform` builds the
pair *after* augmentation, ``flipped_pixel_values = pixel_values.flip(-1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from timm.data import create_transform
from torchvision.transforms import v2

__all__ = [
    "MEKBatchTransform",
    "build_eval_transform",
    "build_train_transform",
    "collate_fn",
    "make_transform",
    "processor_settings",
]

# The MEK training augmentation (official code: RandAugment m9 mstd0.5 inc1, random erasing 0.25), shared by the
# per-sample transform and the batched one (fer_mek.data.batch_augment).
RAND_AUGMENT = "rand-m9-mstd0.5-inc1"
RE_PROB = 0.25
CROP_SCALE = (0.8, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
ROTATION = 10.0
HFLIP = 0.5
COLOR_JITTER = 0.4

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


def build_train_transform(
    image_processor: Any,
    *,
    auto_augment: str | None = RAND_AUGMENT,
    re_prob: float = RE_PROB,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    rotation: float = ROTATION,
    hflip: float = HFLIP,
    color_jitter: float | Sequence[float] | None = COLOR_JITTER,
    re_mode: str = "const",
    re_count: int = 1,
    interpolation: str = "bilinear",
) -> v2.Compose:
    """The training augmentation for a model's image processor (PIL image in, normalised ``[3, H, W]`` tensor out).

    ``RGB -> RandomRotation(rotation) -> timm.data.create_transform(is_training=True, ...)``; the output size, mean
    and std are the processor's.

    Args:
        image_processor: The model's image processor (or config), see :func:`processor_settings`.
        auto_augment: timm auto-augment policy (``"rand-m9-mstd0.5-inc1"`` = RandAugment); ``None`` to disable.
        re_prob: Probability of random erasing (after normalisation).
        scale: Area range of the random resized crop (``(1.0, 1.0)`` keeps the whole face).
        ratio: Aspect-ratio range of the random resized crop.
        rotation: Maximum rotation in degrees, before the crop (``0`` to disable).
        hflip: Probability of a horizontal flip.
        color_jitter: Colour-jitter strength; timm applies it only when ``auto_augment`` is ``None``.
        re_mode: Random-erasing fill (``"const"``, ``"rand"``, ``"pixel"``).
        re_count: Number of erased boxes.
        interpolation: Interpolation of the crop (``"bilinear"``, ``"bicubic"``, ``"random"``).
    """
    settings = processor_settings(image_processor)
    timm_transform = create_transform(
        input_size=(3, settings["height"], settings["width"]),
        is_training=True,
        scale=tuple(scale),
        ratio=tuple(ratio),
        hflip=hflip,
        color_jitter=color_jitter,
        auto_augment=auto_augment,
        interpolation=interpolation,
        mean=tuple(settings["mean"]),
        std=tuple(settings["std"]),
        re_prob=re_prob,
        re_mode=re_mode,
        re_count=re_count,
        normalize=settings["normalize"],
    )
    steps: list[Callable[[Any], Any]] = [v2.RGB()]
    if rotation:
        steps.append(v2.RandomRotation(rotation, interpolation=v2.InterpolationMode.BILINEAR))
    steps.append(timm_transform)
    return v2.Compose(steps)


def build_eval_transform(image_processor: Any) -> v2.Compose:
    """The evaluation transform: the image processor's preprocessing as torchvision v2 steps.

    ``RGB -> Resize((H, W), processor's filter, antialias) -> float in [0, 1] -> Normalize(mean, std)``; matches
    ``image_processor(images)["pixel_values"]`` of a :class:`~fer_mek.MEKImageProcessor`.
    """
    settings = processor_settings(image_processor)
    steps: list[Callable[[Any], Any]] = [
        v2.RGB(),
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

"""Image processor of MEK models: RGB, resize to the model's size, rescale, normalise with the model's mean/std.

This file is copied flat next to saved weights for ``trust_remote_code=True`` loading: it may only import its
siblings with single-dot relative imports, never ``fer_mek`` itself.
"""

from __future__ import annotations

from typing import Any

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


class MEKImageProcessor(PilBackend):
    """Preprocessing of MEK models, saved as ``preprocessor_config.json`` beside the weights.

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped), resized to ``size`` with bilinear
    interpolation, rescaled to ``[0, 1]`` and normalised with ``image_mean`` / ``image_std`` (ImageNet's by default,
    like the MEK reference and timm's ResNet / Swin weights). Returns ``pixel_values`` ``[B, 3, H, W]``.

    Build the processor that matches a model with :meth:`from_model_config`.
    """

    # Saved folders name this class in their auto_map, so trust_remote_code loading finds it without the package.
    _auto_class = "AutoImageProcessor"
    resample = PILImageResampling.BILINEAR
    image_mean = list(IMAGENET_DEFAULT_MEAN)
    image_std = list(IMAGENET_DEFAULT_STD)
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    @classmethod
    def from_model_config(cls, config: Any, **kwargs: Any) -> MEKImageProcessor:
        """The processor for a :class:`MEKConfig`: its ``image_size``, ``image_mean`` and ``image_std``."""
        return cls(
            size={"height": config.image_size, "width": config.image_size},
            image_mean=list(config.image_mean),
            image_std=list(config.image_std),
            **kwargs,
        )


__all__ = ["MEKImageProcessor"]

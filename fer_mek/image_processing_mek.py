"""Image processor of MEK models: RGB, optional CLAHE and grey-scale, resize to the model's size, rescale, normalise.

The processor also carries the model's *serving settings* — how the model is meant to be fed at prediction time — in
``preprocessor_config.json``, so that they travel with the weights: grey-scale input and CLAHE (applied here, in
:meth:`MEKImageProcessor.preprocess`), and the face-crop geometry and default test-time augmentation (read by
``fer_mek``'s predictor, evaluation script and demo, which detect faces and run several forward passes).

This file is copied flat next to saved weights for ``trust_remote_code=True`` loading: it may only import its
siblings with single-dot relative imports, never ``fer_mek`` itself. OpenCV is imported only when CLAHE runs.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs

#: Test-time augmentations a model may ask for (``default_tta``); ``fer_mek.tta`` implements them.
TTA_MODES = ("none", "flip", "tencrop", "tencrop_source")

#: The serving settings, by processor attribute name, and their defaults (a processor saved before they existed loads
#: with these: RGB as is, no CLAHE, a square face crop with 20 % margin and eyes levelled, no TTA).
SERVING_DEFAULTS: dict[str, Any] = {
    "do_grayscale": False,
    "do_clahe": False,
    "clahe_clip_limit": 2.0,
    "clahe_tile_grid_size": 8,
    "face_margin": 0.2,
    "face_square": True,
    "face_clip": False,
    "face_align": True,
    "default_tta": "none",
}

_OPENCV_HINT = "CLAHE needs OpenCV: install it with `pip install opencv-python-headless` (or `pip install fer-mek`)"


# --------------------------------------------------------------------------------------------------------- decoding

#: The EXIF tag of the orientation a camera recorded.
_EXIF_ORIENTATION = 0x0112
#: Modes with an alpha band (premultiplied ones included).
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
#: Grey modes of more than 8 bits per pixel: their values are scaled to 8 bits (:func:`array_to_rgb8`), not clipped.
_WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I", "F"})


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB, the way an image viewer shows it: the one decoding of fer-mek.

    Every path that feeds a model calls it: the per-sample training and evaluation transforms, the pixel cache, the
    evaluation script, :class:`MEKImageProcessor` (so ``pipeline("image-classification")``) and ``fer-mek predict``
    (``fer_mek.media.load_image``), so an image gives the same pixels on all of them. The rules, by mode:

    - ``RGB``: returned as it is (the same object): 8-bit RGB and grey images give exactly what PIL's
      ``convert("RGB")`` gave before this function existed.
    - ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``: PIL's ``convert("RGB")``.
    - Transparency (``RGBA``, ``RGBa``, ``LA``, ``La``, ``PA``, or any mode with a ``transparency`` key, such as a
      palette with a transparent entry): composited on white (transformers' ``convert_to_rgb`` does the same).
    - ``I;16`` (16-bit grey, any byte order): ``value * 255 / 65535``, rounded.
    - ``I`` (32-bit integer grey): negative values clip to 0; the values are read in the smallest of the ranges
      0-255, 0-65535 and 0-(2**31 - 1) that holds the image's maximum (8- or 16-bit data stored in 32 bits, as
      ``datasets`` and older Pillow versions write it, keeps its brightness), scaled to 0-255 and rounded.
    - ``F`` (32-bit float grey): read as 0-1 when its maximum is at most 1, as 0-255 when at most 255, else as
      0-maximum; negative values clip to 0; NaN or infinite values are refused.
    - EXIF orientation is applied first (phone photos; a no-op when there is none or it was applied already, as
      ``datasets`` and transformers' ``load_image`` do).

    The image is decoded (``load()``) here: truncated data raise here.

    Raises:
        ValueError: A mode PIL cannot convert, or a float image with NaN / infinite values.
    """
    image.load()
    orientation = image.getexif().get(_EXIF_ORIENTATION)
    if orientation not in (None, 1):
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _WIDE_MODES:
        return array_to_rgb8(np.asarray(image))
    try:
        if mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("LA").convert("RGBA") if mode == "La" else image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError as error:
        raise ValueError(f"unsupported pixel mode {mode!r} ({error}); convert the image to 8-bit RGB") from error


def array_to_rgb8(array: np.ndarray) -> Image.Image:
    """An 8-bit RGB image from an array ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA).

    ``uint8`` as it is; other unsigned 16-bit data by 255 / 65535; other integers by the smallest of 255, 65535 and
    their type's maximum that holds the array's maximum (negatives clip to 0); floats and booleans as 0-1 (maximum at
    most 1), 0-255 (at most 255) or 0-maximum (negatives clip to 0). Four channels are composited on white. These are
    :func:`to_rgb8`'s rules for PIL's ``I;16``, ``I`` and ``F`` modes.

    Raises:
        ValueError: Another shape or dtype, no pixels, or NaN / infinite values.
    """
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"expected an image array [H, W] or [H, W, 3|4], got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError("image has no pixels")
    if array.dtype != np.uint8:
        array = _scaled_to_uint8(array)
    array = np.ascontiguousarray(array)
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.shape[2] == 4:
        return to_rgb8(Image.fromarray(array, mode="RGBA"))
    return Image.fromarray(array, mode="RGB")


def _scaled_to_uint8(array: np.ndarray) -> np.ndarray:
    """Integers and floats of any range to ``uint8`` by the rules of :func:`array_to_rgb8`."""
    kind = array.dtype.kind
    if kind in "ui":
        if kind == "u" and array.dtype.itemsize == 2:
            high = 65535.0
        else:
            peak = int(array.max())
            high = next(float(top) for top in (255, 65535, np.iinfo(array.dtype).max) if peak <= top)
    elif kind in "fb":
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError("image contains NaN or infinite values")
        peak = float(array.max())
        high = 1.0 if peak <= 1.0 else (255.0 if peak <= 255.0 else peak)
    else:
        raise ValueError(f"unsupported array dtype {array.dtype}; use uint8 RGB")
    return (np.clip(array, 0, high).astype(np.float64) * (255.0 / high)).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------------------- pixels


def apply_clahe(image: np.ndarray | Image.Image, clip_limit: float = 2.0, tile_grid_size: int = 8) -> Image.Image:
    """Contrast-limited adaptive histogram equalisation of the lightness (CIE L*a*b* ``L``), colours kept.

    MEK-CV's ``apply_clahe`` (``demo.py``; the same code in its webcam training script): 8-bit RGB -> Lab with OpenCV,
    ``cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))`` on the ``L`` channel, back to RGB. Evens out uneven
    webcam lighting; use it where the model was trained on CLAHE images.

    Args:
        image: RGB (or grey) image: a PIL image or a ``uint8`` array ``[H, W, 3]`` / ``[H, W]``.
        clip_limit: OpenCV's contrast limit.
        tile_grid_size: Tiles per side.

    Raises:
        ImportError: OpenCV is not installed.
    """
    try:
        import cv2
    except ImportError as error:  # pragma: no cover - opencv is a dependency of fer-mek
        raise ImportError(_OPENCV_HINT) from error
    array = _rgb_uint8(image)
    lab = cv2.cvtColor(array, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid_size), int(tile_grid_size)))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return Image.fromarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


def to_grayscale(image: np.ndarray | Image.Image) -> Image.Image:
    """Grey-scale in three equal channels: PIL's ``convert("L").convert("RGB")`` (ITU-R 601-2 luma), as MEK-CV's
    ``demo.py`` feeds its FER-2013 checkpoints. An image that is grey already is returned unchanged."""
    return Image.fromarray(_rgb_uint8(image)).convert("L").convert("RGB")


def apply_serving_steps(
    image: np.ndarray | Image.Image,
    grayscale: bool = False,
    clahe: bool = False,
    clahe_clip_limit: float = 2.0,
    clahe_tile_grid_size: int = 8,
) -> Image.Image:
    """The pixel steps of the serving settings, in MEK-CV's order (``demo.py``, ``predict``): CLAHE, then grey-scale.

    Both run on the full-resolution image (the face crop), before the resize.
    """
    result = image if isinstance(image, Image.Image) else Image.fromarray(_rgb_uint8(image))
    if clahe:
        result = apply_clahe(result, clahe_clip_limit, clahe_tile_grid_size)
    if grayscale:
        result = to_grayscale(result)
    return result.convert("RGB") if result.mode != "RGB" else result


def _rgb_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    """A contiguous RGB ``uint8`` array ``[H, W, 3]`` from a PIL image or an RGB/grey ``uint8`` array."""
    if isinstance(image, Image.Image):
        image = np.asarray(to_rgb8(image))
    if image.dtype != np.uint8:
        raise ValueError(
            f"grey-scale and CLAHE work on 8-bit images; got a {image.dtype} array: pass PIL images or uint8 arrays"
        )
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    return np.ascontiguousarray(image)


# --------------------------------------------------------------------------------------------------------- settings


def serving_settings_of(processor: Any) -> dict[str, Any]:
    """The serving settings of any image processor: its attributes where it has them, the defaults otherwise (a
    processor of another model, or one saved before the settings existed)."""
    return {name: getattr(processor, name, default) for name, default in SERVING_DEFAULTS.items()}


def validate_serving_settings(settings: dict[str, Any]) -> None:
    """Raise ``ValueError`` for a serving setting out of its range."""
    if settings.get("default_tta", "none") not in TTA_MODES:
        raise ValueError(f"default_tta must be one of {TTA_MODES}, got {settings['default_tta']!r}")
    if float(settings.get("face_margin", 0.0)) < 0:
        raise ValueError(f"face_margin must be >= 0, got {settings['face_margin']}")
    if float(settings.get("clahe_clip_limit", 1.0)) <= 0:
        raise ValueError(f"clahe_clip_limit must be > 0, got {settings['clahe_clip_limit']}")
    if int(settings.get("clahe_tile_grid_size", 1)) < 1:
        raise ValueError(f"clahe_tile_grid_size must be >= 1, got {settings['clahe_tile_grid_size']}")


class MEKImageProcessorKwargs(ImagesKwargs, total=False):
    """The keyword arguments of :class:`MEKImageProcessor`: transformers' image options plus the serving settings."""

    do_grayscale: bool
    do_clahe: bool
    clahe_clip_limit: float | int
    clahe_tile_grid_size: int
    face_margin: float | int
    face_square: bool
    face_clip: bool
    face_align: bool
    default_tta: str


def with_pixel_settings(processor: Any, grayscale: bool | None, clahe: bool | None) -> Any:
    """``processor`` with grey-scale / CLAHE switched as asked (``None``: as it is).

    A processor that knows the settings (a :class:`MEKImageProcessor`) is copied with its attributes changed, so that
    it applies them itself; another processor (another model's, or an MEK processor saved with older remote code) is
    wrapped so that :func:`apply_serving_steps` runs on its input first.
    """
    if grayscale is None and clahe is None:
        return processor
    if all(hasattr(processor, name) for name in ("do_grayscale", "do_clahe")):
        changed = copy.deepcopy(processor)
        if grayscale is not None:
            changed.do_grayscale = bool(grayscale)
        if clahe is not None:
            changed.do_clahe = bool(clahe)
        return changed
    if not (grayscale or clahe):
        return processor
    return _ServingStepsFirst(processor, bool(grayscale), bool(clahe))


class _ServingStepsFirst:
    """An image processor without serving settings, with grey-scale / CLAHE applied to its input first."""

    def __init__(self, processor: Any, grayscale: bool, clahe: bool) -> None:
        self.processor = processor
        self.do_grayscale = grayscale
        self.do_clahe = clahe
        self.clahe_clip_limit = SERVING_DEFAULTS["clahe_clip_limit"]
        self.clahe_tile_grid_size = SERVING_DEFAULTS["clahe_tile_grid_size"]

    def __call__(self, images: Any, **kwargs: Any) -> Any:
        batch = images if isinstance(images, (list, tuple)) else [images]
        served = [
            apply_serving_steps(
                image, self.do_grayscale, self.do_clahe, self.clahe_clip_limit, self.clahe_tile_grid_size
            )
            for image in batch
        ]
        return self.processor(images=served, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "processor":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.processor, name)


# --------------------------------------------------------------------------------------------------------- processor


class MEKImageProcessor(PilBackend):
    """Preprocessing of MEK models, saved as ``preprocessor_config.json`` beside the weights.

    PIL images are converted to 8-bit RGB by :func:`to_rgb8` (the decoding of every fer-mek path: transparency on
    white, 16-bit and float images scaled, EXIF orientation applied); then, when the serving settings ask for
    them, CLAHE (``do_clahe``) and grey-scale (``do_grayscale``) are applied at the image's own resolution, in that
    order (MEK-CV's); the image is resized to ``size`` with bilinear interpolation, rescaled to ``[0, 1]`` and
    normalised with ``image_mean`` / ``image_std`` (ImageNet's by default, like the MEK reference and timm's ResNet /
    Swin weights). Returns ``pixel_values`` ``[B, 3, H, W]``. Grey-scale and CLAHE need 8-bit input (PIL images or
    ``uint8`` arrays).

    Serving settings (attributes, saved with the processor; the defaults are the behaviour of processors saved
    before they existed):

    - ``do_grayscale`` (False): every input to grey-scale, then three equal channels (PIL's ``convert("L")``), as
      MEK-CV serves its FER-2013 checkpoints. Applied here.
    - ``do_clahe`` (False), ``clahe_clip_limit`` (2.0), ``clahe_tile_grid_size`` (8): CLAHE of the Lab lightness
      (:func:`apply_clahe`). Applied here, before grey-scale.
    - ``face_margin`` (0.2), ``face_square`` (True), ``face_clip`` (False), ``face_align`` (True): the face crop of
      ``fer_mek``'s detector path (``fer_mek.faces.crop_face``): margin as a fraction of the box's longer side on
      every side; a square crop (else the box's own aspect); limited to the image (else padded with black); eyes
      levelled with the detector's landmarks. Not applied here: the processor gets the crop.
    - ``default_tta`` (``"none"``): the test-time augmentation the predictor, the evaluation script and the demo use
      unless told otherwise (``"none"``, ``"flip"``: average of the probabilities of the image and its mirror,
      ``"tencrop"``, ``"tencrop_source"``: the FER-2013 references' ten-crop, logits averaged). Not applied here:
      ``pipeline("image-classification")`` runs one forward pass per image and cannot average views, so its probabilities are those of ``--tta none``.

    Build the processor that matches a model with :meth:`from_model_config`.

    There is no torchvision variant: torchvision's tensor resize differs from the PIL resize that training, the
    pixel cache and evaluation use (one grey level in up to 1.5 % of the pixels, measured), so it would not give the
    model its training pixels. ``fer_mek`` registers this class for both of transformers' backend names.
    """

    # Saved folders name this class in their auto_map, so trust_remote_code loading finds it without the package.
    _auto_class = "AutoImageProcessor"
    valid_kwargs = MEKImageProcessorKwargs
    resample = PILImageResampling.BILINEAR
    image_mean = list(IMAGENET_DEFAULT_MEAN)
    image_std = list(IMAGENET_DEFAULT_STD)
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_grayscale = SERVING_DEFAULTS["do_grayscale"]
    do_clahe = SERVING_DEFAULTS["do_clahe"]
    clahe_clip_limit = SERVING_DEFAULTS["clahe_clip_limit"]
    clahe_tile_grid_size = SERVING_DEFAULTS["clahe_tile_grid_size"]
    face_margin = SERVING_DEFAULTS["face_margin"]
    face_square = SERVING_DEFAULTS["face_square"]
    face_clip = SERVING_DEFAULTS["face_clip"]
    face_align = SERVING_DEFAULTS["face_align"]
    default_tta = SERVING_DEFAULTS["default_tta"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clahe_clip_limit = float(self.clahe_clip_limit)
        self.clahe_tile_grid_size = int(self.clahe_tile_grid_size)
        self.face_margin = float(self.face_margin)
        validate_serving_settings(self.serving_settings())

    @classmethod
    def from_model_config(cls, config: Any, **kwargs: Any) -> MEKImageProcessor:
        """The processor for a :class:`MEKConfig`: its ``image_size``, ``image_mean`` and ``image_std``."""
        return cls(
            size={"height": config.image_size, "width": config.image_size},
            image_mean=list(config.image_mean),
            image_std=list(config.image_std),
            **kwargs,
        )

    def serving_settings(self) -> dict[str, Any]:
        """The serving settings by attribute name (see the class docstring)."""
        return serving_settings_of(self)

    def process_image(
        self,
        image: Any,
        do_convert_rgb: bool | None = None,
        input_data_format: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """One image in the backend's format (``[C, H, W]``), decoded by :func:`to_rgb8` (PIL images, with
        ``do_convert_rgb``), with CLAHE and grey-scale applied as the settings say."""
        if do_convert_rgb and isinstance(image, Image.Image):
            image = to_rgb8(image)
        array = super().process_image(image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format)
        grayscale = kwargs.get("do_grayscale", self.do_grayscale)
        clahe = kwargs.get("do_clahe", self.do_clahe)
        if not (grayscale or clahe):
            return array
        if array.shape[0] not in (1, 3):
            raise ValueError(f"grey-scale and CLAHE need an RGB or grey image, got {array.shape[0]} channels")
        served = apply_serving_steps(
            np.moveaxis(array, 0, -1) if array.shape[0] == 3 else array[0],
            grayscale=bool(grayscale),
            clahe=bool(clahe),
            clahe_clip_limit=float(kwargs.get("clahe_clip_limit", self.clahe_clip_limit)),
            clahe_tile_grid_size=int(kwargs.get("clahe_tile_grid_size", self.clahe_tile_grid_size)),
        )
        return np.moveaxis(np.asarray(served), -1, 0)


__all__ = [
    "SERVING_DEFAULTS",
    "TTA_MODES",
    "MEKImageProcessor",
    "MEKImageProcessorKwargs",
    "apply_clahe",
    "apply_serving_steps",
    "array_to_rgb8",
    "serving_settings_of",
    "to_grayscale",
    "to_rgb8",
    "validate_serving_settings",
    "with_pixel_settings",
]

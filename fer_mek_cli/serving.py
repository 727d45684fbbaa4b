"""The serving-setting options shared by ``fer-mek predict``, the evaluation script and the Gradio demo.

Standard library only (see :mod:`fer_mek_cli`). :data:`TTA_MODES` and :data:`DEFAULT_MARGIN` mirror
``fer_mek.image_processing_mek.TTA_MODES`` and ``SERVING_DEFAULTS["face_margin"]``, whose one place is that flat
file (it is copied beside the weights and cannot import this package); ``tests/test_cli_startup.py`` checks that the
mirrors are equal.
"""

from __future__ import annotations

import argparse
from typing import Any

from .arguments import non_negative_float

__all__ = ["DEFAULT_MARGIN", "TTA_MODES", "add_serving_arguments", "serving_overrides"]

#: Test-time augmentations (mirror of ``fer_mek.image_processing_mek.TTA_MODES``).
TTA_MODES: tuple[str, ...] = ("none", "flip", "tencrop", "tencrop_source")
#: Default face-crop margin of models trained here (mirror of ``SERVING_DEFAULTS["face_margin"]``).
DEFAULT_MARGIN: float = 0.2


def add_serving_arguments(parser: argparse.ArgumentParser, face_crop: bool = True) -> None:
    """The serving-setting overrides (``--tta``, ``--clahe/--no-clahe``, ``--grayscale/--no-grayscale`` and, with
    ``face_crop``, ``--margin``, ``--square/--no-square``, ``--clip/--no-clip``, ``--align/--no-align``). Each
    defaults to ``None``: the model's setting (:class:`fer_mek.MEKImageProcessor`). Shared by ``fer-mek predict`` and
    the evaluation script."""
    group = parser.add_argument_group(
        "serving settings", "default: the model's own (saved in its preprocessor_config.json); these override them"
    )
    group.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=None,
        help="test-time augmentation: none, the mirror image (flip), ten crops and their mirrors (tencrop), or "
        "the FER-2013 references' ten-crop (tencrop_source: ten crops of the model's size from the image at 6/5 of "
        "it, e.g. 40 of 48 px, logits averaged, as LetheSec's and usef-kh's evaluation) (default: the model's "
        "default_tta)",
    )
    group.add_argument(
        "--clahe",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CLAHE on the (face) image, the lightness equalisation of webcam-trained models (default: the model's)",
    )
    group.add_argument(
        "--grayscale",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="turn every input grey, as FER-2013 models were trained (default: the model's)",
    )
    if not face_crop:
        return
    group.add_argument(
        "--margin",
        type=non_negative_float,
        default=None,
        help=f"crop margin, fraction of the face box's longer side added per side (default: the model's; "
        f"{DEFAULT_MARGIN} for models trained here)",
    )
    group.add_argument(
        "--square",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="square face crops; --no-square keeps the detector box's aspect (default: the model's)",
    )
    group.add_argument(
        "--clip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cut face crops at the image edge; --no-clip pads them with black (default: the model's)",
    )
    group.add_argument(
        "--align",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="level the eyes of face crops (default: the model's)",
    )


def serving_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The serving options of :class:`fer_mek.inference.FERPredictor` from :func:`add_serving_arguments`'s."""
    names = ("tta", "clahe", "grayscale", "margin", "square", "clip", "align")
    return {name: getattr(args, name) for name in names if hasattr(args, name)}

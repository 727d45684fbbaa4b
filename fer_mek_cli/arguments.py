"""argparse helpers shared by every command line of fer-mek: number types that check their range (an option out of
range is a usage error, exit status 2, naming the option), and ``--version``.

    parser.add_argument("--min-confidence", type=unit_interval, default=0.9)
    add_version_argument(parser)

The standard library only (and :mod:`fer_mek`'s version): any entry point can use it without import cycles.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "add_version_argument",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "unit_interval",
]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _checked(int, text, lambda value: value >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _checked(int, text, lambda value: value >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    return _checked(float, text, lambda value: value > 0, "a number > 0")


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    return _checked(float, text, lambda value: value >= 0, "a number >= 0")


def unit_interval(text: str) -> float:
    """argparse type: a number from 0 to 1 (a probability, a fraction)."""
    return _checked(float, text, lambda value: 0.0 <= value <= 1.0, "a number from 0 to 1")


def _checked(kind: type, text: str, valid: Callable[[Any], bool], wanted: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
    if (kind is float and not math.isfinite(value)) or not valid(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
    return value


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """``--version``: prints ``fer-mek X.Y.Z`` and exits."""
    from .version import __version__

    parser.add_argument("--version", action="version", version=f"fer-mek {__version__}")

"""Shared helpers of the data tests (``tests/test_data_*.py``): fixture sizes and image decoding checks.

The fixtures themselves are written at test time with :mod:`fer_mek.data.fixtures` in each real layout.
"""

from __future__ import annotations

import numpy as np

from fer_mek.data.fixtures import flat_level

#: RAF-DB fixture images per class (RAFDB_LABELS order); imbalanced like RAF-DB, at least 2 per class.
RAF_TRAIN = (12, 4, 8, 30, 15, 8, 21)
RAF_TEST = (3, 2, 2, 6, 4, 2, 5)
#: FER-2013 CSV fixture rows per class (FER2013_LABELS order) for each Usage value.
FER_USAGE_COUNTS = {
    "Training": (12, 4, 8, 30, 15, 8, 21),
    "PublicTest": (2, 1, 2, 5, 3, 2, 4),
    "PrivateTest": (3, 2, 2, 6, 4, 2, 5),
}
#: Small image side of the fixtures (keeps the tests fast).
SIZE = 32


def class_position(image) -> int:
    """The class position encoded by a ``style="flat"`` fixture image (its gray level ``16 + 32 k``)."""
    level = float(np.asarray(image.convert("L"), dtype=np.float32).mean())
    k = round((level - flat_level(0)) / (flat_level(1) - flat_level(0)))
    assert abs(level - flat_level(k)) < 4, f"gray level {level} is not a fixture level"
    return k

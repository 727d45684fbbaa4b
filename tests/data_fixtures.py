"""Shared helpers of the data tests (``tests/test_data_*.py``): fixture sizes, image decoding checks, script import.

The fixtures themselves are written at test time with :mod:`fer_mek.data.fixtures` in each real layout.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

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
REPO_ROOT = Path(__file__).resolve().parents[1]


def class_position(image) -> int:
    """The class position encoded by a ``style="flat"`` fixture image (its gray level ``16 + 32 k``)."""
    level = float(np.asarray(image.convert("L"), dtype=np.float32).mean())
    k = round((level - flat_level(0)) / (flat_level(1) - flat_level(0)))
    assert abs(level - flat_level(k)) < 4, f"gray level {level} is not a fixture level"
    return k


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as a module (the scripts folder is not a package)."""
    path = REPO_ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fer_mek_script_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module

"""Load a model folder with ``trust_remote_code=True`` where ``fer_mek`` cannot be imported; record what it computes.

:func:`fer_mek.verify.verify_folder` runs this file in a subprocess, by path and in isolated mode::

    python -I .../fer_mek/remote_code_check.py FOLDER IMAGES_DIR OUT_JSON NUM_THREADS

It first blocks every import of ``fer_mek`` (an import hook that refuses the package and its modules), so that the
config, model and image processor classes can only come from the folder's own ``*.py`` code, as for a user without
the package. It then loads the folder through ``AutoImageProcessor``, ``AutoModelForImageClassification``,
``AutoModel`` and ``pipeline`` and writes, as JSON to ``OUT_JSON``, the classes it got, the logits on the PNG images
of ``IMAGES_DIR`` (in name order) and the pipeline's top prediction per image.

This file imports nothing from ``fer_mek`` (it must run where ``fer_mek`` cannot be imported), and ``-I`` keeps its
own folder, the package's source, off ``sys.path``. Importing it has no side effect; never call :func:`main` in a
process that needs ``fer_mek`` afterwards.
"""

from __future__ import annotations

import importlib
import importlib.abc
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["BLOCKED_PACKAGE", "BlockPackage", "block_package", "main"]

#: The package that the check must not import.
BLOCKED_PACKAGE = "fer_mek"


class BlockPackage(importlib.abc.MetaPathFinder):
    """An import hook that refuses one package and its modules (``ImportError``), before any other finder."""

    def __init__(self, package: str = BLOCKED_PACKAGE) -> None:
        self.package = package

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == self.package or name.startswith(self.package + "."):
            raise ImportError(name + " is blocked: this check loads the folder's own code")
        return None


def block_package(package: str = BLOCKED_PACKAGE) -> None:
    """Make ``package`` unimportable in this process; exit if it still imports (already imported, for instance)."""
    sys.meta_path.insert(0, BlockPackage(package))
    try:
        importlib.import_module(package)
    except ImportError:
        return
    raise SystemExit(f"{package} is importable although it was blocked")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check (arguments: ``FOLDER IMAGES_DIR OUT_JSON NUM_THREADS``); returns 0, or raises on any failure."""
    block_package()

    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    folder, images_dir, out, threads = sys.argv[1:5] if argv is None else argv
    torch.set_num_threads(int(threads))
    images = [Image.open(p) for p in sorted(Path(images_dir).glob("*.png"))]
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    report: dict[str, Any] = {"processor": type(processor).__module__ + "." + type(processor).__name__}
    for name, auto in (("AutoModelForImageClassification", AutoModelForImageClassification), ("AutoModel", AutoModel)):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(pixel_values=pixel_values).logits
        report[name] = {"class": type(model).__module__ + "." + type(model).__name__, "logits": logits.tolist()}
    classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
    report["pipeline"] = classifier(images, top_k=1)
    Path(out).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

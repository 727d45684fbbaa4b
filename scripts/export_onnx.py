"""Export a MEK model to ONNX (logits + attention maps) and check it against PyTorch with onnxruntime.

Usage:
    python scripts/export_onnx.py --model path/or/hub-id --output mek.onnx [--opset 18] [--no-verify]

The same as ``fer-mek export``; needs ``pip install "fer-mek[onnx]"``.
"""

from __future__ import annotations

import sys

from fer_mek.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))

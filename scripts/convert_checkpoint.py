#!/usr/bin/env python
"""Convert an existing checkpoint into a fer-mek model folder: ``python scripts/convert_checkpoint.py --checkpoint
FILE --output FOLDER [--kind mek-resnet|backbone] [--labels rafdb|fer2013|fer2013-folders]``.

A published MEK ResNet checkpoint, or a timm/torchvision backbone state_dict (e.g. an MS-Celeb-1M ResNet) under a new
head; ``--help`` has examples. The logic is :func:`fer_mek.convert.main`.
"""

from fer_mek.convert import cli_main

if __name__ == "__main__":
    raise SystemExit(cli_main())

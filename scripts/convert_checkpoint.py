#!/usr/bin/env python
"""Convert an existing checkpoint into a fer-mek model folder: ``python scripts/convert_checkpoint.py --checkpoint
FILE --output FOLDER [--kind mek-resnet|backbone|efficientface|ldg] [--labels rafdb|fer2013|fer2013-folders|efficientface]``.

A published MEK ResNet checkpoint, a timm/torchvision backbone state_dict (e.g. an MS-Celeb-1M ResNet) under a new
head, or an EfficientFace classifier / its LDG teacher (zengqunzhao/EfficientFace) with its fc kept; ``--help`` has
examples. The same command as ``fer-mek convert``: the options are
:mod:`fer_mek_cli.convert`'s, the logic is :func:`fer_mek.convert.main`. Exit status: 0, 1 with one ``error: ...``
line when the checkpoint cannot be converted or written, 2 for a usage error.
"""

from fer_mek_cli.convert import main

if __name__ == "__main__":
    raise SystemExit(main())

"""The command line of checkpoint conversion: ``scripts/convert_checkpoint.py`` and ``fer-mek convert`` (one parser,
two program names). Light: standard library only until a conversion runs (:func:`fer_mek.convert.cli_main`).

:data:`LABEL_SET_NAMES` mirrors ``sorted(fer_mek.labels.LABEL_SETS)``, whose one place is that flat file (it is copied
beside the weights and cannot import this package); ``tests/test_cli_command.py`` checks that the mirror is equal.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from .arguments import add_version_argument, positive_int

__all__ = ["DESCRIPTION", "KINDS", "LABEL_SET_NAMES", "PUBLISHED_REPO", "build_parser", "main"]

#: The Hub repository of the published MEK ResNet checkpoints (MEK-CV ``README.md:10``); ``--all``'s default.
PUBLISHED_REPO = "ToiTenBao/fer-mek-checkpoints"
#: ``--labels`` choices: the names of the known label sets (mirror of ``sorted(fer_mek.labels.LABEL_SETS)``).
LABEL_SET_NAMES: tuple[str, ...] = ("efficientface", "fer2013", "fer2013-folders", "rafdb")
#: ``--kind`` choices: what the checkpoint is (``auto``: told by its keys).
KINDS: tuple[str, ...] = ("auto", "mek-resnet", "backbone", "efficientface", "ldg")

#: The command line's description (``--help``).
DESCRIPTION = """Convert an existing checkpoint into a fer-mek model folder (safetensors + config + preprocessor + remote code).

Examples:
    # a published MEK ResNet checkpoint, from the Hub (cached; offline from the cache with HF_HUB_OFFLINE=1):
    # class order, training and serving settings told by its file name, conversion.json beside the weights
    python scripts/convert_checkpoint.py --checkpoint ToiTenBao/fer-mek-checkpoints/mek_resnet18_rafdb_msceleb_best.pth --output mek-rn18-rafdb
    # every published checkpoint (or every .pth of --repo), pinned to a revision, into published/<name>/
    python scripts/convert_checkpoint.py --all --revision main --output published
    # a local file; another MEK ResNet checkpoint needs its class order
    python scripts/convert_checkpoint.py --checkpoint mek_resnet34_fer2013_imagenet_best.pth --output mek-rn34-fer
    python scripts/convert_checkpoint.py --checkpoint my_mek.pth --labels fer2013-folders --output out
    # a face-recognition ResNet as the backbone of a new (untrained-head) MEK model
    python scripts/convert_checkpoint.py --kind backbone --checkpoint resnet18_msceleb.pth --backbone resnet18 --output out
    # the official MEK Swin-T start_0.pt (Swin-T at 112 px, patch 2, is then the default backbone)
    python scripts/convert_checkpoint.py --kind backbone --checkpoint start_0.pt --output out
    # EfficientFace (zengqunzhao/EfficientFace): a trained 7-class model, and its LDG teacher (a ResNet-50) for
    # fer-mek train --method ldt --teacher ldg-rafdb; EfficientFace's class order and RAF-DB normalisation
    python scripts/convert_checkpoint.py --checkpoint EfficientFace_RAF-DB.pth.tar --output efficientface-rafdb
    python scripts/convert_checkpoint.py --kind ldg --checkpoint Pretrained_LDG.tar --output ldg-rafdb
"""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The options of the conversion (``prog``: the command's name in ``--help``, e.g. ``fer-mek convert``; default:
    the script's file name)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="the .pth/.pt/.bin/.safetensors file to convert: a local file, or a Hub "
                        "file REPO_ID/FILENAME[@REVISION] (a bare FILENAME with --repo)")
    parser.add_argument("--all", action="store_true", help=f"convert every .pth of --repo (default {PUBLISHED_REPO}) "
                        "into --output/<file name without .pth>/")
    parser.add_argument("--repo", default=None, help="Hub model repository of --all or of a bare --checkpoint name")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit to pin (default: main)")
    parser.add_argument("--cache-dir", default=None, help="Hub cache folder (default: $HF_HUB_CACHE)")
    parser.add_argument("--endpoint", default=None, help="Hub endpoint (default: $HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--output", required=True, help="folder to write the converted model to")
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="auto",
        help="mek-resnet: a published MEK ResNet checkpoint; backbone: a timm/torchvision backbone state_dict, the "
        "official MEK Swin start_0.pt or EfficientFace's Pretrained_EfficientFace.tar (classifier dropped, new head); "
        "efficientface: a trained EfficientFace classifier (its fc kept as the linear head); ldg: a torchvision ResNet "
        "classifier, its fc kept (EfficientFace's LDG teacher Pretrained_LDG.tar); auto (default): efficientface for "
        "an EfficientFace with an expression fc, ldg for a ResNet classifier whose file name says 'ldg', mek-resnet "
        "if the keys start with 'encoder.', else backbone",
    )
    parser.add_argument(
        "--labels",
        choices=LABEL_SET_NAMES,
        default=None,
        help="class names and order of the checkpoint's outputs. MEK ResNet checkpoints: told by a file name with "
        "'rafdb' or 'fer2013' in it, else required; --kind efficientface / ldg: default efficientface (EfficientFace's "
        "RAF-DB folder order) for 7 classes; --kind backbone: the new head's classes (default: rafdb)",
    )
    parser.add_argument("--backbone", default=None, help="timm model name (inferred for MEK ResNet, EfficientFace and "
                        "LDG checkpoints)")
    parser.add_argument(
        "--backbone-kwargs", type=json.loads, default=None, metavar="JSON",
        help='extra timm.create_model arguments of a --kind backbone model, e.g. \'{"img_size": 112, "patch_size": 2}\'',
    )
    parser.add_argument("--head", choices=("linear", "conv_bn"), default="linear", help="head of a --kind backbone model")
    parser.add_argument(
        "--image-size", type=positive_int, default=None,
        help="input size the weights expect (default: 224; 112 for the official MEK Swin checkpoint)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_version_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``; ``--help``, ``--version`` and usage errors answer here, before the
    model stack loads), then convert: :func:`fer_mek.convert.cli_main`'s exit status (0, or 1 with one ``error:
    ...`` line)."""
    build_parser(prog).parse_args(argv)
    from fer_mek.convert import cli_main

    return cli_main(argv, prog)

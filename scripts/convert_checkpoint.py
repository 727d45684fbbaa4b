#!/usr/bin/env python
"""Convert an existing checkpoint into a fer-mek model folder (safetensors + config + preprocessor + remote code).

Examples:
    # a published MEK ResNet checkpoint (RAF-DB class order)
    python scripts/convert_checkpoint.py --checkpoint mek_resnet18_rafdb_msceleb_best.pth --output mek-resnet18-rafdb
    # a published FER-2013 one (alphabetical class order)
    python scripts/convert_checkpoint.py --checkpoint mek_resnet18_fer2013.pth --labels fer2013-folders --output out
    # a face-recognition ResNet as the backbone of a new (untrained-head) MEK model
    python scripts/convert_checkpoint.py --kind backbone --checkpoint resnet18_msceleb.pth --backbone resnet18 --output out
"""

from __future__ import annotations

import argparse
import sys

from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor
from fer_mek.convert import convert_mek_resnet_checkpoint, load_backbone_weights, load_state_dict_file
from fer_mek.io import atomic_directory
from fer_mek.labels import LABEL_SETS, get_label_set


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the .pth/.pt/.bin/.safetensors file to convert")
    parser.add_argument("--output", required=True, help="folder to write the converted model to")
    parser.add_argument(
        "--kind",
        choices=("auto", "mek-resnet", "backbone"),
        default="auto",
        help="mek-resnet: a published MEK ResNet checkpoint; backbone: a timm/torchvision backbone state_dict "
        "(classifier dropped, new head); auto: mek-resnet if the keys start with 'encoder.' (default)",
    )
    parser.add_argument(
        "--labels",
        choices=sorted(LABEL_SETS),
        default="rafdb",
        help="class names and order of the checkpoint's outputs (default: rafdb)",
    )
    parser.add_argument("--backbone", default=None, help="timm model name (inferred for MEK ResNet checkpoints)")
    parser.add_argument("--head", choices=("linear", "conv_bn"), default="linear", help="head of a --kind backbone model")
    parser.add_argument("--image-size", type=int, default=224, help="input size the weights expect (default: 224)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    labels = get_label_set(args.labels)
    kind = args.kind
    if kind == "auto":
        keys = load_state_dict_file(args.checkpoint)
        kind = "mek-resnet" if any(key.startswith("encoder.") for key in keys) else "backbone"
    if kind == "mek-resnet":
        model = convert_mek_resnet_checkpoint(args.checkpoint, labels, args.image_size, backbone=args.backbone)
        report = {"source": args.checkpoint}
    else:
        if not args.backbone:
            raise SystemExit("error: --kind backbone needs --backbone (a timm model name, e.g. resnet18)")
        config = MEKConfig(
            backbone=args.backbone, head=args.head, image_size=args.image_size, id2label=dict(enumerate(labels))
        )
        model = MEKForImageClassification(config)
        report = load_backbone_weights(model, args.checkpoint)
    with atomic_directory(args.output, overwrite=args.overwrite) as staging:
        model.save_pretrained(staging)
        MEKImageProcessor.from_model_config(model.config).save_pretrained(staging)
    print(f"converted {args.checkpoint} ({kind}, backbone {model.config.backbone}, head {model.config.head}, "
          f"{model.config.num_labels} classes: {', '.join(labels)}) -> {args.output}")
    if kind == "backbone":
        print(f"backbone: {report['loaded_tensors']} tensors loaded, classifier keys dropped: {report['dropped_keys']}; "
              "the head is new and must be trained")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        sys.exit(f"error: {error}")

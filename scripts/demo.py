#!/usr/bin/env python
"""End-to-end check of a fresh install: build a MEK model, save it, reload it through the transformers Auto classes
and the image-classification pipeline, and classify a generated picture.

The model is untrained here, so its predictions are meaningless; what the demo shows is the round trip.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from fer_mek import MEKConfig, MEKForImageClassification
from fer_mek.io import atomic_directory


def draw_face(size: int = 160, seed: int = 0) -> Image.Image:
    """A simple cartoon face (oval, eyes, brows, smiling mouth) on a noisy background."""
    rng = np.random.default_rng(seed)
    background = (rng.normal(120, 20, (size, size, 3))).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    s = size / 160
    draw.ellipse([30 * s, 20 * s, 130 * s, 140 * s], fill=(224, 182, 150))
    for x in (58, 102):
        draw.ellipse([(x - 8) * s, 60 * s, (x + 8) * s, 72 * s], fill=(255, 255, 255))
        draw.ellipse([(x - 3) * s, 63 * s, (x + 3) * s, 69 * s], fill=(40, 30, 20))
        draw.line([(x - 12) * s, 50 * s, (x + 12) * s, 48 * s], fill=(60, 40, 30), width=max(1, round(3 * s)))
    draw.arc([55 * s, 85 * s, 105 * s, 120 * s], start=20, end=160, fill=(150, 40, 40), width=max(1, round(4 * s)))
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="demo-output/model", help="where to save the model folder")
    parser.add_argument("--backbone", default="resnet18", help="timm backbone name (default: resnet18)")
    parser.add_argument("--image-size", type=int, default=112, help="model input size (default: 112)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = MEKForImageClassification(MEKConfig(backbone=args.backbone, image_size=args.image_size)).eval()
    with atomic_directory(args.output, overwrite=True) as staging:
        model.save_pretrained(staging)
    files = sorted(p.name for p in Path(args.output).iterdir())
    print(f"saved {args.backbone} MEK model to {args.output}: {', '.join(files)}")

    reloaded = AutoModelForImageClassification.from_pretrained(args.output).eval()
    processor = AutoImageProcessor.from_pretrained(args.output)
    picture = draw_face()
    inputs = processor(picture, return_tensors="pt")
    with torch.no_grad():
        original, again = model(**inputs), reloaded(**inputs)
    if not torch.equal(original.logits, again.logits):
        print("error: the reloaded model gives other logits than the saved one", file=sys.stderr)
        return 1
    print(f"reloaded with AutoModelForImageClassification: identical logits; attention maps "
          f"{tuple(again.attention_maps.shape)} (batch, classes, h, w)")

    classifier = pipeline("image-classification", model=args.output)
    print("pipeline('image-classification') on a generated face (untrained model, scores are not meaningful):")
    for row in classifier(picture, top_k=3):
        print(f"  {row['label']:<10} {row['score']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

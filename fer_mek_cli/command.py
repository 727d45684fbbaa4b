"""The ``fer-mek`` command (the console script; ``python -m fer_mek`` too): its parser and its entry point.

``fer-mek predict`` (images, folders, videos, webcam), ``fer-mek export`` (ONNX) and ``fer-mek convert`` (published
MEK checkpoints: :mod:`fer_mek_cli.convert`'s parser). Light: standard library only until a command runs
(:func:`fer_mek.cli.main`), so ``--help``, ``--version`` and usage errors answer without loading torch.

A new subcommand adds an ``add_<name>_parser(commands)`` call to :func:`build_parser` here and its ``_run_<name>``
entry to ``fer_mek.cli._COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .arguments import add_version_argument, non_negative_int, positive_float, positive_int, unit_interval
from .serving import add_serving_arguments

__all__ = ["add_convert_parser", "add_export_parser", "add_predict_parser", "build_parser", "main"]

#: The program name in ``--help`` and usage errors, whatever launched it (console script, ``python -m fer_mek``).
PROG = "fer-mek"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fer-mek`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Facial-expression recognition with MEK models: predict on pictures, export to ONNX, convert published "
        "checkpoints.",
    )
    add_version_argument(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_predict_parser(commands)
    add_export_parser(commands)
    add_convert_parser(commands)
    return parser


def add_predict_parser(commands: Any) -> argparse.ArgumentParser:
    """``fer-mek predict``'s options."""
    predict = commands.add_parser(
        "predict",
        help="find faces and classify their expressions in images, folders, videos or a webcam",
        description="Find faces and classify their expressions. Folders are scanned recursively; video files are "
        "read frame by frame. Each face gets its box and the top-k classes in the model's own class names. The face "
        "crop, grey-scale, CLAHE and test-time augmentation default to the model's serving settings (its "
        "preprocessor_config.json); each option below overrides them, both ways.",
    )
    predict.add_argument("paths", nargs="*", metavar="PATH", help="image files, folders or video files")
    predict.add_argument(
        "--model",
        "-m",
        action="append",
        required=True,
        metavar="FOLDER_OR_HUB_ID",
        help="a save_pretrained folder or Hub id; repeat it to average the probabilities of an ensemble",
    )
    predict.add_argument(
        "--camera", type=non_negative_int, metavar="N", help="read webcam N (0 is the default camera) instead of files"
    )
    predict.add_argument("--output", "-o", type=Path, metavar="FILE", help="write results to FILE.csv or FILE.jsonl")
    predict.add_argument("--save-annotated", type=Path, metavar="DIR", help="write annotated images and videos to DIR")
    predict.add_argument("--top-k", type=positive_int, default=3, metavar="K", help="classes reported per face (3)")
    faces = predict.add_mutually_exclusive_group()
    faces.add_argument("--all-faces", dest="face_mode", action="store_const", const="all", help="every face (default)")
    faces.add_argument(
        "--largest-face", dest="face_mode", action="store_const", const="largest", help="largest face only"
    )
    faces.add_argument(
        "--no-detect", dest="face_mode", action="store_const", const="none", help="classify whole images (face crops)"
    )
    predict.set_defaults(face_mode="all")
    add_serving_arguments(predict)
    predict.add_argument(
        "--min-face-size", type=positive_int, default=20, metavar="PX", help="smallest face side (20)"
    )
    predict.add_argument(
        "--min-confidence",
        type=unit_interval,
        default=0.9,
        metavar="P",
        help="detector confidence threshold, 0 to 1 (0.9)",
    )
    predict.add_argument("--batch-size", type=positive_int, default=16, help="faces per forward pass (16)")
    predict.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps (auto: CUDA when available)")
    predict.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        metavar="N",
        help="refuse larger images, a decompression-bomb guard (Pillow's limit, about 89 million)",
    )
    predict.add_argument(
        "--frame-step", type=positive_int, default=1, metavar="N", help="classify every N-th video frame"
    )
    predict.add_argument(
        "--max-frames", type=positive_int, metavar="N", help="stop each video / the camera after N frames"
    )
    predict.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the Hub (not needed for MEK)"
    )
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.add_argument("--quiet", "-q", action="store_true", help="print only errors and the summary")
    return predict


def add_export_parser(commands: Any) -> argparse.ArgumentParser:
    """``fer-mek export``'s options."""
    export = commands.add_parser(
        "export",
        help="export a model to ONNX (logits and attention maps)",
        description="Export a MEK model to ONNX with outputs logits [B, K] and attention_maps [B, K, h, w]; the class "
        "names go into the file's metadata. Needs the onnx extra: pip install 'fer-mek[onnx]'.",
    )
    export.add_argument("--model", "-m", required=True, metavar="FOLDER_OR_HUB_ID", help="the model to export")
    export.add_argument("--output", "-o", type=Path, required=True, metavar="FILE.onnx", help="the ONNX file to write")
    export.add_argument("--opset", type=positive_int, default=18, help="ONNX opset version (18)")
    export.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch check")
    export.add_argument(
        "--atol", type=positive_float, default=1e-4, help="largest allowed difference when verifying (1e-4)"
    )
    export.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub")
    return export


def add_convert_parser(commands: Any) -> argparse.ArgumentParser:
    """``fer-mek convert``: listed here for ``fer-mek --help``; its options are those of
    :func:`fer_mek_cli.convert.build_parser` (``scripts/convert_checkpoint.py``), which :func:`main` hands the
    arguments to."""
    return commands.add_parser(
        "convert", add_help=False,
        help="convert a published MEK checkpoint (a file or REPO_ID/FILENAME on the Hub; --all) into a model folder",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fer-mek`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status (see
    :mod:`fer_mek.cli`). The options are parsed here first; the library loads only to run the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        from .convert import main as convert

        return convert(argv[1:], prog=f"{PROG} convert")
    build_parser().parse_args(argv)
    from fer_mek.cli import main as run

    return run(argv)

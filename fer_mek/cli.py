"""The ``fer-mek`` command: ``fer-mek predict`` (images, folders, videos, webcam), ``fer-mek export`` (ONNX) and
``fer-mek convert`` (published MEK checkpoints, from a file or the Hub: :func:`fer_mek.convert.main`).

Run ``fer-mek predict --help`` for the options. ``predict`` serves each model as its serving settings say (face crop,
grey-scale, CLAHE, test-time augmentation: :class:`fer_mek.MEKImageProcessor`) unless an option overrides them.
Exit status of ``predict``: 0 when at least one input was processed (an image without a face counts: "no face found"
is a result), 1 when nothing could be processed, 2 for usage errors (an option out of range, a model folder or a
device that is not there: :mod:`fer_mek.locations`) and models that cannot be loaded. ``fer-mek --version`` prints
the version. Annotated videos are WebM (VP8), which browsers play.

The parser is :func:`fer_mek_cli.command.build_parser` (the console script is :func:`fer_mek_cli.command.main`, which
parses the options before this module, and the model stack, load). A new subcommand adds an
``add_<name>_parser(commands)`` call to that parser and its ``_run_<name>`` entry to ``_COMMANDS`` here.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from fer_mek_cli.command import build_parser  # the parser's one place: light, --help answers before torch loads
from fer_mek_cli.serving import serving_overrides

# numpy, PIL and torch only: OpenCV is imported when faces are detected or videos read, the model stack when predicting
from .annotate import annotate_result
from .faces import import_cv2
from .locations import DeviceError, ModelLoadError, locate_model, resolve_device
from .media import DEFAULT_MAX_PIXELS, VideoOpenError, discover_inputs, video_fps
from .results import ImageResult, ResultWriter

EXIT_OK, EXIT_NOTHING_PROCESSED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fer-mek`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        from .convert import cli_main

        return cli_main(argv[1:], prog="fer-mek convert")
    args = build_parser().parse_args(argv)
    with _quiet_transformers():
        return _COMMANDS[args.command](args)


# --------------------------------------------------------------------------------------------------------- predict


@dataclass
class _Tally:
    """Counts for the closing summary."""

    ok: int = 0
    no_face: int = 0
    errors: int = 0
    faces: int = 0
    skipped: int = 0

    @property
    def processed(self) -> int:
        return self.ok + self.no_face


def _run_predict(args: argparse.Namespace) -> int:
    from .inference import FERPredictor

    if args.camera is not None and args.paths:
        return _usage("give either paths or --camera N, not both")
    if args.camera is None and not args.paths:
        return _usage("give image files, folders or videos to predict on, or --camera N")
    try:
        models = [locate_model(name) for name in args.model]  # a mistyped folder: one line, before anything loads
        device = resolve_device(args.device)
    except (ModelLoadError, DeviceError) as error:
        return _usage(str(error))
    writer = None
    if args.output is not None:
        try:
            writer = ResultWriter(args.output, args.top_k)
        except (ValueError, OSError) as error:
            return _usage(str(error))

    tally = _Tally()
    items, problems, tally.skipped = discover_inputs(args.paths)
    for source, problem in problems:
        tally.errors += 1
        _error(problem)
        if writer is not None:
            writer.write(ImageResult(source=source, error=problem))
    if args.camera is None and not items:
        _error("nothing to process")
        _close(writer)
        return EXIT_NOTHING_PROCESSED

    try:
        predictor = FERPredictor(
            models,
            device=device,
            detector=None if args.face_mode == "none" else "mtcnn",
            face_mode="all" if args.face_mode == "none" else args.face_mode,
            **serving_overrides(args),
            batch_size=args.batch_size,
            max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
            min_face_size=args.min_face_size,
            min_confidence=args.min_confidence,
            trust_remote_code=args.trust_remote_code,
        )
    except (ModelLoadError, ImportError, ValueError) as error:
        _close(writer)
        _error(str(error))
        return EXIT_USAGE

    if not args.quiet:
        print(predictor.describe_serving(), file=sys.stderr)
    annotations = _Annotations(args.save_annotated) if args.save_annotated is not None else None

    def report(result: ImageResult, name: Path | None = None, video: bool = False) -> None:
        if result.status == "error":
            tally.errors += 1
            _error(result.error or result.source)
        elif result.status == "no_face":
            tally.no_face += 1
        else:
            tally.ok += 1
            tally.faces += len(result.faces)
        if writer is not None:
            writer.write(result)
        if not args.quiet and writer is None and result.status != "error":
            _write(_describe_result(result, args.top_k))
        if annotations is not None and result.image is not None and name is not None:
            annotations.add(result, name, video)

    try:
        images = [item for item in items if item.kind == "image"]
        by_path = {str(item.path): item for item in images}
        for result in predictor.predict_files([item.path for item in images], progress=not args.no_progress):
            report(result, by_path[result.source].relative)
        for item in (item for item in items if item.kind == "video"):
            if annotations is not None:
                annotations.fps[item.relative] = (video_fps(item.path) or 25.0) / args.frame_step
            try:
                for result in predictor.predict_video(item.path, args.frame_step, args.max_frames):
                    report(result, item.relative, video=True)
            except VideoOpenError as error:
                report(ImageResult(source=str(item.path), error=str(error)))
        if args.camera is not None:
            _run_camera(predictor, args, report)
    except KeyboardInterrupt:
        _error("interrupted")
    finally:
        _close(writer)
        if annotations is not None:
            annotations.close()

    print(_summary(tally), file=sys.stderr)
    if writer is not None and not args.quiet:
        print(f"results written to {args.output}", file=sys.stderr)
    return EXIT_OK if tally.processed else EXIT_NOTHING_PROCESSED


def _run_camera(predictor: Any, args: argparse.Namespace, report: Any) -> None:
    if not args.quiet:
        print(f"reading camera {args.camera}; press Ctrl-C to stop", file=sys.stderr)
    try:
        for result in predictor.predict_video(args.camera, args.frame_step, args.max_frames):
            report(result, Path(f"camera-{args.camera}{VIDEO_SUFFIX}"), video=True)
    except VideoOpenError as error:
        report(ImageResult(source=f"camera:{args.camera}", error=str(error)))


def _describe_result(result: ImageResult, top_k: int) -> str:
    if result.status == "no_face":
        return f"{result.source}: no face found"
    parts = []
    for number, face in enumerate(result.faces, start=1):
        box = face.box
        classes = ", ".join(f"{name} {p:.1%}" for name, p in face.top_k(top_k))
        parts.append(f"face {number} at x={box.x} y={box.y} {box.width}x{box.height}: {classes}")
    return f"{result.source}: " + "; ".join(parts)


def _summary(tally: _Tally) -> str:
    text = (
        f"{tally.processed} processed ({tally.ok} with faces, {tally.faces} faces; {tally.no_face} without a face), "
        f"{tally.errors} failed"
    )
    if tally.skipped:
        text += f"; skipped in folders (not images or videos by their extension): {tally.skipped}"
    return text


class _Annotations:
    """Writes annotated images as they come and annotated videos frame by frame into one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._used: set[Path] = set()
        self._videos: dict[Path, Any] = {}  # relative input path -> (cv2.VideoWriter, size)
        #: Frame rate of the annotated video per input (default: 15 frames per second, e.g. for cameras).
        self.fps: dict[Path, float] = {}

    def add(self, result: ImageResult, relative: Path, video: bool) -> None:
        if video:
            self._add_frame(result, relative)
            return
        suffix = ".jpg" if relative.suffix.lower() in (".jpg", ".jpeg") else ".png"
        target = self._target(relative, suffix, Path(result.source))
        try:
            annotate_result(result).save(target)
        except OSError as error:
            _error(f"{target}: cannot write the annotated image ({error})")

    def _target(self, relative: Path, suffix: str, source: Path | None = None) -> Path:
        """A new file in the folder for ``relative``; never an input file, never one written before in this run."""
        target = self.folder / relative.with_suffix(suffix)
        stem, number = target.with_suffix(""), 2
        while target in self._used or (source is not None and target.resolve() == source.resolve()):
            target = stem.with_name(f"{stem.name}-{number}").with_suffix(suffix)
            number += 1
        self._used.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _add_frame(self, result: ImageResult, relative: Path) -> None:
        cv2 = import_cv2()
        frame = annotate_result(result, fixed_height=True)
        if relative not in self._videos:
            target = self._target(relative, VIDEO_SUFFIX, Path(result.source.rpartition("#")[0]))
            writer = open_video_writer(target, self.fps.get(relative, 15.0), frame.size)
            if writer is None:
                _error(f"{target}: OpenCV cannot write a WebM (VP8) video here; annotated frames are not saved")
            self._videos[relative] = (writer, frame.size)
        writer, size = self._videos[relative]
        if writer is None:
            return
        if frame.size != size:
            frame = frame.resize(size)
        writer.write(cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        for writer, _ in self._videos.values():
            if writer is not None:
                writer.release()


#: Annotated videos are WebM with the VP8 codec: browsers play it (Chrome, Firefox, Edge, Safari 14.1+), and the
#: OpenCV wheels encode it (their FFmpeg has libvpx, not the GPL libx264 that H.264 would need). VP9 compresses
#: better but encodes about five times slower on a CPU.
VIDEO_SUFFIX, VIDEO_FOURCC = ".webm", "VP80"


def open_video_writer(path: Path, fps: float, size: tuple[int, int]) -> Any | None:
    """An OpenCV ``VideoWriter`` of a WebM (VP8) video at ``path`` (``size = (width, height)``), or ``None`` when
    OpenCV cannot write one here."""
    cv2 = import_cv2()
    with _native_stderr_silenced():  # FFmpeg's "tag 'VP80' is not supported with format webm, fallback" note
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps, size)
    return writer if writer.isOpened() else None


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 pointed at the null device for a moment: notes that C libraries print there directly."""
    import os

    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (e.g. some GUI launchers): nothing to silence
        yield
        return
    try:
        sys.stderr.flush()
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --------------------------------------------------------------------------------------------------------- export


def _run_export(args: argparse.Namespace) -> int:
    from .onnx_export import export_onnx

    try:
        model = locate_model(args.model)
    except ModelLoadError as error:
        return _usage(str(error))

    try:
        report = export_onnx(
            model,
            args.output,
            opset=args.opset,
            verify=not args.no_verify,
            atol=args.atol,
            trust_remote_code=args.trust_remote_code,
        )
    except (ImportError, ModelLoadError) as error:
        _error(str(error))
        return EXIT_USAGE
    except ValueError as error:
        _error(str(error))
        return EXIT_NOTHING_PROCESSED
    print(f"wrote {report.path} (classes: {', '.join(report.labels)}; input 3x{report.image_size}x{report.image_size})")
    if report.max_abs_diff_logits is not None:
        print(
            f"onnxruntime vs PyTorch: max abs diff {report.max_abs_diff_logits:.2e} (logits), "
            f"{report.max_abs_diff_attention:.2e} (attention maps)"
        )
    return EXIT_OK


#: The subcommands: name -> function of the parsed arguments returning the exit status. A new subcommand adds its
#: ``add_..._parser`` call to :func:`fer_mek_cli.command.build_parser` and its entry here.
_COMMANDS = {"predict": _run_predict, "export": _run_export}


# --------------------------------------------------------------------------------------------------------- helpers


def _error(message: str) -> None:
    _write(f"error: {message}", sys.stderr)


def _write(line: str, stream: IO[str] | None = None) -> None:
    """Print a line without breaking a progress bar that may be on the screen."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=stream or sys.stdout)


def _usage(message: str) -> int:
    _error(message)
    return EXIT_USAGE


def _close(writer: Any) -> None:
    if writer is not None:
        writer.close()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bars from transformers while the command runs (restored after); its warnings, e.g.
    about weights missing from a checkpoint, still show."""
    from transformers.utils import logging as hf_logging

    were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if were_enabled:
            hf_logging.enable_progress_bar()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Verification of a folder about to be published: does it reproduce the run's model, with and without fer_mek?

The folder is reloaded with the package (Auto classes and ``pipeline``) and, in a subprocess where ``fer_mek``
cannot be imported (:mod:`fer_mek.remote_code_check`), with ``trust_remote_code=True``; its logits on a few of the
run's validation images (generated faces for a folder without a run, e.g. a converted checkpoint: the check compares
two loadings of the same weights) must equal those of the run's own checkpoint. The subprocess runs offline, in a
working directory of its own, with an empty ``HF_HOME`` and ``HOME`` and no token variable
(:func:`isolated_environment`); the folder's code it imports is the package's own (:func:`fer_mek.publish.assemble`
writes it). A converted checkpoint's ``conversion.json`` must state the serving settings its image processor
applies. :func:`fer_mek.publish.publish` runs this before anything is written or uploaded. Importing this module has
no side effect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import remote_code_check
from .runs import Run, read_conversion

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from PIL import Image

__all__ = [
    "LOGITS_ATOL",
    "LOGITS_RTOL",
    "NUM_VERIFY_IMAGES",
    "REQUIRED_AUTO_MAP",
    "VerificationError",
    "VerificationReport",
    "isolated_environment",
    "verification_images",
    "verify_folder",
]

#: The ``auto_map`` entries that both loading paths need.
REQUIRED_AUTO_MAP: tuple[str, ...] = ("AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoImageProcessor")
#: Largest allowed difference between the published folder's logits and the run's (float32 round-off).
LOGITS_ATOL = 1e-5
LOGITS_RTOL = 1e-5
#: Number of validation images the verification runs on.
NUM_VERIFY_IMAGES = 8


#: Environment variables the remote-code check never inherits: those of the Hub and transformers (tokens, caches,
#: endpoints), and any whose name says it holds a credential.
_DROPPED_PREFIXES = ("HF_", "HUGGING_FACE_", "HUGGINGFACE_", "TRANSFORMERS_")
_DROPPED_WORDS = ("TOKEN", "SECRET", "PASS", "CREDENTIAL", "AUTH", "_KEY")


class VerificationError(Exception):
    """The folder does not reproduce the run's model, or the images to check it on cannot be built; the message says
    what differs and how to fix it. Nothing is written or uploaded."""


@dataclass
class VerificationReport:
    """What the verification checked and found.

    Attributes:
        images: Where the images came from.
        num_images: How many images were compared.
        checks: One line per passed check.
        max_abs_diff: Largest absolute logit difference to the run's model over all loading paths.
    """

    images: str
    num_images: int
    checks: list[str] = field(default_factory=list)
    max_abs_diff: float = 0.0


def verification_images(run: Run, count: int = NUM_VERIFY_IMAGES, source: str = "auto") -> tuple[list[Image.Image], str]:
    """A few images to compare the published folder with the run's model on.

    ``source="auto"``: the run's own validation images (its first training images when it has no validation split),
    rebuilt exactly as the trainer split them (:class:`~fer_mek.runs.DataOptions` of the run: synthetic runs
    regenerate theirs; other runs read their data root when it exists on this machine). Otherwise, and with ``source="synthetic"``, deterministic synthetic faces from
    fer-mek's generator: the check compares two loadings of the same weights, so any fixed images show a difference.

    Returns:
        The images and a description of where they came from.

    Raises:
        VerificationError: The run's data root exists but its validation split cannot be rebuilt from it.
    """
    from .data import render_face

    options = run.data_options if source == "auto" else None
    if options is not None and (options.source == "synthetic"
                                or (options.data_root and Path(str(options.data_root)).exists())):
        try:
            dataset = options.load(cache=False) if options.source == "synthetic" else options.load()
        except (ValueError, TypeError, OSError) as error:
            raise VerificationError(f"cannot rebuild the run's images from {options.data_root} ({error}); pass "
                                    "--verify-on synthetic to verify on generated faces instead") from error
        # A run without a validation split (--val-split none) is verified on its first training images.
        split = "validation" if len(dataset["validation"]) else "train"
        images = dataset[split]
        where = (f"the run's synthetic {split} split (regenerated)" if options.source == "synthetic"
                 else f"the run's {split} split ({options.source} at {options.data_root})")
        return [images[i]["image"] for i in range(min(count, len(images)))], where
    size = int(run.config.get("image_size") or 112)
    images = [render_face(i % 7, max(size, 16), seed=[20231110, i]) for i in range(count)]
    if source == "synthetic":
        reason = ""
    elif options is None:
        reason = " (a model folder without a training run: it has no validation images of its own)"
    else:
        reason = " (the run's validation images are not available here)"
    return images, f"{count} generated synthetic faces{reason}"


def isolated_environment(scratch: str | os.PathLike, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the remote-code check: ``base`` (default ``os.environ``) without the Hub's and
    transformers' variables nor any credential-like one, with every place a token could be read from replaced by
    empty folders of ``scratch``: ``HF_HOME`` (no ``token`` file), ``HOME`` (no ``~/.cache/huggingface``, no
    ``.netrc``), ``XDG_CACHE_HOME``/``XDG_CONFIG_HOME``; offline (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``)
    and with a private modules cache. The folders are created here, empty."""
    scratch = Path(scratch)
    base = dict(os.environ if base is None else base)
    env = {key: value for key, value in base.items()
           if not key.upper().startswith(_DROPPED_PREFIXES) and not any(w in key.upper() for w in _DROPPED_WORDS)}
    places = {"HF_HOME": "hf-home", "HOME": "home", "USERPROFILE": "home", "XDG_CACHE_HOME": "cache",
              "XDG_CONFIG_HOME": "config", "HF_MODULES_CACHE": "modules"}
    for key, name in places.items():
        (scratch / name).mkdir(parents=True, exist_ok=True)
        env[key] = str(scratch / name)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_IMPLICIT_TOKEN="1")
    return env


def _compare(name: str, logits: Any, reference: Any, report: VerificationReport) -> None:
    import torch

    logits = torch.as_tensor(logits, dtype=torch.float32)
    if logits.shape != reference.shape:
        raise VerificationError(f"{name}: logits of shape {tuple(logits.shape)}, the run's model gives "
                                f"{tuple(reference.shape)}; the published folder is not the run's model")
    diff = float((logits - reference).abs().max())
    report.max_abs_diff = max(report.max_abs_diff, diff)
    if not torch.allclose(logits, reference, atol=LOGITS_ATOL, rtol=LOGITS_RTOL):
        raise VerificationError(f"{name}: logits differ from the run's model by up to {diff:.3g} (allowed "
                                f"{LOGITS_ATOL:g}); the published folder would not reproduce the run. Check that the "
                                "checkpoint's code and weights belong together (re-save it with the current fer_mek)")
    if not torch.equal(logits.argmax(-1), reference.argmax(-1)):
        raise VerificationError(f"{name}: predicted classes differ from the run's model")
    exact = "identical" if diff == 0 else f"max |Δ| {diff:.1e}"
    report.checks.append(f"{name}: logits {exact}")


def _check_pipeline(name: str, rows: Sequence[Any], reference: Any, labels: Sequence[str]) -> None:
    probabilities = reference.softmax(-1)
    for i, row in enumerate(rows):
        top = row[0] if isinstance(row, list) else row
        expected = labels[int(probabilities[i].argmax())]
        if top["label"] != expected or abs(float(top["score"]) - float(probabilities[i].max())) > 1e-4:
            raise VerificationError(f"{name}: image {i} gives {top}, the run's model {expected!r} "
                                    f"({float(probabilities[i].max()):.4f})")


def _check_config(folder: Path, run: Run) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    auto_map = config.get("auto_map") or {}
    missing = [key for key in REQUIRED_AUTO_MAP if key not in auto_map]
    if missing:
        raise VerificationError(f"config.json's auto_map lacks {missing}: trust_remote_code loading would fail. "
                                "Re-save the checkpoint with MEKForImageClassification.save_pretrained")
    processor = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    if "AutoImageProcessor" not in (processor.get("auto_map") or {}):
        raise VerificationError("preprocessor_config.json has no auto_map for AutoImageProcessor; re-save the "
                                "image processor with MEKImageProcessor.save_pretrained")
    for file, mapping in (("config.json", auto_map), ("preprocessor_config.json", processor["auto_map"])):
        for value in mapping.values():
            for target in value if isinstance(value, list) else [value]:
                if target is None:
                    continue
                if "--" in str(target):
                    raise VerificationError(f"{file}'s auto_map names {target}, code of another repository; the "
                                            "published folder must use its own (the package's) code. Re-save the "
                                            "checkpoint with the current fer_mek")
                module = str(target).split(".")[0]
                if not (folder / f"{module}.py").is_file():
                    raise VerificationError(f"{file}'s auto_map names {target} but {module}.py is not in the "
                                            "folder (it holds the package's model code only)")
    if run.results and run.results.get("label_names") and run.results["label_names"] != run.label_names:
        raise VerificationError("config.json's id2label differs from results.json's label_names")


def _check_conversion(folder: Path, processor: Any) -> str | None:
    """A converted checkpoint's ``conversion.json`` must record the serving settings its image processor applies
    (the card states the processor's); returns the check's line, ``None`` for a folder without the file."""
    from .model_card_converted import serving_settings

    try:
        conversion = read_conversion(folder)
    except ValueError as error:  # RunError: unreadable, or a newer schema
        raise VerificationError(str(error)) from error
    if conversion is None:
        return None
    applied = serving_settings(processor.to_dict())
    recorded = conversion.get("serving") or {}
    differ = [f"{key}: {value!r} recorded, {applied[key]!r} served" for key, value in recorded.items()
              if key in applied and value != applied[key]]
    if differ:
        raise VerificationError(f"conversion.json's serving settings differ from preprocessor_config.json's "
                                f"({', '.join(differ)}); the card would describe a model served otherwise. Convert "
                                "the checkpoint again")
    return f"conversion.json: serving settings match the image processor ({len(recorded)} recorded)"


def verify_folder(
    folder: str | os.PathLike,
    run: Run,
    images: Sequence[Image.Image],
    images_source: str = "given images",
    *,
    timeout: float = 600.0,
) -> VerificationReport:
    """Check that the assembled folder reproduces the run's model; raise otherwise.

    The reference is the run's checkpoint loaded with the package (``MEKForImageClassification`` and its own
    ``MEKImageProcessor``). The folder must give the same logits (to float32 round-off, same predicted classes) when
    loaded (1) with the package, through ``AutoModelForImageClassification``, ``AutoModel``, ``AutoImageProcessor``
    and ``pipeline``, and (2) in a subprocess where ``fer_mek`` cannot be imported, the same ways with
    ``trust_remote_code=True``; there, the classes must come from the folder's own code. The subprocess runs in a
    working directory of its own, offline, with no Hub token nor any file one could be read from
    (:func:`isolated_environment`).

    Raises:
        VerificationError: Any difference, or a loading failure (the subprocess's error is included).
    """
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    from .image_processing_mek import MEKImageProcessor
    from .modeling_mek import MEKForImageClassification, MEKModel

    folder = Path(folder)
    if not images:
        raise VerificationError("no images to verify on")
    _check_config(folder, run)
    report = VerificationReport(images=images_source, num_images=len(images))
    labels = run.label_names

    try:
        reference_model = MEKForImageClassification.from_pretrained(run.model_dir).eval()
        reference_processor = MEKImageProcessor.from_pretrained(run.model_dir)
        with torch.no_grad():
            reference = reference_model(**reference_processor(list(images), return_tensors="pt")).logits.float()
    except Exception as error:  # any loading failure, re-raised with what it means here
        raise VerificationError(f"cannot load the run's checkpoint {run.model_dir} with fer_mek ({error}); it must "
                                "be a MEKForImageClassification save_pretrained folder") from error

    try:
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
        pixel_values = processor(list(images), return_tensors="pt")["pixel_values"]
        models = [(auto, expected, auto.from_pretrained(folder, trust_remote_code=False).eval())
                  for auto, expected in ((AutoModelForImageClassification, MEKForImageClassification),
                                         (AutoModel, MEKModel))]
        classifier = pipeline("image-classification", model=str(folder), trust_remote_code=False)
        rows = classifier(list(images), top_k=1)
    except Exception as error:  # any loading failure, re-raised with what it means here
        raise VerificationError(f"the assembled folder does not load with fer_mek installed: {error}") from error
    if not isinstance(processor, MEKImageProcessor):
        raise VerificationError(f"AutoImageProcessor loads {type(processor).__name__}, not MEKImageProcessor")
    conversion_check = _check_conversion(folder, processor)
    for auto, expected, model in models:
        if type(model) is not expected:
            raise VerificationError(f"{auto.__name__} loads {type(model).__name__}, expected {expected.__name__}")
        with torch.no_grad():
            _compare(f"package, {auto.__name__}", model(pixel_values=pixel_values).logits, reference, report)
    _check_pipeline("package, pipeline", rows, reference, labels)
    report.checks.append("package, pipeline: same labels and scores")

    with tempfile.TemporaryDirectory(prefix="fer-mek-verify-") as scratch:
        scratch_dir = Path(scratch)
        (scratch_dir / "images").mkdir()
        for i, image in enumerate(images):
            image.save(scratch_dir / "images" / f"{i:03d}.png")
        env = isolated_environment(scratch_dir / "env")
        (scratch_dir / "work").mkdir()
        # -I (isolated mode): the check's own folder, fer_mek/, stays off sys.path; the check blocks fer_mek itself.
        command = [sys.executable, "-I", str(Path(remote_code_check.__file__).resolve()), str(folder.resolve()),
                   str(scratch_dir / "images"), str(scratch_dir / "out.json"), str(torch.get_num_threads())]
        try:
            done = subprocess.run(command, cwd=scratch_dir / "work", env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise VerificationError(f"loading the folder with trust_remote_code took more than {timeout:.0f} s") from error
        if done.returncode != 0:
            raise VerificationError("the folder does not load with trust_remote_code=True without fer_mek "
                                    f"installed:\n{done.stderr[-3000:]}")
        remote = json.loads((scratch_dir / "out.json").read_text())
    if not remote["processor"].startswith("transformers_modules."):
        raise VerificationError(f"trust_remote_code loaded the image processor {remote['processor']}, not the "
                                "folder's own code")
    for name in ("AutoModelForImageClassification", "AutoModel"):
        if not remote[name]["class"].startswith("transformers_modules."):
            raise VerificationError(f"trust_remote_code loaded {remote[name]['class']}, not the folder's own code")
        _compare(f"remote code, {name}", remote[name]["logits"], reference, report)
    _check_pipeline("remote code, pipeline", remote["pipeline"], reference, labels)
    report.checks.append("remote code, pipeline: same labels and scores")
    if conversion_check:
        report.checks.append(conversion_check)
    return report

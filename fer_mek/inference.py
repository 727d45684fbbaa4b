"""Facial-expression prediction on people's pictures: model loading, the batched predictor, ensembles.

:class:`FERPredictor` runs the whole pipeline: load (robustly, :mod:`fer_mek.media`) -> detect faces -> crop them
(:mod:`fer_mek.faces`: margin, square or not, cut at the image edge or padded, eyes levelled or not) -> the model's own
image processor, which applies the grey-scale and CLAHE its serving settings ask for (the same code path as
evaluation and ``pipeline()``) -> one model or an ensemble, with the test-time augmentation the model asks for
(:mod:`fer_mek.tta`, the one implementation evaluation uses too) -> probabilities in the model's class names
(``config.id2label``) and the class attention map of the predicted class, as the records of :mod:`fer_mek.results`;
:meth:`FERPredictor.analyze` adds the pictures of :mod:`fer_mek.annotate`.

Every serving setting comes from the model's processor (``preprocessor_config.json``, see
:class:`fer_mek.MEKImageProcessor`) unless the predictor is told otherwise (``margin=``, ``square=``, ``clip=``,
``align=``, ``clahe=``, ``grayscale=``, ``tta=``; ``None`` means "the model's").

Example:
    >>> from fer_mek.inference import FERPredictor
    >>> predictor = FERPredictor("path/to/model")           # a save_pretrained folder or a Hub id
    >>> result = predictor.predict("photo.jpg")
    >>> [(face.box, face.top_k(3)) for face in result.faces]
    >>> analysis = predictor.analyze("photo.jpg")            # + annotated image, attention overlays, bar charts
    >>> analysis.annotated.save("annotated.png")

The names of :mod:`fer_mek.media` and :mod:`fer_mek.results` that this module held before they were split out
(``load_image``, ``ImageResult``, ``ResultWriter``, ...) are still importable from here.

This module imports torch and transformers; OpenCV is imported when a detector, a video or a drawing needs it.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .annotate import analyze_result
from .faces import CropGeometry, FaceBox, FaceDetector, FaceMode, get_face_detector, select_faces
from .image_processing_mek import serving_settings_of, with_pixel_settings
from .locations import DeviceError, ModelLoadError, describe_missing_model, locate_model, resolve_device
from .media import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ImageInput,
    ImageLoadError,
    InputItem,
    VideoOpenError,
    describe_input,
    discover_inputs,
    iter_video_frames,
    load_image,
    video_fps,
)
from .results import NO_FACE_MESSAGE, Analysis, FacePrediction, ImageResult, ResultWriter, csv_columns
from .tta import TTA_MODES, TTAMode, tta_forward

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ModelInput = str | os.PathLike | Any  # a folder, a Hub id or a loaded model
#: Face detection runs on a copy whose longer side is at most this (boxes are scaled back, crops use full resolution).
DEFAULT_DETECTION_SIZE = 1280


# --------------------------------------------------------------------------------------------------------- models


def load_model(
    model: ModelInput,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    processor: Any | None = None,
) -> tuple[PreTrainedModel, Any]:
    """A classification model in eval mode on ``device`` and its image processor.

    Args:
        model: A ``save_pretrained`` folder, a Hub id, or a loaded model.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
        trust_remote_code: Allow the model's own code (not needed for MEK models: ``fer_mek`` registers them).
        processor: The image processor; by default the one saved with the model (``preprocessor_config.json``).

    Raises:
        ModelLoadError: The model or its processor cannot be loaded.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from .image_processing_mek import MEKImageProcessor

    device = resolve_device(device)
    if isinstance(model, (str, os.PathLike)):
        name = locate_model(model)  # a model folder, or a Hub id; a missing local-looking path raises here
        local = Path(name).is_dir()
        try:
            loaded = AutoModelForImageClassification.from_pretrained(name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as error:
            if not local:
                raise ModelLoadError(describe_missing_model(name, error)) from error
            raise ModelLoadError(f"cannot load model {name!r}: {error}") from error
        if processor is None:
            # MEK processors are registered for the PIL backend only: ask for it rather than fall back with a warning.
            backend = {"backend": "pil"} if getattr(loaded.config, "model_type", None) == "fer-mek" else {}
            try:
                processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=trust_remote_code, **backend)
            except (OSError, ValueError, KeyError) as error:
                if getattr(loaded.config, "model_type", None) != "fer-mek":
                    raise ModelLoadError(
                        f"model {name!r} has no usable image processor ({error}); save one beside it"
                    ) from error
                warnings.warn(
                    f"{name}: no preprocessor_config.json ({error}); using the preprocessing its config describes",
                    stacklevel=2,
                )
                processor = MEKImageProcessor.from_model_config(loaded.config)
    else:
        loaded = model
        if processor is None:
            if getattr(loaded.config, "model_type", None) != "fer-mek":
                raise ModelLoadError(f"pass the image processor of {type(loaded).__name__} (processor=...)")
            processor = MEKImageProcessor.from_model_config(loaded.config)
    return loaded.to(device).eval(), processor


def model_labels(model: Any) -> tuple[str, ...]:
    """The class names of a model in index order, from ``config.id2label``."""
    config = model.config
    id2label = {int(i): str(name) for i, name in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(config.num_labels)):
        raise ModelLoadError(f"{type(model).__name__}: config.id2label {config.id2label} does not name every class")
    return tuple(id2label[i] for i in range(config.num_labels))


# --------------------------------------------------------------------------------------------------------- predictor


#: The serving options of :class:`FERPredictor` (and :meth:`FERPredictor.with_settings`); ``None`` = the model's.
SERVING_OPTIONS = ("margin", "square", "clip", "align", "clahe", "grayscale", "tta")
_FACE_SETTINGS = ("face_margin", "face_square", "face_clip", "face_align")


class FERPredictor:
    """Face detection + facial-expression classification with one MEK model or an ensemble.

    Each model is served as its processor's serving settings say (:class:`fer_mek.MEKImageProcessor`: face crop,
    grey-scale, CLAHE, default test-time augmentation); the serving options below override them. ``None`` (the
    default of each) means "the model's setting"; models saved before the settings existed get fer-mek's defaults
    (square crop, margin 0.2, eyes levelled, colour, no CLAHE, no TTA).

    Ensembles of models with different settings: each member gets its own grey-scale, CLAHE and test-time
    augmentation (its probabilities are averaged over its own views, then over the members); the faces are cropped
    once, with the first model's geometry (a warning names the settings the other members differ in). An override
    applies to every member.

    Args:
        model: A ``save_pretrained`` folder, a Hub id or a loaded model; a list of them for an ensemble (their
            probabilities are averaged; they must share the same class names in the same order).
        device: ``"cpu"``, ``"cuda"``, ...; by default CUDA when available.
        detector: ``"mtcnn"``, ``None`` to classify whole images (already-cropped faces), or a
            :class:`~fer_mek.faces.FaceDetector`.
        face_mode: ``"all"`` faces (left to right) or only the ``"largest"``.
        margin: Crop margin, a fraction of the face box's longer side on every side (``face_margin``).
        square: Square crops; ``False``: the box's aspect (``face_square``).
        clip: Cut crops at the image edge; ``False``: pad with black (``face_clip``).
        align: Level the eyes using the detector's landmarks (``face_align``).
        clahe: CLAHE on the (face) image before the model (``do_clahe``).
        grayscale: Grey-scale input (``do_grayscale``).
        tta: Test-time augmentation (:mod:`fer_mek.tta`): ``"flip"`` averages the prediction of the crop and its
            mirror image, ``"tencrop"`` that of ten crops of it (evaluation's ten-crop), ``"none"``: off; ``None``:
            each model's ``default_tta``.
        batch_size: Faces per forward pass.
        max_pixels: Refuse larger images (decompression-bomb guard).
        detection_size: Detect faces on a copy whose longer side is at most this many pixels (``None``: full size).
        min_face_size: Smallest face side (pixels, at detection size) the detector looks for.
        min_confidence: Detector confidence below which faces are dropped.
        processors: Image processors, one per model, instead of those saved with the models.
        trust_remote_code: Passed to ``from_pretrained``.
    """

    def __init__(
        self,
        model: ModelInput | Sequence[ModelInput],
        *,
        device: str | torch.device | None = None,
        detector: str | FaceDetector | None = "mtcnn",
        face_mode: FaceMode = "all",
        margin: float | None = None,
        square: bool | None = None,
        clip: bool | None = None,
        align: bool | None = None,
        clahe: bool | None = None,
        grayscale: bool | None = None,
        tta: TTAMode | None = None,
        batch_size: int = 16,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        detection_size: int | None = DEFAULT_DETECTION_SIZE,
        min_face_size: int = 20,
        min_confidence: float = 0.9,
        processors: Sequence[Any] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        specs = list(model) if isinstance(model, (list, tuple)) else [model]
        if not specs:
            raise ModelLoadError("no model given")
        if processors is not None and len(processors) != len(specs):
            raise ValueError(f"got {len(processors)} processors for {len(specs)} models")
        overrides = {
            "margin": margin,
            "square": square,
            "clip": clip,
            "align": align,
            "clahe": clahe,
            "grayscale": grayscale,
            "tta": tta,
        }
        _check_overrides(overrides)
        if face_mode not in ("all", "largest"):
            raise ValueError(f"unknown face mode {face_mode!r}; use 'all' or 'largest'")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for spec in specs:  # every folder of an ensemble is checked before the first model loads
            if isinstance(spec, (str, os.PathLike)):
                locate_model(spec)
        self.device = resolve_device(device)
        self.models: list[Any] = []
        self._model_processors: list[Any] = []  # as loaded; self.processors hold the overrides
        self._names = [_name(spec) for spec in specs]
        for i, spec in enumerate(specs):
            loaded, processor = load_model(
                spec, self.device, trust_remote_code, None if processors is None else processors[i]
            )
            self.models.append(loaded)
            self._model_processors.append(processor)
        self.labels = model_labels(self.models[0])
        for spec, loaded in zip(specs[1:], self.models[1:], strict=True):
            labels = model_labels(loaded)
            if labels != self.labels:
                raise ModelLoadError(
                    f"ensemble members disagree on classes: {_name(specs[0])} has {list(self.labels)}, {_name(spec)} "
                    f"has {list(labels)}; ensemble only models trained on the same label set in the same order"
                )
        if detector == "mtcnn":
            self.detector = get_face_detector("mtcnn", min_face_size=min_face_size, min_confidence=min_confidence)
        else:
            self.detector = get_face_detector(detector)
        self.face_mode: FaceMode = face_mode
        self.batch_size = int(batch_size)
        self.max_pixels = max_pixels
        self.detection_size = detection_size
        self._configure(overrides)

    # ---- serving settings

    def _configure(self, overrides: dict[str, Any]) -> None:
        """Resolve the serving settings: the models' own, with the overrides that are not ``None``."""
        self._overrides = dict(overrides)
        settings = [serving_settings_of(p) for p in self._model_processors]
        face_overrides = {name: overrides[name] for name in ("margin", "square", "clip", "align")}
        #: How faces are cropped (the first model's settings, with the overrides).
        self.geometry = CropGeometry.from_settings(settings[0], **face_overrides)
        differing = sorted(
            {
                key
                for other in settings[1:]
                for key in _FACE_SETTINGS
                if other[key] != settings[0][key] and face_overrides[key.removeprefix("face_")] is None
            }
        )
        if differing:
            warnings.warn(
                f"the ensemble's models differ in {', '.join(differing)}: faces are cropped once, as the first "
                f"model ({self._names[0]}) asks; pass margin=/square=/clip=/align= to choose",
                stacklevel=3,
            )
        #: The processors that prepare each model's input (the models' own, or copies with the overrides applied).
        self.processors = [
            with_pixel_settings(p, overrides["grayscale"], overrides["clahe"]) for p in self._model_processors
        ]
        #: The test-time augmentation of each model.
        self.tta_modes: list[str] = [
            overrides["tta"] if overrides["tta"] is not None else s["default_tta"] for s in settings
        ]

    @property
    def margin(self) -> float:
        """The crop margin in use."""
        return self.geometry.margin

    @property
    def align(self) -> bool:
        """Whether the eyes of crops are levelled."""
        return self.geometry.align

    @property
    def serving(self) -> list[dict[str, Any]]:
        """The settings each model is served with: its processor's serving settings after the overrides, with the
        face geometry actually used and ``tta`` (the mode in use, which may differ from ``default_tta``)."""
        face = {
            "face_margin": self.geometry.margin,
            "face_square": self.geometry.square,
            "face_clip": self.geometry.clip,
            "face_align": self.geometry.align,
        }
        return [
            {**serving_settings_of(processor), **face, "tta": mode}
            for processor, mode in zip(self.processors, self.tta_modes, strict=True)
        ]

    @property
    def model_names(self) -> list[str]:
        """The models as they were given: folder or Hub id (the class name of a model given loaded)."""
        return list(self._names)

    def with_settings(self, **overrides: Any) -> FERPredictor:
        """A predictor sharing these models and detector, with other serving options (:data:`SERVING_OPTIONS`;
        ``None`` resets an option to the models' settings; options not given stay as they are here)."""
        unknown = sorted(set(overrides) - set(SERVING_OPTIONS))
        if unknown:
            raise TypeError(f"unknown serving options {unknown}; use {list(SERVING_OPTIONS)}")
        merged = {**self._overrides, **overrides}
        _check_overrides(merged)
        clone = copy.copy(self)
        clone._configure(merged)
        return clone

    def describe_serving(self) -> str:
        """One line per model on how it is served, e.g. for a command line's log."""
        lines = []
        crop = "whole images (no face detection)" if self.detector is None else self.geometry.describe()
        for number, settings in enumerate(self.serving, start=1):
            steps = []
            if settings["do_clahe"]:
                steps.append(
                    f"CLAHE (clip limit {settings['clahe_clip_limit']:g}, "
                    f"{settings['clahe_tile_grid_size']}x{settings['clahe_tile_grid_size']} tiles)"
                )
            steps.append("grey-scale" if settings["do_grayscale"] else "colour")
            steps.append(f"TTA {settings['tta']}")
            name = f"model {number} ({self._names[number - 1]})" if len(self.models) > 1 else "serving"
            lines.append(f"{name}: {crop}; " + ", ".join(steps))
        return "\n".join(lines)

    # ---- single steps

    def find_faces(self, image: Image.Image) -> list[tuple[FaceBox, Image.Image, np.ndarray]]:
        """Detect and crop the faces of an RGB image: ``(box, crop, image-to-crop matrix)`` per face.

        Without a detector the whole image is the one "face". Crops are the image's own pixels: grey-scale and
        CLAHE are applied by each model's processor.
        """
        if self.detector is None:
            box = FaceBox(0, 0, image.width, image.height, 1.0, None)
            matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            return [(box, image, matrix)]
        array = np.asarray(image)
        scale = 1.0
        if self.detection_size is not None and max(image.size) > self.detection_size:
            scale = self.detection_size / max(image.size)
            small = image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR
            )
            boxes = [_scale_box(box, 1.0 / scale, image.size) for box in self.detector.detect(np.asarray(small))]
        else:
            boxes = self.detector.detect(array)
        faces = []
        for box in select_faces(boxes, self.face_mode):
            crop, matrix = self.geometry.crop(array, box)
            faces.append((box, crop, matrix))
        return faces

    @torch.inference_mode()
    def classify(self, crops: Sequence[Image.Image]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Class probabilities and the predicted class's attention map for face crops.

        Each model gets its own image processor and test-time augmentation; probabilities are averaged over TTA and
        the ensemble. Maps are scaled to ``[0, 1]`` per model before averaging.

        Returns:
            ``(probabilities [N, K], maps)``: ``maps[i]`` is ``[h, w]`` or ``None`` (model without attention maps).
        """
        if not crops:
            return np.zeros((0, len(self.labels)), dtype=np.float32), []
        probabilities: list[np.ndarray] = []
        maps: list[np.ndarray | None] = []
        for start in range(0, len(crops), self.batch_size):
            chunk = list(crops[start : start + self.batch_size])
            member_probs, member_maps = [], []
            for model, processor, mode in zip(self.models, self.processors, self.tta_modes, strict=True):
                pixel_values = processor(images=chunk, return_tensors="pt")["pixel_values"]
                pixel_values = pixel_values.to(self.device, dtype=next(model.parameters()).dtype)
                probs, class_maps = self._forward(model, pixel_values, mode)
                member_probs.append(probs)
                member_maps.append(class_maps)
            mean_probs = torch.stack(member_probs).mean(0)
            predicted = mean_probs.argmax(-1)
            maps.extend(_ensemble_maps(member_maps, predicted))
            probabilities.append(mean_probs.numpy())
        return np.concatenate(probabilities).astype(np.float32), maps

    def _forward(
        self, model: Any, pixel_values: torch.Tensor, mode: str = "none"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Probabilities ``[B, K]`` averaged over the TTA views and class maps ``[B, K, h, w]`` (or ``None``) of the
        whole crops, on the CPU: :func:`fer_mek.tta.tta_forward`, the views of evaluation's TTA in one batch."""
        probs, class_maps = tta_forward(model, pixel_values, mode, attention_maps=True)
        return probs.cpu(), None if class_maps is None else class_maps.cpu()

    # ---- whole images

    def predict(self, image: ImageInput, source: str | None = None) -> ImageResult:
        """Faces and expressions in one image.

        Raises:
            ImageLoadError: The image cannot be read (batches record such errors instead, see :meth:`predict_batch`).
        """
        result = self.predict_batch([image], [source] if source is not None else None)[0]
        if result.error is not None:
            raise ImageLoadError(result.error)
        return result

    __call__ = predict

    def predict_batch(
        self,
        images: Sequence[ImageInput],
        sources: Sequence[str] | None = None,
        frames: Sequence[tuple[int, float | None]] | None = None,
    ) -> list[ImageResult]:
        """Faces and expressions in several images, all faces classified in batches.

        An input that cannot be read or processed gives a result with ``error`` set; the others are still
        processed. An image without a face gives ``status == "no_face"``.

        Args:
            images: Paths, bytes, PIL images or RGB arrays.
            sources: Names for the results (default: the paths, or a description).
            frames: ``(frame index, time in seconds)`` per image, for video frames.
        """
        results: list[ImageResult] = []
        pending: list[tuple[int, FaceBox, Image.Image, np.ndarray]] = []
        for i, item in enumerate(images):
            source = sources[i] if sources is not None else describe_input(item)
            frame, time_s = frames[i] if frames is not None else (None, None)
            result = ImageResult(source=source, frame=frame, time_s=time_s)
            results.append(result)
            try:
                result.image = load_image(item, self.max_pixels)
            except ImageLoadError as error:
                result.error = str(error)
                continue
            try:
                found = self.find_faces(result.image)
            except Exception as error:  # reported in the result, the batch goes on
                result.error = f"{source}: face detection failed ({type(error).__name__}: {error})"
                continue
            pending.extend((i, box, crop, matrix) for box, crop, matrix in found)
        probabilities, maps = self.classify([crop for _, _, crop, _ in pending])
        for (i, box, crop, matrix), probs, attention in zip(pending, probabilities, maps, strict=True):
            results[i].faces.append(FacePrediction(box, probs, self.labels, crop, matrix, attention))
        return results

    def predict_files(
        self, paths: Iterable[str | os.PathLike], progress: bool = False, images_per_batch: int | None = None
    ) -> Iterator[ImageResult]:
        """Results for image files, in order, reading ``images_per_batch`` files at a time (default: batch size).

        Args:
            paths: Image files.
            progress: Show a tqdm progress bar (on a terminal).
            images_per_batch: Images read and detected before their faces are classified together.
        """
        paths = [Path(p) for p in paths]
        per_batch = images_per_batch or self.batch_size
        from tqdm.auto import tqdm

        with tqdm(total=len(paths), unit="image", disable=None if progress else True) as bar:
            for start in range(0, len(paths), per_batch):
                chunk = paths[start : start + per_batch]
                yield from self.predict_batch(chunk, [str(p) for p in chunk])
                bar.update(len(chunk))

    def predict_video(
        self,
        source: str | os.PathLike | int,
        frame_step: int = 1,
        max_frames: int | None = None,
        frames_per_batch: int | None = None,
    ) -> Iterator[ImageResult]:
        """Results frame by frame for a video file or a camera index.

        Args:
            source: A video file, or a camera index (``0`` is the default webcam).
            frame_step: Classify every ``frame_step``-th frame.
            max_frames: Stop after this many classified frames.
            frames_per_batch: Frames classified together (default: batch size for files, 1 for cameras).

        Raises:
            VideoOpenError: The video or camera cannot be opened or gives no frame.
        """
        per_batch = frames_per_batch or (1 if isinstance(source, int) else self.batch_size)
        name = f"camera:{source}" if isinstance(source, int) else os.fspath(source)
        batch: list[tuple[int, float | None, np.ndarray]] = []
        for index, time_s, frame in iter_video_frames(source, frame_step, max_frames):
            batch.append((index, time_s, frame))
            if len(batch) >= per_batch:
                yield from self._predict_frames(name, batch)
                batch = []
        if batch:
            yield from self._predict_frames(name, batch)

    def _predict_frames(self, name: str, batch: list[tuple[int, float | None, np.ndarray]]) -> list[ImageResult]:
        return self.predict_batch(
            [frame for _, _, frame in batch],
            [f"{name}#{index}" for index, _, _ in batch],
            [(index, time_s) for index, time_s, _ in batch],
        )

    def analyze(self, image: ImageInput, **annotate_kwargs: Any) -> Analysis:
        """The prediction plus the pictures: annotated image, attention overlays and bar charts per face
        (:func:`fer_mek.annotate.analyze_result`; ``annotate_kwargs`` go to :func:`fer_mek.annotate.annotate_image`).

        Raises:
            ImageLoadError: The image cannot be read.
        """
        return analyze_result(self.predict(image), **annotate_kwargs)


def predict(
    images: ImageInput | Sequence[ImageInput], model: ModelInput | Sequence[ModelInput], **kwargs: Any
) -> list[ImageResult]:
    """One-off prediction: builds a :class:`FERPredictor` (keep one around for many calls) and runs it.

    Args:
        images: An image or a list of them.
        model: Model folder / Hub id / loaded model, or a list for an ensemble.
        **kwargs: :class:`FERPredictor` options.
    """
    batch = list(images) if isinstance(images, (list, tuple)) else [images]
    return FERPredictor(model, **kwargs).predict_batch(batch)


def analyze_image(image: ImageInput, model: ModelInput | Sequence[ModelInput], **kwargs: Any) -> Analysis:
    """One-off :meth:`FERPredictor.analyze` for notebooks: faces, probabilities, overlays, annotated image."""
    return FERPredictor(model, **kwargs).analyze(image)


def _check_overrides(overrides: dict[str, Any]) -> None:
    tta, margin = overrides.get("tta"), overrides.get("margin")
    if tta is not None and tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; use one of {TTA_MODES} or None (the model's)")
    if margin is not None and margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")


def _name(spec: Any) -> str:
    return os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else type(spec).__name__


def _scale_box(box: FaceBox, factor: float, size: tuple[int, int]) -> FaceBox:
    width, height = size
    x, y = round(box.x * factor), round(box.y * factor)
    right = min(width, round((box.x + box.width) * factor))
    bottom = min(height, round((box.y + box.height) * factor))
    landmarks = (
        None if box.landmarks is None else {k: (px * factor, py * factor) for k, (px, py) in box.landmarks.items()}
    )
    return FaceBox(x, y, max(1, right - x), max(1, bottom - y), box.score, landmarks)


def _ensemble_maps(member_maps: list[torch.Tensor | None], predicted: torch.Tensor) -> list[np.ndarray | None]:
    """Per image: the predicted class's map of every member, scaled to [0, 1], resized to the finest grid, averaged."""
    available = [m for m in member_maps if m is not None]
    if not available:
        return [None] * len(predicted)
    height = max(m.shape[-2] for m in available)
    width = max(m.shape[-1] for m in available)
    index = torch.arange(len(predicted))
    selected = []
    for maps in available:
        chosen = maps[index, predicted].unsqueeze(1)  # [N, 1, h, w]
        if chosen.shape[-2:] != (height, width):
            chosen = torch.nn.functional.interpolate(chosen, size=(height, width), mode="bilinear", align_corners=False)
        selected.append(_unit_scale(chosen[:, 0]))
    mean = torch.stack(selected).mean(0)
    return [m.numpy().astype(np.float32) for m in _unit_scale(mean)]


def _unit_scale(maps: torch.Tensor) -> torch.Tensor:
    """Scale each ``[h, w]`` map of ``[N, h, w]`` to ``[0, 1]`` (a flat map becomes zeros)."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))


__all__ = [
    "DEFAULT_DETECTION_SIZE",
    "DeviceError",
    "FERPredictor",
    "ModelLoadError",
    "SERVING_OPTIONS",
    "analyze_image",
    "load_model",
    "model_labels",
    "predict",
    "resolve_device",
    # Re-exported from fer_mek.media and fer_mek.results, where they moved: `from fer_mek.inference import ...` works.
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "NO_FACE_MESSAGE",
    "VIDEO_EXTENSIONS",
    "Analysis",
    "FacePrediction",
    "ImageLoadError",
    "ImageResult",
    "InputItem",
    "ResultWriter",
    "VideoOpenError",
    "csv_columns",
    "discover_inputs",
    "iter_video_frames",
    "load_image",
    "video_fps",
]

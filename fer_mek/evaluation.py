"""Evaluation of a saved model on a dataset split, as the command line ``scripts/eval.py`` runs it.

Moved from ``scripts/evaluate.py`` (renamed: a script named ``evaluate`` shadowed the ``evaluate`` package). A run's
``best/`` or ``last/`` folder is evaluated on the run's own split: its data options come from the run
(:func:`fer_mek.runs.run_config_of_model`, :class:`fer_mek.runs.DataOptions`), the command line overrides them.

The model is evaluated as it is served (its processor's serving settings, :class:`fer_mek.MEKImageProcessor`):
grey-scale and CLAHE when the settings say so, its ``default_tta``; ``--detect-faces`` also crops each image to its
largest face with the model's face geometry. Each can be overridden (``--tta``, ``--clahe/--no-clahe``, ...).
:func:`predict_split` is the library function behind it (per-image probabilities).

A model on one of the FER-2013 single-network references' backbones (``lethesec_resnet18``, ``khaireddin_vgg``:
:mod:`fer_mek.fer_backbones`) also gets the metric its source publishes (:func:`source_metric`): top-1 accuracy with
the source's ten-crop (``--tta tencrop_source``: 40-px crops of the unresized 48-px image, logits averaged) on the
split, e.g. PrivateTest with ``--fer2013-test PrivateTest`` (the default), printed and returned as ``source_metric``
beside fer-mek's accuracy, mean-class accuracy and per-class recall.

The options (:func:`build_parser`, :data:`DESCRIPTION`) are those of :mod:`fer_mek_cli.evaluation`, re-exported
here: ``--help`` answers there without importing torch.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fer_mek_cli.evaluation import DESCRIPTION, build_parser

from .cli import EXIT_USAGE
from .faces import CropGeometry
from .image_processing_mek import apply_serving_steps, serving_settings_of, to_rgb8
from .locations import DeviceError, ModelLoadError, locate_model, resolve_device
from .runs import DataOptions, run_config_of_model
from .tta import tta_input_size, tta_probabilities

__all__ = [
    "DESCRIPTION",
    "ServedImageTransform",
    "build_parser",
    "cli_main",
    "data_options",
    "evaluation_settings",
    "main",
    "predict_split",
    "source_metric",
    "write_predictions",
]

_PREDICTION_SUFFIXES = (".csv", ".jsonl")


def data_options(args: argparse.Namespace) -> DataOptions:
    """The split to evaluate: the run's data options when ``--model`` is a run's folder (else the defaults), with the
    options given on the command line applied over them."""
    options = DataOptions.from_config(run_config_of_model(args.model))
    if args.source is not None and args.source != options.source:
        # Another source than the run's: the run's source-specific options do not carry over.
        options = DataOptions(val_fraction=options.val_fraction, split_seed=options.split_seed,
                              val_split=options.val_split)
    return options.replace(source=args.source, data_root=args.data_root, val_fraction=args.val_fraction,
                           split_seed=args.split_seed, synthetic_images=args.synthetic_images,
                           synthetic_image_size=args.synthetic_image_size, val_split=args.val_split,
                           fer2013_test=args.fer2013_test)


def evaluation_settings(processor: Any, *, tta: str | None = None, grayscale: bool | None = None,
                        clahe: bool | None = None, detect_faces: bool = False, margin: float | None = None,
                        square: bool | None = None, clip: bool | None = None,
                        align: bool | None = None) -> dict[str, Any]:
    """The serving settings an evaluation uses: the processor's, with the overrides that are not ``None``.

    Returns the processor's serving settings (``do_grayscale``, ``do_clahe``, ``clahe_clip_limit``, ...,
    ``default_tta``) plus ``tta`` (the mode used) and ``detect_faces``; the face geometry keys are the ones used when
    ``detect_faces`` is on.
    """
    settings = serving_settings_of(processor)
    if grayscale is not None:
        settings["do_grayscale"] = bool(grayscale)
    if clahe is not None:
        settings["do_clahe"] = bool(clahe)
    geometry = CropGeometry.from_settings(settings, margin=margin, square=square, clip=clip, align=align)
    settings.update({"face_margin": geometry.margin, "face_square": geometry.square, "face_clip": geometry.clip,
                     "face_align": geometry.align})
    settings["tta"] = tta if tta is not None else settings["default_tta"]
    settings["detect_faces"] = bool(detect_faces)
    return settings


class ServedImageTransform:
    """One evaluation image as the model is served: [its largest face, cropped] -> grey-scale / CLAHE (the
    processor's :func:`~fer_mek.image_processing_mek.apply_serving_steps`) -> the evaluation transform.

    Picklable for DataLoader workers: the face detector is built in each process on first use.

    Args:
        transform: The evaluation transform (:func:`fer_mek.data.build_eval_transform`).
        settings: :func:`evaluation_settings`.
    """

    def __init__(self, transform: Any, settings: dict[str, Any]) -> None:
        self.transform = transform
        self.settings = dict(settings)
        self.geometry = CropGeometry.from_settings(settings) if settings.get("detect_faces") else None
        self._detector: Any = None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_rgb8(image)
        if self.geometry is not None:
            image = self.face(image)
        settings = self.settings
        if settings["do_grayscale"] or settings["do_clahe"]:
            image = apply_serving_steps(image, settings["do_grayscale"], settings["do_clahe"],
                                        settings["clahe_clip_limit"], settings["clahe_tile_grid_size"])
        return self.transform(image)

    def face(self, image: Image.Image) -> Image.Image:
        """The crop of the largest face, or the whole image when none is found."""
        from .faces import get_face_detector, select_faces

        if self._detector is None:
            self._detector = get_face_detector("mtcnn")
        array = np.asarray(image)
        faces = select_faces(self._detector.detect(array), "largest")
        if not faces:
            return image
        return self.geometry.crop(array, faces[0])[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_detector": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(settings={self.settings}, transform={self.transform!r})"


@torch.no_grad()
def predict_split(model: Any, processor: Any, dataset: Any, settings: dict[str, Any] | None = None, *,
                  device: str | torch.device = "cpu", batch_size: int = 128,
                  num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities of every image of a ``datasets`` split, as the model is served.

    Args:
        model: The classification model (eval mode, on ``device``).
        processor: Its image processor (the size, mean and std of the evaluation transform).
        dataset: A split with ``image`` and ``label`` columns.
        settings: :func:`evaluation_settings` (default: the processor's own).
        device: Where the model is.
        batch_size: Images per forward pass.
        num_workers: DataLoader workers.

    Returns:
        ``(probabilities [N, K], labels [N])`` on the CPU, in the split's order.
    """
    from torch.utils.data import DataLoader

    from .data import collate_fn, make_transform

    settings = evaluation_settings(processor) if settings is None else settings
    transform = make_transform(_processor_for_tta(processor, settings["tta"]), train=False, with_flip=False)
    transform.transform = ServedImageTransform(transform.transform, settings)
    loader = DataLoader(dataset.with_transform(transform), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_fn)
    probabilities, references = [], []
    for batch in loader:
        probabilities.append(tta_probabilities(model, batch["pixel_values"].to(device), settings["tta"]).float().cpu())
        references.append(batch["labels"])
    return torch.cat(probabilities), torch.cat(references)


def _processor_for_tta(processor: Any, mode: str) -> Any:
    """The processor whose evaluation transform gives the images ``mode`` takes: itself, or for ``tencrop_source`` a
    copy resizing to 6/5 of the model's side (48 px for 40: FER-2013's images pass unresized, as in the references)."""
    from .data.transforms import processor_settings

    settings = processor_settings(processor)
    height, width = tta_input_size(mode, settings["height"]), tta_input_size(mode, settings["width"])
    if (height, width) == (settings["height"], settings["width"]):
        return processor
    resized = copy.copy(processor)
    resized.size = {"height": height, "width": width}
    return resized


#: The FER-2013 single-network references (fer_mek/fer_backbones.py) and where their metric is computed.
SOURCE_METRICS = {
    "lethesec_resnet18": "LetheSec/Fer2013-Facial-Emotion-Recognition-Pytorch evaluate.py:51-81 (ten-crop top-1 "
                         "accuracy, logits averaged; 73.70 % on PrivateTest)",
    "khaireddin_vgg": "usef-kh/fer evaluate.py:45-74, utils/loops.py:57-78 (ten-crop top-1 accuracy, logits "
                      "averaged; 73.28 % on PrivateTest)",
}


def source_metric(model: Any, processor: Any, dataset: Any, settings: dict[str, Any], metrics: dict[str, Any], *,
                  device: str | torch.device = "cpu", batch_size: int = 128, num_workers: int = 0,
                  split: str = "test", fer2013_test: str | None = None) -> dict[str, Any] | None:
    """The metric a FER-2013 reference reports, for a model on one of their backbones (else ``None``): top-1
    accuracy with their ten-crop (``tencrop_source``) on the split, beside fer-mek's own metrics of the same run.

    Reuses ``metrics`` when the evaluation already ran with ``tencrop_source``; otherwise predicts the split again
    with it (the other serving settings unchanged). Returns ``{"backbone", "reference", "tta", "split",
    "fer2013_test", "accuracy", "mean_class_accuracy", "per_class_recall"}``: the references publish the accuracy
    alone; mean-class accuracy and per-class recall are fer-mek's, on the same ten-crop predictions.
    """
    from .metrics import compute_metrics

    backbone = str(getattr(model.config, "backbone", "")).split(".")[0]
    if backbone not in SOURCE_METRICS:
        return None
    if settings["tta"] != "tencrop_source":
        probabilities, references = predict_split(model, processor, dataset, {**settings, "tta": "tencrop_source"},
                                                  device=device, batch_size=batch_size, num_workers=num_workers)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        metrics = compute_metrics(probabilities.argmax(-1), references, labels)
    return {"backbone": backbone, "reference": SOURCE_METRICS[backbone], "tta": "tencrop_source", "split": split,
            "fer2013_test": fer2013_test, "accuracy": metrics["accuracy"],
            "mean_class_accuracy": metrics["mean_class_accuracy"], "per_class_recall": metrics["per_class_recall"]}


def write_predictions(path: str | Path, probabilities: torch.Tensor, references: torch.Tensor,
                      labels: list[str]) -> None:
    """Per-image results: ``index``, ``label``, ``prediction`` and one probability per class (CSV columns
    ``p_<class>``, or a ``probabilities`` object per JSON line)."""
    from .io import atomic_write_text

    path = Path(path)
    if path.suffix.lower() not in _PREDICTION_SUFFIXES:
        raise ValueError(f"--predictions {path}: write predictions to a *.csv or *.jsonl file")
    rows = []
    for index, (probs, reference) in enumerate(zip(probabilities.tolist(), references.tolist(), strict=True)):
        predicted = max(range(len(probs)), key=probs.__getitem__)
        rows.append({"index": index, "label": labels[reference], "prediction": labels[predicted],
                     "probabilities": dict(zip(labels, probs, strict=True))})
    if path.suffix.lower() == ".jsonl":
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
        return
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "label", "prediction", *(f"p_{name}" for name in labels)])
    for row in rows:
        probabilities_text = (repr(p) for p in row["probabilities"].values())
        writer.writerow([row["index"], row["label"], row["prediction"], *probabilities_text])
    atomic_write_text(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate ``--model`` on a split; print the metrics table and return the metrics (also ``--output``).

    Raises:
        ModelLoadError: ``--model`` is neither a model folder nor a loadable Hub id.
        DeviceError: ``--device`` does not exist on this machine.
        ValueError: A source without its data root, or a model whose classes differ from the dataset's.
    """
    from .inference import load_model
    from .io import atomic_write_text
    from .metrics import compute_metrics, format_metrics_table

    args = build_parser().parse_args(argv)
    model_name = locate_model(args.model)  # a mistyped folder or a missing device: one line, before anything loads
    device = resolve_device(args.device)
    face_options = {name: getattr(args, name) for name in ("margin", "square", "clip", "align")}
    if not args.detect_faces and any(value is not None for value in face_options.values()):
        given = ", ".join(f"--{name}" for name, value in face_options.items() if value is not None)
        raise ValueError(f"{given}: the face-crop options apply with --detect-faces only")
    if args.predictions and Path(args.predictions).suffix.lower() not in _PREDICTION_SUFFIXES:
        raise ValueError(f"--predictions {args.predictions}: write predictions to a *.csv or *.jsonl file")
    model, processor = load_model(model_name, device)
    model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    options = data_options(args)
    dataset = options.load()[args.split]
    if len(dataset) == 0 and args.split == "validation" and options.val_split == "none":
        raise ValueError(f"{args.model}: its run trained without a validation split (val_split none): evaluate "
                         "--split test (or train)")

    data_labels = list(dataset.features["label"].names)
    if data_labels != model_labels:
        raise ValueError(f"the model's classes {model_labels} differ from the dataset's {data_labels} (names or "
                         "order); evaluate on the label set the model was trained with")

    settings = evaluation_settings(processor, tta=args.tta, grayscale=args.grayscale, clahe=args.clahe,
                                   detect_faces=args.detect_faces, **face_options)
    probabilities, references = predict_split(model, processor, dataset, settings, device=device,
                                              batch_size=args.batch_size, num_workers=args.num_workers)
    metrics = compute_metrics(probabilities.argmax(-1), references, model_labels)
    metrics.update({"model": str(args.model), "source": options.source, "split": args.split, "tta": settings["tta"],
                    "serving": {key: value for key, value in settings.items() if key != "default_tta"}})

    reference = source_metric(model, processor, dataset, settings, metrics, device=device, batch_size=args.batch_size,
                              num_workers=args.num_workers, split=args.split,
                              fer2013_test=options.fer2013_test if options.source == "fer2013" else None)
    if reference is not None:
        metrics["source_metric"] = reference

    print(f"{args.model} on {options.source} {args.split} ({metrics['num_samples']} images, {_describe(settings)}):")
    print(format_metrics_table(metrics, model_labels))
    if reference is not None:
        where = f" ({reference['fer2013_test']})" if reference["fer2013_test"] else ""
        print(f"reference metric, {reference['reference']}: ten-crop accuracy on {args.split}{where} "
              f"{100 * reference['accuracy']:.2f} %; fer-mek's on the same ten-crop predictions: mean-class accuracy "
              f"{100 * reference['mean_class_accuracy']:.2f} %")
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(metrics, indent=2))
        print(f"metrics written to {args.output}")
    if args.predictions:
        write_predictions(args.predictions, probabilities, references, model_labels)
        print(f"predictions written to {args.predictions}")
    return metrics


def _describe(settings: dict[str, Any]) -> str:
    parts = [f"TTA {settings['tta']}"]
    if settings["do_clahe"]:
        parts.append(f"CLAHE {settings['clahe_clip_limit']:g}/{settings['clahe_tile_grid_size']}")
    if settings["do_grayscale"]:
        parts.append("grey-scale")
    if settings["detect_faces"]:
        parts.append("largest face: " + CropGeometry.from_settings(settings).describe())
    return ", ".join(parts)


def cli_main(argv: list[str] | None = None) -> int:
    """The command line (``scripts/eval.py``): :func:`main` with its errors as one ``error: ...`` line; exit status
    2 for a model or device that is not there (as for a bad option), 1 for other errors."""
    try:
        main(argv)
    except (ModelLoadError, DeviceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0

"""Training a MEK model with ``transformers.Trainer``: the collator that adds the flipped images, and metrics.

MEK's attention consistency term compares each training image's class attention maps with those of its exact
horizontal flip, so every training batch needs ``flipped_pixel_values`` beside ``pixel_values``: the flip of the
*same augmented* image. :class:`MEKDataCollator` builds it when the batch is assembled. A model trained without it
loses the term (the model warns once). ``MEKConfig.keys_to_ignore_at_inference`` keeps ``Trainer``'s predictions to
the logits, so the ``compute_metrics`` of the transformers image-classification tutorial works as written::

    import numpy as np
    from transformers import Trainer, TrainingArguments
    from fer_mek.hf_trainer import MEKDataCollator

    def compute_metrics(eval_pred):
        predictions, labels = eval_pred
        return {"accuracy": float((np.argmax(predictions, axis=1) == labels).mean())}

    trainer = Trainer(
        model=model,                                   # a MEKForImageClassification
        args=TrainingArguments("out", remove_unused_columns=False),
        train_dataset=train, eval_dataset=validation,  # examples with "pixel_values" [3, H, W] and "label"
        data_collator=MEKDataCollator(),
        compute_metrics=compute_metrics,               # or fer_mek.hf_trainer.fer_compute_metrics(label_names)
    )

Importing this module imports neither transformers' Trainer nor accelerate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["MEKDataCollator", "fer_compute_metrics"]


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, list, tuple)):
        return torch.as_tensor(np.asarray(value, dtype=np.float32))
    raise TypeError(f"{what} must be a tensor or an array [3, H, W], got {type(value).__name__}; give the examples "
                    "pixel_values from the image processor (e.g. dataset.with_transform)")


@dataclass
class MEKDataCollator:
    """Stack examples into a MEK training batch: ``pixel_values``, ``labels`` and ``flipped_pixel_values``.

    Each example is a mapping with ``pixel_values`` (a normalised image ``[3, H, W]``: tensor, array or nested list,
    as :class:`fer_mek.MEKImageProcessor` and ``dataset.with_transform`` give) and a class index under ``label`` or
    ``labels`` (optional: a batch without labels gets neither labels nor flipped images).

    Args:
        flip: Add ``flipped_pixel_values = pixel_values.flip(-1)``, the exact horizontal flip of each (already
            augmented) image, which MEK's attention consistency term needs. ``False`` gives a plain image batch.

    Use it as ``transformers.Trainer(data_collator=MEKDataCollator(), args=TrainingArguments(...,
    remove_unused_columns=False))`` (``remove_unused_columns=False`` when examples are made on the fly by a
    transform, as in the transformers image-classification tutorial).
    """

    flip: bool = True

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("MEKDataCollator got an empty list of examples")
        missing = [i for i, example in enumerate(features) if "pixel_values" not in example]
        if missing:
            raise ValueError(
                f"examples {missing[:5]} have no 'pixel_values' (keys: {sorted(features[missing[0]])}); turn images "
                "into pixel_values with the image processor first (e.g. dataset.with_transform)"
            )
        pixel_values = torch.stack([_as_tensor(example["pixel_values"], "pixel_values") for example in features])
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be images [3, H, W] each; the batch has shape {tuple(pixel_values.shape)}")
        batch = {"pixel_values": pixel_values}
        keys = [("labels" if "labels" in example else "label" if "label" in example else None) for example in features]
        if any(key is not None for key in keys):
            if None in keys:
                raise ValueError(f"example {keys.index(None)} has no label while others have one")
            batch["labels"] = torch.tensor([int(example[key]) for example, key in zip(features, keys, strict=True)])
            if self.flip:
                batch["flipped_pixel_values"] = pixel_values.flip(-1)
        return batch


def fer_compute_metrics(label_names: Sequence[str]) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for ``transformers.Trainer`` giving fer-mek's metrics: ``accuracy``,
    ``mean_class_accuracy`` (the MEK papers' headline number on imbalanced data) and ``macro_f1``, computed with the
    offline metric module :mod:`fer_mek.metrics` (``evaluate.load("accuracy")`` needs the Hub).

    Args:
        label_names: Class names in index order (``[model.config.id2label[i] for i in range(model.config.num_labels)]``).
    """
    from .metrics import compute_metrics, load_metric

    names = [str(name) for name in label_names]
    metric = load_metric()

    def compute(eval_pred: Any) -> dict[str, float]:
        predictions, labels = eval_pred[0], eval_pred[1]
        if isinstance(predictions, (tuple, list)):  # a model whose config does not drop the other outputs
            predictions = predictions[0]
        results = compute_metrics(np.argmax(predictions, axis=1), labels, names, metric=metric)
        return {key: float(results[key]) for key in ("accuracy", "mean_class_accuracy", "macro_f1")}

    return compute

"""``transformers.Trainer`` on a MEK model: the library's collator, the tutorial's ``compute_metrics``, and the
warning when MEK's attention term has no flipped images to work with."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fer_mek import MEKConfig, MEKForImageClassification
from fer_mek.hf_trainer import MEKDataCollator, fer_compute_metrics

from .conftest import TINY_BACKBONE, TINY_IMAGE_SIZE


def tiny_dataset(n: int = 12, num_labels: int = 3, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {"pixel_values": torch.randn(3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=generator), "label": i % num_labels}
        for i in range(n)
    ]


def tiny_model(num_labels: int = 3, **kwargs) -> MEKForImageClassification:
    torch.manual_seed(0)
    config = MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE,
                       id2label={i: f"class{i}" for i in range(num_labels)}, **kwargs)
    return MEKForImageClassification(config)


def test_collator_builds_the_flipped_pair():
    examples = tiny_dataset(4)
    examples[1] = {"pixel_values": examples[1]["pixel_values"].numpy(), "labels": 1}  # arrays and "labels" too
    batch = MEKDataCollator()(examples)
    assert set(batch) == {"pixel_values", "labels", "flipped_pixel_values"}
    assert batch["pixel_values"].shape == (4, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert torch.equal(batch["flipped_pixel_values"], batch["pixel_values"].flip(-1))
    assert batch["labels"].tolist() == [0, 1, 2, 0]
    assert set(MEKDataCollator(flip=False)(examples)) == {"pixel_values", "labels"}
    assert set(MEKDataCollator()([{"pixel_values": e["pixel_values"]} for e in tiny_dataset(2)])) == {"pixel_values"}
    with pytest.raises(ValueError, match="no 'pixel_values'.*image processor"):
        MEKDataCollator()([{"image": None, "label": 0}])


def test_trainer_trains_and_evaluates_with_the_tutorials_compute_metrics(tmp_path):
    from transformers import Trainer, TrainingArguments

    seen = []

    def compute_metrics(eval_pred):  # the transformers image-classification tutorial's, with numpy for the metric
        predictions, labels = eval_pred
        seen.append(np.asarray(predictions).shape)
        predictions = np.argmax(predictions, axis=1)
        return {"accuracy": float((predictions == labels).mean())}

    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=2,
                             per_device_train_batch_size=4, per_device_eval_batch_size=4, learning_rate=1e-3,
                             remove_unused_columns=False, save_strategy="no", logging_strategy="no",
                             dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=tiny_dataset(12), eval_dataset=tiny_dataset(6, seed=1),
                      data_collator=MEKDataCollator(), compute_metrics=compute_metrics)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the flipped images are there: no warning
        result = trainer.train()
    assert result.global_step == 2
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if "backbone" in k)
    metrics = trainer.evaluate()
    assert seen == [(6, 3)]  # the logits alone, not a tuple with maps and loss terms
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and np.isfinite(metrics["eval_loss"])
    predictions = trainer.predict(tiny_dataset(5, seed=2))
    assert predictions.predictions.shape == (5, 3)
    # fer-mek's own metrics plug in the same way.
    trainer.compute_metrics = fer_compute_metrics(["class0", "class1", "class2"])
    metrics = trainer.evaluate()
    assert {"eval_accuracy", "eval_mean_class_accuracy", "eval_macro_f1"} <= set(metrics)


def test_training_without_flipped_images_warns_once():
    model = tiny_model().train()
    x, labels = torch.randn(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), torch.tensor([0, 1])
    with pytest.warns(UserWarning, match="without flipped_pixel_values.*MEKDataCollator") as record:
        model(x, labels=labels)
        model(x, labels=labels)
    assert sum("flipped_pixel_values" in str(w.message) for w in record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model(x, labels=labels, flipped_pixel_values=x.flip(-1))  # the full MEK loss
        model.eval()(x, labels=labels)  # evaluation: no attention term expected
        tiny_model(attention_weight=0.0).train()(x, labels=labels)  # nothing dropped when the term is off


def test_keys_to_ignore_at_inference_leave_only_logits_and_are_not_saved(tmp_path):
    model = tiny_model().eval()
    outputs = model(torch.randn(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), labels=torch.tensor([0]))
    kept = [key for key in outputs if key not in model.config.keys_to_ignore_at_inference + ["loss"]]
    assert kept == ["logits"]
    model.config.save_pretrained(tmp_path)
    assert "keys_to_ignore_at_inference" not in (tmp_path / "config.json").read_text()

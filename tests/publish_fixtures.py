"""A tiny finished training run for the publishing tests (``test_publish``, ``test_verify``, ``test_model_card``).

:func:`make_run` writes resnet18 at 32 px on a tiny RAF-DB tree, with ``results.json`` in the exact schema of the
trainer (:mod:`fer_mek.train`), its figures and both checkpoints; building it takes a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fer_mek.modeling_mek import remote_code_files

from .conftest import TINY_BACKBONE, TINY_IMAGE_SIZE

REPO_ID = "alice/fer-mek-test"
RAF_TRAIN = (12, 4, 8, 30, 15, 8, 21)
RAF_TEST = (3, 2, 2, 6, 4, 2, 5)
# The run's files and the package's model code (configuration_mek.py, modeling_mek.py, image_processing_mek.py, ...).
EXPECTED_FILES = {
    "README.md", "config.json", "preprocessor_config.json", "model.safetensors", "confusion_matrix.png",
    "training_curves.png", "results.json", *(p.name for p in remote_code_files()),
}


def _metrics(seed: int, references: list[int], labels: list[str]) -> dict:
    from fer_mek.metrics import compute_metrics

    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(len(labels), (len(references),), generator=generator).tolist()
    keep = (torch.rand(len(references), generator=generator) < 0.6).tolist()
    predictions = [r if k else n for r, k, n in zip(references, keep, noise, strict=True)]
    return compute_metrics(predictions, references, labels)


def make_run(root: Path, *, init: dict | None = None) -> Path:
    """A finished tiny run in the layout and results schema of fer_mek.train, on a tiny RAF-DB tree."""
    from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor
    from fer_mek.data import class_counts, get_metadata, load_source
    from fer_mek.data.fixtures import write_rafdb
    from fer_mek.figures import plot_confusion_matrix, plot_training_curves

    data_root = write_rafdb(root / "rafdb", RAF_TRAIN, RAF_TEST, size=32)
    dataset = load_source("rafdb", str(data_root), val_fraction=0.1, seed=0, skip_bad=False)
    labels = list(dataset["train"].features["label"].names)
    counts = {split: class_counts(dataset[split]) for split in dataset}
    run = root / "run"
    config = MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE, id2label=dict(enumerate(labels)),
                       smoothing=0.2, attention_weight=2.0, class_counts=counts["train"])
    for name, seed in (("best", 0), ("last", 1)):
        torch.manual_seed(seed)
        model = MEKForImageClassification(config).eval()
        model.save_pretrained(run / name)
        MEKImageProcessor.from_model_config(config).save_pretrained(run / name)
    history = [{"epoch": e, "train_loss": 2.0 - 0.1 * e, "lr": 1e-3, "val_accuracy": 0.3 + 0.05 * e,
                "val_mean_class_accuracy": 0.2 + 0.05 * e, "val_macro_f1": 0.2 + 0.04 * e} for e in (1, 2, 3)]
    validation = _metrics(1, list(dataset["validation"]["label"]), labels)
    test = _metrics(2, list(dataset["test"]["label"]), labels)
    train_config = {
        "recipe": "rafdb-resnet18-imagenet", "source": "rafdb", "data_root": str(data_root), "val_fraction": 0.1,
        "split_seed": 0, "synthetic_images": 4000, "skip_bad": False, "backbone": TINY_BACKBONE, "head": "linear",
        "init": "timm", "image_size": TINY_IMAGE_SIZE, "dropout": 0.0, "drop_path": 0.0, "method": "mek",
        "smoothing": 0.2, "attention_weight": 2.0, "epochs": 3, "batch_size": 16, "grad_accum": 1,
        "optimizer": "adam", "lr": 0.0002, "weight_decay": 0.0001, "scheduler": "exponential", "warmup_epochs": 1.0,
        "gamma": 0.9, "clip_grad_norm": 5.0, "mixed_precision": "no", "ema_decay": 0.0, "balanced_sampler": False,
        "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "select_metric": "mean_class_accuracy",
        "early_stopping_patience": 0, "output_dir": str(run), "overwrite": False, "resume": False,
        "checkpoint_every": 0, "max_steps": 0, "seed": 0, "num_workers": 0, "log_with": "none",
    }
    results = {
        "run": run.name,
        "recipe": "rafdb-resnet18-imagenet",
        "method": "mek",
        "dataset": {"source": "rafdb", "root": str(data_root), **get_metadata(dataset), "val_fraction": 0.1,
                    "split_seed": 0},
        "label_names": labels,
        "class_counts": counts,
        "balance_weights": config.get_balance_weights(),
        "init": init or {"source": "timm:resnet18", "weights": "timm/resnet18.a1_in1k", "loaded_tensors": 120,
                         "dropped_keys": []},
        "selection": {"metric": "mean_class_accuracy", "best_epoch": 2, "checkpoint": "best", "ema": False},
        "validation": validation,
        "test": test,
        "history": history,
        "config": train_config,
        "environment": {"fer_mek": "0.1.0", "torch": torch.__version__, "num_processes": 1, "device": "cpu",
                        "mixed_precision": "no", "tracker": "none"},
        "train_seconds": 12.3,
    }
    (run / "results.json").write_text(json.dumps(results, indent=2))
    plot_confusion_matrix(test["confusion_matrix"], labels, run / "confusion_matrix.png", title="rafdb test")
    plot_training_curves(history, run / "training_curves.png", best_epoch=2)
    (run / "train_config.yaml").write_text("source: rafdb\n")
    return run


def images(count: int = 3, size: int = 40) -> list:
    from PIL import Image

    generator = torch.Generator().manual_seed(5)
    return [Image.fromarray(torch.randint(0, 255, (size, size + 7, 3), generator=generator, dtype=torch.uint8)
                            .numpy()) for _ in range(count)]


def reference_logits(model_dir: Path, pictures: list) -> torch.Tensor:
    from fer_mek import MEKForImageClassification, MEKImageProcessor

    model = MEKForImageClassification.from_pretrained(model_dir).eval()
    processor = MEKImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        return model(**processor(pictures, return_tensors="pt")).logits

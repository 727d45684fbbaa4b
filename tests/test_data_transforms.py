"""Training / evaluation transforms and the MEK flip pairing."""

from __future__ import annotations

import pickle
import random

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from fer_mek import MEKConfig, MEKImageProcessor
from fer_mek.data import (
    MEKBatchTransform,
    build_eval_transform,
    build_train_transform,
    collate_fn,
    make_transform,
)
from fer_mek.data.common import make_split
from fer_mek.data.synthetic import render_face
from fer_mek.data.transforms import processor_settings
from fer_mek.labels import RAFDB_LABELS

SIZE = 40


@pytest.fixture(scope="module")
def processor() -> MEKImageProcessor:
    return MEKImageProcessor(size={"height": SIZE, "width": SIZE})


@pytest.fixture(scope="module")
def split() -> datasets.Dataset:
    images = [render_face(i % 7, 48, [0, i], supersample=1) for i in range(12)]
    images[0] = images[0].convert("L")  # FER-2013-like grayscale
    images[1] = images[1].convert("RGBA")
    images[2] = images[2].convert("P")
    return make_split(images, [i % 7 for i in range(12)], RAFDB_LABELS)


def test_flipped_pixel_values_are_the_exact_flip_of_the_augmented_image(processor, split) -> None:
    train = split.with_transform(make_transform(processor, train=True))
    for i in range(len(split)):
        example = train[i]
        assert example["pixel_values"].shape == (3, SIZE, SIZE) and example["pixel_values"].dtype == torch.float32
        assert torch.equal(example["flipped_pixel_values"], example["pixel_values"].flip(-1))
        assert example["labels"] == split[i]["label"]
    batch = collate_fn(train.__getitems__(list(range(8))))
    assert batch["pixel_values"].shape == (8, 3, SIZE, SIZE)
    assert torch.equal(batch["flipped_pixel_values"], batch["pixel_values"].flip(-1))
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [i % 7 for i in range(8)]


def test_training_augmentation_is_random_and_seedable(processor, split) -> None:
    transform = build_train_transform(processor, re_prob=0.5)
    image = split[3]["image"]

    def draw(seed: int) -> torch.Tensor:
        random.seed(seed)  # timm and torchvision draw from python's, numpy's and torch's generators
        np.random.seed(seed)
        torch.manual_seed(seed)
        return transform(image)

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


def test_eval_transform_matches_the_image_processor(processor, split) -> None:
    transform = build_eval_transform(processor)
    for i in range(4):
        image = split[i]["image"]
        expected = torch.as_tensor(processor(image, return_tensors="pt")["pixel_values"][0])
        assert torch.allclose(transform(image), expected, atol=1e-4)


def test_eval_has_no_flip_by_default_and_respects_size(split) -> None:
    processor = MEKImageProcessor(size={"height": 32, "width": 24}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    evaluation = split.with_transform(make_transform(processor, train=False))
    example = evaluation[0]
    assert set(example) == {"pixel_values", "labels"} and example["pixel_values"].shape == (3, 32, 24)
    paired = split.with_transform(make_transform(processor, train=False, with_flip=True))[0]
    assert torch.equal(paired["flipped_pixel_values"], paired["pixel_values"].flip(-1))
    with pytest.raises(TypeError, match="only apply with train=True"):
        make_transform(processor, train=False, re_prob=0.0)


def test_augmentation_options_reach_timm(processor) -> None:
    plain = build_train_transform(processor, auto_augment=None, re_prob=0.0, rotation=0, color_jitter=None, hflip=0.0)
    text = repr(plain)
    assert "RandAugment" not in text and "RandomErasing" not in text and "RandomRotation" not in text
    assert "ColorJitter" not in text and "RandomResizedCrop" in text
    full = repr(build_train_transform(processor))
    assert "RandAugment" in full and "RandomErasing" in full and "RandomRotation" in full and "to_rgb8" in full


def test_grayscale_input_becomes_three_channels(processor) -> None:
    gray = Image.fromarray(np.full((48, 48), 128, np.uint8), mode="L")
    for transform in (build_eval_transform(processor), build_train_transform(processor)):
        assert transform(gray).shape == (3, SIZE, SIZE)
    value = build_eval_transform(processor)(gray)[:, 0, 0]
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    assert torch.allclose(value, (128 / 255 - mean) / std, atol=1e-5)


def test_batch_transform_pickles_and_works_in_a_dataloader(processor, split) -> None:
    transform = pickle.loads(pickle.dumps(make_transform(processor, train=True)))
    assert isinstance(transform, MEKBatchTransform) and transform.with_flip
    loader = torch.utils.data.DataLoader(split.with_transform(transform), batch_size=5, collate_fn=collate_fn)
    batches = list(loader)
    assert [b["pixel_values"].shape[0] for b in batches] == [5, 5, 2]
    assert all(torch.equal(b["flipped_pixel_values"], b["pixel_values"].flip(-1)) for b in batches)


def test_unlabelled_batches_and_settings_from_config() -> None:
    transform = MEKBatchTransform(build_eval_transform(MEKConfig(image_size=16)))
    out = transform({"image": [Image.new("RGB", (20, 20))]})
    assert set(out) == {"pixel_values"} and out["pixel_values"][0].shape == (3, 16, 16)
    assert collate_fn([{"pixel_values": out["pixel_values"][0]}])["pixel_values"].shape == (1, 3, 16, 16)
    settings = processor_settings(MEKConfig(image_size=16, image_mean=[0.5] * 3, image_std=[0.25] * 3))
    assert settings["height"] == settings["width"] == 16 and settings["std"] == [0.25] * 3
    with pytest.raises(ValueError, match="empty batch"):
        collate_fn([])

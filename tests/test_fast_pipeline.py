"""The fast training path: pixel cache, batched augmentation on the device, single-pass MEK forward."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor
from fer_mek.data import (
    NUM_UNIFORMS,
    BatchAugmentation,
    CachedImages,
    build_eval_transform,
    cached_pixels,
    identity_collate,
    load_source,
)
from fer_mek.data.batch_augment import RAND_OPS, parse_rand_augment
from fer_mek.data.fixtures import write_image_folder
from fer_mek.data.folder import load_image_folder

from .conftest import TINY_BACKBONE

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def synthetic():
    return load_source("synthetic", num_images=120, image_size=40)


# ------------------------------------------------------------------------------------------------ pixel cache
def test_cached_pixels_equal_the_evaluation_transform_bit_for_bit(synthetic, tmp_path):
    split = synthetic["test"]
    processor = MEKImageProcessor(size={"height": 32, "width": 24})
    pixels = cached_pixels(split, (32, 24), cache_dir=tmp_path)
    assert isinstance(pixels, np.memmap) and pixels.shape == (len(split), 32, 24, 3) and pixels.dtype == np.uint8
    reference = torch.stack([build_eval_transform(processor)(row["image"]) for row in split])
    images = torch.from_numpy(np.array(pixels)).permute(0, 3, 1, 2).contiguous()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.equal(images.float().mul_(1.0 / 255.0).sub_(mean).div_(std), reference)


def test_cache_is_reused_and_rebuilt_when_an_image_changes_in_place(tmp_path):
    root = write_image_folder(tmp_path / "faces", ["happy", "sad"], [12, 12], [4, 4], size=24, style="flat")
    data = load_image_folder(root, val_fraction=0.25)
    cache = tmp_path / "cache"
    first = cached_pixels(data["train"], 16, cache_dir=cache)
    files = list((cache / "pixels").glob("*.npy"))
    assert len(files) == 1
    assert cached_pixels(data["train"], 16, cache_dir=cache).filename == first.filename  # reused
    # Same path, new content: the stale cache must not be served.
    changed = data["train"].data.column("image").chunks[0].field("path").to_pylist()[0]
    PILImage.new("RGB", (24, 24), (255, 0, 0)).save(changed)
    os.utime(changed, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    again = cached_pixels(load_image_folder(root, val_fraction=0.25)["train"], 16, cache_dir=cache)
    assert again.filename != first.filename
    assert not list((cache / "pixels").glob(".*"))  # no staging leftovers


def test_in_memory_cache_and_bad_image_error_names_the_position(tmp_path):
    import datasets

    good = PILImage.new("RGB", (8, 8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    split = datasets.Dataset.from_dict({"image": [good, str(broken)]}, features=datasets.Features({"image": datasets.Image()}))
    assert cached_pixels(split.select([0]), 4).shape == (1, 4, 4, 3)
    with pytest.raises(ValueError, match=r"image 1 of the split \(.*broken.jpg\).*--skip-bad"):
        cached_pixels(split, 4)


def test_cached_images_serve_batches_with_per_sample_random_numbers():
    pixels = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    data = CachedImages(pixels, [0, 1, 2, 3, 4], seed=7)
    batch = identity_collate(data.__getitems__([3, 1, 5 + 1]))  # 5 + 1: sample 1 in epoch 1
    assert batch["images"].shape == (3, 3, 4, 4) and batch["images"].dtype == torch.uint8
    assert torch.equal(batch["images"][0], torch.from_numpy(pixels[3]).permute(2, 0, 1))
    assert batch["labels"].tolist() == [3, 1, 1]
    assert batch["uniforms"].shape == (3, NUM_UNIFORMS)
    # A sample's numbers depend on (seed, epoch, index) only, not on its batch; a new epoch draws new ones.
    alone = data.__getitems__([1])["uniforms"][0]
    assert torch.equal(alone, batch["uniforms"][1])
    assert not torch.equal(batch["uniforms"][1], batch["uniforms"][2])
    assert "uniforms" not in CachedImages(pixels, [0] * 5).__getitems__([0])
    with pytest.raises(ValueError, match="5 cached images but 2 labels"):
        CachedImages(pixels, [0, 1])


# ------------------------------------------------------------------------------------------------ augmentation
def _uniforms(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, NUM_UNIFORMS, generator=torch.Generator().manual_seed(seed))


def test_identity_settings_give_the_normalised_image_and_flip_mirrors_exactly():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    plain = BatchAugmentation(16, MEAN, STD, auto_augment=None, re_prob=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                              rotation=0.0, hflip=0.0, color_jitter=None)
    expected = (images.float() / 255.0 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(plain(images, _uniforms(4)), expected, atol=1e-5, rtol=0)
    flipping = BatchAugmentation(16, MEAN, STD, auto_augment=None, re_prob=0.0, scale=(1.0, 1.0),
                                 ratio=(1.0, 1.0), rotation=0.0, hflip=1.0, color_jitter=None)
    torch.testing.assert_close(flipping(images, _uniforms(4)), expected.flip(-1), atol=1e-5, rtol=0)


def test_augmentation_is_a_function_of_each_samples_numbers():
    augment = BatchAugmentation(24, MEAN, STD)  # the official policy: RandAugment m9 mstd0.5 inc1, erasing 0.25
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    uniforms = _uniforms(16)
    out = augment(images, uniforms)
    assert out.shape == (16, 3, 24, 24) and out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(augment(images, uniforms), out)
    # Sample 3 alone, or in another batch, is augmented the same way.
    torch.testing.assert_close(augment(images[3:4], uniforms[3:4]), out[3:4], atol=1e-5, rtol=0)
    assert not torch.allclose(augment(images, _uniforms(16, seed=1)), out)


@pytest.mark.parametrize("op", RAND_OPS)
def test_every_rand_augment_operation_runs_and_changes_the_image(op):
    augment = BatchAugmentation(16, MEAN, STD, re_prob=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), rotation=0.0,
                                hflip=0.0, normalize=False)
    images = torch.randint(30, 220, (3, 3, 16, 16), dtype=torch.uint8)
    uniforms = torch.zeros(3, NUM_UNIFORMS)
    index = RAND_OPS.index(op)
    uniforms[:, 6] = (index + 0.5) / len(RAND_OPS)  # layer 1 draws `op`
    uniforms[:, 7] = 0.0  # applied (p = 0.5)
    uniforms[:, 8] = 0.9  # magnitude above m
    uniforms[:, 9] = 0.9  # positive sign
    uniforms[:, 11] = 0.99  # layer 2 not applied
    out = augment(images, uniforms)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.allclose(out, images.float() / 255.0, atol=1e-3), f"{op} left the images unchanged"


def test_random_erasing_rate_and_rand_augment_policy_parsing():
    augment = BatchAugmentation(16, MEAN, STD, auto_augment=None, re_prob=0.5, color_jitter=None)
    images = torch.full((400, 3, 16, 16), 255, dtype=torch.uint8)
    out = augment(images, _uniforms(400))
    erased = (out == 0).all(dim=1).flatten(1).any(dim=1).float().mean().item()
    assert 0.4 < erased < 0.6
    assert parse_rand_augment("rand-m9-mstd0.5-inc1") == {"m": 9.0, "n": 2.0, "mstd": 0.5, "p": 0.5, "inc": 1.0,
                                                          "mmax": 10.0}
    with pytest.raises(ValueError, match="per-sample"):
        parse_rand_augment("augmix-m5")
    with pytest.raises(ValueError, match="inc1"):
        parse_rand_augment("rand-m9")
    with pytest.raises(ValueError, match="uniforms must be"):
        augment(images[:2], _uniforms(3))


# ------------------------------------------------------------------------------------------------ single pass
def _tiny_model() -> MEKForImageClassification:
    torch.manual_seed(0)
    config = MEKConfig(backbone=TINY_BACKBONE, image_size=32, num_labels=7, class_counts=[10, 2, 4, 40, 16, 6, 22])
    return MEKForImageClassification(config)


def test_single_pass_equals_two_passes_in_eval_mode():
    model = _tiny_model().eval()
    x = torch.randn(6, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    two = model(pixel_values=x, labels=labels, flipped_pixel_values=x.flip(-1))
    one = model(pixel_values=x, labels=labels, flipped_pixel_values=x.flip(-1), single_pass=True)
    for name in ("loss", "smooth_label_loss", "attention_loss", "logits", "attention_maps"):
        torch.testing.assert_close(getattr(one, name), getattr(two, name), atol=1e-5, rtol=1e-5)


def test_single_pass_in_training_mode_differs_only_through_batchnorm_statistics():
    """BatchNorm normalises [x; flip(x)] with statistics of both halves: on a batch of 32 the losses agree to 1% and
    the gradients point the same way (the difference shrinks as the batch grows)."""
    torch.manual_seed(1)
    x = torch.randn(32, 3, 64, 64)
    labels = torch.arange(32) % 7
    results = []
    for single in (False, True):
        torch.manual_seed(0)
        config = MEKConfig(backbone=TINY_BACKBONE, image_size=64, num_labels=7, class_counts=[10, 2, 4, 40, 16, 6, 22])
        model = MEKForImageClassification(config).train()
        out = model(pixel_values=x, labels=labels, flipped_pixel_values=x.flip(-1), single_pass=single)
        out.loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((out, grads))
    (two, grads_two), (one, grads_one) = results
    torch.testing.assert_close(one.smooth_label_loss, two.smooth_label_loss, rtol=0.01, atol=0)
    torch.testing.assert_close(one.attention_loss, two.attention_loss, rtol=0.05, atol=0)
    assert torch.nn.functional.cosine_similarity(grads_one, grads_two, dim=0) > 0.9

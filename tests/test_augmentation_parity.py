"""Augmentation parity with the sources: the same random state gives the same tensor (per-sample path).

The sources' pipelines are rebuilt here from the facts read in their code (MEK-CV ``kaggle/mek_resnet18.py``
lines 146-152 / 155-160, ``mek_resnet34.py``, ``mek_resnet18_MS-Celeb-1M.py``; the official MEK code's
``expression/__init__.py:97-109`` and ``expression/datasets.py:20-27, 84-90``) with the installed torchvision and
timm, and compared with fer-mek's :func:`~fer_mek.data.build_train_transform` given the recipe options.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms as T
from torchvision.transforms import v2

from fer_mek import MEKImageProcessor
from fer_mek.data import (
    BatchAugmentation,
    MEKBatchTransform,
    batched_augmentation_kwargs,
    batched_augmentation_supports,
    build_eval_transform,
    build_train_transform,
    render_face,
)
from fer_mek.data.transforms import AUGMENTATION_OPTIONS, RAND_AUGMENT

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZE = 64  # MEK-CV uses 224; a smaller side keeps the test fast and changes no code path
SEEDS = range(16)


def _seeded(transform: Callable, image: Image.Image, seed: int) -> tuple[torch.Tensor, tuple]:
    """``transform(image)`` after seeding every generator; also the generators' states afterwards."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    out = transform(image)
    return out, (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())


def _same(source: Callable, ours: Callable, source_image: Image.Image, our_image: Image.Image) -> list[torch.Tensor]:
    outputs = []
    for seed in SEEDS:
        expected, expected_states = _seeded(source, source_image, seed)
        got, got_states = _seeded(ours, our_image, seed)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        assert torch.equal(got, expected), f"seed {seed}: max difference {(got - expected).abs().max()}"
        # Same draws consumed: the generators are left in the same states.
        assert torch.equal(got_states[0], expected_states[0]) and got_states[1] == expected_states[1]
        assert np.array_equal(got_states[2], expected_states[2])
        outputs.append(got)
    assert len({o.sum().item() for o in outputs}) == len(outputs)  # the augmentation does vary with the state
    return outputs


@pytest.fixture(scope="module")
def face() -> Image.Image:
    return render_face(3, 100, [0, 11])  # RAF-DB's aligned images are 100 x 100 RGB


def mek_cv_source(rotation: float, jitter: float, erasing: float, size: int = SIZE) -> T.Compose:
    """MEK-CV's train transform (A.6-A.12): torchvision v1, PIL backend, in this order, no random flip."""
    return T.Compose([
        T.Resize((size, size)),
        T.RandomCrop(size, padding=8),
        T.RandomRotation(rotation),
        T.ColorJitter(brightness=jitter, contrast=jitter),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        T.RandomErasing(p=erasing, scale=(0.02, 0.2)),
    ])


def mek_cv_options(rotation: float, jitter: float, erasing: float) -> dict:
    """The recipe options that express MEK-CV's transform."""
    return dict(crop="padded", crop_padding=8, train_interpolation="bilinear", rotation=rotation,
                rotation_interpolation="nearest", hflip=0.0, color_jitter=[jitter, jitter, 0.0, 0.0],
                auto_augment="", re_prob=erasing, re_scale=[0.02, 0.2], re_mode="torchvision")


@pytest.mark.parametrize(
    ("rotation", "jitter", "erasing"),
    [(15, 0.3, 0.25), (10, 0.2, 0.5), (15, 0.3, 1.0)],
    ids=["rafdb", "fer2013", "always-erase"],
)
def test_mek_cv_transform_is_the_source_pipeline(face, rotation, jitter, erasing) -> None:
    processor = MEKImageProcessor(size={"height": SIZE, "width": SIZE})  # ImageNet mean / std, bilinear
    ours = build_train_transform(processor, **mek_cv_options(rotation, jitter, erasing))
    outputs = _same(mek_cv_source(rotation, jitter, erasing), ours, face, face)
    if erasing == 1.0:  # the erased box is 0 after normalisation in every channel: the ImageNet mean colour
        assert all(bool((out == 0).all(0).any()) for out in outputs)


def test_mek_cv_transform_on_fer2013_grayscale(face) -> None:
    # FER-2013's 48x48 grayscale images: ImageFolder's loader converts them to RGB, fer-mek's chain does the same.
    gray = face.convert("L").resize((48, 48))
    processor = MEKImageProcessor(size={"height": SIZE, "width": SIZE})
    ours = build_train_transform(processor, **mek_cv_options(10, 0.2, 0.5))
    _same(mek_cv_source(10, 0.2, 0.5), ours, gray.convert("RGB"), gray)


def test_official_swin_transform_is_timms_create_transform(face) -> None:
    # The official call (expression/__init__.py:97-109 with configs/exp.py), hflip left at timm's default 0.5.
    source = create_transform(input_size=112, is_training=True, scale=(1, 1), ratio=(1, 1), color_jitter=0.4,
                              auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25, re_mode="pixel", re_count=1,
                              interpolation="bicubic", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    processor = MEKImageProcessor(size={"height": 112, "width": 112}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ours = build_train_transform(processor, crop="random-resized", crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0],
                                 train_interpolation="bicubic", rotation=0.0, hflip=0.5, color_jitter=[0.4] * 3,
                                 auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25, re_mode="pixel")
    # The official dataset opens every image with .convert('RGB') (expression/datasets.py:84).
    _same(source, ours, face.convert("RGB"), face)


def test_default_transform_is_todays(face) -> None:
    # The training transform before the augmentation options existed, composed literally.
    processor = MEKImageProcessor(size={"height": 40, "width": 40})
    today = v2.Compose([
        v2.RGB(),
        v2.RandomRotation(10.0, interpolation=v2.InterpolationMode.BILINEAR),
        create_transform(input_size=(3, 40, 40), is_training=True, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
                         color_jitter=0.4, auto_augment=RAND_AUGMENT, interpolation="bilinear",
                         mean=tuple(processor.image_mean), std=tuple(processor.image_std), re_prob=0.25,
                         re_mode="const", re_count=1, normalize=True),
    ])
    _same(today, build_train_transform(processor), face, face)
    plain = dict(auto_augment=None, re_prob=0.5, rotation=0.0, hflip=0.0, color_jitter=0.3)
    today_plain = create_transform(input_size=(3, 40, 40), is_training=True, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3),
                                   hflip=0.0, color_jitter=0.3, auto_augment=None, interpolation="bilinear",
                                   mean=tuple(processor.image_mean), std=tuple(processor.image_std), re_prob=0.5)
    _same(v2.Compose([v2.RGB(), today_plain]), build_train_transform(processor, **plain), face, face)


def test_paired_flip_is_the_flip_of_the_augmented_tensor(face) -> None:
    processor = MEKImageProcessor(size={"height": SIZE, "width": SIZE})
    pair = MEKBatchTransform(build_train_transform(processor, **mek_cv_options(15, 0.3, 1.0)), with_flip=True)
    source = mek_cv_source(15, 0.3, 1.0)
    for seed in range(4):
        out, _ = _seeded(lambda image: pair({"image": [image], "label": [3]}), face, seed)
        expected, _ = _seeded(source, face, seed)
        assert torch.equal(out["pixel_values"][0], expected)
        # MEK-CV: RandomHorizontalFlip(p=1.0) of the augmented (erased) tensor (A.13).
        assert torch.equal(out["flipped_pixel_values"][0], T.RandomHorizontalFlip(p=1.0)(expected))
        assert torch.equal(out["flipped_pixel_values"][0], expected.flip(-1)) and out["labels"] == [3]


@pytest.mark.parametrize(
    ("size", "mean", "std"), [(224, IMAGENET_MEAN, IMAGENET_STD), (112, [0.5] * 3, [0.5] * 3)], ids=["mek-cv", "official"]
)
def test_eval_transform_against_the_sources(face, size, mean, std) -> None:
    """MEK-CV: Resize((224, 224)) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet) (A.14); official:
    Resize([112, 112]) -> ToTensor -> Normalize(0.5) (C.10); both bilinear on PIL images.

    The resized pixels are the same, and the image processor (inference) gives the sources' tensor exactly. The
    evaluation transform rescales with ``v2.ToDtype(scale=True)`` (``x * (1/255)``) where ``ToTensor`` divides by
    255: the two differ in the last bit of some values (at most 1 ulp before normalisation). Making them equal would
    change every evaluation number fer-mek has produced (and the pixel cache, which multiplies as well), so the
    difference is pinned here instead.
    """
    processor = MEKImageProcessor(size={"height": size, "width": size}, image_mean=mean, image_std=std)
    source = T.Compose([T.Resize((size, size)), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    expected = source(face)
    ours = build_eval_transform(processor)(face)
    resized = T.Resize((size, size))(face)
    assert np.array_equal(np.asarray(v2.Resize((size, size), antialias=True)(face)), np.asarray(resized))
    rescaled_by_product = T.Normalize(mean, std)(T.PILToTensor()(resized).float().mul(1.0 / 255.0))
    assert torch.equal(ours, rescaled_by_product)
    assert torch.allclose(ours, expected, rtol=0, atol=2e-6)
    assert torch.equal(torch.as_tensor(processor(face, return_tensors="pt")["pixel_values"][0]), expected)


# ------------------------------------------------------------------------------------------ the batched path
def test_batched_path_defaults_are_todays_and_unsupported_options_are_named() -> None:
    assert batched_augmentation_supports() is None
    kwargs = batched_augmentation_kwargs()
    default, wired = BatchAugmentation(16, IMAGENET_MEAN, IMAGENET_STD), BatchAugmentation(16, IMAGENET_MEAN,
                                                                                         IMAGENET_STD, **kwargs)
    assert default.extra_repr() == wired.extra_repr() and default.interpolation == wired.interpolation
    images = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    uniforms = torch.rand(4, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(default(images, uniforms), wired(images, uniforms))
    # Options the batched pipeline implements.
    assert batched_augmentation_supports(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], hflip=0.0, rotation=0.0,
                                         train_interpolation="bicubic", auto_augment="", color_jitter=[0.2] * 3) is None
    assert batched_augmentation_kwargs(auto_augment="", color_jitter=[0.2] * 3)["color_jitter"] == 0.2
    # MEK-CV's and the official erasing are not: the message names them and the per-sample path.
    reason = batched_augmentation_supports(**mek_cv_options(15, 0.3, 0.25))
    assert reason is not None and "--data-pipeline per-sample" in reason
    for name in ("crop='padded'", "rotation_interpolation='nearest'", "color_jitter", "re_mode='torchvision'",
                 "re_scale"):
        assert name in reason
    assert "re_mode='pixel'" in batched_augmentation_supports(re_mode="pixel")
    assert "auto_augment" in batched_augmentation_supports(auto_augment="rand-m9-mstd0.5")  # no inc1
    with pytest.raises(ValueError, match="per-sample"):
        batched_augmentation_kwargs(crop="padded")


def test_augmentation_option_names() -> None:
    import inspect

    per_sample = [p for p in inspect.signature(build_train_transform).parameters if p != "image_processor"]
    batched = list(inspect.signature(batched_augmentation_supports).parameters)
    assert per_sample == batched == [*AUGMENTATION_OPTIONS, "re_count"]


def test_option_errors_name_the_option() -> None:
    processor = MEKImageProcessor(size={"height": 32, "width": 32})
    with pytest.raises(ValueError, match="crop_padding"):
        build_train_transform(processor, crop_padding=8)
    with pytest.raises(ValueError, match="crop_scale"):
        build_train_transform(processor, crop="padded", crop_scale=[1.0, 1.0])
    with pytest.raises(ValueError, match="crop must be"):
        build_train_transform(processor, crop="center")
    with pytest.raises(ValueError, match="re_mode"):
        build_train_transform(processor, re_mode="zeros")
    with pytest.raises(ValueError, match="color_jitter"):
        build_train_transform(processor, color_jitter=[0.1, 0.2])
    with pytest.raises(ValueError, match="train_interpolation"):
        build_train_transform(processor, crop="padded", train_interpolation="random")
    with pytest.raises(ValueError, match="re_count"):
        build_train_transform(processor, re_mode="torchvision", re_count=2)


def test_padded_chain_with_flip_and_rand_augment(face) -> None:
    processor = MEKImageProcessor(size={"height": 32, "width": 32})
    transform = build_train_transform(processor, crop="padded", crop_padding=4, hflip=0.5, auto_augment=RAND_AUGMENT,
                                      color_jitter=0.4, re_prob=0.5, re_mode="pixel")
    text = repr(transform)
    assert "RandomHorizontalFlip" in text and "RandAugment" in text and "ColorJitter" not in text
    assert "RandomErasing(p=0.5, mode=pixel" in text
    out, _ = _seeded(transform, face, 0)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    off = repr(build_train_transform(processor, crop="padded", auto_augment=None, color_jitter=[0, 0, 0], re_prob=0,
                                     rotation=0, hflip=0))
    assert "ColorJitter" not in off and "RandomErasing" not in off and "RandomRotation" not in off

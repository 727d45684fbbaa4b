"""A procedurally drawn facial-expression set: the default data of every script, so a fresh clone needs no download.

The faces are synthetic cartoons. They exercise the whole pipeline (loading, augmentation, MEK's imbalance-aware
losses, evaluation) with RAF-DB's class names and RAF-DB-like class imbalance; **no claim about accuracy on real
facial expressions rests on them**.

Each expression is a set of facial-action deltas from a neutral face (brow height / inner-brow raise / arch, eye
opening and lids, mouth corners / opening / width, upper-lip raise, lip pressing, nose wrinkle, cheek folds),
scaled by a random intensity (0.8-1.5) and perturbed by per-image noise, so weak expressions drift towards neutral.
Three look-alike pairs share most actions, as in real data (indices in ``RAFDB_LABELS`` order): 0/1 (brows up, eyes
wide, mouth open: round vs. stretched mouth, inner brows drawn up), 2/5 (brows down, squint: wrinkled nose and
raised upper lip vs. pressed lips and a V-shaped brow) and 4/6 (sad = raised inner brows and lowered corners, weak
at low intensity). Nuisance factors: face shape and size, skin tone, hair, position, in-plane rotation and yaw,
lighting gradient, colour cast, background, glasses, blur, noise, grayscale, and partial occlusions (hand, bar,
sunglasses) that can hide the telling region.

Images are deterministic functions of ``(seed, index)`` (NumPy PCG64), JPEG-encoded like RAF-DB, and a generated
set is cached with ``save_to_disk`` under ``<cache_dir>/synthetic/<hash of the arguments>``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter

from fer_mek_cli.defaults import SYNTHETIC_IMAGE_SIZE, SYNTHETIC_NUM_IMAGES  # the default run's set

from ..io import atomic_directory
from ..labels import RAFDB_LABELS
from .common import (
    allocate_counts,
    check_val_split,
    class_counts,
    get_metadata,
    make_split,
    set_metadata,
    split_from_train,
)

__all__ = [
    "RAFDB_TRAIN_COUNTS",
    "SYNTHETIC_IMAGE_SIZE",
    "SYNTHETIC_NUM_IMAGES",
    "default_cache_dir",
    "load_synthetic",
    "render_face",
    "synthetic_split_counts",
]

#: RAF-DB basic training images per class, in ``RAFDB_LABELS`` order: the default class proportions.
RAFDB_TRAIN_COUNTS: tuple[int, ...] = (1290, 281, 717, 4772, 1982, 705, 2524)
#: ``val_fraction`` of the generated set that ``val_split="permutation"`` / ``"none"`` re-split (the default layout).
_POOL_VAL_FRACTION = 0.1
#: Bump when the drawing changes: it is part of the cache key.
GENERATOR_VERSION = 4
_JPEG_QUALITY = 95
_ACTIONS = (
    "brow_raise", "brow_inner", "brow_arch", "eye_open", "lower_lid", "lid_tilt", "mouth_curve",
    "mouth_open", "mouth_width", "lip_raise", "lip_press", "wrinkle", "fold", "asym",
)  # fmt: skip
# Facial-action deltas from neutral, one row per class in RAFDB_LABELS order (FACS action units in comments).
_PROTOTYPES: tuple[dict[str, float], ...] = (
    dict(brow_raise=1.0, brow_inner=0.1, brow_arch=0.6, eye_open=0.6, mouth_open=1.0, mouth_width=-0.4),  # AU1+2+5+26
    dict(brow_raise=0.7, brow_inner=0.6, brow_arch=-0.2, eye_open=0.55, mouth_open=0.45, mouth_width=0.3,
         mouth_curve=-0.3, lip_raise=0.15),  # AU1+2+4+5+20+25
    dict(brow_raise=-0.4, brow_inner=-0.3, eye_open=-0.35, lower_lid=0.4, lip_raise=0.8, mouth_curve=-0.4,
         wrinkle=1.0, fold=0.5, asym=0.6),  # AU4+9+10+15
    dict(brow_raise=0.1, eye_open=-0.3, lower_lid=0.7, mouth_curve=1.0, mouth_width=0.35, mouth_open=0.35,
         fold=0.8),  # AU6+12+25
    dict(brow_inner=0.7, brow_arch=-0.3, eye_open=-0.2, lid_tilt=-0.3, mouth_curve=-0.6, mouth_width=-0.1,
         lip_press=0.2),  # AU1+4+15
    dict(brow_raise=-0.6, brow_inner=-0.9, eye_open=-0.15, lid_tilt=0.6, lower_lid=0.4, lip_press=0.9,
         mouth_curve=-0.2, mouth_width=-0.1),  # AU4+5+7+23
    dict(),  # no action
)  # fmt: skip
_NEUTRAL_INDEX = len(_PROTOTYPES) - 1
_SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 160], [224, 172, 132], [198, 134, 96], [161, 102, 68], [110, 70, 45], [75, 48, 32]],
    dtype=np.float32,
)
_HAIR_COLOURS = np.array(
    [[20, 16, 14], [55, 38, 26], [95, 64, 40], [150, 110, 70], [200, 170, 120], [120, 50, 30], [140, 140, 140]],
    dtype=np.float32,
)
_IRIS_COLOURS = ((60, 40, 25), (90, 60, 30), (50, 90, 130), (70, 110, 70), (40, 30, 25))
if len(_PROTOTYPES) != len(RAFDB_LABELS) or len(RAFDB_TRAIN_COUNTS) != len(RAFDB_LABELS):  # pragma: no cover
    raise RuntimeError("synthetic prototypes / counts must follow fer_mek.labels.RAFDB_LABELS")


def default_cache_dir() -> Path:
    """``$FER_MEK_CACHE``, else ``$XDG_CACHE_HOME/fer_mek``, else ``~/.cache/fer_mek``."""
    if os.environ.get("FER_MEK_CACHE"):
        return Path(os.environ["FER_MEK_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "fer_mek"


def _sample_actions(label: int, rng: np.random.Generator) -> dict[str, float]:
    proto = _PROTOTYPES[label]
    # Intensity and noise set the difficulty: pronounced enough that a small CNN trained from scratch on a CPU for a
    # few minutes learns the classes, weak enough that the look-alike pairs stay confusable.
    intensity = 0.0 if label == _NEUTRAL_INDEX else float(rng.uniform(0.8, 1.5))
    noise = rng.normal(0.0, 0.10, len(_ACTIONS))
    actions = {name: intensity * proto.get(name, 0.0) + float(noise[i]) for i, name in enumerate(_ACTIONS)}
    variant = rng.random()
    if proto.get("lip_press", 0) > 0.5 and variant < 0.25:  # AU4+5+7 with an open, tense mouth
        actions.update(lip_press=0.0, mouth_open=0.6 * intensity, lip_raise=0.4 * intensity)
    if proto.get("fold", 0) > 0.7 and variant < 0.4:  # closed-mouth AU6+12
        actions["mouth_open"] = float(rng.normal(0.0, 0.05))
    return actions


_ANGLES = {n: np.linspace(0.0, 2.0 * math.pi, n, endpoint=False) for n in (12, 16, 24, 40)}
_UNIT_CIRCLES = {n: np.stack([np.cos(a), np.sin(a)], axis=1) for n, a in _ANGLES.items()}
_COS40, _SIN40 = _UNIT_CIRCLES[40][:, 0], _UNIT_CIRCLES[40][:, 1]
_LOWER_HALF = np.clip(_SIN40, 0, None) ** 2
_CAP_COS, _CAP_SIN = np.cos(np.linspace(math.pi, 2 * math.pi, 16)), np.sin(np.linspace(math.pi, 2 * math.pi, 16))
_T13, _T15 = np.linspace(-1, 1, 13), np.linspace(-1, 1, 15)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    return _UNIT_CIRCLES[n] * (rx, ry) + (cx, cy)


def render_face(label: int, size: int = 112, seed: int | Sequence[int] = 0, *, supersample: int = 2) -> PILImage.Image:
    """Draw one synthetic face of class ``label`` (index into ``RAFDB_LABELS``); deterministic in ``seed``.

    Args:
        label: Class index in RAF-DB order.
        size: Side of the square RGB image.
        seed: Seed (or seed sequence, e.g. ``[dataset_seed, index]``) of every random choice.
        supersample: Drawing resolution factor, for anti-aliasing.
    """
    if not 0 <= label < len(RAFDB_LABELS):
        raise ValueError(f"label must be in [0, {len(RAFDB_LABELS) - 1}], got {label}")
    rng = np.random.default_rng(seed)
    act = _sample_actions(label, rng)
    big = size * supersample

    # Background: a low-resolution random colour field, upsampled.
    grid = rng.integers(0, 256, (3, 3, 3)).astype(np.float32)
    grid = grid * rng.uniform(0.3, 1.0) + rng.uniform(0, 255) * (1 - rng.uniform(0.3, 1.0))
    image = PILImage.fromarray(np.clip(grid, 0, 255).astype(np.uint8), "RGB").resize((size, size), PILImage.BILINEAR)
    if supersample > 1:
        image = image.resize((big, big), PILImage.NEAREST)  # exact after the final reduce
    draw = ImageDraw.Draw(image)

    # Pose and face geometry (face units: half-height 1, y down).
    fw = rng.uniform(0.70, 0.86)
    jaw = rng.uniform(0.0, 1.0)
    scale = big * rng.uniform(0.34, 0.44)
    centre = big * (0.5 + rng.uniform(-0.07, 0.07, 2))
    angle = math.radians(rng.uniform(-14, 14))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * scale
    yaw = rng.uniform(-0.12, 0.12)

    shift = centre + rot @ np.array([yaw, 0.0])

    def px(points: np.ndarray, feature: bool = True) -> list[float]:
        """Face units -> flat pixel coordinates [x0, y0, x1, y1, ...] (PIL accepts them as they are)."""
        return (
            (np.asarray(points, dtype=np.float64).reshape(-1, 2) @ rot.T + (shift if feature else centre))
            .ravel()
            .tolist()
        )

    def width(units: float) -> int:
        return max(1, round(units * scale))

    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    skin = _SKIN_TONES[int(tone)] + (tone % 1) * (
        _SKIN_TONES[min(int(tone) + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[int(tone)]
    )
    skin = np.clip(skin * rng.uniform(0.92, 1.08, 3), 0, 255)
    skin_c = tuple(int(v) for v in skin)
    shade_c = tuple(int(v) for v in skin * 0.78)
    line_c = tuple(int(v) for v in skin * 0.55)
    hair_c = tuple(
        int(v) for v in np.clip(_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.8, 1.2), 0, 255)
    )
    hair_style = rng.integers(0, 4)  # 0: none, 1: short, 2: long, 3: fringe

    if hair_style == 2:
        draw.polygon(px(_ellipse(0, 0.05, fw * 1.25, 1.2), False), fill=hair_c)
    draw.polygon(
        px(np.array([[-0.42 * fw, 0.6], [0.42 * fw, 0.6], [0.5 * fw, 1.9], [-0.5 * fw, 1.9]]), False), fill=shade_c
    )
    for side in (-1, 1):
        draw.polygon(px(_ellipse(side * fw * 0.97, -0.02, 0.13, 0.22, 12), False), fill=shade_c)
    narrow = 1.0 - jaw * 0.28 * _LOWER_HALF
    draw.polygon(px(np.stack([fw * _COS40 * narrow, _SIN40], 1), False), fill=skin_c)
    if hair_style in (1, 2, 3):
        hairline = rng.uniform(-0.78, -0.66) + (0.12 if hair_style == 3 else 0.0)
        cap = np.stack([fw * 1.04 * _CAP_COS, -0.08 + _CAP_SIN], 1)
        fringe = np.stack([np.linspace(fw, -fw, 7), hairline + rng.uniform(-0.05, 0.05, 7)], 1)
        draw.polygon(px(np.concatenate([cap, fringe]), False), fill=hair_c)

    # Eyes.
    ex, ey = 0.34 * fw / 0.8, -0.14
    eye_w = rng.uniform(0.12, 0.15)
    opening = max(0.012, 0.07 * (1.0 + 0.9 * act["eye_open"]))
    lower = max(0.008, 0.05 * (1.0 - 0.7 * np.clip(act["lower_lid"], -0.5, 1.0)))
    iris_c = _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))]
    gaze = rng.uniform(-0.03, 0.03, 2)
    tt = _T13
    for side in (-1, 1):
        cx = side * ex
        tilt = act["lid_tilt"] * 0.035 * (-side * tt)  # positive: inner end of the upper lid lower
        upper = ey - opening * np.sqrt(1 - tt**2) + np.where(side * tt < 0, tilt, 0.3 * tilt)
        low = ey + lower * np.sqrt(1 - tt**2)
        xs = cx + eye_w * tt
        almond = np.concatenate([np.stack([xs, upper], 1), np.stack([xs[::-1], low[::-1]], 1)])
        draw.polygon(px(almond), fill=(238, 236, 230))
        pupil = px(np.array([cx + gaze[0], ey + gaze[1]]))
        draw.ellipse(_bbox(pupil, 0.055 * scale), fill=iris_c)
        draw.ellipse(_bbox(pupil, 0.024 * scale), fill=(10, 10, 10))
        lid_top = np.concatenate([np.stack([xs, upper], 1), [[cx + eye_w, ey - 0.16], [cx - eye_w, ey - 0.16]]])
        lid_low = np.concatenate([np.stack([xs, low], 1), [[cx + eye_w, ey + 0.12], [cx - eye_w, ey + 0.12]]])
        draw.polygon(px(lid_top), fill=skin_c)
        draw.polygon(px(lid_low), fill=skin_c)
        draw.line(px(np.stack([xs, upper], 1)), fill=(30, 22, 18), width=width(0.018))
        if act["lower_lid"] > 0.3:
            draw.line(px(np.stack([xs, low + 0.03], 1)), fill=shade_c, width=width(0.012))

    # Brows.
    brow_y = -0.40 - 0.13 * act["brow_raise"]
    thick = rng.uniform(0.04, 0.065)
    for side in (-1, 1):
        inner = (side * 0.10 * fw / 0.8, brow_y - 0.09 * act["brow_inner"] + 0.02)
        outer = (side * 0.50 * fw / 0.8, brow_y + 0.03 * act["brow_inner"] + 0.03)
        middle = (side * 0.30 * fw / 0.8, (inner[1] + outer[1]) / 2 - 0.045 - 0.05 * act["brow_arch"])
        draw.line(px(np.array([inner, middle, outer])), fill=hair_c, width=width(thick), joint="curve")

    # Nose, wrinkles, cheek folds.
    draw.line(px(np.array([[0.02, -0.08], [0.05, 0.2]])), fill=shade_c, width=width(0.02))
    draw.polygon(px(np.array([[-0.1, 0.25], [0.0, 0.29], [0.1, 0.25], [0.0, 0.22]])), fill=line_c)
    if act["wrinkle"] > 0.35:
        for k in range(3):
            y = -0.1 + 0.045 * k
            draw.line(px(np.array([[-0.07, y], [0.0, y - 0.015], [0.07, y]])), fill=line_c, width=width(0.012))
    if act["fold"] > 0.3:
        for side in (-1, 1):
            fold = np.array([[side * 0.15, 0.24], [side * 0.25, 0.42], [side * 0.26, 0.58]])
            draw.line(px(fold), fill=line_c, width=width(0.015 * min(act["fold"], 1.5)), joint="curve")

    # Mouth: a curved baseline, an upper and a lower edge.
    my = 0.55
    mw = 0.31 * (1.0 + 0.6 * act["mouth_width"]) * fw / 0.8
    t = _T15
    corner = -0.10 * act["mouth_curve"]
    base = my + corner * t**2 + 0.03 * act["mouth_curve"]
    bulge = np.sqrt(np.clip(1 - t**2, 0, 1))
    side = 1 if rng.random() < 0.5 else -1
    lift = 0.08 * max(act["lip_raise"], 0.0) * (1 + act["asym"] * side * t).clip(0.2, 2.0)
    open_down = 0.19 * max(act["mouth_open"], 0.0)
    open_up = 0.05 * max(act["mouth_open"], 0.0) + lift
    upper_edge = base - open_up * bulge
    lower_edge = base + open_down * bulge
    xs = mw * t
    lip_c = tuple(int(v) for v in np.clip(skin * [0.75, 0.5, 0.5] + [40, 0, 0], 0, 255))
    lip_w = width(0.045 * (1 - 0.7 * np.clip(act["lip_press"], 0, 1)) + 0.012)
    if float(np.max(open_up)) + open_down > 0.03:
        hole = np.concatenate([np.stack([xs, upper_edge], 1), np.stack([xs[::-1], lower_edge[::-1]], 1)])
        draw.polygon(px(hole), fill=(60, 18, 22))
        if act["mouth_curve"] > 0.3 or act["lip_raise"] > 0.3 or act["mouth_width"] > 0.2:
            teeth = np.concatenate(
                [
                    np.stack([xs * 0.85, upper_edge], 1),
                    np.stack([xs[::-1] * 0.85, (upper_edge + 0.4 * (lower_edge - upper_edge))[::-1]], 1),
                ]
            )
            draw.polygon(px(teeth), fill=(235, 232, 220))
        draw.line(px(np.stack([xs, upper_edge], 1)), fill=lip_c, width=lip_w, joint="curve")
        draw.line(px(np.stack([xs, lower_edge], 1)), fill=lip_c, width=lip_w, joint="curve")
    else:
        draw.line(px(np.stack([xs, base], 1)), fill=lip_c, width=lip_w, joint="curve")
        draw.line(px(np.stack([xs, base], 1)), fill=(70, 25, 25), width=width(0.012), joint="curve")

    # Accessories and occluders.
    if rng.random() < 0.08:  # glasses: thin frames, the eyes stay visible
        for s in (-1, 1):
            draw.ellipse(
                _bbox_xy(px(np.array([[s * ex - 0.2, ey - 0.13], [s * ex + 0.2, ey + 0.13]]))),
                outline=(20, 20, 20),
                width=width(0.02),
            )
    occluder = rng.random()
    if occluder < 0.06:  # sunglasses
        draw.polygon(
            px(
                np.array(
                    [[-ex - 0.22, ey - 0.12], [ex + 0.22, ey - 0.12], [ex + 0.2, ey + 0.12], [-ex - 0.2, ey + 0.12]]
                )
            ),
            fill=(15, 15, 18),
        )
    elif occluder < 0.14:  # a hand over part of the lower face
        hx, hy = rng.uniform(-0.4, 0.4), rng.uniform(0.35, 0.75)
        hand = tuple(int(v) for v in np.clip(skin * rng.uniform(0.85, 1.1), 0, 255))
        draw.polygon(px(_ellipse(hx, hy, rng.uniform(0.22, 0.35), rng.uniform(0.18, 0.28), 16), False), fill=hand)
    elif occluder < 0.20:  # a bar or object anywhere
        x0, y0 = rng.uniform(-1.0, 0.6), rng.uniform(-0.8, 0.7)
        bar = np.array(
            [
                [x0, y0],
                [x0 + rng.uniform(0.3, 1.0), y0],
                [x0 + rng.uniform(0.3, 1.0), y0 + rng.uniform(0.15, 0.4)],
                [x0, y0 + 0.3],
            ]
        )
        draw.polygon(px(bar, False), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))

    if supersample > 1:
        image = image.reduce(supersample)
    if rng.random() < 0.4:
        image = image.filter(ImageFilter.BoxBlur(rng.uniform(0.4, 1.0) * size / 112))

    # Lighting gradient, colour cast and contrast in one gain map; uniform sensor noise; sometimes grayscale.
    direction = rng.uniform(0, 2 * math.pi)
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    light = 1.0 + rng.uniform(0.0, 0.35) * (math.cos(direction) * axis[None, :] + math.sin(direction) * axis[:, None])
    gain = light[..., None] * (rng.uniform(0.9, 1.1, 3) * rng.uniform(0.75, 1.15)).astype(np.float32)
    pixels = np.asarray(image, dtype=np.float32) * gain
    amplitude = int(rng.integers(0, 13))
    if amplitude:
        pixels += rng.integers(-amplitude, amplitude + 1, pixels.shape, dtype=np.int16)
    out = np.clip(pixels, 0, 255).astype(np.uint8)
    if rng.random() < 0.08:
        out = np.repeat(out.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    return PILImage.fromarray(out, "RGB")


def _bbox(centre: list[float], radius: float) -> tuple[float, float, float, float]:
    return centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius


def _bbox_xy(points: list[float]) -> tuple[float, float, float, float]:
    xs, ys = points[0::2], points[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def synthetic_split_counts(
    num_images: int,
    *,
    balanced: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    class_weights: Sequence[float] | None = None,
) -> dict[str, list[int]]:
    """Per-split class counts of a synthetic set: total per class by RAF-DB's train proportions (or balanced);
    per class ``round(test_fraction * n)`` test and ``round(val_fraction * rest)`` validation images, keeping at
    least one training image per class and at least one validation and test image overall."""
    if not 0.0 < val_fraction < 1.0 or not 0.0 < test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ValueError(f"need 0 < val_fraction, test_fraction and their sum < 1, got {val_fraction}, {test_fraction}")
    weights = [1.0] * len(RAFDB_LABELS) if balanced else list(class_weights or RAFDB_TRAIN_COUNTS)
    if len(weights) != len(RAFDB_LABELS) or min(weights) <= 0:
        raise ValueError(f"class_weights needs {len(RAFDB_LABELS)} positive values, got {weights}")
    totals = allocate_counts(num_images, weights)
    test = [min(n - 1, round(test_fraction * n)) for n in totals]
    val = [min(n - t - 1, round(val_fraction * (n - t))) for n, t in zip(totals, test, strict=True)]
    for counts in (test, val):
        if sum(counts) == 0:
            spare = [n - t - v for n, t, v in zip(totals, test, val, strict=True)]
            best = int(np.argmax(spare))
            if spare[best] < 2:
                raise ValueError(f"num_images={num_images} is too small for train, validation and test splits")
            counts[best] += 1
    train = [n - t - v for n, t, v in zip(totals, test, val, strict=True)]
    return {"train": train, "validation": val, "test": test}


def _encode(image: PILImage.Image, index: int) -> dict[str, Any]:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return {"bytes": buffer.getvalue(), "path": f"synthetic_{index:06d}.jpg"}


def _generate(params: dict[str, Any]) -> datasets.DatasetDict:
    counts = synthetic_split_counts(
        params["num_images"],
        balanced=params["balanced"],
        val_fraction=params["val_fraction"],
        test_fraction=params["test_fraction"],
        class_weights=params["class_weights"],
    )
    seed = params["seed"]
    order_rng = np.random.default_rng([seed, 1_000_003])
    splits: dict[str, datasets.Dataset] = {}
    index = 0
    for split, per_class in counts.items():
        labels = np.repeat(np.arange(len(per_class)), per_class)
        labels = labels[order_rng.permutation(labels.size)]
        images = []
        for label in labels:
            images.append(_encode(render_face(int(label), params["image_size"], [seed, index]), index))
            index += 1
        splits[split] = make_split(images, labels.tolist(), RAFDB_LABELS)
    dataset_dict = datasets.DatasetDict(splits)
    set_metadata(
        dataset_dict,
        {
            "source": "synthetic",
            "layout": "generated",
            "synthetic": True,
            "note": "procedurally drawn faces; no claim about real facial-expression accuracy rests on them",
            "generator_version": GENERATOR_VERSION,
            **params,
            "validation": "stratified_from_train",
            "protocol": (
                f"validation = stratified {params['val_fraction']:g} of train (seed {seed}); "
                f"test = stratified {params['test_fraction']:g} of all images; test used only for the final report"
            ),
            "class_counts": counts,
            "label_names": list(RAFDB_LABELS),
            "num_skipped": 0,
            "skipped": [],
            "skip_bad": False,
        },
    )
    return dataset_dict


def load_synthetic(
    num_images: int = SYNTHETIC_NUM_IMAGES,
    image_size: int = SYNTHETIC_IMAGE_SIZE,
    seed: int = 0,
    balanced: bool = False,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    class_weights: Sequence[float] | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    val_split: str = "stratified",
) -> datasets.DatasetDict:
    """The synthetic expression set: train / validation / test with ``RAFDB_LABELS`` classes.

    Class totals follow RAF-DB's training proportions (1290, 281, 717, 4772, 1982, 705, 2524) unless ``balanced``;
    each class is split into test (``test_fraction``), validation (``val_fraction`` of the rest) and train, so the
    validation share of each class is within one image of ``val_fraction`` of its train+validation images.
    Deterministic in all arguments; a few thousand 112-px images per second on one core.

    Args:
        num_images: Total images over the three splits (at least 12; every class keeps a training image).
        image_size: Side of the square RGB images.
        seed: Seed of everything (drawing and split assignment).
        balanced: Equal class totals instead of RAF-DB's proportions.
        val_fraction: Validation share of each class's non-test images.
        test_fraction: Test share of each class's images.
        class_weights: Other class proportions (``RAFDB_LABELS`` order).
        cache: Reuse / store the generated set under ``cache_dir``.
        cache_dir: Cache root (default :func:`default_cache_dir`); the set lives in ``synthetic/<hash>``.
        val_split: ``"stratified"`` (default: the generated per-class split above), ``"permutation"`` or ``"none"``.
            The other two modes leave the generator alone: they take the set generated with ``val_fraction=0.1``
            (the default layout, so its cache is shared) and re-split its train + validation images - MEK-CV's
            plain NumPy permutation (:func:`~fer_mek.data.permutation_split`, class-major order, ``val_fraction``
            held out) or no validation at all (``none``: every one of them in train). Test is unchanged.

    Returns:
        ``DatasetDict`` (``image``: JPEG-encoded ``datasets.Image``; ``label``: ``ClassLabel(RAFDB_LABELS)``),
        memory-mapped from the cache when ``cache`` is on. Its metadata says ``"synthetic": True``.
    """
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
    check_val_split(val_split, val_fraction)
    if val_split != "stratified":
        pooled = load_synthetic(num_images, image_size, seed, balanced, val_fraction=_POOL_VAL_FRACTION,
                                test_fraction=test_fraction, class_weights=class_weights, cache=cache,
                                cache_dir=cache_dir)
        return _resplit(pooled, val_split, val_fraction, seed)
    params: dict[str, Any] = {
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
        "balanced": bool(balanced),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "class_weights": None if class_weights is None else [float(w) for w in class_weights],
    }
    synthetic_split_counts(
        params["num_images"],
        balanced=params["balanced"],
        val_fraction=params["val_fraction"],
        test_fraction=params["test_fraction"],
        class_weights=params["class_weights"],
    )  # validates the arguments before any work
    if not cache:
        return _with_val_split(_generate(params))
    key = hashlib.sha256(json.dumps({**params, "v": GENERATOR_VERSION}, sort_keys=True).encode()).hexdigest()[:16]
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = target / "synthetic" / key
    if target.exists():
        problem = _cache_problem(target)
        if problem is None:
            try:
                return _with_val_split(datasets.load_from_disk(str(target)))
            except (OSError, ValueError, EOFError) as error:  # pyarrow's errors derive from these
                problem = f"unreadable ({type(error).__name__}: {error})"
        print(f"synthetic set cache {target}: {problem}; generating it again", file=sys.stderr, flush=True)
    with atomic_directory(target, overwrite=True) as staging:
        _generate(params).save_to_disk(str(staging))
        _write_checksums(staging)
    return _with_val_split(datasets.load_from_disk(str(target)))


#: The checksums of a cached synthetic set's files (``sha256sum -c`` format), written with them.
CHECKSUMS_NAME = "checksums.sha256"


def _write_checksums(folder: Path) -> None:
    lines = [f"{_sha256(path)}  {path.relative_to(folder).as_posix()}\n"
             for path in sorted(folder.rglob("*")) if path.is_file() and path.name != CHECKSUMS_NAME]
    (folder / CHECKSUMS_NAME).write_text("".join(lines), encoding="utf-8")


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _cache_problem(folder: Path) -> str | None:
    """Why a cached synthetic set cannot be used (``None`` when every file matches its checksum)."""
    try:
        listed = [line.split(maxsplit=1) for line in (folder / CHECKSUMS_NAME).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError):
        return f"no {CHECKSUMS_NAME} (an interrupted write, or one of an older fer-mek)"
    if not listed or any(len(entry) != 2 for entry in listed):
        return f"{CHECKSUMS_NAME} is damaged"
    for digest, name in listed:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} does not match its checksum ({path.stat().st_size:,} bytes): changed, damaged or cut short"
    return None


def _with_val_split(dataset_dict: datasets.DatasetDict) -> datasets.DatasetDict:
    """The generated split, its mode recorded in the metadata (kept out of the generator and its cache key)."""
    set_metadata(dataset_dict, {**get_metadata(dataset_dict), "val_split": "stratified"})
    return dataset_dict


def _resplit(pooled: datasets.DatasetDict, val_split: str, val_fraction: float, seed: int) -> datasets.DatasetDict:
    """``val_split`` ``permutation`` / ``none`` over the train + validation images of a generated set."""
    pool = datasets.concatenate_datasets([pooled["train"], pooled["validation"]])
    train, validation, how = split_from_train(pool, val_split, val_fraction, seed)
    dataset_dict = datasets.DatasetDict(train=train, validation=validation, test=pooled["test"])
    meta = get_metadata(pooled)
    counts = {split: class_counts(part) for split, part in dataset_dict.items()}
    test_fraction = meta.get("test_fraction")
    set_metadata(dataset_dict, {
        **meta,
        **how,
        "protocol": f"{how['protocol'].split('; test used')[0]}; test = stratified {test_fraction:g} of all images; "
                    "test used only for the final report",
        "pool": f"train + validation of the set generated with val_fraction {_POOL_VAL_FRACTION:g}",
        "class_counts": counts,
    })
    return dataset_dict

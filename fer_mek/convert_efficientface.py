"""EfficientFace's released files as fer-mek models (re-exported by :mod:`fer_mek.convert`, whose command line uses them).

zengqunzhao/EfficientFace (Zhao et al., AAAI 2021): a trained EfficientFace classifier (its ``fc`` kept as the
``"linear"`` head: :func:`convert_efficientface_checkpoint`) and its label distribution generator
``Pretrained_LDG.tar``, a torchvision ResNet-50 with a 7-class ``fc`` (:func:`convert_ldg_checkpoint`), to be used as a
``--teacher``; both with EfficientFace's label order and RAF-DB normalisation. Its MS-Celeb-1M
``Pretrained_EfficientFace.tar`` is backbone weights (:func:`fer_mek.convert.load_backbone_weights`, ``--init``).
Also :func:`infer_resnet_name`, the timm ResNet of a torchvision-layout state_dict.

Files are read with ``torch.load(weights_only=True)`` (:mod:`fer_mek.checkpoint_io`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .checkpoint_io import _as_state_dict, _normalize_state_dict, load_exact
from .configuration_mek import MEKConfig
from .labels import EFFICIENTFACE_LABELS
from .modeling_mek import MEKForImageClassification

__all__ = [
    "EFFICIENTFACE_RAFDB_MEAN",
    "EFFICIENTFACE_RAFDB_STD",
    "MSCELEB_CLASSES",
    "convert_efficientface_checkpoint",
    "convert_ldg_checkpoint",
    "infer_resnet_name",
    "is_efficientface_checkpoint",
]

# Blocks per ResNet stage -> timm name, for basic-block (18/34) and bottleneck (50/101/152) ResNets.
_RESNET_DEPTHS = {
    (False, (2, 2, 2, 2)): "resnet18",
    (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50",
    (True, (3, 4, 23, 3)): "resnet101",
    (True, (3, 8, 36, 3)): "resnet152",
}


def infer_resnet_name(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> str:
    """The timm ResNet name whose layout matches a torchvision-style ResNet state_dict (``layer1.0.conv1...``)."""
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state_dict
    depths = []
    for stage in range(1, 5):
        blocks = {
            int(match.group(1))
            for key in state_dict
            if (match := re.match(rf"{re.escape(prefix)}layer{stage}\.(\d+)\.", key))
        }
        depths.append(len(blocks))
    name = _RESNET_DEPTHS.get((bottleneck, tuple(depths)))
    if name is None:
        raise ValueError(
            f"cannot tell which ResNet this is (bottleneck={bottleneck}, blocks per stage {depths}); pass the timm "
            "backbone name explicitly (e.g. --backbone resnet18)"
        )
    return name


#: EfficientFace's RAF-DB normalisation (zengqunzhao/EfficientFace main.py:96-97), of both its student and its LDG
#: teacher, which see the same batch (main.py:180, 185).
EFFICIENTFACE_RAFDB_MEAN = (0.57535914, 0.44928582, 0.40079932)
EFFICIENTFACE_RAFDB_STD = (0.20735591, 0.18981615, 0.18132027)
#: Identities of the MS-Celeb-1M classifier of ``Pretrained_EfficientFace.tar`` (main.py:52).
MSCELEB_CLASSES = 12666
# Keys only EfficientFace has (its local feature extractor and modulator, EfficientFace.py:173-174).
_EFFICIENTFACE_MARKERS = ("local.conv1_1.weight", "modulator.channel_att.gate_c.gate_c_fc_0.weight")


def is_efficientface_checkpoint(obj: Any) -> bool:
    """Whether a checkpoint (the object read from the file, or its state_dict; ``module.`` prefixes allowed) holds an
    EfficientFace network (zengqunzhao/EfficientFace ``models/EfficientFace.py``): told by the keys of its local
    feature extractor and modulator."""
    try:
        state = _normalize_state_dict(obj)
    except ValueError:
        return False
    return all(key in state for key in _EFFICIENTFACE_MARKERS)


def _classifier_labels(num_classes: int, label_names: Sequence[str] | None, what: str) -> tuple[str, ...]:
    """The class names of a checkpoint's ``fc``: given, or EfficientFace's seven in its order."""
    if label_names is None:
        if num_classes == MSCELEB_CLASSES:
            raise ValueError(
                f"{what} has a {num_classes}-class fc: the MS-Celeb-1M face-recognition classifier, not expressions. "
                "Use it as backbone weights (fer-mek train --init FILE, or fer-mek convert --kind backbone); its fc is "
                "dropped there"
            )
        if num_classes != len(EFFICIENTFACE_LABELS):
            raise ValueError(
                f"{what} has {num_classes} classes; EfficientFace's label order is known for 7 (RAF-DB, "
                f"{', '.join(EFFICIENTFACE_LABELS)}): pass the class names in output order (label_names=, --labels)"
            )
        return EFFICIENTFACE_LABELS
    if len(label_names) != num_classes:
        raise ValueError(f"{what} has {num_classes} classes but {len(label_names)} label names were given: "
                         f"{list(label_names)}")
    return tuple(label_names)


def _convert_fc_classifier(
    state: Mapping[str, torch.Tensor], backbone: str, label_names: Sequence[str] | None, image_size: int, what: str,
    config_kwargs: Mapping[str, Any],
) -> MEKForImageClassification:
    """A network ``backbone`` + mean over H, W + ``fc`` (its ``state``, names as the timm model's) as a fer-mek model
    with a ``"linear"`` head: every tensor but ``fc.*`` into the backbone, ``fc`` into ``head.classifier``, strictly."""
    if "fc.weight" not in state or "fc.bias" not in state:
        raise ValueError(f"{what} has no fc.weight / fc.bias: not a classifier with its fc (for backbone weights alone, "
                         "use --kind backbone or fer-mek train --init FILE)")
    fc_weight = state["fc.weight"]
    if fc_weight.ndim != 2:
        raise ValueError(f"{what}: fc.weight has shape {tuple(fc_weight.shape)}, not [classes, features]")
    labels = _classifier_labels(fc_weight.shape[0], label_names, what)
    settings = {"image_mean": EFFICIENTFACE_RAFDB_MEAN, "image_std": EFFICIENTFACE_RAFDB_STD, **config_kwargs}
    config = MEKConfig(backbone=backbone, head="linear", image_size=image_size, id2label=dict(enumerate(labels)),
                       **settings)
    model = MEKForImageClassification(config)
    renamed = {(f"head.classifier.{key[3:]}" if key.startswith("fc.") else f"backbone.{key}"): value
               for key, value in state.items()}
    load_exact(model.mek, renamed, what)
    return model.eval()


def convert_efficientface_checkpoint(
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    label_names: Sequence[str] | None = None,
    image_size: int = 224,
    **config_kwargs: Any,
) -> MEKForImageClassification:
    """Convert a trained EfficientFace classifier (zengqunzhao/EfficientFace: its released RAF-DB model, or a
    checkpoint its ``main.py`` saved, ``{"state_dict": {"module." + key: tensor}}``, main.py:152) into a
    :class:`MEKForImageClassification` on the ``efficientface`` backbone with a ``"linear"`` head.

    Every tensor is placed strictly: the network's into the backbone (same names), ``fc`` into
    ``head.classifier`` (fer-mek's linear head, mean over H, W -> ``Linear``, is the source's ``x.mean([2, 3])`` ->
    ``fc``, EfficientFace.py:191-192), so the logits are the source network's.

    Args:
        source: The file (read with ``torch.load(weights_only=True)``) or its state_dict.
        label_names: Class names in ``fc``'s output order; default: EfficientFace's RAF-DB folder order
            (:data:`EFFICIENTFACE_LABELS`) for a 7-class ``fc``, else required. The MS-Celeb-1M file
            (``Pretrained_EfficientFace.tar``, 12666 classes) is no expression classifier: an error says to use it as
            backbone weights (``--init``).
        image_size: Input side (224, main.py:100, 106).
        **config_kwargs: Further :class:`MEKConfig` arguments; ``image_mean`` / ``image_std`` default to the
            source's RAF-DB normalisation (main.py:96-97).

    Raises:
        ValueError: not an EfficientFace checkpoint, no ``fc``, an unknown class order, or tensors that do not fit
            (every missing / unexpected / misshapen key listed).
    """
    what = f"EfficientFace checkpoint {source if not isinstance(source, Mapping) else ''}".strip()
    state = _as_state_dict(source)
    if not is_efficientface_checkpoint(state):
        raise ValueError(f"{what} is not an EfficientFace network: it lacks {' and '.join(_EFFICIENTFACE_MARKERS)} "
                         "(the local feature extractor and modulator of models/EfficientFace.py)")
    return _convert_fc_classifier(state, "efficientface", label_names, image_size, what, config_kwargs)


def convert_ldg_checkpoint(
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    label_names: Sequence[str] | None = None,
    image_size: int = 224,
    backbone: str | None = None,
    **config_kwargs: Any,
) -> MEKForImageClassification:
    """Convert EfficientFace's label distribution generator (``Pretrained_LDG.tar``: a torchvision-layout ResNet-50,
    ``models/resnet.py``, with ``fc = nn.Linear(2048, 7)``, saved under ``state_dict`` with ``module.`` prefixes;
    main.py:59-63) into a :class:`MEKForImageClassification` with a ``"linear"`` head, usable as a ``--teacher``.

    timm's ResNets have torchvision's parameter names; the network goes into the backbone, ``fc`` into
    ``head.classifier`` (fer-mek's linear head is the source's ``avgpool`` -> ``flatten`` -> ``fc``), strictly, so the
    logits are the source network's. Works for any torchvision-layout ResNet classifier.

    Args:
        source: The file (read with ``torch.load(weights_only=True)``) or its state_dict.
        label_names: Class names in ``fc``'s output order; default: :data:`EFFICIENTFACE_LABELS` for a 7-class ``fc``
            (the LDG is trained on the same RAF-DB folders as EfficientFace), else required.
        image_size: Input side (224: the LDG sees EfficientFace's 224-px batches, main.py:185).
        backbone: timm name; inferred from the block layout (``resnet50`` for the LDG) when omitted.
        **config_kwargs: Further :class:`MEKConfig` arguments; ``image_mean`` / ``image_std`` default to
            EfficientFace's RAF-DB normalisation (main.py:96-97), which the LDG's inputs have.

    Raises:
        ValueError: no ``fc``, an unknown class order or layout, or tensors that do not fit (keys listed).
    """
    what = f"ResNet classifier {source if not isinstance(source, Mapping) else ''}".strip()
    state = _as_state_dict(source)
    if is_efficientface_checkpoint(state):
        raise ValueError(f"{what} is an EfficientFace network, not a ResNet: convert it with --kind efficientface "
                         "(convert_efficientface_checkpoint)")
    return _convert_fc_classifier(state, backbone or infer_resnet_name(state), label_names, image_size, what,
                                  config_kwargs)

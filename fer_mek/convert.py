"""Bring the checkpoints people already have into fer-mek models.

* Backbone initialisation, after construction: :func:`load_backbone_weights` from timm's pretrained weights (the
  default tag, or a named one such as ``timm:resnet18.tv_in1k`` = torchvision's IMAGENET1K_V1), a torchvision/timm
  ``state_dict`` file (e.g. ``resnet18-f37072fd.pth``, or MS-Celeb-1M face-recognition weights such as
  ``resnet18_msceleb.pth``), or the official MEK Swin-T checkpoint ``start_0.pt`` (see :func:`map_mek_swin_state_dict`);
  :func:`reset_final_norm` gives the backbone's final norm the fresh weight 1 / bias 0 of the official model's.
* The published MEK ResNet checkpoints (``mek_resnet18_rafdb_msceleb_best.pth`` and siblings): a module with
  ``encoder = nn.Sequential(*list(torchvision_resnet.children())[:-2])``, ``bn = BatchNorm2d(C)``, ``Dropout2d`` and
  ``classifier = Conv2d(C, K, 1)``; logits = spatial mean of the classifier's maps. Converted with
  ``head="conv_bn"``: :func:`convert_mek_resnet_checkpoint`. The published files' class order is told by their names
  and their config records the settings they were trained with (:data:`PUBLISHED_CHECKPOINTS`).

Files are read with ``torch.load(weights_only=True)`` (or safetensors): no pickled code is ever executed.

Command line: :func:`main` (``scripts/convert_checkpoint.py``, moved here from that script) writes either kind as a
fer-mek model folder (safetensors + config + preprocessor + remote code).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .configuration_mek import MEKConfig
from .image_processing_mek import MEKImageProcessor
from .io import atomic_directory
from .labels import LABEL_SETS, get_label_set
from .modeling_mek import MEKForImageClassification, MEKPreTrainedModel

StateDict = dict[str, torch.Tensor]

# Wrappers that training scripts put around a state_dict ({"state_dict": ..., "epoch": ...}); "state_dict_backbone" is
# the official MEK Swin checkpoint's (start_0.pt, saved by an insightface-style face-recognition training).
_NESTING_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "state_dict_backbone")

# torchvision ResNet children: conv1, bn1, relu, maxpool, layer1..layer4 (avgpool and fc are cut by [:-2]).
_MEK_ENCODER_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}

# Blocks per ResNet stage -> timm name, for basic-block (18/34) and bottleneck (50/101/152) ResNets.
_RESNET_DEPTHS = {
    (False, (2, 2, 2, 2)): "resnet18",
    (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50",
    (True, (3, 4, 23, 3)): "resnet101",
    (True, (3, 8, 36, 3)): "resnet152",
}


def load_state_dict_file(path: str | os.PathLike) -> StateDict:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict.

    Accepts ``.safetensors`` and torch files (``.pth``/``.pt``/``.bin``/``.ckpt``), read with
    ``torch.load(weights_only=True)``; unwraps ``{"state_dict": ...}``-style nesting and strips the ``module.``
    prefixes of (Distributed)DataParallel.
    """
    return _normalize_state_dict(read_checkpoint(path), Path(path))


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object stored in a checkpoint file, read safely: ``.safetensors``, or ``torch.load(weights_only=True)``
    (tensors, containers and plain values only; no pickled code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} cannot be read with torch.load(weights_only=True): it pickles more than tensors ({error}). "
            "If you trust the file, re-save only its state_dict: torch.save(torch.load(p, weights_only=False)"
            "['state_dict'], 'clean.pth') — or convert it to safetensors."
        ) from error
    except (RuntimeError, EOFError) as error:
        raise ValueError(f"{path} is not a readable torch checkpoint ({error}); is the download complete?") from error
    return obj


def _normalize_state_dict(obj: Any, origin: Any = "state_dict") -> StateDict:
    while isinstance(obj, Mapping) and not _is_tensor_mapping(obj):
        nested = [key for key in _NESTING_KEYS if isinstance(obj.get(key), Mapping)]
        if not nested:
            keys = sorted(map(str, obj))[:10]
            raise ValueError(
                f"{origin} holds no state_dict: top-level keys {keys} are neither tensors nor one of {_NESTING_KEYS}"
            )
        obj = obj[nested[0]]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{origin} holds a {type(obj).__name__}, not a state_dict")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue  # metadata that sits beside tensors (e.g. "epoch" inside a flat dict) is not weights
        while key.startswith("module."):
            key = key[len("module.") :]
        state[key] = value
    if not state:
        raise ValueError(f"{origin} holds no tensors")
    return state


def _is_tensor_mapping(obj: Mapping) -> bool:
    return any(isinstance(value, torch.Tensor) for value in obj.values())


def _as_state_dict(source: str | os.PathLike | Mapping[str, torch.Tensor]) -> StateDict:
    if isinstance(source, Mapping):
        return _normalize_state_dict(source)
    return load_state_dict_file(source)


def _format_keys(keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def fit_problems(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps ``state_dict`` from loading into ``module`` with ``strict=True``: missing keys, keys the module does
    not have, and shape mismatches, each as one line; empty when it fits exactly."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key} (checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)})"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing from the checkpoint: {_format_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} not in the model: {_format_keys(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with another shape: {_format_keys(mismatched)}")
    return problems


def load_exact(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with an error that lists every unmatched key.

    Raises:
        ValueError: naming the missing keys, unexpected keys and shape mismatches, if any.
    """
    problems = fit_problems(module, state_dict)
    if problems:
        raise ValueError(f"{what} does not fit the model:\n  " + "\n  ".join(problems))
    module.load_state_dict(dict(state_dict), strict=True)


def _fill_batchnorm_counters(backbone: nn.Module, state: StateDict) -> list[str]:
    """Add the BatchNorm ``num_batches_tracked`` counters a checkpoint lacks (torchvision's 2017 ImageNet files such as
    ``resnet18-f37072fd.pth`` predate them), at 0 as torch's own loader and a fresh network have them. They only
    matter for ``momentum=None``; returns the keys filled."""
    filled = []
    for key, value in backbone.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
            filled.append(key)
    return filled


def load_backbone_state_dict(
    backbone: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], what: str | None = None
) -> dict[str, Any]:
    """Load a timm/torchvision-layout state_dict into a timm backbone built without classifier.

    The checkpoint's classifier (``fc.*`` for ResNets, whatever timm names the classifier otherwise), of any size,
    is dropped; BatchNorm counters the file lacks are set to 0; every other key must match the backbone exactly.

    Returns:
        ``{"loaded_tensors": n, "dropped_keys": [...], "filled_keys": [...]}``.
    """
    state = _as_state_dict(source)
    classifier = getattr(backbone, "pretrained_cfg", {}).get("classifier", "fc")
    classifier_names = [classifier] if isinstance(classifier, str) else list(classifier)
    own_keys = set(backbone.state_dict())
    dropped = sorted(
        key
        for key in state
        if key not in own_keys and any(key == name or key.startswith(name + ".") for name in classifier_names)
    )
    state = {key: value for key, value in state.items() if key not in dropped}
    loaded = len(state)
    filled = _fill_batchnorm_counters(backbone, state)
    what = what or f"backbone weights {source if not isinstance(source, Mapping) else ''}".strip()
    load_exact(backbone, state, what)
    return {"loaded_tensors": loaded, "dropped_keys": dropped, "filled_keys": filled}


# ------------------------------------------------------------------------------------- official MEK Swin-T (start_0.pt)
#: timm model and arguments of the official MEK Swin-T: 112-px input, patch size 2, window 7 (7x7 final map).
MEK_SWIN_BACKBONE = "swin_tiny_patch4_window7_224"
MEK_SWIN_BACKBONE_KWARGS = {"img_size": 112, "patch_size": 2}
# Buffers the official model saves and timm recomputes (non-persistent there).
_SWIN_RECOMPUTED_BUFFERS = ("relative_position_index", "attn_mask")


def is_mek_swin_checkpoint(obj: Any) -> bool:
    """Whether a checkpoint (the object read from the file, or its state_dict) is in the official MEK Swin layout:
    weights under ``state_dict_backbone``, or the official Swin key layout with its face-embedding ``feature.*`` head
    (``layers.0.downsample.*``: patch merging at the end of a stage, where timm has it at the start of the next)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict_backbone"), Mapping):
        return True
    if not isinstance(obj, Mapping) or not _is_tensor_mapping(obj):
        return False
    keys = [key[len("module.") :] if key.startswith("module.") else key for key in obj]
    return any(key.startswith("layers.0.downsample.") for key in keys) and any(key.startswith("feature.") for key in keys)


def map_mek_swin_state_dict(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, dict[str, str], list[str]]:
    """Map the official MEK Swin backbone's ``state_dict`` (``start_0.pt["state_dict_backbone"]``) to timm's names.

    * ``layers.{s}.downsample.*`` -> ``layers.{s+1}.downsample.*`` (s = 0, 1, 2): the official Swin merges patches at
      the end of a stage, timm at the start of the next (timm's own ``checkpoint_filter_fn`` rule; the 2x2
      concatenation order is the same).
    * dropped: ``*.relative_position_index`` and ``*.attn_mask`` (buffers timm recomputes; checked equal when the
      weights are loaded), ``feature.*`` (the face-recognition embedding head) and the final ``norm.*``, which the
      official MEK model never applies (it puts a fresh LayerNorm before its head instead).

    Returns:
        ``(timm_state, renamed {official: timm}, dropped keys)``; the dropped buffers are not in ``timm_state``.
    """
    mapped, renamed, dropped = {}, {}, []
    for key, value in state.items():
        if key.rsplit(".", 1)[-1] in _SWIN_RECOMPUTED_BUFFERS or key.startswith(("feature.", "norm.")):
            dropped.append(key)
            continue
        new = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key)
        if new != key:
            renamed[key] = new
        mapped[new] = value
    return mapped, renamed, sorted(dropped)


def _check_recomputed_buffers(backbone: nn.Module, state: Mapping[str, torch.Tensor], dropped: Sequence[str]) -> list[str]:
    """The official file's position indices and attention masks must equal the ones timm computed for this model
    (same window, same shifts, same input size); returns a line per difference."""
    buffers = dict(backbone.named_buffers())
    problems = []
    for key in dropped:
        if key.rsplit(".", 1)[-1] not in _SWIN_RECOMPUTED_BUFFERS:
            continue
        own = buffers.get(key)
        if own is None:
            if key.endswith("attn_mask") and key[: -len("attn_mask")] + "attn.qkv.weight" in backbone.state_dict():
                continue  # timm builds this block's mask on the fly (dynamic_mask): nothing stored to compare
            problems.append(f"{key}: the model has no such buffer")
        elif own.shape != state[key].shape:
            problems.append(f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own.shape)}")
        elif not torch.equal(own, state[key].to(own.dtype)):
            problems.append(f"{key}: values differ from the ones timm computes for this model")
    return problems


def load_mek_swin_backbone(backbone: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> dict[str, Any]:
    """Load the official MEK Swin backbone state into a timm Swin: :func:`map_mek_swin_state_dict`, then every other
    tensor placed (``strict``), and the final norm set to weight 1 / bias 0 (the official model's fresh LayerNorm).

    Raises:
        ValueError: listing every tensor that does not fit, with the timm arguments the official model needs.
    """
    mapped, renamed, dropped = map_mek_swin_state_dict(state)
    norm = _final_norm(backbone)
    prefix = next(name for name, module in backbone.named_modules() if module is norm)
    for name, value in norm.state_dict().items():
        mapped[f"{prefix}.{name}"] = _fresh_norm_value(name, value)
    problems = _check_recomputed_buffers(backbone, state, dropped) + fit_problems(backbone, mapped)
    if problems:
        raise ValueError(
            f"{what} (official MEK Swin layout) does not fit the model:\n  " + "\n  ".join(problems)
            + f"\nThe official MEK model is timm {MEK_SWIN_BACKBONE!r} with backbone_kwargs {MEK_SWIN_BACKBONE_KWARGS} "
            "(112-px input, patch size 2, window 7)."
        )
    backbone.load_state_dict(mapped, strict=True)
    return {
        "layout": "mek-swin",
        "loaded_tensors": len(mapped) - len(norm.state_dict()),
        "renamed_keys": renamed,
        "dropped_keys": dropped,
        "final_norm": f"{prefix} reset to weight 1, bias 0 (the file's norm.* is not used by the official model)",
    }


def _final_norm(backbone: nn.Module) -> nn.Module:
    norm = getattr(backbone, "norm", None)
    if norm is None or getattr(norm, "weight", None) is None:
        raise ValueError(
            f"{type(backbone).__name__} has no final norm with a weight (backbone.norm) to reset; "
            "reset_final_norm is for transformer backbones such as Swin and ViT"
        )
    return norm


def _fresh_norm_value(name: str, value: torch.Tensor) -> torch.Tensor:
    if name == "weight" or name == "running_var":
        return torch.ones_like(value)
    return torch.zeros_like(value)  # bias, running_mean, num_batches_tracked


def reset_final_norm(model: MEKPreTrainedModel) -> dict[str, Any]:
    """Set the backbone's final norm (timm ``backbone.norm``, e.g. Swin's last LayerNorm) to weight 1 / bias 0.

    The official MEK Swin model does not use its encoder's final norm: it applies a fresh ``LayerNorm`` (weight 1,
    bias 0) before its head, which is what the backbone's final norm becomes here. Returns a record for the run's
    results.

    Raises:
        ValueError: if the backbone has no such norm (e.g. a ResNet).
    """
    backbone = model.base_model.backbone
    norm = _final_norm(backbone)
    with torch.no_grad():
        for name, tensor in norm.state_dict(keep_vars=True).items():
            tensor.copy_(_fresh_norm_value(name, tensor))
    prefix = next(name for name, module in backbone.named_modules() if module is norm)
    return {"final_norm": f"{prefix} reset to weight 1, bias 0"}


_reset_final_norm = reset_final_norm  # load_backbone_weights has an argument of this name


def load_backbone_weights(
    model: MEKPreTrainedModel,
    source: str | os.PathLike | Mapping[str, torch.Tensor] = "timm",
    reset_final_norm: bool = False,
) -> dict[str, Any]:
    """Initialise a model's backbone from pretrained weights, after construction.

    Args:
        model: A :class:`MEKModel` or :class:`MEKForImageClassification`.
        source: Where the weights come from:

            * ``"timm"``: timm's pretrained weights of ``model.config.backbone`` (its default tag unless the name
              has one), from the Hugging Face Hub or the local Hub cache;
            * ``"timm:<name.tag>"``: timm's pretrained weights of that tag, e.g. ``"timm:resnet18.tv_in1k"``
              (torchvision's IMAGENET1K_V1); the architecture must be the config's;
            * a file (or its state_dict): a timm/torchvision-layout state_dict (``resnet18-f37072fd.pth``,
              ``resnet18_msceleb.pth`` under ``state_dict``, ...; the classifier is dropped), or the official MEK
              Swin checkpoint ``start_0.pt`` (told by its ``state_dict_backbone`` key; see
              :func:`load_mek_swin_backbone`: its final norm is reset).
        reset_final_norm: Then set the backbone's final norm to weight 1 / bias 0 (:func:`reset_final_norm`).

    Returns:
        A record of what took effect (``source``, ``loaded_tensors``, ``dropped_keys``, ...), for the run's results.
        Anything that does not fit raises: nothing falls back silently to random weights.
    """
    backbone = model.base_model.backbone
    text = str(source) if not isinstance(source, Mapping) else ""
    if text == "timm" or text.startswith("timm:"):
        name = text[len("timm:") :] or model.config.backbone
        architecture, own = name.split(".")[0], model.config.backbone.split(".")[0]
        if architecture != own:
            raise ValueError(
                f"init {text!r} names architecture {architecture!r} but the model's backbone is {own!r}; "
                f"use timm:{own}.<tag> (see timm.list_pretrained({own + '*'!r}))"
            )
        pretrained = timm.create_model(name, pretrained=True, num_classes=0, global_pool="", **model.config.backbone_kwargs)
        tag = pretrained.pretrained_cfg.get("hf_hub_id") or pretrained.pretrained_cfg.get("tag") or ""
        report = {"source": f"timm:{name}", "weights": tag, **load_backbone_state_dict(backbone, pretrained.state_dict())}
    else:
        raw = source if isinstance(source, Mapping) else read_checkpoint(source)
        what = f"backbone weights {text}".strip()
        if is_mek_swin_checkpoint(raw):
            report = {"source": text or "state_dict", **load_mek_swin_backbone(backbone, _normalize_state_dict(raw, what), what)}
        else:
            state = _normalize_state_dict(raw, what)
            report = {"source": text or "state_dict", **load_backbone_state_dict(backbone, state, what)}
    if reset_final_norm:
        report.update(_reset_final_norm(model))
    return report


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


# ------------------------------------------------------------------------------------ the published MEK checkpoints
#: Class counts of the 90 % train part that MEK-CV's scripts trained on (``np.random.seed(42)``; first 10 % of
#: ``np.random.permutation`` held out): RAF-DB (12,271 train images) and FER-2013's image-folder release (28,709; the
#: public ``msambare/fer2013`` folder counts, which MEK-CV's code does not state). They give the mean-1 balance weights
#: the published checkpoints were trained with.
MEKCV_RAFDB_TRAIN_COUNTS = (1157, 254, 651, 4311, 1762, 627, 2282)
MEKCV_FER2013_TRAIN_COUNTS = (3635, 394, 3664, 6419, 4479, 4359, 2889)

_MEKCV = {"balance_weight_rule": "mean1", "head_init": "pytorch"}
_RAF = {"labels": "rafdb", "config": {**_MEKCV, "class_counts": MEKCV_RAFDB_TRAIN_COUNTS}}
_FER = {"labels": "fer2013-folders", "config": {**_MEKCV, "class_counts": MEKCV_FER2013_TRAIN_COUNTS}}

#: The published MEK ResNet checkpoints (``ToiTenBao/fer-mek-checkpoints``, file names of MEK-CV's
#: ``scripts/push_to_hf.py``): their class order and the MEKConfig settings they were trained with, from the MEK-CV
#: script that trained each (file:line of commit 3fb255f): smoothing = ``LABEL_SMOOTH``, attention_weight =
#: ``FLIP_LOSS_WEIGHT``, dropout = ``ARCH_DROPOUT``, mean-1 balance weights (``_inv * (K / _inv.sum())``), heads with
#: PyTorch's default init.
PUBLISHED_CHECKPOINTS: dict[str, dict[str, Any]] = {
    # kaggle/mek_resnet18_MS-Celeb-1M.py:81,123,124 (run rafdb-mek-rn18-msceleb-lr3e4)
    "mek_resnet18_rafdb_msceleb_best.pth": {**_RAF, "config": {**_RAF["config"], "smoothing": 0.1,
                                                               "attention_weight": 2.0, "dropout": 0.4}},
    # kaggle/mek_resnet18.py:63,96,97 (run mek-rn18-lr3e4-mc)
    "mek_resnet18_rafdb_imagenet_best.pth": {**_RAF, "config": {**_RAF["config"], "smoothing": 0.1,
                                                                "attention_weight": 2.0, "dropout": 0.4}},
    # kaggle/mek_resnet34.py:62,95,96 (run mek-rn34-rafdb-lr2e4-eps2)
    "mek_resnet34_rafdb_imagenet_best.pth": {**_RAF, "config": {**_RAF["config"], "smoothing": 0.2,
                                                                "attention_weight": 2.0, "dropout": 0.45}},
    # kaggle/mek_resnet18.py:63,80 + prep_fine.py:27 FLIP_LOSS_WEIGHT=0.25 (run fer2013-mek-resnet18-lr1e4-l025)
    "mek_resnet18_fer2013_imagenet_best.pth": {**_FER, "config": {**_FER["config"], "smoothing": 0.1,
                                                                  "attention_weight": 0.25, "dropout": 0.4}},
    # kaggle/mek_resnet34.py:62,79 + prep_fine.py:30 FLIP_LOSS_WEIGHT=0.1 (run fer2013-mek-resnet34-lr1e4-l01)
    "mek_resnet34_fer2013_imagenet_best.pth": {**_FER, "config": {**_FER["config"], "smoothing": 0.1,
                                                                  "attention_weight": 0.1, "dropout": 0.45}},
    # kaggle/mek_webcam_resnet18_clahe_facecrop.py:90,113-115,258-259 (also trained on face-cropped, CLAHE images)
    "mek_webcam_resnet18_rafdb_clahe_facecrop_best.pth": {**_RAF, "config": {**_RAF["config"], "smoothing": 0.15,
                                                                             "attention_weight": 0.1, "dropout": 0.4}},
}


def published_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The :data:`PUBLISHED_CHECKPOINTS` entry of a file name (``{"labels": ..., "config": {...}}``), or None."""
    entry = PUBLISHED_CHECKPOINTS.get(Path(path).name.lower())
    return None if entry is None else {"labels": entry["labels"], "config": dict(entry["config"])}


def infer_label_set(path: str | os.PathLike) -> str:
    """The label set of a MEK ResNet checkpoint told by its file name: ``*fer2013*`` -> ``fer2013-folders`` (the
    published FER-2013 checkpoints' alphabetical folder order), ``*rafdb*`` -> ``rafdb``.

    Raises:
        ValueError: if the name says neither (or both): the class order must then be given (``--labels``).
    """
    name = Path(path).name.lower()
    found = {label_set for label_set, words in (("fer2013-folders", ("fer2013",)), ("rafdb", ("rafdb", "raf-db", "raf_db")))
             if any(word in name for word in words)}
    if len(found) != 1:
        raise ValueError(
            f"cannot tell the class order of {Path(path).name!r} from its file name (it names "
            f"{'both RAF-DB and FER-2013' if found else 'neither rafdb nor fer2013'}); pass the label set: "
            f"--labels {' | '.join(sorted(LABEL_SETS))} (label_names= in Python)"
        )
    return found.pop()


def convert_mek_resnet_checkpoint(
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    label_names: Sequence[str] | None = None,
    image_size: int = 224,
    backbone: str | None = None,
    **config_kwargs: Any,
) -> MEKForImageClassification:
    """Convert a published MEK ResNet checkpoint into a :class:`MEKForImageClassification` (``head="conv_bn"``).

    Args:
        source: The checkpoint file (or its state_dict): keys ``encoder.{0,1,4,5,6,7}.*``, ``bn.*``, ``classifier.*``.
        label_names: Class names in the checkpoint's output order: RAF-DB order for the RAF-DB checkpoints,
            ``FER2013_FOLDER_LABELS`` (alphabetical) for the FER-2013 ones. Omitted: told by the file name
            (:func:`infer_label_set`); a state_dict or a file whose name says neither is an error, never RAF-DB by
            default.
        image_size: Input size the checkpoint was trained at (224 for the published ones).
        backbone: timm name; inferred from the block layout when omitted.
        **config_kwargs: Further :class:`MEKConfig` arguments (e.g. ``smoothing``, ``class_counts``). For a published
            file name (:data:`PUBLISHED_CHECKPOINTS`) the settings it was trained with are recorded first (smoothing,
            attention_weight, dropout, balance_weight_rule ``mean1`` with its train class counts, head_init
            ``pytorch``); these arguments override them. Other names keep MEKConfig's defaults.

    The converted model gives the same logits and maps as the original module (tested to 1e-5).
    """
    state = _as_state_dict(source)
    renamed, unknown = {}, []
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "encoder":
            child, _, rest = rest.partition(".")
            if child in _MEK_ENCODER_CHILDREN:
                renamed[f"backbone.{_MEK_ENCODER_CHILDREN[child]}.{rest}"] = value
                continue
        elif head in ("bn", "classifier"):
            renamed[f"head.{key}"] = value
            continue
        unknown.append(key)
    if unknown:
        raise ValueError(
            "not a MEK ResNet checkpoint (expected keys encoder.{0,1,4,5,6,7}.*, bn.*, classifier.*); unexpected: "
            + _format_keys(unknown)
        )
    if "head.classifier.weight" not in renamed:
        raise ValueError("not a MEK ResNet checkpoint: classifier.weight is missing")
    num_classes = renamed["head.classifier.weight"].shape[0]
    is_path = not isinstance(source, Mapping)
    if label_names is None:
        if not is_path:
            raise ValueError(
                "label_names are needed for a state_dict: the class order cannot be told (RAFDB_LABELS for the "
                "RAF-DB checkpoints, FER2013_FOLDER_LABELS for the FER-2013 ones)"
            )
        label_names = get_label_set(infer_label_set(source))
    published = published_checkpoint(source) if is_path else None
    config_kwargs = {**(published["config"] if published else {}), **config_kwargs}
    if len(label_names) != num_classes:
        raise ValueError(
            f"the checkpoint has {num_classes} classes but {len(label_names)} label names were given: {list(label_names)}"
        )
    config = MEKConfig(
        backbone=backbone or infer_resnet_name(renamed, prefix="backbone."),
        head="conv_bn",
        image_size=image_size,
        id2label=dict(enumerate(label_names)),
        **config_kwargs,
    )
    model = MEKForImageClassification(config)
    load_exact(model.mek, renamed, f"MEK checkpoint {source if is_path else ''}".strip())
    return model.eval()


__all__ = [
    "MEKCV_FER2013_TRAIN_COUNTS",
    "MEKCV_RAFDB_TRAIN_COUNTS",
    "MEK_SWIN_BACKBONE",
    "MEK_SWIN_BACKBONE_KWARGS",
    "PUBLISHED_CHECKPOINTS",
    "convert_mek_resnet_checkpoint",
    "fit_problems",
    "infer_label_set",
    "infer_resnet_name",
    "is_mek_swin_checkpoint",
    "load_backbone_state_dict",
    "load_backbone_weights",
    "load_exact",
    "load_mek_swin_backbone",
    "load_state_dict_file",
    "map_mek_swin_state_dict",
    "published_checkpoint",
    "read_checkpoint",
    "reset_final_norm",
]


# ----------------------------------------------------------------------------------------------- command line
#: The command line's description (``--help``).
DESCRIPTION = """Convert an existing checkpoint into a fer-mek model folder (safetensors + config + preprocessor + remote code).

Examples:
    # a published MEK ResNet checkpoint: class order and training settings told by its file name
    python scripts/convert_checkpoint.py --checkpoint mek_resnet18_rafdb_msceleb_best.pth --output mek-resnet18-rafdb
    python scripts/convert_checkpoint.py --checkpoint mek_resnet34_fer2013_imagenet_best.pth --output mek-resnet34-fer
    # another MEK ResNet checkpoint: say its class order
    python scripts/convert_checkpoint.py --checkpoint my_mek.pth --labels fer2013-folders --output out
    # a face-recognition ResNet as the backbone of a new (untrained-head) MEK model
    python scripts/convert_checkpoint.py --kind backbone --checkpoint resnet18_msceleb.pth --backbone resnet18 --output out
    # the official MEK Swin-T start_0.pt (Swin-T at 112 px, patch 2, is then the default backbone)
    python scripts/convert_checkpoint.py --kind backbone --checkpoint start_0.pt --output out
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options of :func:`main`."""
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the .pth/.pt/.bin/.safetensors file to convert")
    parser.add_argument("--output", required=True, help="folder to write the converted model to")
    parser.add_argument(
        "--kind",
        choices=("auto", "mek-resnet", "backbone"),
        default="auto",
        help="mek-resnet: a published MEK ResNet checkpoint; backbone: a timm/torchvision backbone state_dict or the "
        "official MEK Swin start_0.pt (classifier dropped, new head); auto: mek-resnet if the keys start with "
        "'encoder.' (default)",
    )
    parser.add_argument(
        "--labels",
        choices=sorted(LABEL_SETS),
        default=None,
        help="class names and order of the checkpoint's outputs. MEK ResNet checkpoints: told by a file name with "
        "'rafdb' or 'fer2013' in it, else required; --kind backbone: the new head's classes (default: rafdb)",
    )
    parser.add_argument("--backbone", default=None, help="timm model name (inferred for MEK ResNet checkpoints)")
    parser.add_argument(
        "--backbone-kwargs", type=json.loads, default=None, metavar="JSON",
        help='extra timm.create_model arguments of a --kind backbone model, e.g. \'{"img_size": 112, "patch_size": 2}\'',
    )
    parser.add_argument("--head", choices=("linear", "conv_bn"), default="linear", help="head of a --kind backbone model")
    parser.add_argument(
        "--image-size", type=int, default=None,
        help="input size the weights expect (default: 224; 112 for the official MEK Swin checkpoint)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Convert ``--checkpoint`` into the model folder ``--output``; returns the exit status.

    Raises:
        ValueError, FileNotFoundError, FileExistsError: an unreadable or unfitting checkpoint, a MEK ResNet
            checkpoint whose class order is neither given nor told by its name, or an existing ``--output`` without
            ``--overwrite`` (:func:`cli_main` prints them as one ``error: ...`` line).
    """
    args = parse_args(argv)
    output = Path(args.output)
    if output.exists() and not args.overwrite and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} already exists; choose another output folder or pass --overwrite")
    kind = args.kind
    raw = read_checkpoint(args.checkpoint)
    if kind == "auto":
        keys = _normalize_state_dict(raw, args.checkpoint)
        kind = "mek-resnet" if any(key.startswith("encoder.") for key in keys) else "backbone"
    notes = []
    if kind == "mek-resnet":
        labels = get_label_set(args.labels or infer_label_set(args.checkpoint))
        model = convert_mek_resnet_checkpoint(args.checkpoint, labels, args.image_size or 224, backbone=args.backbone)
        config = model.config
        if published_checkpoint(args.checkpoint):
            notes.append(
                f"training settings of the published checkpoint recorded in config.json: smoothing {config.smoothing}, "
                f"attention_weight {config.attention_weight}, dropout {config.dropout}, balance_weight_rule "
                f"{config.balance_weight_rule} (class_counts {config.class_counts}), head_init {config.head_init}"
            )
        else:
            notes.append(
                f"note: {Path(args.checkpoint).name} is not a published MEK checkpoint name "
                f"({', '.join(PUBLISHED_CHECKPOINTS)}): its training settings (smoothing, attention_weight, dropout, "
                "balance_weight_rule, head_init) are left at fer-mek's defaults; set them in config.json if you know them"
            )
    else:
        labels = get_label_set(args.labels or "rafdb")
        extra: dict[str, Any] = {}
        backbone, backbone_kwargs = args.backbone, dict(args.backbone_kwargs or {})
        if is_mek_swin_checkpoint(raw) and not backbone:
            backbone, backbone_kwargs = MEK_SWIN_BACKBONE, {**MEK_SWIN_BACKBONE_KWARGS, **backbone_kwargs}
            extra = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}  # the official model's input
        if not backbone:
            raise ValueError("--kind backbone needs --backbone (a timm model name, e.g. resnet18)")
        config = MEKConfig(
            backbone=backbone, backbone_kwargs=backbone_kwargs, head=args.head,
            image_size=args.image_size or backbone_kwargs.get("img_size", 224), id2label=dict(enumerate(labels)), **extra,
        )
        model = MEKForImageClassification(config)
        report = load_backbone_weights(model, raw if isinstance(raw, Mapping) else args.checkpoint)
        notes.append(
            f"backbone: {report['loaded_tensors']} tensors loaded, keys dropped: {report['dropped_keys']}"
            + (f"; {report['final_norm']}" if "final_norm" in report else "")
            + "; the head is new and must be trained"
        )
    with atomic_directory(args.output, overwrite=args.overwrite) as staging:
        model.save_pretrained(staging)
        MEKImageProcessor.from_model_config(model.config).save_pretrained(staging)
    print(f"converted {args.checkpoint} ({kind}, backbone {model.config.backbone}, head {model.config.head}, "
          f"{model.config.num_labels} classes: {', '.join(labels)}) -> {args.output}")
    for note in notes:
        print(note)
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """The command line (``scripts/convert_checkpoint.py``): :func:`main` with its errors as one ``error: ...``
    line (exit status 1)."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

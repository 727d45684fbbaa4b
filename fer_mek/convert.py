"""Bring the checkpoints people already have into fer-mek models.

* A torchvision/timm-layout ResNet ``state_dict`` (ImageNet weights, or MS-Celeb-1M face-recognition weights such as
  ``resnet18_msceleb.pth``) as backbone initialisation: :func:`load_backbone_weights`.
* The published MEK ResNet checkpoints (``mek_resnet18_rafdb_msceleb_best.pth`` and siblings): a module with
  ``encoder = nn.Sequential(*list(torchvision_resnet.children())[:-2])``, ``bn = BatchNorm2d(C)``, ``Dropout2d`` and
  ``classifier = Conv2d(C, K, 1)``; logits = spatial mean of the classifier's maps. Converted with
  ``head="conv_bn"``: :func:`convert_mek_resnet_checkpoint`.

Files are read with ``torch.load(weights_only=True)`` (or safetensors): no pickled code is ever executed.

Command line: :func:`main` (``scripts/convert_checkpoint.py``, moved here from that script) writes either kind as a
fer-mek model folder (safetensors + config + preprocessor + remote code).
"""

from __future__ import annotations

import argparse
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
from .labels import LABEL_SETS, RAFDB_LABELS, get_label_set
from .modeling_mek import MEKForImageClassification, MEKPreTrainedModel

StateDict = dict[str, torch.Tensor]

# Wrappers that training scripts put around a state_dict ({"state_dict": ..., "epoch": ...}).
_NESTING_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")

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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return _normalize_state_dict(load_file(str(path)), path)
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
    return _normalize_state_dict(obj, path)


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


def load_exact(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with an error that lists every unmatched key.

    Raises:
        ValueError: naming the missing keys, unexpected keys and shape mismatches, if any.
    """
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
    if problems:
        raise ValueError(f"{what} does not fit the model:\n  " + "\n  ".join(problems))
    module.load_state_dict(dict(state_dict), strict=True)


def load_backbone_state_dict(
    backbone: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Load a timm/torchvision-layout state_dict into a timm backbone built without classifier.

    The checkpoint's classifier (``fc.*`` for ResNets, whatever timm names the classifier otherwise), of any size,
    is dropped; every other key must match the backbone exactly.

    Returns:
        ``{"loaded_tensors": n, "dropped_keys": [...]}``.
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
    load_exact(backbone, state, f"backbone weights {source if not isinstance(source, Mapping) else ''}".strip())
    return {"loaded_tensors": len(state), "dropped_keys": dropped}


def load_backbone_weights(model: MEKPreTrainedModel, source: str | os.PathLike = "timm") -> dict[str, Any]:
    """Initialise a model's backbone from pretrained weights, after construction.

    Args:
        model: A :class:`MEKModel` or :class:`MEKForImageClassification`.
        source: ``"timm"`` for timm's pretrained weights of ``model.config.backbone`` (downloaded from the Hugging
            Face Hub, or read from the local Hub cache), or the path of a state_dict file in timm/torchvision layout
            (e.g. an MS-Celeb-1M face-recognition ResNet-18).

    Returns:
        A record of what took effect (``source``, ``loaded_tensors``, ``dropped_keys``), for the run's results.
        Anything that does not fit raises: nothing falls back silently to random weights.
    """
    backbone = model.base_model.backbone
    if str(source) == "timm":
        pretrained = timm.create_model(
            model.config.backbone, pretrained=True, num_classes=0, global_pool="", **model.config.backbone_kwargs
        )
        tag = pretrained.pretrained_cfg.get("hf_hub_id") or pretrained.pretrained_cfg.get("tag") or ""
        report = load_backbone_state_dict(backbone, pretrained.state_dict())
        return {"source": f"timm:{model.config.backbone}", "weights": tag, **report}
    return {"source": str(source), **load_backbone_state_dict(backbone, source)}


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


def convert_mek_resnet_checkpoint(
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    label_names: Sequence[str] = RAFDB_LABELS,
    image_size: int = 224,
    backbone: str | None = None,
    **config_kwargs: Any,
) -> MEKForImageClassification:
    """Convert a published MEK ResNet checkpoint into a :class:`MEKForImageClassification` (``head="conv_bn"``).

    Args:
        source: The checkpoint file (or its state_dict): keys ``encoder.{0,1,4,5,6,7}.*``, ``bn.*``, ``classifier.*``.
        label_names: Class names in the checkpoint's output order: RAF-DB order for the RAF-DB checkpoints,
            ``FER2013_FOLDER_LABELS`` (alphabetical) for the FER-2013 ones.
        image_size: Input size the checkpoint was trained at (224 for the published ones).
        backbone: timm name; inferred from the block layout when omitted.
        **config_kwargs: Further :class:`MEKConfig` arguments (e.g. ``smoothing``, ``class_counts``).

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
    load_exact(model.mek, renamed, f"MEK checkpoint {source if not isinstance(source, Mapping) else ''}".strip())
    return model.eval()


__all__ = [
    "convert_mek_resnet_checkpoint",
    "infer_resnet_name",
    "load_backbone_state_dict",
    "load_backbone_weights",
    "load_exact",
    "load_state_dict_file",
]


# ----------------------------------------------------------------------------------------------- command line
#: The command line's description (``--help``).
DESCRIPTION = """Convert an existing checkpoint into a fer-mek model folder (safetensors + config + preprocessor + remote code).

Examples:
    # a published MEK ResNet checkpoint (RAF-DB class order)
    python scripts/convert_checkpoint.py --checkpoint mek_resnet18_rafdb_msceleb_best.pth --output mek-resnet18-rafdb
    # a published FER-2013 one (alphabetical class order)
    python scripts/convert_checkpoint.py --checkpoint mek_resnet18_fer2013.pth --labels fer2013-folders --output out
    # a face-recognition ResNet as the backbone of a new (untrained-head) MEK model
    python scripts/convert_checkpoint.py --kind backbone --checkpoint resnet18_msceleb.pth --backbone resnet18 --output out
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
        help="mek-resnet: a published MEK ResNet checkpoint; backbone: a timm/torchvision backbone state_dict "
        "(classifier dropped, new head); auto: mek-resnet if the keys start with 'encoder.' (default)",
    )
    parser.add_argument(
        "--labels",
        choices=sorted(LABEL_SETS),
        default="rafdb",
        help="class names and order of the checkpoint's outputs (default: rafdb)",
    )
    parser.add_argument("--backbone", default=None, help="timm model name (inferred for MEK ResNet checkpoints)")
    parser.add_argument("--head", choices=("linear", "conv_bn"), default="linear", help="head of a --kind backbone model")
    parser.add_argument("--image-size", type=int, default=224, help="input size the weights expect (default: 224)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Convert ``--checkpoint`` into the model folder ``--output``; returns the exit status.

    Raises:
        ValueError, FileNotFoundError, FileExistsError: an unreadable or unfitting checkpoint, or an existing
            ``--output`` without ``--overwrite`` (:func:`cli_main` prints them as one ``error: ...`` line).
    """
    args = parse_args(argv)
    labels = get_label_set(args.labels)
    kind = args.kind
    if kind == "auto":
        keys = load_state_dict_file(args.checkpoint)
        kind = "mek-resnet" if any(key.startswith("encoder.") for key in keys) else "backbone"
    if kind == "mek-resnet":
        model = convert_mek_resnet_checkpoint(args.checkpoint, labels, args.image_size, backbone=args.backbone)
        report = {"source": args.checkpoint}
    else:
        if not args.backbone:
            raise ValueError("--kind backbone needs --backbone (a timm model name, e.g. resnet18)")
        config = MEKConfig(
            backbone=args.backbone, head=args.head, image_size=args.image_size, id2label=dict(enumerate(labels))
        )
        model = MEKForImageClassification(config)
        report = load_backbone_weights(model, args.checkpoint)
    with atomic_directory(args.output, overwrite=args.overwrite) as staging:
        model.save_pretrained(staging)
        MEKImageProcessor.from_model_config(model.config).save_pretrained(staging)
    print(f"converted {args.checkpoint} ({kind}, backbone {model.config.backbone}, head {model.config.head}, "
          f"{model.config.num_labels} classes: {', '.join(labels)}) -> {args.output}")
    if kind == "backbone":
        print(f"backbone: {report['loaded_tensors']} tensors loaded, classifier keys dropped: {report['dropped_keys']}; "
              "the head is new and must be trained")
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """The command line (``scripts/convert_checkpoint.py``): :func:`main` with its errors as one ``error: ...``
    line (exit status 1)."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

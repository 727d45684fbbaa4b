"""Bring the checkpoints people already have into fer-mek models.

* Backbone initialisation, after construction: :func:`load_backbone_weights` from timm's pretrained weights (the
  default tag, or a named one such as ``timm:resnet18.tv_in1k`` = torchvision's IMAGENET1K_V1), a torchvision/timm
  ``state_dict`` file (e.g. ``resnet18-f37072fd.pth``, or MS-Celeb-1M face-recognition weights such as
  ``resnet18_msceleb.pth``), or the official MEK Swin-T checkpoint ``start_0.pt`` (see :func:`map_mek_swin_state_dict`);
  :func:`reset_final_norm` gives the backbone's final norm the fresh weight 1 / bias 0 of the official model's.
* The published MEK ResNet checkpoints (``mek_resnet18_rafdb_msceleb_best.pth`` and siblings): a module with
  ``encoder = nn.Sequential(*list(torchvision_resnet.children())[:-2])``, ``bn = BatchNorm2d(C)``, ``Dropout2d`` and
  ``classifier = Conv2d(C, K, 1)``; logits = spatial mean of the classifier's maps. Converted with
  ``head="conv_bn"``: :func:`convert_mek_resnet_checkpoint`. The published files' class order is told by their names;
  their config records the settings they were trained with, their processor the source's serving settings
  (:data:`PUBLISHED_CHECKPOINTS`, in :mod:`fer_mek.published`). :func:`from_published` fetches one from the Hub
  (``ToiTenBao/fer-mek-checkpoints``) and converts it in one call, with ``conversion.json`` beside the weights.
* EfficientFace (zengqunzhao/EfficientFace, AAAI 2021; the ``efficientface`` backbone, :mod:`fer_mek.efficientface`):
  its MS-Celeb-1M ``Pretrained_EfficientFace.tar`` is backbone weights (``--init``: the ``state_dict`` wrapper and
  ``module.`` prefixes removed, the 12666-class ``fc`` dropped); a trained 7-class EfficientFace becomes a complete
  model (:func:`convert_efficientface_checkpoint`), and so does its label distribution generator
  ``Pretrained_LDG.tar``, a torchvision ResNet-50 with a 7-class ``fc`` (:func:`convert_ldg_checkpoint`), to be used as
  a ``--teacher``: ``"linear"`` head = the source's ``fc``, EfficientFace's label order and RAF-DB normalisation
  (those two in :mod:`fer_mek.convert_efficientface`).

Files are read with ``torch.load(weights_only=True)`` (or safetensors; :mod:`fer_mek.checkpoint_io`): no pickled code
is ever executed.

Command line: :func:`main` (``scripts/convert_checkpoint.py``, ``fer-mek convert``) writes any of these as a fer-mek
model folder (safetensors + config + preprocessor + remote code), from a local file or a Hub file
(``REPO_ID/FILENAME[@REVISION]``), or with ``--all`` every checkpoint of a Hub repository. Its parser is
:func:`fer_mek_cli.convert.build_parser` (light, so ``--help`` answers before torch loads).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from fer_mek_cli.convert import DESCRIPTION as DESCRIPTION  # the command line's description (--help)
from fer_mek_cli.convert import build_parser

from .checkpoint_io import (
    StateDict,
    _as_state_dict,
    _format_keys,
    _is_tensor_mapping,
    _normalize_state_dict,
    fit_problems,
    load_backbone_state_dict,
    load_exact,
    load_state_dict_file,
    read_checkpoint,
)
from .configuration_mek import MEKConfig
from .convert_efficientface import (
    EFFICIENTFACE_RAFDB_MEAN,
    EFFICIENTFACE_RAFDB_STD,
    MSCELEB_CLASSES,
    convert_efficientface_checkpoint,
    convert_ldg_checkpoint,
    infer_resnet_name,
    is_efficientface_checkpoint,
)
from .image_processing_mek import MEKImageProcessor
from .io import WriteError, atomic_directory, check_writable, writing
from .labels import get_label_set
from .modeling_mek import MEKForImageClassification, MEKPreTrainedModel
from .published import (
    MEKCV_FER2013_TRAIN_COUNTS,
    MEKCV_RAFDB_TRAIN_COUNTS,
    PUBLISHED_CHECKPOINTS,
    PUBLISHED_REPO,
    CheckpointNotFoundError,
    HubReference,
    conversion_record,
    download_checkpoint,
    file_sha256,
    infer_label_set,
    list_checkpoints,
    parse_hub_reference,
    published_checkpoint,
    resolve_checkpoint,
    serving_settings,
    write_conversion,
)

# torchvision ResNet children: conv1, bn1, relu, maxpool, layer1..layer4 (avgpool and fc are cut by [:-2]).
_MEK_ENCODER_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


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


# ------------------------------------------------------------------------------------ the published MEK checkpoints
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


def _convert_mek_file(
    path: Path, label_names: Sequence[str] | None = None, image_size: int = 224, backbone: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> MEKForImageClassification:
    """:func:`convert_mek_resnet_checkpoint` of a file, with ``image_processor`` (the source's serving settings for a
    published name) and ``conversion`` (the ``conversion.json`` record) attached to the model."""
    model = convert_mek_resnet_checkpoint(path, label_names, image_size, backbone=backbone)
    model.image_processor = MEKImageProcessor.from_model_config(model.config, **serving_settings(path))
    source = source or {"repo_id": None, "filename": path.name, "revision": None, "commit": None,
                        "sha256": file_sha256(path)}
    model.conversion = conversion_record(path.name, source, model.image_processor.to_dict())
    return model


def save_converted(model: MEKForImageClassification, output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save a converted model as a folder: ``save_pretrained`` (weights, config, remote code), its
    ``image_processor`` (default: the one of its config) and, for a model of :func:`from_published`, its
    ``conversion.json``; written whole or not at all.

    Raises:
        FileExistsError: ``output_dir`` exists, is not empty and ``overwrite`` is false.
        WriteError: The folder cannot be written (read-only, full disk: one line saying so); nothing is left behind.
    """
    processor = getattr(model, "image_processor", None) or MEKImageProcessor.from_model_config(model.config)
    _check_output(Path(output_dir), overwrite)  # before `writing`, which would call a FileExistsError unwritable
    with writing(output_dir, "the converted model folder", "nothing was written"), \
            atomic_directory(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if getattr(model, "conversion", None) is not None:
            write_conversion(staging, model.conversion)
    return Path(output_dir)


def from_published(
    repo_id: str = PUBLISHED_REPO,
    filename: str | None = None,
    revision: str | None = None,
    *,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    label_names: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> MEKForImageClassification:
    """A published MEK ResNet checkpoint from the Hub as a fer-mek model, in one line::

        model = fer_mek.from_published("ToiTenBao/fer-mek-checkpoints", "mek_resnet18_rafdb_msceleb_best.pth")
        classify = pipeline("image-classification", model=model, image_processor=model.image_processor)

    Downloaded with ``huggingface_hub.hf_hub_download`` (its cache; offline from the cache with ``HF_HUB_OFFLINE=1``),
    the architecture told by the weights, the class order by the file name (never a default), the training settings
    (config) and the source's serving settings (processor) by the published file name.

    Args:
        repo_id: The Hub model repository; or a whole reference ``REPO_ID/FILENAME[@REVISION]`` with ``filename``
            left out.
        filename: The checkpoint file in the repository.
        revision: Branch, tag or commit hash to pin (default ``main``).
        output_dir: Also save the model there: weights, config, processor, remote code and ``conversion.json``.
        overwrite: Replace an existing ``output_dir``.
        label_names: Class names in output order, for a file whose name says neither ``rafdb`` nor ``fer2013``.
        cache_dir: Hub cache (default ``$HF_HUB_CACHE``).
        endpoint: Hub endpoint (default ``$HF_ENDPOINT`` or the Hugging Face Hub).
        token: Hub token for a private repository (default: the logged-in one).
        local_files_only: Use the cache only.

    Returns:
        The model in eval mode, with ``model.image_processor`` (a :class:`MEKImageProcessor` carrying the serving
        settings) and ``model.conversion`` (the ``conversion.json`` record: source with the file's sha256, the
        source's reported numbers, unverified, training and serving settings).

    Raises:
        CheckpointNotFoundError: no such repository, revision or file (the message lists the repository's ``.pth``
            files), or not cached while offline.
        ValueError: the class order cannot be told from the file name and ``label_names`` is not given.
    """
    reference = HubReference(repo_id, filename, revision) if filename else parse_hub_reference(repo_id, revision)
    if reference is None:
        raise ValueError(f"{repo_id!r} is not REPO_ID/FILENAME[@REVISION]; pass the file name: "
                         f"from_published({repo_id!r}, 'mek_resnet18_rafdb_msceleb_best.pth')")
    if label_names is None:
        infer_label_set(reference.filename)  # before downloading: an unknown class order is an error anyway
    downloaded = download_checkpoint(reference, cache_dir=cache_dir, endpoint=endpoint, token=token,
                                     local_files_only=local_files_only)
    model = _convert_mek_file(downloaded.path, label_names, source=downloaded.source())
    if output_dir is not None:
        save_converted(model, output_dir, overwrite=overwrite)
    return model


__all__ = [
    "EFFICIENTFACE_RAFDB_MEAN",
    "EFFICIENTFACE_RAFDB_STD",
    "MEKCV_FER2013_TRAIN_COUNTS",
    "MEKCV_RAFDB_TRAIN_COUNTS",
    "MEK_SWIN_BACKBONE",
    "MEK_SWIN_BACKBONE_KWARGS",
    "MSCELEB_CLASSES",
    "PUBLISHED_CHECKPOINTS",
    "convert_efficientface_checkpoint",
    "convert_ldg_checkpoint",
    "convert_mek_resnet_checkpoint",
    "fit_problems",
    "from_published",
    "infer_label_set",
    "infer_resnet_name",
    "is_efficientface_checkpoint",
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
    "save_converted",
]


# ----------------------------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The command-line options of :func:`main` (``prog``: the command's name in ``--help``, e.g. ``fer-mek convert``);
    the parser is :func:`fer_mek_cli.convert.build_parser`."""
    return build_parser(prog).parse_args(argv)


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} already exists; choose another output folder or pass --overwrite")


def _hub(args: argparse.Namespace) -> dict[str, Any]:
    return {"cache_dir": args.cache_dir, "endpoint": args.endpoint}


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Convert ``--checkpoint`` (a local file or a Hub file) into the model folder ``--output``, or with ``--all``
    every ``.pth`` of a Hub repository into ``--output/<name>/``; returns the exit status.

    Raises:
        ValueError, FileNotFoundError, FileExistsError: an unreadable or unfitting checkpoint, a MEK ResNet
            checkpoint whose class order is neither given nor told by its name, a Hub repository, revision or file
            that does not exist, or an existing ``--output`` without ``--overwrite`` (:func:`cli_main` prints them
            as one ``error: ...`` line).
        WriteError: ``--output`` cannot be written (a read-only folder, a full disk); nothing is left half-written
            (:func:`cli_main` prints it as one ``error: ...`` line).
    """
    args = parse_args(argv, prog)
    if args.all:
        if args.checkpoint:
            raise ValueError("--all converts every .pth of --repo: leave out --checkpoint")
        repo = args.repo or PUBLISHED_REPO
        names = list_checkpoints(repo, args.revision, **_hub(args))
        if not names:
            raise CheckpointNotFoundError(f"{repo}@{args.revision or 'main'} has no .pth files")
        if args.labels is None:
            for name in names:
                infer_label_set(name)  # every class order known before anything is downloaded
        targets = {name: Path(args.output) / Path(name).stem for name in names}
        for target in targets.values():
            _check_output(target, args.overwrite)
        check_writable(args.output, "the --output folder")
        for name, target in targets.items():
            downloaded = download_checkpoint(HubReference(repo, name, args.revision), **_hub(args))
            _convert_one(args, downloaded.path, target, downloaded.source(), str(downloaded.reference))
        print(f"converted {len(names)} checkpoints of {repo} into {args.output}")
        return 0
    if not args.checkpoint:
        raise ValueError("pass --checkpoint FILE (or REPO_ID/FILENAME[@REVISION]), or --all [--repo REPO_ID]")
    _check_output(Path(args.output), args.overwrite)
    check_writable(Path(args.output).parent, "the folder of --output")
    path, source = resolve_checkpoint(args.checkpoint, args.repo, args.revision, **_hub(args))
    _convert_one(args, path, Path(args.output), source, args.checkpoint)
    return 0


def _detect_kind(state: Mapping[str, torch.Tensor], path: Path) -> str:
    """``--kind auto``: ``efficientface`` for an EfficientFace network with an expression ``fc`` (``backbone`` for the
    MS-Celeb-1M one), ``ldg`` for a ResNet classifier whose file name says LDG (``Pretrained_LDG.tar``), ``mek-resnet``
    for keys under ``encoder.``, else ``backbone``."""
    if is_efficientface_checkpoint(state):
        fc = state.get("fc.weight")
        return "efficientface" if fc is not None and fc.shape[0] != MSCELEB_CLASSES else "backbone"
    if "ldg" in path.name.lower() and "fc.weight" in state and "layer1.0.conv1.weight" in state:
        return "ldg"
    return "mek-resnet" if any(key.startswith("encoder.") for key in state) else "backbone"


def _convert_one(args: argparse.Namespace, path: Path, output: Path, source: dict[str, Any] | None, shown: str) -> None:
    kind = args.kind
    raw = read_checkpoint(path)
    if kind == "auto":
        kind = _detect_kind(_normalize_state_dict(raw, shown), path)
    notes = []
    if kind in ("efficientface", "ldg"):
        if args.head != "linear":
            raise ValueError(f"--kind {kind} keeps the checkpoint's fc as a linear head: leave out --head {args.head}")
        given = get_label_set(args.labels) if args.labels else None
        if kind == "efficientface":
            if args.backbone and args.backbone.split(".")[0] != "efficientface":
                raise ValueError(f"--kind efficientface is the efficientface backbone, not {args.backbone!r}: leave "
                                 "out --backbone")
            model = convert_efficientface_checkpoint(path, given, args.image_size or 224)
        else:
            model = convert_ldg_checkpoint(path, given, args.image_size or 224, backbone=args.backbone)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        notes.append(
            f"head: the checkpoint's fc ({model.config.num_labels} classes"
            + ("" if given else ", in EfficientFace's RAF-DB folder order, README.md:30") + "); input "
            f"{model.config.image_size} px normalised with EfficientFace's RAF-DB mean {list(EFFICIENTFACE_RAFDB_MEAN)} "
            f"and std {list(EFFICIENTFACE_RAFDB_STD)} (main.py:96-97)"
        )
        if kind == "ldg":
            notes.append(f"usable as a teacher: fer-mek train --method ldt --teacher {output}")
    elif kind == "mek-resnet":
        labels = get_label_set(args.labels or infer_label_set(path))
        model = _convert_mek_file(path, labels, args.image_size or 224, args.backbone, source)
        config = model.config
        if published_checkpoint(path):
            notes.append(
                f"training settings of the published checkpoint recorded in config.json: smoothing {config.smoothing}, "
                f"attention_weight {config.attention_weight}, dropout {config.dropout}, balance_weight_rule "
                f"{config.balance_weight_rule} (class_counts {config.class_counts}), head_init {config.head_init}"
            )
            serving = model.conversion["serving"]
            notes.append("serving settings of the source (demo.py) in preprocessor_config.json: "
                         + ", ".join(f"{key}={value}" for key, value in serving.items()))
            reported = model.conversion.get("reported")
            if reported:
                notes.append(f"conversion.json: the source reports accuracy {reported['accuracy']} / mean-class "
                             f"{reported['mean_class_accuracy']} on {reported['dataset']} test ({reported['num_test_images']} "
                             "images), not verified here")
        else:
            notes.append(
                f"note: {path.name} is not a published MEK checkpoint name "
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
        if is_efficientface_checkpoint(raw) and not backbone:
            backbone = "efficientface"
        if not backbone:
            raise ValueError("--kind backbone needs --backbone (a timm model name, e.g. resnet18); a ResNet classifier "
                             "whose fc should stay the head (EfficientFace's LDG teacher) is --kind ldg")
        config = MEKConfig(
            backbone=backbone, backbone_kwargs=backbone_kwargs, head=args.head,
            image_size=args.image_size or backbone_kwargs.get("img_size", 224), id2label=dict(enumerate(labels)), **extra,
        )
        model = MEKForImageClassification(config)
        report = load_backbone_weights(model, raw if isinstance(raw, Mapping) else path)
        notes.append(
            f"backbone: {report['loaded_tensors']} tensors loaded, keys dropped: {report['dropped_keys']}"
            + (f"; {report['final_norm']}" if "final_norm" in report else "")
            + "; the head is new and must be trained"
        )
    save_converted(model, output, overwrite=args.overwrite)
    print(f"converted {shown} ({kind}, backbone {model.config.backbone}, head {model.config.head}, "
          f"{model.config.num_labels} classes: {', '.join(labels)}) -> {output}")
    for note in notes:
        print(note)


def cli_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The command line (``scripts/convert_checkpoint.py``): :func:`main` with its errors as one ``error: ...``
    line (exit status 1)."""
    try:
        return main(argv, prog)
    except WriteError as error:  # read-only folder, full disk: the message says which folder and what to do
        print(f"error: {error.strerror or error}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

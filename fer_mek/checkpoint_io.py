"""Reading checkpoint files safely and fitting their state_dicts to modules (the lowest layer of
:mod:`fer_mek.convert`, which re-exports these names).

Files are read with ``torch.load(weights_only=True)`` (or safetensors): no pickled code is ever executed. Every
misfit is an error that lists the keys concerned; nothing is loaded partially.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["StateDict", "fit_problems", "load_backbone_state_dict", "load_exact", "load_state_dict_file", "read_checkpoint"]

StateDict = dict[str, torch.Tensor]

# Wrappers that training scripts put around a state_dict ({"state_dict": ..., "epoch": ...}); "state_dict_backbone" is
# the official MEK Swin checkpoint's (start_0.pt, saved by an insightface-style face-recognition training).
_NESTING_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "state_dict_backbone")

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
    kind = _file_kind(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if kind == "torch":
            raise ValueError(f"{path} is not a safetensors file (it looks like a torch pickle); rename it to .pth / "
                             ".bin (it is then read with torch.load(weights_only=True))")
        try:
            return load_file(str(path))
        except SafetensorError as error:
            raise ValueError(f"{path} is not a readable safetensors file ({error}); is the download complete?") from error
    if kind == "safetensors":
        raise ValueError(f"{path} is a safetensors file, not a torch pickle; rename it to .safetensors")
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


def _file_kind(path: Path) -> str | None:
    """``"torch"`` (a zip archive, torch.save's format, or a bare pickle), ``"safetensors"`` (an 8-byte header size
    followed by a JSON header) or ``None`` (neither, or unreadable), from the first bytes of ``path``."""
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return "safetensors"
    return None


def _normalize_state_dict(obj: Any, origin: Any = "state_dict") -> StateDict:
    # A wrapper is unwrapped even when tensors sit beside it (e.g. EfficientFace's {"state_dict": ..., "best_acc":
    # tensor(88.36)}, main.py:81-83): a real state_dict never maps one of these names to a dict.
    while isinstance(obj, Mapping):
        nested = [key for key in _NESTING_KEYS if isinstance(obj.get(key), Mapping)]
        if not nested:
            if _is_tensor_mapping(obj):
                break
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

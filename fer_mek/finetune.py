"""Starting a new model from a saved fer-mek model, whatever its label set (the trainer's ``--init``).

``--init`` names where a run's weights start from. Besides backbone files and timm weights
(:func:`fer_mek.convert.load_backbone_weights`) it accepts a saved fer-mek model: a ``save_pretrained`` folder (a
run's ``best/``) or a Hub id. Everything of that model that does not depend on its classes is loaded (the backbone,
and a ``"conv_bn"`` head's ``BatchNorm2d`` when the new model has that head too); the classifier is loaded only when
the two label sets are the same classes in the same order, and is otherwise left as the new model initialised it
(``head_init``). The loss's balance weights always come from the new model's config (the run's train class
counts). The returned record says which tensors were loaded and which were not.

The same rule holds for ``MEKForImageClassification.from_pretrained(..., id2label=..., ignore_mismatched_sizes=True)``
(see :class:`fer_mek.MEKConfig`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .checkpoint_io import load_backbone_state_dict, load_exact
from .locations import ModelLoadError, describe_missing_model, locate_model
from .modeling_mek import MEKPreTrainedModel

__all__ = ["check_init", "describe_init", "initialize_from", "is_model_source", "load_from_model"]

# What a checkpoint file's name ends with: such an --init is a backbone file, never a model folder or Hub id.
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".pkl", ".tar")


def is_model_source(init: str | os.PathLike) -> bool:
    """Whether ``init`` names a saved model (a folder, or a Hub id) rather than ``random``, ``timm[:NAME.TAG]`` or a
    backbone file (an existing file, or a name with a checkpoint file's suffix)."""
    text = os.fspath(init)
    if text in ("random", "timm") or text.startswith("timm:"):
        return False
    path = Path(text).expanduser()
    if path.is_dir():
        return True
    return not path.exists() and not text.lower().endswith(_FILE_SUFFIXES)


def check_init(init: str | os.PathLike) -> None:
    """Check ``--init`` before anything loads: a backbone file must exist, a model folder must exist and hold a
    ``config.json`` (a Hub id is checked when it is loaded). Raises ``ValueError`` with one line saying what is wrong."""
    text = os.fspath(init)
    if text in ("random", "timm") or text.startswith("timm:"):
        return
    if is_model_source(text):
        try:
            locate_model(text)
        except ModelLoadError as error:
            raise ModelLoadError(f"--init {error}") from None
    elif not Path(text).expanduser().is_file():
        raise ValueError(f"--init {text!r}: not random, timm, nor an existing state_dict file (nor timm:NAME.TAG, a "
                         "fer-mek model folder or a Hub id)")


def _label_names(config: Any) -> list[str]:
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def load_from_model(model: MEKPreTrainedModel, source: str | os.PathLike) -> dict[str, Any]:
    """Load into ``model`` everything of the saved fer-mek model ``source`` that does not depend on its classes.

    Args:
        model: A freshly built :class:`MEKModel` or :class:`MEKForImageClassification` (the run's labels, head and
            balance weights).
        source: A ``save_pretrained`` folder or a Hub id (offline: from the Hub cache).

    Returns:
        A record for the run's results: ``source``, ``kind``, the saved model's ``labels``, ``loaded_tensors`` (how
        many), ``loaded`` (the model's key prefixes that were loaded) and ``reinitialised`` (the keys that kept the
        new model's initialisation, with why).

    Raises:
        ValueError: if ``source`` is not a fer-mek model, or its backbone does not fit the model's (naming the keys).
    """
    from . import modeling_mek
    from .configuration_mek import MEKConfig

    text = os.fspath(source)
    try:
        name = locate_model(text)  # a local folder that is not there is "no such folder", not a Hub error
        config_dict, _ = MEKConfig.get_config_dict(name)
    except ModelLoadError as error:
        raise ModelLoadError(f"--init {error}") from None
    except OSError as error:
        raise ModelLoadError(f"--init {describe_missing_model(text, error)}") from None
    if config_dict.get("model_type") != MEKConfig.model_type:
        raise ValueError(
            f"--init {text}: its config.json has model_type {config_dict.get('model_type')!r}, not "
            f"{MEKConfig.model_type!r}: not a fer-mek model (a backbone file loads from its .pth/.safetensors path)"
        )
    saved = modeling_mek.MEKModel.from_pretrained(name)
    ours = model.base_model
    what = f"--init {text}"
    own_arch, saved_arch = model.config.backbone.split(".")[0], saved.config.backbone.split(".")[0]
    if own_arch != saved_arch:
        raise ValueError(
            f"{what}: the saved model's backbone is {saved.config.backbone!r}, this model's {model.config.backbone!r}; "
            f"train with --backbone {saved.config.backbone} to start from it"
        )
    tensors = load_backbone_state_dict(ours.backbone, saved.backbone.state_dict(), what)["loaded_tensors"]
    prefix = f"{model.base_model_prefix}." if ours is not model else ""
    loaded = [f"{prefix}backbone"]
    reinitialised: dict[str, str] = {}
    if saved.config.head == model.config.head == "conv_bn":
        state = saved.head.bn.state_dict()
        load_exact(ours.head.bn, state, f"{what} (head.bn)")
        loaded.append(f"{prefix}head.bn")
        tensors += len(state)
    else:
        for name in ours.head.state_dict():
            if not name.startswith("classifier."):
                reinitialised[f"{prefix}head.{name}"] = f"the saved model has a {saved.config.head!r} head"
    same_classes = _label_names(saved.config) == _label_names(model.config)
    if same_classes and saved.config.head == model.config.head:
        state = saved.head.classifier.state_dict()
        load_exact(ours.head.classifier, state, f"{what} (head.classifier)")
        loaded.append(f"{prefix}head.classifier")
        tensors += len(state)
    else:
        why = ("the saved model has another head" if same_classes
               else f"the saved model has other classes ({', '.join(_label_names(saved.config))})")
        for name in ours.head.classifier.state_dict():
            reinitialised[f"{prefix}head.classifier.{name}"] = f"{why}: head_init {model.config.head_init!r}"
    return {
        "source": text,
        "kind": "fer-mek model",
        "labels": _label_names(saved.config),
        "loaded_tensors": tensors,
        "loaded": loaded,
        "reinitialised": reinitialised,
        "balance_weights": "from this model's config (the run's train class counts)",
    }


def describe_init(report: dict[str, Any]) -> str:
    """``report`` (of :func:`initialize_from`) in a few words for the run's opening line: the source and, for a saved
    model, what loaded and what starts fresh."""
    if report.get("kind") != "fer-mek model":
        return str(report.get("source", "random"))
    fresh = sorted({key.rsplit(".", 1)[0] for key in report.get("reinitialised", {})})
    return (f"{report['source']}: loaded {', '.join(report['loaded'])}"
            + (f"; fresh {', '.join(fresh)} (its classes: {', '.join(report['labels'])})" if fresh else ""))


def initialize_from(model: MEKPreTrainedModel, init: str | os.PathLike, reset_final_norm: bool = False) -> dict[str, Any]:
    """Initialise a freshly built model from ``init`` (the trainer's ``--init``): a saved fer-mek model (folder or
    Hub id, :func:`load_from_model`), or backbone weights (``timm``, ``timm:NAME.TAG``, a file:
    :func:`fer_mek.convert.load_backbone_weights`). Returns the record of what took effect."""
    from .convert import load_backbone_weights
    from .convert import reset_final_norm as _reset_final_norm

    if not is_model_source(init):
        return load_backbone_weights(model, init, reset_final_norm=reset_final_norm)
    with torch.no_grad():
        report = load_from_model(model, init)
    if reset_final_norm:
        report.update(_reset_final_norm(model))
    return report

"""Where a model comes from and where it runs: the checks every command that takes ``--model`` or ``--device`` makes
before it loads anything.

:func:`locate_model` tells a local folder from a Hugging Face Hub id, so that a mistyped local path is reported as
``no such folder: runs/synthetic-mek/bset (did you mean runs/synthetic-mek/best?)`` rather than as a Hub or network
error; :func:`resolve_device` turns ``--device`` into a ``torch.device`` that exists on this machine, or says in one
line why not. Their errors (:class:`ModelLoadError`, :class:`DeviceError`) are ``ValueError``\\ s whose message is
meant to be shown to the user as it is.

The standard library only at import (torch is imported when :func:`resolve_device` runs), so that command lines can
check their arguments before the model stack loads.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "DeviceError",
    "ModelLoadError",
    "describe_missing_model",
    "is_hub_id",
    "locate_model",
    "model_folder_hint",
    "resolve_device",
]

#: A Hub repository id: ``name`` or ``owner/name`` (huggingface_hub's ``validate_repo_id`` rules).
_HUB_ID = re.compile(r"(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}")


class ModelLoadError(ValueError):
    """A model could not be found or loaded, or models of an ensemble do not fit together."""


class DeviceError(ValueError):
    """A device that does not exist on this machine (``cuda`` without a GPU, ``cuda:3`` with one GPU, ...)."""


def is_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hub repository id (``name`` or ``owner/name``; no ``..``, ``--`` or
    ``.git`` ending, not starting or ending with ``-`` or ``.``)."""
    if not _HUB_ID.fullmatch(name) or "--" in name or ".." in name or name.endswith(".git"):
        return False
    return all(part and part[0] not in "-." and part[-1] not in "-." for part in name.split("/"))


def locate_model(model: str | os.PathLike) -> str:
    """The name to pass to ``from_pretrained`` for ``--model``: an existing model folder (``~`` expanded), or a Hub id.

    A name that looks like a local path (absolute, ``./``, ``../``, ``~``, a backslash, more than one ``/``, or not of
    the Hub id form) must be an existing folder with a ``config.json``; ``owner/name`` that is not a local folder is
    taken for a Hub id (:func:`describe_missing_model` words the error when the Hub has no such model either).

    Raises:
        ModelLoadError: No such folder (with the closest existing folder, when there is one), a folder without
            ``config.json`` (with the model folders below it), or a file instead of a folder.
    """
    text = os.fspath(model)
    if not text.strip():
        raise ModelLoadError("the model name is empty; pass a folder written by save_pretrained or a Hub id")
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            hint = model_folder_hint(path)
            raise ModelLoadError(
                f"{text}: folder has no config.json; pass a folder written by save_pretrained"
                + (f" (did you mean {hint}?)" if hint else "")
            )
        return os.fspath(path)
    if path.exists():
        hint = model_folder_hint(path.parent)
        raise ModelLoadError(
            f"{text}: a file, not a model folder; pass the folder written by save_pretrained"
            + (f" (did you mean {hint}?)" if hint else "")
        )
    if _looks_local(text):
        raise ModelLoadError(describe_missing_model(text))
    return text


def describe_missing_model(name: str, hub_error: BaseException | None = None) -> str:
    """The one-line error for a model that is not a local folder: ``no such folder: NAME (did you mean ...?)``, and
    when it was also tried as a Hub id, the first line of why that failed."""
    hint = model_folder_hint(Path(name).expanduser())
    text = f"no such folder: {name}" + (f" (did you mean {hint}?)" if hint else "")
    if hub_error is None:
        return text
    reason = _first_line(hub_error)
    return f"{text}; as a Hub id it cannot be loaded either ({reason})"


def model_folder_hint(path: Path) -> str | None:
    """The model folder (one with ``config.json``) a user most likely meant by ``path``, or ``None``.

    Walks ``path`` from its start; a component that does not exist is replaced by the closest existing folder name
    (``difflib``), and a folder that is not a model folder by a model folder at most two levels below it (``best``
    first).
    """
    parts = path.parts
    if not parts:
        return None
    current = Path(parts[0]) if path.is_absolute() else Path(".")
    rest = parts[1:] if path.is_absolute() else parts
    changed = False
    for part in rest:
        candidate = current / part
        if candidate.is_dir():
            current = candidate
            continue
        try:
            names = sorted(entry.name for entry in current.iterdir() if entry.is_dir())
        except OSError:
            break
        close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
        if not close:
            break
        current, changed = current / close[0], True
    if (current / "config.json").is_file():
        return _shown(current) if changed or current != path else None
    below = _model_folders_below(current)
    return _shown(below[0]) if below else None


def _model_folders_below(folder: Path, depth: int = 2) -> list[Path]:
    """Model folders (``config.json``) up to ``depth`` levels below ``folder``; ``best`` before ``last`` before the
    rest, shallow before deep."""
    found: list[Path] = []
    level = [folder]
    for _ in range(depth):
        children = []
        for parent in level:
            try:
                children.extend(sorted(entry for entry in parent.iterdir() if entry.is_dir()))
            except OSError:
                continue
        found.extend(child for child in children if (child / "config.json").is_file())
        if found:
            break
        level = children[:200]
    order = {"best": 0, "last": 1}
    return sorted(found, key=lambda p: (order.get(p.name, 2), str(p)))


def _looks_local(text: str) -> bool:
    if text.startswith((".", "~", "/", os.sep)) or "\\" in text or Path(text).is_absolute():
        return True
    if not is_hub_id(text):
        return True
    # owner/name where a folder named `owner` exists here: a path into it (runs/synthetic-mek-typo), not a Hub id.
    return "/" in text and Path(text.split("/", 1)[0]).is_dir()


def _shown(path: Path) -> str:
    return os.fspath(path)


def _first_line(error: BaseException) -> str:
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def resolve_device(device: Any = None) -> Any:
    """``device`` (``None``, ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device``) as a
    ``torch.device`` that exists here; ``None`` or ``"auto"``: CUDA when available, else the CPU.

    Raises:
        DeviceError: An unknown device name, or a device this machine does not have (one line that says which
            devices there are).
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as error:
        raise DeviceError(
            f"unknown device {str(device)!r} ({_first_line(error)}); use cpu, cuda, cuda:1, mps or auto"
        ) from error
    name = str(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            built = "built without CUDA" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, no GPU found"
            raise DeviceError(f"device {name!r}: CUDA is not available on this machine (torch {torch.__version__}, "
                              f"{built}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {name!r}: Apple's MPS is not available on this machine; use --device cpu or auto")
    elif resolved.type != "cpu":
        backend = getattr(torch, resolved.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise DeviceError(f"device {name!r} is not available on this machine; use --device cpu or auto")
    return resolved

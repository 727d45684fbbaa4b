"""One entry point for every data source, as used by the scripts' ``--source`` option."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from fer_mek_cli.defaults import SOURCE_ROOTS

from .fer2013 import load_fer2013
from .folder import load_hub_dataset, load_image_folder
from .rafdb import load_rafdb
from .synthetic import load_synthetic

__all__ = ["SOURCES", "load_source"]

#: ``--source`` values (:data:`fer_mek_cli.defaults.SOURCE_ROOTS`, the one list, in its order): the loader of each and
#: what its ``root`` is.
_LOADERS: dict[str, Callable[..., datasets.DatasetDict]] = {
    "synthetic": load_synthetic,
    "rafdb": load_rafdb,
    "fer2013": load_fer2013,
    "folder": load_image_folder,
    "hub": load_hub_dataset,
}
SOURCES: dict[str, tuple[Callable[..., datasets.DatasetDict], str]] = {
    name: (_LOADERS[name], root) for name, root in SOURCE_ROOTS.items()
}


def load_source(source: str, root: str | Path | None = None, **kwargs: Any) -> datasets.DatasetDict:
    """Load a data source by name: ``rafdb``, ``fer2013``, ``folder``, ``hub`` or ``synthetic``.

    Keyword arguments that are ``None`` are dropped, so a command line can pass all of its options; the others go
    to the source's loader (:func:`~fer_mek.data.load_rafdb`, :func:`~fer_mek.data.load_fer2013`,
    :func:`~fer_mek.data.load_image_folder`, :func:`~fer_mek.data.load_hub_dataset`,
    :func:`~fer_mek.data.load_synthetic`). ``skip_bad`` is accepted (and meaningless) for ``synthetic``.

    Args:
        source: The source name.
        root: What the source reads (see :data:`SOURCES`); must be ``None`` for ``synthetic``.
        **kwargs: Loader options, e.g. ``val_fraction``, ``seed``, ``val_split`` (every source: ``stratified``,
            ``permutation`` or ``none``), ``skip_bad``, ``label_mapping``, ``test_split`` (``fer2013``).

    Raises:
        ValueError: on an unknown source, a missing root, or a root that does not match the source's layout
            (:class:`~fer_mek.data.DataError`, which says what was expected).
        TypeError: on an option the source's loader does not take.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of {sorted(SOURCES)}")
    loader, root_help = SOURCES[source]
    options = {k: v for k, v in kwargs.items() if v is not None}
    if source == "synthetic":
        if root is not None:
            raise ValueError(
                "source 'synthetic' generates its images and takes no root; drop --root (pass cache_dir=... to "
                "choose where the generated set is cached)"
            )
        options.pop("skip_bad", None)
    elif root is None:
        raise ValueError(f"source {source!r} needs a root: {root_help}")
    parameters = inspect.signature(loader).parameters
    unknown = sorted(k for k in options if k not in parameters)
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        accepted = sorted(k for k in parameters if k not in ("root", "path_or_root", "name_or_path"))
        raise TypeError(f"source {source!r} does not take {unknown}; its options are {accepted}")
    if source == "synthetic":
        return loader(**options)
    return loader(root, **options)

"""Crash-safe writing of model folders and files: a killed process never leaves a half-written result behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename.

    If the block raises (or the process dies), ``path`` keeps its previous content and the temporary folder is
    removed (or left with a ``.tmp-`` prefix that is never mistaken for a result).

    Raises:
        FileExistsError: if ``path`` exists, is not empty and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} already exists; choose another output folder or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    # mkdtemp makes the folder private (0700); the result should get the permissions of any new folder.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
        replace_directory(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def replace_directory(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make the complete folder ``staging`` the new ``target`` by renames (same file system).

    The old ``target`` is moved aside before ``staging`` takes its place, so that at every instant one complete
    version exists (at ``target`` or at its ``.old-`` name beside it), and removed afterwards.
    """
    staging, target = Path(staging), Path(target)
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=target.parent))
        os.replace(target, retired / target.name)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path

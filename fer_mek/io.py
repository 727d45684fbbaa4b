"""Crash-safe writing of model folders and files: a killed process never leaves a half-written result behind.

Folders are replaced through names that say what they hold, beside the target ``NAME``:

- ``.tmp-NAME-*``: a copy being written (incomplete until renamed);
- ``.new-NAME-*/NAME``: a complete copy, about to become ``NAME`` (the rename into it marks it complete);
- ``.old-NAME-*/NAME``: the complete previous ``NAME``, moved aside while the new one takes its place;
- ``.del-NAME-*``: a previous copy being deleted.

At every instant a complete version exists at ``NAME`` or in a ``.new-``/``.old-`` folder. :func:`recover_directory`
puts such a copy back after a kill between two renames and removes the leftovers. Files are written with the
permissions of any new file (the umask's), not the private mode of ``tempfile``.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["WriteError", "atomic_directory", "atomic_file", "atomic_write_text", "check_writable",
           "recover_directory", "remove_partial_files", "replace_directory", "writing"]

#: Prefixes of the folders :func:`replace_directory` leaves beside a target while it works (module docstring).
_STAGING, _COMPLETE, _RETIRED, _DISCARDED = ".tmp-", ".new-", ".old-", ".del-"


class WriteError(OSError):
    """A file or folder could not be written (full disk, read-only folder, ...); the message names it and says what
    to do. What existed before is intact."""


#: Words of the messages of libraries that report a failed file write without an ``OSError``.
_WRITE_FAILURES = ("no space", "storagefull", "unexpected pos", "file write failed", "read-only file system",
                   "permission denied", "ioerror")


def _hint(error: BaseException) -> str:
    number = getattr(error, "errno", None)
    text = str(error).lower()
    if number == errno.ENOSPC or any(word in text for word in ("no space", "storagefull", "unexpected pos",
                                                                 "file write failed")):
        return "the disk is full: free some space or choose a folder on another disk"
    if number in (errno.EACCES, errno.EPERM, errno.EROFS) or "read-only" in text or "permission denied" in text:
        return "the folder is not writable: fix its permissions or choose another folder"
    return "check the disk and the folder's permissions"


@contextmanager
def writing(path: str | os.PathLike, what: str = "", intact: str = "") -> Iterator[None]:
    """Turn an ``OSError`` (or a library's error of a failed file write: torch, safetensors) inside the block into one
    :class:`WriteError` line: ``could not write <what> <path> (<reason>): <hint>. <intact>``."""
    try:
        yield
    except WriteError:
        raise
    except Exception as error:
        # torch reports a failed write as a RuntimeError ("unexpected pos", "file write failed"), safetensors with
        # its own error type (IoError ... StorageFull): those are write errors too; anything else is not ours.
        if not isinstance(error, OSError) and not any(word in str(error).lower() for word in _WRITE_FAILURES):
            raise
        reason = getattr(error, "strerror", None) or (str(error).strip().splitlines() or [type(error).__name__])[0]
        message = f"could not write {what + ' ' if what else ''}{path} ({reason}): {_hint(error)}"
        failure = WriteError(message + (f"; {intact}" if intact else ""))
        failure.errno = getattr(error, "errno", None) or errno.EIO
        raise failure from error


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> None:
    """Create ``folder`` if needed and write (then remove) a probe file in it; :class:`WriteError` if that fails."""
    folder = Path(folder)
    with writing(folder, what):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass


def _ordinary_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` (made private by ``tempfile``) the permissions of any new file or folder (the umask's)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def _ordinary_modes(folder: Path) -> None:
    """Ordinary permissions for everything written into a staging folder: some writers (``tempfile``, safetensors)
    create private (0600) files, which a shared run folder or an upload should not inherit."""
    _ordinary_mode(folder, directory=True)
    for root, folders, files in os.walk(folder):
        for name in folders:
            _ordinary_mode(os.path.join(root, name), directory=True)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                _ordinary_mode(path, directory=bool(os.stat(path).st_mode & 0o100))


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (:func:`replace_directory`).

    If the block raises (or the process dies), ``path`` keeps its previous content and the temporary folder is
    removed (or left with a ``.tmp-`` prefix that is never mistaken for a result, and that :func:`recover_directory`
    removes).

    Raises:
        FileExistsError: if ``path`` exists, is not empty and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} already exists; choose another output folder or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{path.name}-", dir=path.parent))
    _ordinary_mode(staging, directory=True)
    try:
        yield staging
        replace_directory(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _discard(container: Path, name: str) -> None:
    """Delete a ``.new-``/``.old-`` container: renamed to ``.del-`` first, so that a kill while deleting never leaves
    a partial copy under a name that says complete."""
    doomed = container.with_name(_DISCARDED + container.name[len(_RETIRED):])
    try:
        os.replace(container, doomed)
    except OSError:
        doomed = container
    shutil.rmtree(doomed, ignore_errors=True)


def replace_directory(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make the complete folder ``staging`` the new ``target`` by renames (same file system).

    ``staging`` is first renamed to ``.new-NAME-*/NAME`` (from then on recognisably complete), the old ``target`` is
    moved to ``.old-NAME-*/NAME``, the new copy takes its place, and the old one is deleted. At every instant one
    complete version exists; :func:`recover_directory` restores it after a kill between the renames. Files in
    ``staging`` get ordinary permissions first (some writers make them private).
    """
    staging, target = Path(staging), Path(target)
    _ordinary_modes(staging)
    ready = Path(tempfile.mkdtemp(prefix=f"{_COMPLETE}{target.name}-", dir=target.parent))
    os.replace(staging, ready / target.name)
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f"{_RETIRED}{target.name}-", dir=target.parent))
        os.replace(target, retired / target.name)
        os.replace(ready / target.name, target)
        _discard(retired, target.name)
    else:
        os.replace(ready / target.name, target)
    ready.rmdir()


def recover_directory(target: str | os.PathLike) -> list[str]:
    """After a kill during :func:`replace_directory`: put a complete copy back at ``target`` and remove the leftovers.

    When ``target`` is missing, the newest complete new copy (``.new-NAME-*/NAME``) takes its place, or else the
    previous version (``.old-NAME-*/NAME``). Then, with ``target`` in place, the folders this module left beside it
    (``.tmp-``, ``.new-``, ``.old-``, ``.del-`` + ``NAME-``) are deleted; nothing else is touched. Call it only while
    no other process writes ``target`` (e.g. when a run starts). Returns one line per action, to be shown.
    """
    target = Path(target)
    parent, name = target.parent, target.name
    if not parent.is_dir():
        return []

    def leftovers(prefix: str) -> list[Path]:
        return sorted((p for p in parent.glob(f"{prefix}{name}-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)

    messages = []
    if not target.exists():
        for prefix, kind in ((_COMPLETE, "the complete new copy"), (_RETIRED, "the previous copy")):
            copies = [p for p in leftovers(prefix) if (p / name).is_dir()]
            if copies:
                os.replace(copies[-1] / name, target)
                messages.append(f"recovered {target} from {kind} that an interrupted save left in {copies[-1].name}")
                break
    if target.exists():
        removed = [p for prefix in (_STAGING, _COMPLETE, _RETIRED, _DISCARDED) for p in leftovers(prefix)]
        for folder in removed:
            shutil.rmtree(folder, ignore_errors=True)
        if removed:
            messages.append(f"removed {len(removed)} leftover folder(s) of interrupted saves beside {target}: "
                            + ", ".join(p.name for p in removed))
    return messages


def remove_partial_files(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files that :func:`atomic_file` writes beside ``path`` (``.NAME.*.tmp``) and that a killed
    process left behind; one line when there were any. Only while no other process writes ``path``."""
    path = Path(path)
    partial = sorted(p for p in path.parent.glob(f".{path.name}.*.tmp") if p.is_file()) if path.parent.is_dir() else []
    for file in partial:
        file.unlink()
    return [f"removed {len(partial)} partial file(s) of interrupted writes of {path}"] if partial else []


@contextmanager
def atomic_file(path: str | os.PathLike, binary: bool = False) -> Iterator[IO]:
    """Yield a handle on a temporary file beside ``path``; when the block succeeds it becomes ``path`` in one rename,
    with ordinary permissions. On failure ``path`` is untouched and the temporary file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _ordinary_mode(tmp)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename (ordinary permissions)."""
    with atomic_file(path) as handle:
        handle.write(text)
    return Path(path)

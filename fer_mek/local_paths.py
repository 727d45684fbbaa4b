"""Local paths out of what is published: one function reduces every absolute path in a text or a JSON-like value.

A model repository must not show the trainer's file system: its data roots, run folders, home directory or the
files named in the text of a skipped item's reason. :func:`reduce_local_paths` finds every absolute path (POSIX,
``~/...``, ``file://...``, ``C:\\...``, ``\\\\server\\share``) anywhere inside a string — a whole value or a few
words of a message — and reduces it:

* a path at or below a known root (the run folder, the data root: ``roots``, matched as written, spaces included)
  becomes the root's public name followed by the relative rest (``/home/alice/data/rafdb/Image/1.jpg`` →
  ``rafdb/Image/1.jpg``);
* the home directory itself becomes ``~``;
* any other absolute path becomes its last component (``/tmp/x/y/weights.pth`` → ``weights.pth``). Outside the known
  roots a space ends a path: of ``/home/alice/My Photos/1.jpg`` the words ``Photos/1.jpg`` stay, a relative rest.

Relative paths, URLs (``https://...``) and fractions (``3/7``) are left alone. :func:`reduce_folder` applies it to
every text file of a folder about to be published (``*.md``, ``*.json``, ``*.txt``, ``*.yaml``...): :mod:`fer_mek.publish`
calls it on the assembled folder, so that no field is forgotten. Importing this module has no side effect.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TEXT_SUFFIXES", "Root", "reduce_folder", "reduce_local_paths", "roots_of"]

#: A known local folder and the name it is published under: ``(path, public_name)``.
Root = tuple[str, str]

#: The files of a published folder whose text is reduced (the code, ``*.py``, is the package's own and not touched).
TEXT_SUFFIXES = (".md", ".json", ".txt", ".yaml", ".yml", ".csv", ".cfg", ".toml")

# Characters that end a path segment: whitespace, quotes, brackets, separators of lists and of "file: reason".
_STOP = r"\s\"'`<>|:;,()\[\]{}*?"
_SEGMENT = rf"[^/\\{_STOP}]+"
# A path starts where no word, dot, separator, colon, tilde or dash precedes it: "a/b", "../b", "https://x/y" and
# "3/7" are not absolute paths.
_START = r"(?<![\w.:/\\~\-])(?:file://)?"
_PATH = re.compile(rf"{_START}(?:~|[A-Za-z]:|\\\\)?(?:[/\\]+{_SEGMENT})+")


def _home_forms() -> frozenset[str]:
    home = Path.home()
    return frozenset({str(home).rstrip("/\\"), str(home.resolve()).rstrip("/\\")})


def roots_of(pairs: Iterable[tuple[str | os.PathLike | None, str | None]]) -> list[Root]:
    """Known roots from ``(path, public_name)`` pairs (``None`` paths skipped; ``None`` name: the folder's name), each
    as given and resolved, longest first. A filesystem root, the home directory and its parents are never roots (all
    the paths below them would keep their folders)."""
    home = _home_forms()
    roots: dict[str, str] = {}
    for path, name in pairs:
        if not path or not str(path).strip():
            continue
        given = Path(os.path.expanduser(str(path)))
        if not given.is_absolute():
            continue  # a relative path is published as it is; its absolute forms fall to the general rule
        for form in (str(given), str(given.resolve())):
            form = form.rstrip("/\\")
            if not Path(form).name or any(h == form or h.startswith(form + os.sep) for h in home):
                continue
            forms = [form] + [f"~{form[len(h):]}" for h in home if form.startswith(h + os.sep)]
            for spelled in forms:
                roots.setdefault(spelled, name or Path(form).name)
    return sorted(roots.items(), key=lambda item: len(item[0]), reverse=True)


@functools.lru_cache(maxsize=16)
def _known_roots(roots: tuple[Root, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(root) for root, _ in roots)
    return re.compile(rf"{_START}(?P<root>{alternatives})(?=[/\\{_STOP}]|$)(?P<rest>(?:[/\\]+{_SEGMENT})*)")


def _reducer(roots: Sequence[Root]) -> Callable[[str], str]:
    """The function that reduces the paths of one string, for ``roots`` and this user's home directory."""
    names, home = dict(roots), _home_forms()
    known = _known_roots(tuple(roots)) if roots else None

    def reduce_known(match: re.Match[str]) -> str:
        rest = match.group("rest").lstrip("/\\").replace("\\", "/")
        return names[match.group("root")] + (f"/{rest}" if rest else "")

    def reduce_other(match: re.Match[str]) -> str:
        path = match.group(0).removeprefix("file://")
        if os.path.expanduser(path).rstrip("/\\") in home:
            return "~"
        parts = [part for part in re.split(r"[/\\]+", path) if part and part != "~"]
        return parts[-1] if parts else path

    def reduce(text: str) -> str:
        if "/" not in text and "\\" not in text:
            return text
        if known is not None:
            text = known.sub(reduce_known, text)
        return _PATH.sub(reduce_other, text)

    return reduce


def reduce_local_paths(value: Any, roots: Sequence[Root] = ()) -> Any:
    """``value`` with every absolute local path inside its strings reduced (see the module's description).

    Args:
        value: A string, or a JSON-like value (dicts — keys included —, lists, tuples; other values are kept).
        roots: Known roots, from :func:`roots_of`.
    """
    reduce = _reducer(roots)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return reduce(item)
        if isinstance(item, dict):
            return {walk(key): walk(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return type(item)(walk(inner) for inner in item)
        return item

    return walk(value)


def reduce_folder(folder: str | os.PathLike, roots: Sequence[Root] = ()) -> list[str]:
    """Reduce the local paths of every text file (:data:`TEXT_SUFFIXES`) under ``folder``, in place.

    A JSON file is rewritten (indent 2) only when one of its strings changes, so that files without local paths keep
    their bytes; any other text file is reduced as text.

    Returns:
        The relative paths of the files that changed, sorted.
    """
    folder = Path(folder)
    changed = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES):
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            reduced = reduce_local_paths(data, roots)
            new = text if reduced == data else json.dumps(reduced, indent=2, ensure_ascii=False) + "\n"
        else:
            new = reduce_local_paths(text, roots)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path.relative_to(folder).as_posix())
    return changed

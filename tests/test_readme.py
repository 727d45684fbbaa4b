"""Every ```python block of README.md runs as written (offline, against a tiny saved model).

The README's examples load ``runs/synthetic-mek/best``, the folder ``make demo`` leaves; here it is a tiny saved MEK
model in a temporary working directory. Each block runs on its own, in a fresh namespace: a block that uses a name it
does not define fails with ``NameError``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(markdown: Path) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown file, with the line number each starts on."""
    text = markdown.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start()) + 2, match.group(1)) for match in _BLOCK.finditer(text)]


def run_block(markdown: Path, line: int, code: str) -> dict:
    namespace = {"__name__": "__readme__"}
    exec(compile(code, f"{markdown.name}, block at line {line}", "exec"), namespace)  # noqa: S102
    return namespace


README_BLOCKS = python_blocks(REPO_ROOT / "README.md")


def test_readme_has_python_examples():
    assert len(README_BLOCKS) >= 2


@pytest.fixture
def demo_folder(saved_tiny_model, tmp_path, monkeypatch):
    """A working directory with runs/synthetic-mek/best, as `make demo` leaves it (a tiny model here)."""
    folder, _ = saved_tiny_model
    shutil.copytree(folder, tmp_path / "runs" / "synthetic-mek" / "best")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("line,code", README_BLOCKS, ids=[f"line{line}" for line, _ in README_BLOCKS])
def test_readme_python_block_runs_as_written(demo_folder, line, code):
    run_block(REPO_ROOT / "README.md", line, code)

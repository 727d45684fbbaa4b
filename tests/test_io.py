"""Crash-safe folder writing."""

from __future__ import annotations

import os

import pytest

from fer_mek.io import atomic_directory, atomic_write_text


def test_atomic_directory_gives_ordinary_permissions(tmp_path):
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "f.txt").write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask


def test_atomic_directory_keeps_the_old_folder_when_the_block_fails(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target, overwrite=True) as staging:
        (staging / "weights").write_text("half")
        raise RuntimeError("killed")
    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_directory_refuses_a_non_empty_folder_without_overwrite(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"), atomic_directory(tmp_path / "model"):
        pass


def test_atomic_write_text_replaces_whole_files(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "results.json", "{}")
    assert path.read_text() == "{}" and [p.name for p in path.parent.iterdir()] == ["results.json"]

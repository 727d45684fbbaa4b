"""Crash-safe folder writing."""

from __future__ import annotations

import errno
import os

import pytest

from fer_mek.io import (
    WriteError,
    atomic_directory,
    atomic_write_text,
    check_writable,
    recover_directory,
    remove_partial_files,
    replace_directory,
    writing,
)


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


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_atomic_files_and_replaced_folders_get_ordinary_permissions(tmp_path):
    """tempfile and safetensors create private (0600) files: run files and model folders get the umask's modes."""
    path = atomic_write_text(tmp_path / "results.json", "{}")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "model.safetensors").write_text("x")
    (staging / "model.safetensors").chmod(0o600)
    replace_directory(staging, tmp_path / "best")
    assert (tmp_path / "best" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _folder(path, content: str):
    path.mkdir(parents=True)
    (path / "weights").write_text(content)
    return path


def test_replace_directory_leaves_nothing_beside_the_target(tmp_path):
    _folder(tmp_path / "checkpoint", "old")
    replace_directory(_folder(tmp_path / ".tmp-checkpoint-5", "new"), tmp_path / "checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert (tmp_path / "checkpoint" / "weights").read_text() == "new"


@pytest.mark.parametrize("left,expected", [
    ({".new-checkpoint-a/checkpoint": "new", ".old-checkpoint-b/checkpoint": "old"}, "new"),  # between the renames
    ({".old-checkpoint-b/checkpoint": "old", ".tmp-checkpoint-9": "half"}, "old"),  # no complete new copy
    ({".new-checkpoint-a": None, ".old-checkpoint-b/checkpoint": "old"}, "old"),  # an empty container: not complete
])
def test_recover_directory_puts_a_complete_copy_back(tmp_path, left, expected):
    for name, content in left.items():
        if content is None:
            (tmp_path / name).mkdir()
        else:
            _folder(tmp_path / name, content)
    (tmp_path / "mine").mkdir()  # not ours: never touched
    (tmp_path / ".tmp-results.json-x").mkdir()  # another target's: never touched
    messages = recover_directory(tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint" / "weights").read_text() == expected
    assert messages[0].startswith(f"recovered {tmp_path / 'checkpoint'} from the "
                                  + ("complete new copy" if expected == "new" else "previous copy"))
    assert messages[1].startswith(f"removed {len(left)} leftover folder(s)")  # the emptied container too
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-results.json-x", "checkpoint", "mine"]


def test_recover_directory_with_the_target_in_place_only_cleans(tmp_path):
    _folder(tmp_path / "best", "current")
    for name in (".tmp-best-1", ".new-best-2/best", ".old-best-3/best", ".del-best-4"):
        _folder(tmp_path / name, "stale")
    assert len(recover_directory(tmp_path / "best")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert (tmp_path / "best" / "weights").read_text() == "current"
    assert recover_directory(tmp_path / "best") == [] and recover_directory(tmp_path / "absent") == []


@pytest.mark.parametrize("error,hint", [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 2048 vs 1990"), "the disk is full"),
    (OSError(errno.EROFS, "Read-only file system"), "the folder is not writable"),
])
def test_writing_turns_a_failed_write_into_one_line(tmp_path, error, hint):
    with pytest.raises(WriteError) as caught, writing(tmp_path / "x", "the model", intact="the old one is intact"):
        raise error
    text = str(caught.value)
    assert text.startswith(f"could not write the model {tmp_path / 'x'} (") and hint in text
    assert text.endswith("; the old one is intact") and "\n" not in text


def test_writing_lets_other_errors_through(tmp_path):
    with pytest.raises(RuntimeError, match="shape mismatch"), writing(tmp_path):
        raise RuntimeError("shape mismatch")


def test_check_writable_names_the_folder(tmp_path, monkeypatch):
    import tempfile

    check_writable(tmp_path / "new" / "run")
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(WriteError, match="could not write the run folder .* the folder is not writable"):
        check_writable(tmp_path, "the run folder")


def test_remove_partial_files_removes_only_the_temporary_files_of_that_file(tmp_path):
    (tmp_path / ".results.json.abc123.tmp").write_text("{half")
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / ".other.json.x.tmp").write_text("not ours to judge")
    assert remove_partial_files(tmp_path / "results.json") == [
        f"removed 1 partial file(s) of interrupted writes of {tmp_path / 'results.json'}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.x.tmp", "results.json"]
    assert remove_partial_files(tmp_path / "results.json") == []

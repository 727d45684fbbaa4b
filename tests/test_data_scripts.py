"""scripts/prepare_data.py (``fer_mek.data.prepare``), run through its ``main``."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from fer_mek.data import class_counts, get_metadata, load_source
from fer_mek.data.fixtures import write_rafdb
from fer_mek.labels import RAFDB_LABELS
from tests.data_fixtures import RAF_TEST, RAF_TRAIN, SIZE


@pytest.fixture(scope="module")
def prepare():
    from fer_mek.data import prepare

    return prepare


def test_prepare_synthetic_saves_dataset_and_summary(prepare, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FER_MEK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    argv = ["--output", str(out), "--num-images", "60", "--image-size", "24", "--seed", "2"]
    assert prepare.main(argv) == 0
    printed = capsys.readouterr().out
    assert "validation" in printed and RAFDB_LABELS[3] in printed
    summary = json.loads((out / prepare.SUMMARY_NAME).read_text())
    saved = datasets.load_from_disk(str(out))
    for split in ("train", "validation", "test"):
        assert list(summary["splits"][split]["class_counts"].values()) == class_counts(saved[split])
    assert summary["metadata"]["seed"] == 2 and summary["metadata"]["synthetic"] is True
    reloaded = load_source("hub", str(out))
    assert get_metadata(reloaded)["prepared_from"] == "synthetic"
    with pytest.raises(SystemExit, match="--overwrite"):
        prepare.main(argv)
    assert prepare.main([*argv, "--overwrite"]) == 0


def test_prepare_rafdb_skip_bad_lists_items(prepare, tmp_path: Path, capsys) -> None:
    root = write_rafdb(tmp_path / "raf", RAF_TRAIN, RAF_TEST, size=SIZE, style="flat")
    (root / "Image" / "aligned" / "test_0001_aligned.jpg").unlink()
    out = tmp_path / "out"
    assert prepare.main(["--source", "rafdb", "--root", str(root), "--output", str(out)]) == 2
    assert "is missing" in capsys.readouterr().err and not out.exists()
    assert prepare.main(["--source", "rafdb", "--root", str(root), "--output", str(out), "--skip-bad"]) == 0
    assert "skipped 1 bad item" in capsys.readouterr().out
    summary = json.loads((out / prepare.SUMMARY_NAME).read_text())
    assert summary["num_skipped"] == 1 and "test_0001" in summary["metadata"]["skipped"][0]["reason"]


def test_prepare_folder_mapping_and_hub_push(prepare, tmp_path: Path, monkeypatch) -> None:
    from fer_mek.data.fixtures import write_image_folder

    root = write_image_folder(tmp_path / "f", ["a", "b", "contempt"], [10, 10, 4], [2, 2, 1], size=SIZE, style="flat")
    pushed: dict = {}
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", lambda self, repo, **kw: pushed.update(repo=repo, **kw))
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_file", lambda self, **kw: pushed.update(upload=kw))
    argv = ["--source", "folder", "--root", str(root), "--output", str(tmp_path / "o"), "--label-mapping", "contempt="]
    assert prepare.main([*argv, "--push-to-hub", "me/fer", "--private"]) == 0
    assert pushed["repo"] == "me/fer" and pushed["private"] is True
    assert pushed["upload"]["path_in_repo"] == prepare.SUMMARY_NAME and pushed["upload"]["repo_type"] == "dataset"
    summary = json.loads((tmp_path / "o" / prepare.SUMMARY_NAME).read_text())
    assert summary["label_names"] == ["a", "b"] and summary["metadata"]["dropped"] == {"contempt": 5}

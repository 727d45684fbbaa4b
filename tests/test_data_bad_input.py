"""Bad input: each problem gives an error naming the file / line and the fix, or is skipped and listed."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from fer_mek.data import DataError, get_metadata, load_fer2013, load_image_folder, load_rafdb, summarize
from fer_mek.data.fixtures import write_fer2013_csv, write_image_folder, write_rafdb
from fer_mek.data.rafdb import RAFDB_LABEL_FILE
from fer_mek.labels import RAFDB_LABELS
from tests.data_fixtures import FER_USAGE_COUNTS, RAF_TEST, RAF_TRAIN, SIZE


@pytest.fixture(scope="module")
def clean_rafdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rafdb(tmp_path_factory.mktemp("rafdb"), RAF_TRAIN, RAF_TEST, size=SIZE, style="flat")


@pytest.fixture
def rafdb(clean_rafdb: Path, tmp_path: Path) -> Path:
    """A fresh copy that a test may damage."""
    return Path(shutil.copytree(clean_rafdb, tmp_path / "rafdb"))


@pytest.fixture(scope="module")
def clean_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fer2013_csv(tmp_path_factory.mktemp("fer") / "fer2013.csv", FER_USAGE_COUNTS, style="flat")


def _label_lines(root: Path) -> list[str]:
    return (root / RAFDB_LABEL_FILE).read_text().splitlines()


def _write_label_lines(root: Path, lines: list[str]) -> None:
    (root / RAFDB_LABEL_FILE).write_text("\n".join(lines) + "\n")


def _csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_missing_image_names_label_line_and_can_be_skipped(rafdb: Path) -> None:
    victim = rafdb / "Image" / "aligned" / "train_00003_aligned.jpg"
    victim.unlink()
    line = next(i for i, text in enumerate(_label_lines(rafdb), start=1) if text.startswith("train_00003.jpg"))
    with pytest.raises(DataError) as info:
        load_rafdb(rafdb)
    message = str(info.value)
    assert f"list_patition_label.txt, line {line}" in message and "train_00003_aligned.jpg" in message
    assert "is missing" in message and "skip_bad=True" in message
    data = load_rafdb(rafdb, skip_bad=True)
    meta = get_metadata(data)
    assert meta["num_skipped"] == 1 and meta["skipped"][0]["line"] == line
    assert summarize(data)["num_skipped"] == 1
    assert len(data["train"]) + len(data["validation"]) == sum(RAF_TRAIN) - 1


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_image_is_named(rafdb: Path, damage: str) -> None:
    victim = rafdb / "Image" / "aligned" / "test_0002_aligned.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a jpeg at all")
    with pytest.raises(DataError, match=r"test_0002_aligned\.jpg: cannot decode the image"):
        load_rafdb(rafdb)
    skipped = get_metadata(load_rafdb(rafdb, skip_bad=True))["skipped"]
    assert [Path(item["file"]).name for item in skipped] == ["test_0002_aligned.jpg"]


def test_unknown_and_malformed_label_lines(rafdb: Path) -> None:
    lines = _label_lines(rafdb)
    _write_label_lines(rafdb, [lines[0].split()[0] + " 9", *lines[1:]])
    with pytest.raises(
        DataError, match=r"line 1: label 9 of train_00001\.jpg is not a RAF-DB basic label \(1=surprise"
    ):
        load_rafdb(rafdb)
    _write_label_lines(rafdb, [lines[0], "train_00002.jpg", *lines[2:]])
    with pytest.raises(DataError, match=r"line 2: expected '<image name> <label 1-7>'"):
        load_rafdb(rafdb)
    _write_label_lines(rafdb, [*lines, lines[0]])
    with pytest.raises(DataError, match=r"listed twice \(first on line 1\)"):
        load_rafdb(rafdb)
    _write_label_lines(rafdb, [*lines, "val_00001.jpg 3"])
    with pytest.raises(DataError, match="neither 'train_' nor 'test_'"):
        load_rafdb(rafdb)
    data = load_rafdb(rafdb, skip_bad=True)
    assert get_metadata(data)["num_skipped"] == 1


def test_empty_test_split_and_missing_class(rafdb: Path) -> None:
    lines = _label_lines(rafdb)
    _write_label_lines(rafdb, [line for line in lines if line.startswith("train_")])
    with pytest.raises(DataError, match=r"split 'test' is empty: .*no usable 'test_\*' image"):
        load_rafdb(rafdb)
    _write_label_lines(rafdb, [line for line in lines if not (line.startswith("train_") and line.endswith(" 2"))])
    with pytest.raises(DataError, match=rf"class '{RAFDB_LABELS[1]}' \(index 1\) has no training image"):
        load_rafdb(rafdb)


def test_single_image_class_cannot_be_stratified(rafdb: Path) -> None:
    lines = _label_lines(rafdb)
    fear = [line for line in lines if line.startswith("train_") and line.endswith(" 2")]
    _write_label_lines(rafdb, [line for line in lines if line not in fear[1:]])
    with pytest.raises(DataError, match=rf"\['{RAFDB_LABELS[1]}'\] have a single training image"):
        load_rafdb(rafdb)


def test_unknown_rafdb_class_folder(tmp_path: Path) -> None:
    root = write_rafdb(tmp_path / "r", RAF_TRAIN, RAF_TEST, layout="folders", size=SIZE, style="flat")
    (root / "train" / "8").mkdir()
    with pytest.raises(DataError, match=r"unknown class \['8'\].*named by label number \(1=surprise"):
        load_rafdb(root)


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda row: [row[0], row[1] + " 7", row[2]], r"'pixels' has 2305 values, expected 2304"),
        (lambda row: [row[0], row[1].replace(" ", " x", 1), row[2]], r"'pixels' holds a non-numeric value 'x"),
        (lambda row: [row[0], "300" + row[1][row[1].index(" ") :], row[2]], r"'pixels' has values outside 0-255"),
        (lambda row: ["7", row[1], row[2]], r"unknown emotion '7' \(expected 0-6: 0=angry"),
        (lambda row: [row[0], row[1], "Validation"], r"unknown Usage 'Validation'"),
        (lambda row: [row[0], row[1]], r"row has 2 fields, expected 3"),
    ],
    ids=["pixel-count", "non-numeric", "range", "emotion", "usage", "fields"],
)
def test_bad_csv_rows_name_the_line(clean_csv: Path, tmp_path: Path, edit, pattern: str) -> None:
    rows = _csv_rows(clean_csv)
    rows[5] = edit(rows[5])
    path = _write_csv(tmp_path / "fer2013.csv", rows)
    with pytest.raises(DataError, match=r"fer2013\.csv, line 6: " + pattern):
        load_fer2013(path)
    data = load_fer2013(path, skip_bad=True)
    meta = get_metadata(data)
    assert meta["num_skipped"] == 1 and meta["skipped"][0]["line"] == 6


def test_csv_missing_column_and_empty_test(clean_csv: Path, tmp_path: Path) -> None:
    rows = _csv_rows(clean_csv)
    path = _write_csv(tmp_path / "fer2013.csv", [[r[0], r[1]] for r in rows])
    with pytest.raises(DataError, match=r"line 1: missing column\(s\) \['Usage'\]"):
        load_fer2013(path)
    path = _write_csv(tmp_path / "fer2013.csv", [r for r in rows if r[2] != "PrivateTest"])
    with pytest.raises(DataError, match=r"split 'test' is empty: .*PrivateTest \(try test_split='PublicTest'\)"):
        load_fer2013(path)
    assert len(load_fer2013(path, test_split="PublicTest")["test"]) == sum(FER_USAGE_COUNTS["PublicTest"])


def test_image_folder_problems(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "f", ["a", "b"], [10, 10], [2, 2], size=SIZE, style="flat")
    (root / "train" / "notes.txt").write_text("not an image")
    (root / "train" / "b" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"broken\.png: cannot decode the image"):
        load_image_folder(root)
    data = load_image_folder(root, skip_bad=True)
    meta = get_metadata(data)
    assert meta["num_skipped"] == 1 and meta["ignored_files"] == ["train/notes.txt"]
    with pytest.raises(DataError, match=r"unknown class \['b'\].*label_mapping=\{'b': None\}"):
        load_image_folder(root, label_names=["a", "c"], skip_bad=True)
    (root / "test" / "c").mkdir()
    (root / "test" / "c" / "x.png").write_bytes((root / "test" / "a" / "test_00000.jpg").read_bytes())
    with pytest.raises(DataError, match=r"class 'c' \(index 2\) has no training image.*label_mapping"):
        load_image_folder(root, skip_bad=True)


def test_too_small_validation_split_explains(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "f", list("abcde"), [3] * 5, [1] * 5, size=SIZE, style="flat")
    with pytest.raises(DataError, match=r"val_fraction=0\.1 of 15 images gives 2 held-out .* for 5 classes"):
        load_image_folder(root)
    assert len(load_image_folder(root, val_fraction=0.34)["validation"]) == 6

"""Loaders of every source on fixtures in the real layouts: class mapping, split sizes, stratification, determinism."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest

from fer_mek.data import (
    DataError,
    class_counts,
    format_summary,
    get_metadata,
    load_fer2013,
    load_hub_dataset,
    load_image_folder,
    load_rafdb,
    load_source,
    summarize,
)
from fer_mek.data.fixtures import write_fer2013_csv, write_fer2013_folders, write_image_folder, write_rafdb
from fer_mek.labels import FER2013_FOLDER_LABELS, FER2013_LABELS, RAFDB_LABELS
from tests.data_fixtures import FER_USAGE_COUNTS, RAF_TEST, RAF_TRAIN, SIZE, class_position


@pytest.fixture(scope="module")
def rafdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rafdb(tmp_path_factory.mktemp("rafdb"), RAF_TRAIN, RAF_TEST, size=SIZE, style="flat")


@pytest.fixture(scope="module")
def rafdb_folders_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rafdb(
        tmp_path_factory.mktemp("rafdb_f"), RAF_TRAIN, RAF_TEST, layout="folders", size=SIZE, style="flat"
    )


@pytest.fixture(scope="module")
def fer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fer2013_csv(tmp_path_factory.mktemp("fer") / "fer2013.csv", FER_USAGE_COUNTS, style="flat")


@pytest.fixture(scope="module")
def fer_folders_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Same number of images per class *name* as the CSV's Training / PrivateTest rows.
    by_name_train = dict(zip(FER2013_LABELS, FER_USAGE_COUNTS["Training"], strict=True))
    by_name_test = dict(zip(FER2013_LABELS, FER_USAGE_COUNTS["PrivateTest"], strict=True))
    return write_fer2013_folders(
        tmp_path_factory.mktemp("fer_f"),
        [by_name_train[n] for n in FER2013_FOLDER_LABELS],
        [by_name_test[n] for n in FER2013_FOLDER_LABELS],
        style="flat",
    )


def _check_positions(data: datasets.DatasetDict, position_of_name) -> None:
    """Every image's encoded class position matches its label's class name."""
    for split in data.values():
        names = split.features["label"].names
        for row in split:
            assert class_position(row["image"]) == position_of_name(names[row["label"]])


def _check_stratified(data: datasets.DatasetDict, val_fraction: float) -> None:
    train, val = class_counts(data["train"]), class_counts(data["validation"])
    n_total = sum(train) + sum(val)
    assert len(data["validation"]) == math.ceil(val_fraction * n_total)
    for n_train, n_val in zip(train, val, strict=True):
        expected = len(data["validation"]) * (n_train + n_val) / n_total
        assert abs(n_val - expected) <= 1.0 + 1e-9, (train, val)


def test_rafdb_distributed_mapping_sizes_and_stratification(rafdb_root: Path) -> None:
    data = load_rafdb(rafdb_root)
    assert list(data) == ["train", "validation", "test"]
    assert isinstance(data["train"].features["image"], datasets.Image)
    assert data["train"].features["label"].names == list(RAFDB_LABELS)
    assert len(data["train"]) + len(data["validation"]) == sum(RAF_TRAIN)
    assert class_counts(data["test"]) == list(RAF_TEST)
    assert [a + b for a, b in zip(class_counts(data["train"]), class_counts(data["validation"]), strict=True)] == list(
        RAF_TRAIN
    )
    _check_stratified(data, 0.1)
    _check_positions(data, RAFDB_LABELS.index)  # label file number n -> RAFDB_LABELS[n - 1]
    meta = get_metadata(data)
    assert meta["source"] == "rafdb" and meta["layout"] == "distributed"
    assert meta["val_fraction"] == 0.1 and meta["seed"] == 0 and meta["num_skipped"] == 0


def test_rafdb_folders_match_distributed(rafdb_root: Path, rafdb_folders_root: Path) -> None:
    folders = load_rafdb(rafdb_folders_root)
    distributed = load_rafdb(rafdb_root)
    assert get_metadata(folders)["layout"] == "folders"
    assert folders["train"].features["label"].names == list(RAFDB_LABELS)
    for split in ("train", "validation", "test"):
        assert class_counts(folders[split]) == class_counts(distributed[split])
    _check_positions(folders, RAFDB_LABELS.index)


def test_rafdb_original_images_and_basic_subfolder(tmp_path: Path) -> None:
    write_rafdb(tmp_path / "RAF" / "basic", RAF_TRAIN, RAF_TEST, image_dir="original", size=SIZE, style="flat")
    data = load_rafdb(tmp_path / "RAF", image_dir="original")  # the parent of basic/ is accepted
    assert len(data["test"]) == sum(RAF_TEST)
    with pytest.raises(DataError, match="image_dir"):
        load_rafdb(tmp_path / "RAF")  # Image/aligned/ does not exist


def test_split_is_deterministic_and_leak_free(rafdb_root: Path) -> None:
    def paths(data: datasets.DatasetDict, split: str) -> list[str]:
        return [im["path"] for im in data[split].cast_column("image", datasets.Image(decode=False))["image"]]

    first, second, other = load_rafdb(rafdb_root), load_rafdb(rafdb_root), load_rafdb(rafdb_root, seed=1)
    assert paths(first, "validation") == paths(second, "validation")
    assert paths(first, "train") == paths(second, "train")
    assert set(paths(first, "validation")) != set(paths(other, "validation"))
    train, val, test = (set(paths(first, s)) for s in ("train", "validation", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert all(Path(p).name.startswith("test_") for p in test)


def test_val_fraction_is_configurable(rafdb_root: Path) -> None:
    data = load_rafdb(rafdb_root, val_fraction=0.25, seed=3)
    _check_stratified(data, 0.25)
    assert get_metadata(data)["val_fraction"] == 0.25 and get_metadata(data)["seed"] == 3


def test_fer2013_csv_class_order_and_usage(fer_csv: Path) -> None:
    data = load_fer2013(fer_csv)
    assert data["train"].features["label"].names == list(FER2013_LABELS)
    assert class_counts(data["test"]) == list(FER_USAGE_COUNTS["PrivateTest"])
    assert len(data["train"]) + len(data["validation"]) == sum(FER_USAGE_COUNTS["Training"])
    _check_stratified(data, 0.1)
    _check_positions(data, RAFDB_LABELS.index)  # each fixture row encodes its class name
    image = data["test"][0]["image"]
    assert image.size == (48, 48) and image.mode == "L"
    public = load_fer2013(fer_csv.parent, test_split="PublicTest")  # a folder holding fer2013.csv
    assert class_counts(public["test"]) == list(FER_USAGE_COUNTS["PublicTest"])
    assert get_metadata(data)["unused_rows"] == {"PublicTest": sum(FER_USAGE_COUNTS["PublicTest"])}


def test_fer2013_folders_keep_alphabetical_order(fer_csv: Path, fer_folders_root: Path) -> None:
    folders = load_fer2013(fer_folders_root)
    csv_data = load_fer2013(fer_csv)
    assert folders["train"].features["label"].names == list(FER2013_FOLDER_LABELS)
    assert FER2013_FOLDER_LABELS != FER2013_LABELS
    _check_positions(folders, RAFDB_LABELS.index)

    def by_name(data: datasets.DatasetDict, split: str) -> dict[str, int]:
        return dict(zip(data[split].features["label"].names, class_counts(data[split]), strict=True))

    assert by_name(folders, "test") == by_name(csv_data, "test")
    merged_f = {n: by_name(folders, "train")[n] + by_name(folders, "validation")[n] for n in FER2013_LABELS}
    merged_c = {n: by_name(csv_data, "train")[n] + by_name(csv_data, "validation")[n] for n in FER2013_LABELS}
    assert merged_f == merged_c


def test_image_folder_default_order_mapping_and_validation_folder(tmp_path: Path) -> None:
    names = ["zeta", "alpha", "mid"]
    root = write_image_folder(tmp_path / "f", names, [10, 12, 14], [3, 3, 3], size=SIZE, style="flat")
    data = load_image_folder(root)
    assert data["train"].features["label"].names == sorted(names)  # like torchvision's ImageFolder
    _check_positions(data, names.index)
    explicit = load_image_folder(root, label_names=["mid", "zeta", "alpha"])
    assert explicit["train"].features["label"].names == ["mid", "zeta", "alpha"]
    _check_positions(explicit, names.index)
    merged = load_image_folder(root, label_names=["a", "z"], label_mapping={"alpha": "a", "mid": "a", "zeta": "z"})
    assert class_counts(merged["test"]) == [6, 3]
    dropped = load_image_folder(root, label_mapping={"mid": None})
    assert dropped["train"].features["label"].names == ["alpha", "zeta"]
    assert get_metadata(dropped)["dropped"] == {"mid": 17}
    # An explicit val/ folder is the validation split.
    write_image_folder(tmp_path / "tmp_val", names, [2, 2, 2], None, size=SIZE, style="flat")
    (tmp_path / "tmp_val").rename(root / "val")
    with_val = load_image_folder(root)
    assert len(with_val["validation"]) == 6 and len(with_val["train"]) == 36
    assert get_metadata(with_val)["validation"] == "folder val/"


def test_image_folder_flat_layout_with_test_fraction(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "flat", ["a", "b"], [20, 30], None, size=SIZE, style="flat")
    data = load_image_folder(root, test_fraction=0.2)
    assert len(data["test"]) == 10 and class_counts(data["test"]) == [4, 6]
    assert sum(len(s) for s in data.values()) == 50
    with pytest.raises(DataError, match="test_fraction"):
        load_image_folder(root)


def test_hub_source_round_trip_keeps_splits_and_metadata(rafdb_root: Path, tmp_path: Path) -> None:
    data = load_rafdb(rafdb_root, seed=5)
    data.save_to_disk(str(tmp_path / "saved"))
    again = load_hub_dataset(tmp_path / "saved")
    for split in data:
        assert class_counts(again[split]) == class_counts(data[split])
    meta = get_metadata(again)
    assert meta["source"] == "hub" and meta["prepared_from"] == "rafdb" and meta["seed"] == 5
    assert meta["validation"] == "stratified_from_train"
    assert again["validation"][0]["image"].size == (SIZE, SIZE)  # the bytes were embedded by save_to_disk


def test_hub_source_renames_columns_and_maps_string_labels(tmp_path: Path) -> None:
    from PIL import Image

    def split(n_per_class: int) -> datasets.Dataset:
        labels = [name for name in ("x", "y", "contempt") for _ in range(n_per_class)]
        images = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(len(labels))]
        return datasets.Dataset.from_dict({"img": images, "expression": labels, "extra": list(range(len(labels)))})

    datasets.DatasetDict(train=split(10), test=split(2)).save_to_disk(str(tmp_path / "raw"))
    data = load_hub_dataset(tmp_path / "raw", label_column="expression", label_mapping={"contempt": None})
    assert data["train"].column_names == ["image", "label"]
    assert data["train"].features["label"].names == ["x", "y"]
    assert class_counts(data["test"]) == [2, 2]
    ints = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"image": [Image.new("L", (4, 4))] * 20, "label": [0, 1] * 10}),
        test=datasets.Dataset.from_dict({"image": [Image.new("L", (4, 4))] * 4, "label": [0, 1] * 2}),
    )
    ints.save_to_disk(str(tmp_path / "ints"))
    with pytest.raises(DataError, match="bare integers"):
        load_hub_dataset(tmp_path / "ints")
    named = load_hub_dataset(tmp_path / "ints", label_names=["calm", "joy"])
    assert named["train"].features["label"].names == ["calm", "joy"]


def test_load_source_dispatch_and_layout_errors(rafdb_root: Path, fer_csv: Path, tmp_path: Path) -> None:
    assert get_metadata(load_source("rafdb", rafdb_root, image_dir=None))["source"] == "rafdb"
    assert get_metadata(load_source("fer2013", fer_csv))["layout"] == "csv"
    with pytest.raises(ValueError, match="EmoLabel/list_patition_label.txt"):
        load_source("rafdb", fer_csv.parent)
    with pytest.raises(ValueError, match="emotion,pixels,Usage"):
        load_source("fer2013", rafdb_root)
    with pytest.raises(ValueError, match="train/<class>"):
        load_source("folder", tmp_path)
    with pytest.raises(ValueError, match="needs a root"):
        load_source("folder")
    with pytest.raises(ValueError, match="takes no root"):
        load_source("synthetic", rafdb_root)
    with pytest.raises(ValueError, match="unknown data source"):
        load_source("affectnet", rafdb_root)
    with pytest.raises(TypeError, match="test_split"):
        load_source("rafdb", rafdb_root, test_split="PublicTest")


def test_summary_table_and_weights(rafdb_root: Path) -> None:
    data = load_rafdb(rafdb_root)
    summary = summarize(data)
    assert summary["label_names"] == list(RAFDB_LABELS)
    assert summary["splits"]["test"]["class_counts"] == dict(zip(RAFDB_LABELS, RAF_TEST, strict=True))
    assert summary["train_class_counts"] == class_counts(data["train"])
    n = sum(summary["train_class_counts"])
    assert summary["balance_weights"] == pytest.approx([n / (10 * c) for c in summary["train_class_counts"]])
    table = format_summary(summary)
    assert "validation" in table and RAFDB_LABELS[1] in table and str(sum(RAF_TEST)) in table


def test_class_counts_ignores_transforms(rafdb_root: Path) -> None:
    data = load_rafdb(rafdb_root)
    transformed = data["test"].with_transform(lambda batch: {"x": [0] * len(batch["image"])})
    assert class_counts(transformed) == list(RAF_TEST)
    assert get_metadata(transformed)["source"] == "rafdb"

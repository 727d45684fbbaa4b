"""Validation split modes (stratified / MEK-CV's permutation / none) and FER-2013's test set choice, per loader.

MEK-CV's split (kaggle/mek_resnet18.py:133, 182-185): ``np.random.seed(42)``, ``idx = np.random.permutation(n)``,
``val_size = int(n * 0.1)``, ``val_idx = idx[:val_size]``, ``train_idx = idx[val_size:]`` over
``torchvision.datasets.ImageFolder(<root>/train)``. The references below are computed exactly so, with torchvision's
``ImageFolder`` itself listing the fixture tree.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
from torchvision.datasets import ImageFolder

from fer_mek.data import (
    DataError,
    cached_pixels,
    class_counts,
    format_summary,
    get_metadata,
    load_fer2013,
    load_hub_dataset,
    load_image_folder,
    load_rafdb,
    load_source,
    load_synthetic,
    permutation_split,
    summarize,
)
from fer_mek.data.fixtures import write_fer2013_csv, write_fer2013_folders, write_image_folder, write_rafdb
from fer_mek.data.folder import image_paths
from fer_mek.labels import FER2013_FOLDER_LABELS, FER2013_LABELS
from fer_mek.runs import DataOptions
from tests.data_fixtures import FER_USAGE_COUNTS, RAF_TEST, RAF_TRAIN, SIZE


@pytest.fixture(scope="module")
def rafdb_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rafdb(tmp_path_factory.mktemp("raf_f"), RAF_TRAIN, RAF_TEST, layout="folders", size=SIZE, style="flat")


@pytest.fixture(scope="module")
def rafdb_distributed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rafdb(tmp_path_factory.mktemp("raf_d"), RAF_TRAIN, RAF_TEST, size=SIZE, style="flat")


@pytest.fixture(scope="module")
def fer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fer2013_csv(tmp_path_factory.mktemp("fer") / "fer2013.csv", FER_USAGE_COUNTS, style="flat")


def mek_cv_split(train_dir: Path, seed: int = 42, fraction: float = 0.1) -> tuple[list, list, ImageFolder]:
    """MEK-CV's (train, validation) files and labels, in Subset order, from torchvision's ImageFolder."""
    reference = ImageFolder(str(train_dir))
    samples = [(str(Path(path).resolve()), label) for path, label in reference.samples]
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        idx = np.random.permutation(len(samples))
    finally:
        np.random.set_state(state)
    val_size = int(len(samples) * fraction)
    return [samples[i] for i in idx[val_size:]], [samples[i] for i in idx[:val_size]], reference


def files_and_labels(split: datasets.Dataset) -> list[tuple[str, int]]:
    labels = split.with_format("arrow", columns=["label"])["label"].to_pylist()
    return [(str(Path(p).resolve()), label) for p, label in zip(image_paths(split), labels, strict=True)]


def _state_digest() -> tuple:
    state = np.random.get_state()
    return state[0], state[1].tobytes(), state[2], state[3], state[4]


# ------------------------------------------------------------------------------------------ permutation
def test_permutation_split_of_a_rafdb_folder_tree_is_mek_cvs(rafdb_folders: Path) -> None:
    train, validation, reference = mek_cv_split(rafdb_folders / "train")
    assert reference.classes == [str(k) for k in range(1, 8)]  # RAF-DB label order = class index
    before = _state_digest()
    data = load_rafdb(rafdb_folders, val_fraction=0.1, seed=42, val_split="permutation")
    assert _state_digest() == before  # NumPy's global random state is left alone
    assert files_and_labels(data["train"]) == train  # the same files, labels and order as Subset(full, train_idx)
    assert files_and_labels(data["validation"]) == validation
    assert len(data["validation"]) == int(sum(RAF_TRAIN) * 0.1) and class_counts(data["test"]) == list(RAF_TEST)
    meta = get_metadata(data)
    assert meta["val_split"] == "permutation" and meta["validation"] == "permutation_from_train"
    assert meta["val_fraction"] == 0.1 and meta["seed"] == 42 and "not stratified" in meta["protocol"]
    other = load_rafdb(rafdb_folders, val_fraction=0.25, seed=3, val_split="permutation")
    train3, validation3, _ = mek_cv_split(rafdb_folders / "train", seed=3, fraction=0.25)
    assert files_and_labels(other["train"]) == train3 and files_and_labels(other["validation"]) == validation3


def test_permutation_of_the_distributed_layout_follows_image_names(rafdb_distributed: Path, rafdb_folders: Path) -> None:
    distributed = load_rafdb(rafdb_distributed, seed=42, val_split="permutation")
    folders = load_rafdb(rafdb_folders, seed=42, val_split="permutation")
    for split in ("train", "validation"):
        names = [Path(p).name.replace("_aligned", "") for p in image_paths(distributed[split])]
        assert names == [Path(p).name for p in image_paths(folders[split])]
        assert distributed[split]["label"] == folders[split]["label"]


def test_permutation_of_fer2013_folders_uses_imagefolders_alphabetical_classes(tmp_path: Path) -> None:
    root = write_fer2013_folders(tmp_path / "fer", [6, 3, 5, 9, 7, 6, 4], [2] * 7, style="flat")
    train, validation, reference = mek_cv_split(root / "train", fraction=0.2)
    assert reference.classes == list(FER2013_FOLDER_LABELS)
    data = load_fer2013(root, val_fraction=0.2, seed=42, val_split="permutation")
    assert data["train"].features["label"].names == list(FER2013_FOLDER_LABELS)
    assert files_and_labels(data["train"]) == train and files_and_labels(data["validation"]) == validation


def test_permutation_follows_imagefolder_through_nested_folders_and_odd_names(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    layout = {
        "b": ["x.png", "sub/y.jpg", "sub-a/z.jpg", "Sub/q.jpg", "10.jpg", "9.jpg", "a b.jpg"],
        "a": ["sub/deeper/k.jpg", "sub/l.jpg", "m.JPG", "_n.png", "N.png"],
        "C": ["1.jpg", "2.jpg", "3.jpg"],
    }
    from PIL import Image

    for name, files in layout.items():
        for file in [*files, *(f"extra{i}.jpg" for i in range(4))]:
            (root / "train" / name / file).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (len(file), 0, 0)).save(root / "train" / name / file)
        (root / "test" / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / "test" / name / "t.jpg")
    train, validation, reference = mek_cv_split(root / "train", seed=7, fraction=0.3)
    data = load_image_folder(root, val_fraction=0.3, seed=7, val_split="permutation")
    assert data["train"].features["label"].names == reference.classes == ["C", "a", "b"]
    assert files_and_labels(data["train"]) == train and files_and_labels(data["validation"]) == validation


def test_permutation_without_file_names_is_class_major(fer_csv: Path) -> None:
    data = load_fer2013(fer_csv, seed=42, val_split="permutation")
    pool = load_fer2013(fer_csv, val_split="none")["train"]  # every Training row, in file order
    labels = np.asarray(pool["label"])
    order = np.argsort(labels, kind="stable")
    idx = np.random.RandomState(42).permutation(len(pool))
    held = int(len(pool) * 0.1)
    expected_val = [image_paths(pool)[i] for i in order[idx[:held]]]
    assert image_paths(data["validation"]) == expected_val
    assert image_paths(data["train"]) == [image_paths(pool)[i] for i in order[idx[held:]]]


def test_permutation_split_function() -> None:
    table = datasets.Dataset.from_dict({"x": list(range(20))})
    kept, held = permutation_split(table, 0.25, 42)
    state = np.random.get_state()
    np.random.seed(42)
    idx = np.random.permutation(20)
    np.random.set_state(state)
    assert held["x"] == idx[:5].tolist() and kept["x"] == idx[5:].tolist()
    reverse = list(range(19, -1, -1))
    kept, held = permutation_split(table, 0.25, 42, order=reverse)
    assert held["x"] == [reverse[i] for i in idx[:5]]
    with pytest.raises(ValueError, match="permutation"):
        permutation_split(table, 0.25, 42, order=[0] * 20)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        permutation_split(table, 1.0, 42)


# ------------------------------------------------------------------------------------------ none
def test_none_keeps_all_of_train_and_an_empty_validation(rafdb_distributed: Path, tmp_path: Path) -> None:
    data = load_rafdb(rafdb_distributed, val_fraction=0.0, val_split="none")
    assert len(data["train"]) == sum(RAF_TRAIN) and class_counts(data["train"]) == list(RAF_TRAIN)
    assert len(data["validation"]) == 0 and class_counts(data["validation"]) == [0] * 7
    assert data["validation"].features == data["train"].features
    meta = get_metadata(data)
    assert meta["val_split"] == "none" and meta["validation"] == "none" and meta["val_fraction"] is None
    assert "no validation split" in meta["protocol"]
    summary = summarize(data)
    assert summary["splits"]["validation"]["num_rows"] == 0
    assert summary["balance_weights"] is not None and "validation" in format_summary(summary)
    assert cached_pixels(data["validation"], 8, cache_dir=tmp_path).shape == (0, 8, 8, 3)
    assert cached_pixels(data["validation"], 8).shape == (0, 8, 8, 3)
    # The stratified default is unchanged and says so.
    default = get_metadata(load_rafdb(rafdb_distributed))
    assert default["val_split"] == "stratified" and default["validation"] == "stratified_from_train"
    assert default["protocol"] == "validation = stratified 0.1 of train (seed 0); test used only for the final report"


def test_none_and_permutation_through_every_loader(fer_csv: Path, tmp_path: Path) -> None:
    fer = load_fer2013(fer_csv, val_split="none")
    assert len(fer["train"]) == sum(FER_USAGE_COUNTS["Training"]) and len(fer["validation"]) == 0
    folder = write_image_folder(tmp_path / "f", ["a", "b"], [10, 12], [3, 3], size=SIZE, style="flat")
    assert len(load_image_folder(folder, val_split="none")["train"]) == 22
    assert len(load_source("folder", folder, val_split="permutation")["validation"]) == 2  # int(22 * 0.1)
    data = load_fer2013(fer_csv, val_split="none")
    data.save_to_disk(str(tmp_path / "saved"))
    again = load_hub_dataset(tmp_path / "saved", val_split="none")
    assert len(again["train"]) == len(data["train"]) and len(again["validation"]) == 0
    # A prepared set without validation: its empty split counts as absent, the requested mode applies.
    carved = load_hub_dataset(tmp_path / "saved")
    assert len(carved["validation"]) == int(np.ceil(0.1 * len(data["train"])))
    assert get_metadata(carved)["validation"] == "stratified_from_train"
    permuted = load_hub_dataset(tmp_path / "saved", val_split="permutation", seed=42)
    assert len(permuted["validation"]) == int(0.1 * len(data["train"]))
    assert get_metadata(permuted)["validation"] == "permutation_from_train"
    prepared = load_fer2013(fer_csv, val_split="permutation", seed=42)
    prepared.save_to_disk(str(tmp_path / "prepared"))
    reused = get_metadata(load_hub_dataset(tmp_path / "prepared"))  # keeps the prepared split and says how it was made
    assert reused["validation"] == "permutation_from_train" and reused["val_split"] == "permutation"


def test_split_mode_errors(rafdb_distributed: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_split must be one of"):
        load_rafdb(rafdb_distributed, val_split="random")
    with pytest.raises(ValueError, match="val_split='none' trains on all of train"):
        load_rafdb(rafdb_distributed, val_fraction=0.0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        load_synthetic(num_images=40, val_fraction=1.0, val_split="permutation", cache=False)
    root = write_image_folder(tmp_path / "f", ["a", "b"], [10, 12], [3, 3], size=SIZE, style="flat")
    write_image_folder(tmp_path / "v", ["a", "b"], [2, 2], None, size=SIZE, style="flat")
    (tmp_path / "v").rename(root / "val")
    with pytest.raises(DataError, match="own validation split"):
        load_image_folder(root, val_split="permutation")
    no_val = load_image_folder(root, val_split="none")
    assert len(no_val["validation"]) == 0 and len(no_val["train"]) == 22
    assert get_metadata(no_val)["unused_validation_rows"] == 4
    assert get_metadata(load_image_folder(root))["val_split"] == "stratified"  # the val/ folder, as before
    tiny = write_image_folder(tmp_path / "tiny", ["a", "b"], [2, 3], [1, 1], size=SIZE, style="flat")
    with pytest.raises(DataError, match="holds out int"):
        load_image_folder(tiny, val_split="permutation")  # int(5 * 0.1) = 0
    with pytest.raises(DataError, match="not stratified"):  # a seed that holds out both images of class "a"
        load_image_folder(tiny, val_split="permutation", val_fraction=0.4, seed=_seed_emptying_class_a())


def _seed_emptying_class_a() -> int:
    for seed in range(1000):  # rows 0, 1 are class 'a'; two of the five are held out
        if set(np.random.RandomState(seed).permutation(5)[:2].tolist()) == {0, 1}:
            return seed
    raise AssertionError("no seed")


# ------------------------------------------------------------------------------------------ synthetic
def test_synthetic_split_modes(tmp_path: Path) -> None:
    default = load_synthetic(num_images=120, image_size=16, cache_dir=tmp_path)
    stratified = load_synthetic(num_images=120, image_size=16, cache_dir=tmp_path, val_split="stratified")
    for split in default:
        assert image_paths(stratified[split]) == image_paths(default[split])
    assert get_metadata(default)["val_split"] == "stratified"
    none = load_synthetic(num_images=120, image_size=16, cache_dir=tmp_path, val_split="none", val_fraction=0.0)
    assert len(none["validation"]) == 0 and image_paths(none["test"]) == image_paths(default["test"])
    assert sorted(image_paths(none["train"])) == sorted(image_paths(default["train"]) + image_paths(default["validation"]))
    meta = get_metadata(none)
    assert meta["val_split"] == "none" and meta["synthetic"] and meta["class_counts"]["validation"] == [0] * 7
    assert meta["class_counts"]["train"] == class_counts(none["train"])
    permuted = load_synthetic(num_images=120, image_size=16, cache_dir=tmp_path, val_split="permutation", seed=0,
                              val_fraction=0.2)
    pool = datasets.concatenate_datasets([default["train"], default["validation"]])
    order = np.argsort(np.asarray(pool["label"]), kind="stable")
    idx = np.random.RandomState(0).permutation(len(pool))
    held = int(len(pool) * 0.2)
    assert image_paths(permuted["validation"]) == [image_paths(pool)[i] for i in order[idx[:held]]]
    assert get_metadata(permuted)["val_fraction"] == 0.2
    assert len(list((tmp_path / "synthetic").iterdir())) == 1  # one generated set behind every mode


# ------------------------------------------------------------------------------------------ FER-2013 test set
def test_fer2013_public_and_private_test(fer_csv: Path) -> None:
    both = load_fer2013(fer_csv, test_split="PublicTest+PrivateTest")
    expected = [a + b for a, b in zip(FER_USAGE_COUNTS["PublicTest"], FER_USAGE_COUNTS["PrivateTest"], strict=True)]
    assert class_counts(both["test"]) == expected
    lines = [int(p.rsplit(":", 1)[1]) for p in image_paths(both["test"])]
    assert lines == sorted(lines)  # file order
    meta = get_metadata(both)
    assert meta["test_split"] == "PublicTest+PrivateTest" and meta["unused_rows"] == {}
    assert meta["test"] == "Usage in {PublicTest, PrivateTest}"
    private = load_fer2013(fer_csv)
    assert get_metadata(private)["test_split"] == "PrivateTest"
    assert class_counts(private["test"]) == list(FER_USAGE_COUNTS["PrivateTest"])
    for split in ("train", "validation"):  # the test choice does not move the split
        assert image_paths(both[split]) == image_paths(private[split])
    with pytest.raises(ValueError, match="test_split must be one of"):
        load_fer2013(fer_csv, test_split="Private")


def test_fer2013_folder_layout_test_is_its_folder(tmp_path: Path) -> None:
    root = write_fer2013_folders(tmp_path / "fer", [9] * 7, [2] * 7, style="flat")
    assert len(load_fer2013(root, test_split="PublicTest+PrivateTest")["test"]) == 14
    for single in ("PrivateTest", "PublicTest"):
        with pytest.raises(DataError, match="needs fer2013.csv"):
            load_fer2013(root, test_split=single)
    assert len(DataOptions(source="fer2013", data_root=str(root)).load()["test"]) == 14  # the default: test/
    with pytest.raises(DataError, match="needs fer2013.csv"):
        DataOptions(source="fer2013", data_root=str(root), fer2013_test="PublicTest").load()


# ------------------------------------------------------------------------------------------ DataOptions
def test_data_options_carry_the_split_mode_and_test_set(fer_csv: Path) -> None:
    assert DataOptions().loader_kwargs() == {"val_fraction": 0.1, "seed": 0, "num_images": None, "image_size": None}
    assert DataOptions(source="rafdb", data_root="x").loader_kwargs() == {"val_fraction": 0.1, "seed": 0,
                                                                          "skip_bad": False}
    options = DataOptions.from_config({"source": "fer2013", "data_root": str(fer_csv), "val_split": "permutation",
                                       "split_seed": 42, "fer2013_test": "PublicTest+PrivateTest", "lr": 1e-4})
    assert options.loader_kwargs() == {"val_fraction": 0.1, "seed": 42, "val_split": "permutation",
                                       "skip_bad": False, "test_split": "PublicTest+PrivateTest"}
    data = options.load()
    assert len(data["test"]) == sum(FER_USAGE_COUNTS["PublicTest"]) + sum(FER_USAGE_COUNTS["PrivateTest"])
    assert get_metadata(data)["val_split"] == "permutation"
    assert data["train"].features["label"].names == list(FER2013_LABELS)
    assert DataOptions.from_config({"source": "rafdb"}).val_split == "stratified"  # configs from before the option
    with pytest.raises(ValueError, match="fer2013_test"):
        DataOptions(source="rafdb", data_root="x", fer2013_test="PublicTest").loader_kwargs()
    none = DataOptions(val_split="none", val_fraction=0.0, synthetic_images=60, synthetic_image_size=16).load(cache=False)
    assert len(none["validation"]) == 0 and get_metadata(none)["val_split"] == "none"

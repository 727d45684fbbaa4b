"""Converted checkpoints (a ``save_pretrained`` folder with ``conversion.json``): their card
(``fer_mek.model_card_converted``) and their publishing (``fer_mek.publish``, ``scripts/push.py``).

The figures of a converted checkpoint are its source's: the card lists them in ``model-index`` marked
``verified: false``, with the dataset, split and source they come from, and never as measured by fer-mek. Offline: the
folders are tiny models built here, the upload goes to the loopback Hub (``tests/hub_server.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fer_mek import publish as publish_module
from fer_mek.labels import FER2013_FOLDER_LABELS, RAFDB_LABELS
from fer_mek.model_card_converted import (
    ConversionRecordError,
    build_converted_card,
    build_converted_card_data,
    reported_figures,
)
from fer_mek.modeling_mek import remote_code_files
from fer_mek.publish import PublishError, main, publish
from fer_mek.runs import CONVERSION, read_conversion, write_conversion
from fer_mek.verify import VerificationReport

from .conftest import FAKE_TOKEN, TINY_BACKBONE, TINY_IMAGE_SIZE
from .hub_server import FakeHub

REPO_ID = "alice/mek-resnet18-rafdb"
COMMIT = "3fb255f079b71b128d8bed1cfabd0c9ccd388010"
# The weights, their configurations and the package's model code (configuration_mek.py, modeling_mek.py, ...).
MODEL_FILES = {"model.safetensors", "config.json", "preprocessor_config.json"} | {p.name for p in remote_code_files()}
SERVING = {"do_grayscale": False, "do_clahe": True, "clahe_clip_limit": 2.0, "clahe_tile_grid_size": 8,
           "face_margin": 0.2, "face_square": False, "face_clip": True, "face_align": False, "default_tta": "flip"}


def conversion(dataset: str = "rafdb", **changes) -> dict:
    """A ``conversion.json`` in the layout of fer-mek's converter (``fer_mek.runs.write_conversion``)."""
    fer = dataset == "fer2013"
    filename = "mek_resnet34_fer2013_imagenet_best.pth" if fer else "mek_resnet18_rafdb_msceleb_best.pth"
    record = {
        "source": {"repo_id": "ToiTenBao/fer-mek-checkpoints", "filename": filename, "revision": "main",
                   "commit": "0123456789abcdef0123456789abcdef01234567", "sha256": "ab" * 32},
        "reported": {
            "accuracy": 0.7205 if fer else 0.8641, "mean_class_accuracy": 0.6960 if fer else 0.8137,
            "dataset": "FER-2013" if fer else "RAF-DB", "num_test_images": 7178 if fer else 3068,
            "split": ("FER-2013 image-folder release test/ (PublicTest + PrivateTest, 7,178 images), one view per image"
                      if fer else "RAF-DB official test set (the test/ folder, 3,068 aligned faces), one view per image"),
            "measured_with": {"face_crop": False, "clahe": False, "grayscale": False, "tta": "none"},
            "where": f"frichickens/MEK-CV@{COMMIT} scripts/push_to_hf.py:{39 if fer else 27} (the Hub README table)",
            "verified": False,
        },
        "training": {"epsilon": 0.1, "lambda": 0.1 if fer else 2.0, "dropout": 0.45 if fer else 0.4,
                     "balance_weight_rule": "mean1", "init": "torchvision ImageNet weights" if fer else
                     "MS-Celeb-1M face-recognition ResNet-18", "learning_rate": 1e-4 if fer else 3e-4,
                     "epochs": 80 if fer else 60, "script": "kaggle/mek_resnet34.py" if fer else
                     "kaggle/mek_resnet18_MS-Celeb-1M.py", "where": f"frichickens/MEK-CV@{COMMIT} kaggle/..."},
        "serving": {**SERVING, "do_grayscale": fer},
        "serving_source": {"where": f"frichickens/MEK-CV@{COMMIT} demo.py:116-199", "notes": "Haar cascade boxes."},
    }
    for key, value in changes.items():
        if value is None:
            record.pop(key, None)
        else:
            record[key] = value
    return record


def model_config(dataset: str = "rafdb") -> dict:
    from fer_mek import MEKConfig

    fer = dataset == "fer2013"
    labels = FER2013_FOLDER_LABELS if fer else RAFDB_LABELS
    counts = (3635, 394, 3664, 6419, 4479, 4359, 2889) if fer else (1157, 254, 651, 4311, 1762, 627, 2282)
    return MEKConfig(backbone=TINY_BACKBONE, head="conv_bn", image_size=TINY_IMAGE_SIZE, id2label=dict(enumerate(labels)),
                     smoothing=0.1, attention_weight=0.1 if fer else 2.0, dropout=0.45 if fer else 0.4,
                     balance_weight_rule="mean1", class_counts=counts).to_dict()


def make_converted(folder: Path, dataset: str = "rafdb", **changes) -> Path:
    """A converted folder: a tiny MEK model, its processor with the serving settings, and ``conversion.json``."""
    from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor

    record = conversion(dataset, **changes)
    config = MEKConfig.from_dict(model_config(dataset))
    torch.manual_seed(0)
    MEKForImageClassification(config).eval().save_pretrained(folder)
    MEKImageProcessor.from_model_config(config, **record.get("serving", {})).save_pretrained(folder)
    write_conversion(folder, record)
    return folder


def flat(text: str) -> str:
    """Prose without its line breaks (the card wraps its paragraphs and quotes)."""
    return " ".join(" ".join(line.removeprefix("> ") for line in text.splitlines()).split())


def load_card(card, tmp_path: Path):
    from huggingface_hub import ModelCard

    path = tmp_path / "README.md"
    path.write_text(str(card), encoding="utf-8")
    return ModelCard.load(path)


# ------------------------------------------------------------------------------------------------------- the card
def test_converted_card_model_index_round_trips_with_the_reported_figures_unverified(tmp_path):
    card = load_card(build_converted_card(conversion(), model_config(), REPO_ID, processor_config=SERVING), tmp_path)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert data.license == "other" and data.license_name == "rafdb-research-only" and data.license_link
    assert data.datasets == ["raf-db"] and "converted" in data.tags and data.base_model is None
    assert data.model_name == "mek-resnet18-rafdb"
    by_metric = {r.metric_type: r for r in data.eval_results}
    assert set(by_metric) == {"accuracy", "balanced_accuracy"}
    assert by_metric["accuracy"].metric_value == 0.8641
    assert by_metric["balanced_accuracy"].metric_value == 0.8137
    for result in data.eval_results:
        assert result.verified is False  # the source's figures, never presented as checked
        assert (result.task_type, result.dataset_type, result.dataset_name, result.dataset_split,
                result.dataset_config) == ("image-classification", "raf-db", "RAF-DB", "test", "basic")
        assert "reported by the source" in result.metric_name.lower()
        # Provenance: the file and line of the source that states the figures.
        assert result.source_url == (f"https://github.com/frichickens/MEK-CV/blob/{COMMIT}/scripts/push_to_hf.py#L27")
        assert result.source_name == "reported by frichickens/MEK-CV, scripts/push_to_hf.py:27"
    text = card.text
    assert "<!-- fer-mek:" not in text
    head = flat(text.split("## Model summary")[0])
    assert "Converted checkpoint, not trained by fer-mek" in head and "fer-mek has not measured" in head
    assert "ToiTenBao/fer-mek-checkpoints" in head and "mek_resnet18_rafdb_msceleb_best.pth" in head
    results = text.split("## Results")[1].split("## Classes")[0]
    prose = flat(results)
    assert "RAF-DB's official test partition (3,068 images)" in prose
    assert "| accuracy | **0.8641** | not measured |" in results
    assert "| mean-class accuracy | **0.8137** | not measured |" in results
    assert "reported by the source of the weights, not measured by fer-mek" in prose
    assert f"frichickens/MEK-CV@{COMMIT} scripts/push_to_hf.py:27" in prose
    # How to re-measure: the evaluation script, with the model's serving settings by default.
    assert (f"python scripts/eval.py --model {REPO_ID} --source rafdb --data-root data/RAF-DB/basic --output "
            "metrics.json") in results
    # The source measured one view per image, without CLAHE: the switches that follow its protocol.
    assert "# as the source measured: add --tta none --no-clahe" in results
    assert "use `--tta none` and `--no-clahe`" in prose
    # The source's training settings and the serving settings.
    training = text.split("## Training")[1].split("## How to use")[0]
    assert "| ε (label smoothing) | 0.1 |" in training and "| λ (attention consistency weight) | 2 |" in training
    assert "| dropout | 0.4 |" in training and "| epochs | 60 |" not in training and "| epochs planned | 60 |" in training
    assert "inverse class frequency normalised to mean 1" in flat(training)
    assert "MS-Celeb-1M face-recognition ResNet-18" in training
    usage = text.split("## How to use")[1]
    assert "demo.py:116-199" in flat(usage)
    assert "| CLAHE | yes: contrast-limited adaptive histogram equalisation" in usage
    assert "| greyscale | no (colour input) |" in usage
    assert "widened by 20 % of its longer side on every side, not made square, clipped to the picture" in usage
    assert "`flip`: the face and its mirror image" in usage
    # The licence question of the training data: describe_dataset's facts.
    assert "non-commercial research only" in flat(text) and "li2017reliable" in text and "zhang2023leave" in text
    assert "| 1 | `fear` | 3.005 |" in text  # MEK-CV's mean-1 balance weights, from config.json's class counts


def test_converted_fer2013_card_names_the_7178_image_test_set(tmp_path):
    record = conversion("fer2013")
    card = load_card(build_converted_card(record, model_config("fer2013"), REPO_ID,
                                          processor_config=record["serving"]), tmp_path)
    assert {(r.dataset_type, r.dataset_name, r.dataset_split, r.verified) for r in card.data.eval_results} == {
        ("fer2013", "FER-2013", "PublicTest+PrivateTest", False)}
    assert card.data.license_name == "fer2013-research-only" and card.data.datasets == ["fer2013"]
    text = card.text
    prose = flat(text)
    assert "FER-2013's 7,178-image test set" in prose and "`PublicTest` and `PrivateTest` rows" in prose
    assert "--source fer2013 --data-root data/fer2013 \\\n    --fer2013-test PublicTest+PrivateTest" in text
    assert "goodfellow2013challenges" in text and "alphabetical order of FER-2013's class folders" in prose
    assert "| greyscale | yes: every input is turned grey" in text and "turned grey and equalised with CLAHE" in prose


@pytest.mark.parametrize("split", ["test", "PublicTest+PrivateTest"])
def test_fer2013_split_names_mean_the_folder_test_set(split):
    record = conversion("fer2013")
    record["reported"] = {**record["reported"], "split": split}
    del record["reported"]["num_test_images"]
    data = build_converted_card_data(record, model_config("fer2013"), REPO_ID)
    assert {r.dataset_split for r in data.eval_results} == {"PublicTest+PrivateTest"}


def test_converted_card_without_reported_figures_claims_nothing(tmp_path):
    card = load_card(build_converted_card(conversion(reported=None), model_config(), REPO_ID,
                                          processor_config=SERVING), tmp_path)
    assert card.data.eval_results is None and card.data.license_name == "rafdb-research-only"
    assert "this card makes no accuracy claim" in flat(card.text)
    assert "No test figures are published with this model" in flat(card.text)
    assert "python scripts/eval.py --model" in card.text


def test_reported_figures_are_fractions():
    with pytest.raises(ConversionRecordError, match="fraction in \\[0, 1\\].*86.41"):
        reported_figures(conversion(reported={**conversion()["reported"], "accuracy": 86.41}))
    with pytest.raises(ConversionRecordError, match="holds no figure"):
        reported_figures(conversion(reported={"dataset": "RAF-DB"}))
    assert reported_figures(conversion(reported=None)) is None


def test_every_published_checkpoint_record_gives_a_card(tmp_path):
    """The records fer-mek's converter writes for the published MEK-CV checkpoints: each card names its dataset and
    split, its figures unverified, with the source's file and line."""
    from fer_mek.labels import get_label_set
    from fer_mek.published import PUBLISHED_CHECKPOINTS, conversion_record, published_checkpoint

    for name in PUBLISHED_CHECKPOINTS:
        entry = published_checkpoint(name)
        source = {"repo_id": "ToiTenBao/fer-mek-checkpoints", "filename": name, "revision": "main", "commit": None,
                  "sha256": "0" * 64}
        record = json.loads(json.dumps(conversion_record(name, source, entry["serving"])))
        config = {**model_config(), "id2label": dict(enumerate(get_label_set(entry["labels"])))}
        card = load_card(build_converted_card(record, config, REPO_ID, processor_config=record["serving"]), tmp_path)
        results = card.data.eval_results or []
        fer = "fer2013" in name
        if "reported" in record:
            assert {r.dataset_split for r in results} == {"PublicTest+PrivateTest" if fer else "test"}, name
            assert all(r.verified is False and "github.com/frichickens/MEK-CV/blob/" in r.source_url
                       for r in results), name
            assert ("7,178-image test set" if fer else "official test partition (3,068 images)") in flat(card.text), name
            # The webcam checkpoint was tested on detected face crops: the evaluation script can do the same.
            assert ("--detect-faces" in card.text) == ("webcam" in name), name
        assert "Converted checkpoint, not trained by fer-mek" in card.text, name


# --------------------------------------------------------------------------------------------------- publishing
@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    return make_converted(tmp_path_factory.mktemp("converted") / "mek-resnet18-rafdb")


@pytest.fixture(scope="module")
def dry_run(converted, tmp_path_factory):
    """The dry-run folder of the converted checkpoint, through :func:`fer_mek.publish.publish` (real verification)."""
    out = tmp_path_factory.mktemp("converted-out") / "folder"
    lines: list[str] = []
    result = publish(converted, REPO_ID, dry_run=True, output_dir=out, echo=lines.append)
    return out, result, lines


def test_converted_folder_dry_run_needs_no_results_and_is_verified(dry_run, converted):
    out, result, lines = dry_run
    assert {p.name for p in out.iterdir()} == MODEL_FILES | {"README.md", CONVERSION}
    assert sorted(result.files) == sorted(MODEL_FILES | {"README.md", CONVERSION})
    for name in MODEL_FILES:
        assert (out / name).read_bytes() == (converted / name).read_bytes(), name
    assert read_conversion(out) == read_conversion(converted)
    printed = "\n".join(lines)
    assert "converted checkpoint" in printed and "ToiTenBao/fer-mek-checkpoints/mek_resnet18" in printed
    assert "not measured by fer-mek" in printed
    # The same reload verification as a trained run, on generated faces (a folder without a run).
    assert "generated synthetic faces (a model folder without a training run" in printed
    for where in ("package, AutoModelForImageClassification", "package, pipeline", "remote code, AutoModel",
                  "remote code, pipeline", "conversion.json: serving settings match"):
        assert f"ok  {where}" in printed, printed
    card = (out / "README.md").read_text()
    assert "verified: false" in card and "Converted checkpoint, not trained by fer-mek" in flat(card)


def test_converted_folder_is_uploaded_with_its_card_and_conversion_in_one_commit(converted, dry_run, upload_online,
                                                                                 tmp_path, capfd):
    from huggingface_hub import ModelCard

    dry_folder, _, _ = dry_run
    with FakeHub() as hub:
        code = main(["--run", str(converted), "--repo-id", REPO_ID, "--endpoint", hub.url])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert not hub.unexpected, hub.unexpected
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert set(commit.files) == MODEL_FILES | {"README.md", CONVERSION}
    assert commit.files == {p.name: p.read_bytes() for p in dry_folder.iterdir()}
    assert commit.summary == "Upload converted checkpoint ToiTenBao/fer-mek-checkpoints/mek_resnet18_rafdb_msceleb_best.pth"
    assert "Reported by the source, not measured by fer-mek" in commit.description
    assert "accuracy 0.8641" in commit.description and "remote code" in commit.description
    assert json.loads(commit.files[CONVERSION])["reported"]["accuracy"] == 0.8641
    (tmp_path / "README.md").write_bytes(commit.files["README.md"])
    card = ModelCard.load(tmp_path / "README.md")
    assert {(r.metric_type, r.metric_value, r.verified) for r in card.data.eval_results} == {
        ("accuracy", 0.8641, False), ("balanced_accuracy", 0.8137, False)}
    assert hub.validated == [commit.files["README.md"].decode()]
    assert FAKE_TOKEN not in out + err


def skip_verification(monkeypatch):
    monkeypatch.setattr(publish_module, "verify_folder",
                        lambda folder, run, pictures, source="", **kw: VerificationReport(source, 0))


def test_converted_folder_without_reported_figures_needs_allow_no_results(tmp_path, monkeypatch, capsys):
    from huggingface_hub import ModelCard

    folder = make_converted(tmp_path / "webcam", reported=None)
    out = tmp_path / "out"
    assert main(["--run", str(folder), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "reports no test figures of the source" in err and "--allow-no-results" in err
    assert not out.exists()
    skip_verification(monkeypatch)
    assert main(["--run", str(folder), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out),
                 "--allow-no-results"]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results is None and "makes no accuracy claim" in flat(card.text)
    assert (out / CONVERSION).is_file()


def test_conversion_with_local_paths_is_published_without_them(tmp_path, monkeypatch):
    skip_verification(monkeypatch)
    local = {"repo_id": None, "filename": "/home/alice/checkpoints/mek_resnet18_rafdb_best.pth", "revision": None,
             "commit": None, "sha256": "cd" * 32}
    folder = make_converted(tmp_path / "local", source=local)
    out = tmp_path / "out"
    publish(folder, REPO_ID, dry_run=True, output_dir=out, echo=lambda line: None)
    assert "/home/alice" not in (out / CONVERSION).read_text() and "/home/alice" not in (out / "README.md").read_text()
    assert read_conversion(out)["source"]["filename"] == "mek_resnet18_rafdb_best.pth"
    assert "the file `mek_resnet18_rafdb_best.pth`" in flat((out / "README.md").read_text())


def test_reported_figure_that_is_not_a_fraction_is_refused(tmp_path, capsys):
    folder = make_converted(tmp_path / "percent", reported={**conversion()["reported"], "accuracy": 86.41})
    assert main(["--run", str(folder), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(tmp_path / "out")]) == 1
    assert "reported accuracy must be a fraction in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_verification_refuses_serving_settings_that_differ_from_the_record(tmp_path, capsys):
    """The card states the processor's serving settings: conversion.json must record the same ones."""
    folder = make_converted(tmp_path / "mismatch")
    record = read_conversion(folder)
    record["serving"]["default_tta"] = "none"
    write_conversion(folder, {k: v for k, v in record.items() if k != "schema_version"})
    assert main(["--run", str(folder), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "serving settings differ from preprocessor_config.json's" in err and "default_tta: 'none' recorded" in err
    assert not (tmp_path / "out").exists()




def test_publish_errors_of_a_conversion_record_are_publish_errors(tmp_path):
    folder = make_converted(tmp_path / "broken")
    (folder / CONVERSION).write_text("{not json")
    with pytest.raises(PublishError, match="is not valid JSON"):
        publish(folder, REPO_ID, dry_run=True, output_dir=tmp_path / "out")


# ------------------------------------------------------------------------------------------------ end to end
def test_a_checkpoint_converted_by_fer_mek_publishes_with_its_record(tmp_path):
    """scripts/convert_checkpoint.py's output, as is: a published FER-2013 file name (grey-scale, CLAHE, flip TTA)."""
    import torchvision
    from huggingface_hub import ModelCard
    from torch import nn

    from fer_mek import convert

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    state = {f"encoder.{k}": v for k, v in nn.Sequential(*list(resnet.children())[:-2]).state_dict().items()}
    state.update({f"bn.{k}": v for k, v in nn.BatchNorm2d(512).state_dict().items()})
    state.update({f"classifier.{k}": v for k, v in nn.Conv2d(512, 7, 1).state_dict().items()})
    checkpoint = tmp_path / "mek_resnet18_fer2013_imagenet_best.pth"
    torch.save(state, checkpoint)
    folder = tmp_path / "converted"
    assert convert.main(["--checkpoint", str(checkpoint), "--output", str(folder)]) == 0
    out = tmp_path / "out"
    lines: list[str] = []
    result = publish(folder, REPO_ID, dry_run=True, output_dir=out, echo=lines.append)
    assert {"README.md", CONVERSION, "model.safetensors"} <= set(result.files)
    assert "ok  conversion.json: serving settings match the image processor" in "\n".join(lines)
    assert str(tmp_path) not in (out / CONVERSION).read_text() + (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md")
    assert {(r.dataset_name, r.dataset_split, r.metric_type, r.metric_value, r.verified)
            for r in card.data.eval_results} == {("FER-2013", "PublicTest+PrivateTest", "accuracy", 0.7081, False),
                                                 ("FER-2013", "PublicTest+PrivateTest", "balanced_accuracy", 0.6928,
                                                  False)}
    assert "FER-2013's 7,178-image test set" in flat(card.text) and "| greyscale | yes" in card.text

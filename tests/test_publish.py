"""Publishing (``scripts/push.py``, ``fer_mek.publish``): the folder, its loading, the card, the upload, the errors.

Offline: the upload goes to a loopback fake Hub (``tests/hub_server.py``). Most tests use a tiny run built here
(resnet18 at 32 px on a tiny RAF-DB tree, results in the exact schema of ``scripts/train.py``); one test publishes a
run of the real trainer on the synthetic set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from .conftest import REPO_ROOT, TINY_BACKBONE, TINY_IMAGE_SIZE, load_script
from .hub_server import FakeHub

FAKE_TOKEN = "hf_FAKEtokenForTestsOnly0123456789abcdef"
REPO_ID = "alice/fer-mek-test"
RAF_TRAIN = (12, 4, 8, 30, 15, 8, 21)
RAF_TEST = (3, 2, 2, 6, 4, 2, 5)
EXPECTED_FILES = {
    "README.md", "config.json", "preprocessor_config.json", "model.safetensors", "configuration_mek.py",
    "modeling_mek.py", "image_processing_mek.py", "losses.py", "labels.py", "confusion_matrix.png",
    "training_curves.png", "results.json",
}


push = load_script("push")


# ---------------------------------------------------------------------------------------------------- fixtures
def _metrics(seed: int, references: list[int], labels: list[str]) -> dict:
    from fer_mek.metrics import compute_metrics

    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(len(labels), (len(references),), generator=generator).tolist()
    keep = (torch.rand(len(references), generator=generator) < 0.6).tolist()
    predictions = [r if k else n for r, k, n in zip(references, keep, noise, strict=True)]
    return compute_metrics(predictions, references, labels)


def make_run(root: Path, *, init: dict | None = None) -> Path:
    """A finished tiny run in the layout and results schema of scripts/train.py, on a tiny RAF-DB tree."""
    from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor
    from fer_mek.data import class_counts, get_metadata, load_source
    from fer_mek.data.fixtures import write_rafdb
    from fer_mek.plots import plot_confusion_matrix, plot_training_curves

    data_root = write_rafdb(root / "rafdb", RAF_TRAIN, RAF_TEST, size=32)
    dataset = load_source("rafdb", str(data_root), val_fraction=0.1, seed=0, skip_bad=False)
    labels = list(dataset["train"].features["label"].names)
    counts = {split: class_counts(dataset[split]) for split in dataset}
    run = root / "run"
    config = MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE, id2label=dict(enumerate(labels)),
                       smoothing=0.2, attention_weight=2.0, class_counts=counts["train"])
    for name, seed in (("best", 0), ("last", 1)):
        torch.manual_seed(seed)
        model = MEKForImageClassification(config).eval()
        model.save_pretrained(run / name)
        MEKImageProcessor.from_model_config(config).save_pretrained(run / name)
    history = [{"epoch": e, "train_loss": 2.0 - 0.1 * e, "lr": 1e-3, "val_accuracy": 0.3 + 0.05 * e,
                "val_mean_class_accuracy": 0.2 + 0.05 * e, "val_macro_f1": 0.2 + 0.04 * e} for e in (1, 2, 3)]
    validation = _metrics(1, list(dataset["validation"]["label"]), labels)
    test = _metrics(2, list(dataset["test"]["label"]), labels)
    train_config = {
        "recipe": "rafdb-resnet18-imagenet", "source": "rafdb", "data_root": str(data_root), "val_fraction": 0.1,
        "split_seed": 0, "synthetic_images": 4000, "skip_bad": False, "backbone": TINY_BACKBONE, "head": "linear",
        "init": "timm", "image_size": TINY_IMAGE_SIZE, "dropout": 0.0, "drop_path": 0.0, "method": "mek",
        "smoothing": 0.2, "attention_weight": 2.0, "epochs": 3, "batch_size": 16, "grad_accum": 1,
        "optimizer": "adam", "lr": 0.0002, "weight_decay": 0.0001, "scheduler": "exponential", "warmup_epochs": 1.0,
        "gamma": 0.9, "clip_grad_norm": 5.0, "mixed_precision": "no", "ema_decay": 0.0, "balanced_sampler": False,
        "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "select_metric": "mean_class_accuracy",
        "early_stopping_patience": 0, "output_dir": str(run), "overwrite": False, "resume": False,
        "checkpoint_every": 0, "max_steps": 0, "seed": 0, "num_workers": 0, "log_with": "none",
    }
    results = {
        "run": run.name,
        "recipe": "rafdb-resnet18-imagenet",
        "method": "mek",
        "dataset": {"source": "rafdb", "root": str(data_root), **get_metadata(dataset), "val_fraction": 0.1,
                    "split_seed": 0},
        "label_names": labels,
        "class_counts": counts,
        "balance_weights": config.get_balance_weights(),
        "init": init or {"source": "timm:resnet18", "weights": "timm/resnet18.a1_in1k", "loaded_tensors": 120,
                         "dropped_keys": []},
        "selection": {"metric": "mean_class_accuracy", "best_epoch": 2, "checkpoint": "best", "ema": False},
        "validation": validation,
        "test": test,
        "history": history,
        "config": train_config,
        "environment": {"fer_mek": "0.1.0", "torch": torch.__version__, "num_processes": 1, "device": "cpu",
                        "mixed_precision": "no", "tracker": "none"},
        "train_seconds": 12.3,
    }
    (run / "results.json").write_text(json.dumps(results, indent=2))
    plot_confusion_matrix(test["confusion_matrix"], labels, run / "confusion_matrix.png", title="rafdb test")
    plot_training_curves(history, run / "training_curves.png", best_epoch=2)
    (run / "train_config.yaml").write_text("source: rafdb\n")
    return run


@pytest.fixture(scope="module")
def rafdb_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("publish-run"))


@pytest.fixture(scope="module")
def published(rafdb_run, tmp_path_factory):
    """The dry-run folder of the tiny RAF-DB run, through the command line (with the real verification)."""
    out = tmp_path_factory.mktemp("publish-out") / "folder"
    lines: list[str] = []
    from fer_mek import publish as publish_module

    result = publish_module.publish(rafdb_run, REPO_ID, dry_run=True, output_dir=out, echo=lines.append)
    return out, result, lines


def images(count: int = 3, size: int = 40) -> list:
    from PIL import Image

    generator = torch.Generator().manual_seed(5)
    return [Image.fromarray(torch.randint(0, 255, (size, size + 7, 3), generator=generator, dtype=torch.uint8)
                            .numpy()) for _ in range(count)]


def reference_logits(model_dir: Path, pictures: list) -> torch.Tensor:
    from fer_mek import MEKForImageClassification, MEKImageProcessor

    model = MEKForImageClassification.from_pretrained(model_dir).eval()
    processor = MEKImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        return model(**processor(pictures, return_tensors="pt")).logits


# ------------------------------------------------------------------------------------------------ the folder
def test_dry_run_writes_exactly_the_folder_to_upload(published, rafdb_run):
    out, result, lines = published
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    assert sorted(result.files) == sorted(EXPECTED_FILES) and result.commit_url is None
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "modeling_mek.py"):
        assert (out / name).read_bytes() == (rafdb_run / "best" / name).read_bytes(), name
    # Published results: the run's, with local paths reduced to their last component.
    published_results = json.loads((out / "results.json").read_text())
    original = json.loads((rafdb_run / "results.json").read_text())
    assert published_results["test"] == original["test"] and published_results["history"] == original["history"]
    assert published_results["dataset"]["root"] == Path(original["dataset"]["root"]).name
    assert published_results["config"]["output_dir"] == "run"
    assert str(rafdb_run.parent) not in (out / "results.json").read_text()
    config = json.loads((out / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForImageClassification"}
    assert config["id2label"]["0"] == "surprise"
    assert not [p for p in out.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    # The verification ran both ways, on the run's own validation images.
    checks = "\n".join(lines)
    assert "validation split (rafdb" in checks
    for where in ("package, AutoModelForImageClassification", "package, AutoModel", "package, pipeline",
                  "remote code, AutoModelForImageClassification", "remote code, AutoModel", "remote code, pipeline"):
        assert f"ok  {where}" in checks, checks
    assert result.verification.max_abs_diff <= 1e-5


def test_dry_run_folder_loads_with_the_package(published, rafdb_run):
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor, MEKModel

    out, _, _ = published
    pictures = images()
    expected = reference_logits(rafdb_run / "best", pictures)
    assert isinstance(AutoConfig.from_pretrained(out), MEKConfig)
    processor = AutoImageProcessor.from_pretrained(out)
    assert isinstance(processor, MEKImageProcessor)
    pixel_values = processor(pictures, return_tensors="pt")["pixel_values"]
    for auto, cls in ((AutoModelForImageClassification, MEKForImageClassification), (AutoModel, MEKModel)):
        model = auto.from_pretrained(out).eval()
        assert type(model) is cls
        with torch.no_grad():
            assert torch.equal(model(pixel_values=pixel_values).logits, expected)
    rows = pipeline("image-classification", model=str(out))(pictures, top_k=1)
    labels = json.loads((out / "config.json").read_text())["id2label"]
    assert [r[0]["label"] for r in rows] == [labels[str(int(i))] for i in expected.argmax(-1)]


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "fer_mek" or name.startswith("fer_mek."):
                raise ImportError(name)

    sys.meta_path.insert(0, Block())
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    folder, pictures, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
    pictures = [Image.open(p) for p in pictures]
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    x = processor(pictures, return_tensors="pt")["pixel_values"]
    result = {"processor": type(processor).__module__}
    for name, auto in (("cls", AutoModelForImageClassification), ("base", AutoModel)):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            result[name] = model(pixel_values=x).logits.tolist()
        result[name + "_module"] = type(model).__module__
    rows = pipeline("image-classification", model=folder, trust_remote_code=True)(pictures, top_k=1)
    result["pipeline"] = [r[0]["label"] for r in rows]
    open(out, "w").write(json.dumps(result))
    """
)


def test_dry_run_folder_loads_without_the_package(published, rafdb_run, tmp_path):
    out, _, _ = published
    pictures = images()
    paths = []
    for i, picture in enumerate(pictures):
        paths.append(str(tmp_path / f"{i}.png"))
        picture.save(paths[-1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(out), *paths, str(tmp_path / "out.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert all(result[k].startswith("transformers_modules") for k in ("processor", "cls_module", "base_module"))
    expected = reference_logits(rafdb_run / "best", pictures)
    for key in ("cls", "base"):
        torch.testing.assert_close(torch.tensor(result[key]), expected, atol=1e-5, rtol=1e-5)
    labels = json.loads((out / "config.json").read_text())["id2label"]
    assert result["pipeline"] == [labels[str(int(i))] for i in expected.argmax(-1)]


# -------------------------------------------------------------------------------------------------- the card
def test_card_metadata_and_model_index_round_trip(published, rafdb_run):
    from huggingface_hub import EvalResult, ModelCard

    out, _, _ = published
    results = json.loads((rafdb_run / "results.json").read_text())
    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert data.license == "other" and data.license_name == "rafdb-research-only" and data.license_link
    assert {"image-classification", "facial-expression-recognition", "mek", "resnet18"} <= set(data.tags)
    assert data.datasets == ["raf-db"]
    assert data.base_model == "timm/resnet18.a1_in1k"
    assert data.model_name == "fer-mek-test"
    by_metric = {r.metric_type: r for r in data.eval_results}
    assert set(by_metric) == {"accuracy", "balanced_accuracy", "f1"}
    assert by_metric["accuracy"].metric_value == results["test"]["accuracy"]
    assert by_metric["balanced_accuracy"].metric_value == results["test"]["mean_class_accuracy"]
    assert by_metric["f1"].metric_value == results["test"]["macro_f1"]
    for result in data.eval_results:
        assert isinstance(result, EvalResult)
        assert (result.task_type, result.dataset_type, result.dataset_name, result.dataset_split) == (
            "image-classification", "raf-db", "RAF-DB", "test")
    # The body: every marker filled, the sections the issue lists, the numbers and class names.
    text = card.text
    assert "<!-- fer-mek:" not in text
    for heading in ("## Model summary", "## Intended use", "## Limitations", "## Bias, risks and ethics",
                    "## Evaluation protocol", "## Results", "## Classes", "## Training", "## How to use",
                    "## Citation"):
        assert heading in text, heading
    assert f"**{results['test']['accuracy']:.4f}**" in text
    assert f"**{results['test']['mean_class_accuracy']:.4f}**" in text
    assert "stratified 10 % of the training split (seed 0)" in text
    assert "![Confusion matrix" in text and "(confusion_matrix.png)" in text
    for i, name in enumerate(results["label_names"]):
        assert f"| {i} | `{name}` |" in text
    assert f'from_pretrained("{REPO_ID}", trust_remote_code=True)' in text
    assert 'import fer_mek' in text and f'pipeline("image-classification", model="{REPO_ID}"' in text
    assert f"fer-mek predict --model {REPO_ID}" in text
    assert "zhang2023leave" in text and "li2017reliable" in text
    assert "non-commercial research only" in text
    assert "synthetic" not in text.lower().split("## intended use")[0]


def _run_with(results: dict, config: dict | None = None):
    from fer_mek.publish import Run

    labels = results["label_names"]
    config = config or {"backbone": "resnet18", "head": "conv_bn", "image_size": 224,
                        "id2label": {str(i): n for i, n in enumerate(labels)}, "smoothing": 0.2,
                        "attention_weight": 0.1}
    return Run(path=Path("runs/fer"), model_dir=Path("runs/fer/best"), checkpoint="best", results=results,
               config=config, test_results_apply=True, no_test_reason=None)


@pytest.mark.parametrize(("layout", "split"), [("csv", "PrivateTest"), ("folders", "test")])
def test_fer2013_card_names_the_split_and_terms(rafdb_run, layout, split):
    from huggingface_hub import ModelCard

    from fer_mek.labels import FER2013_LABELS
    from fer_mek.publish import build_card

    results = json.loads((rafdb_run / "results.json").read_text())
    results["label_names"] = list(FER2013_LABELS)
    results["dataset"] = {"source": "fer2013", "layout": layout, "val_fraction": 0.1, "split_seed": 0,
                          **({"test_split": "PrivateTest"} if layout == "csv" else {})}
    results["init"] = {"source": "random"}
    card = ModelCard(str(build_card(_run_with(results), "bob/fer-mek-fer2013")))
    assert {(r.dataset_type, r.dataset_name, r.dataset_split) for r in card.data.eval_results} == {
        ("fer2013", "FER-2013", split)}
    assert card.data.license == "other" and card.data.license_name == "fer2013-research-only"
    assert card.data.base_model is None and card.data.datasets == ["fer2013"]
    assert "goodfellow2013challenges" in card.text and "FER-2013's order" in card.text


def test_prepared_hub_dataset_keeps_its_origin_and_license_can_be_overridden(rafdb_run):
    from fer_mek.publish import build_card_data, describe_dataset

    results = json.loads((rafdb_run / "results.json").read_text())
    results["dataset"] = {"source": "hub", "root": "/data/rafdb-prepared", "prepared_from": "rafdb"}
    assert describe_dataset(results).name == "RAF-DB"
    results["dataset"] = {"source": "hub", "root": "someone/my-faces", "splits_used": {"test": "test"}}
    data = build_card_data(_run_with(results), REPO_ID, license="apache-2.0")
    assert data.datasets == ["someone/my-faces"] and data.license == "apache-2.0" and data.license_name is None
    assert {r.dataset_type for r in data.eval_results} == {"someone/my-faces"}


# ----------------------------------------------------------------------------------- the real trainer, end to end
def test_synthetic_run_of_the_trainer_is_published_without_fer_claims(tmp_path, capsys):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForImageClassification

    train = load_script("train")
    run = tmp_path / "run"
    train.main(["--synthetic-images", "150", "--image-size", "32", "--batch-size", "16", "--num-workers", "0",
                "--log-with", "none", "--auto-augment", "", "--epochs", "1", "--output-dir", str(run)])
    out = tmp_path / "folder"
    assert push.main(["--run", str(run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "synthetic validation split" in printed and "ok  remote code, AutoModel" in printed
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    card = ModelCard.load(out / "README.md")
    # No model-index: an evaluation widget next to the FER tags would read as an FER accuracy claim.
    assert card.data.eval_results is None and "model-index" not in (out / "README.md").read_text()
    assert card.data.license == "apache-2.0" and "synthetic-data" in card.data.tags
    assert card.data.datasets is None and card.data.base_model is None
    head = card.text.split("## Model summary")[0]
    assert "trained on synthetic data" in head and "no facial-expression-recognition accuracy is claimed" in head
    assert "**synthetic** test split" in card.text
    model = AutoModelForImageClassification.from_pretrained(out)
    assert list(model.config.id2label.values())[0] == "surprise"


# --------------------------------------------------------------------------------------------------- upload
@pytest.fixture
def online(monkeypatch, tmp_path):
    """Online mode towards the loopback hub, a recognisable fake token, and a private HF_HOME and temp dir."""
    import huggingface_hub.constants
    from huggingface_hub.utils import close_session

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    close_session()
    yield scratch
    close_session()


def skip_verification(monkeypatch):
    """For tests about other things: verification is covered by the tests above (it takes a few seconds)."""
    from fer_mek import publish as publish_module

    monkeypatch.setattr(publish_module, "verify_folder",
                        lambda folder, run, pictures, source="", **kw: publish_module.VerificationReport(source, 0))


def test_upload_commits_the_dry_run_folder_and_never_leaks_the_token(rafdb_run, published, online, tmp_path, capfd):
    dry_folder, _, _ = published
    record = tmp_path / "uploaded"
    with FakeHub() as hub:
        code = push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--endpoint", hub.url,
                          "--output-dir", str(record)])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert not hub.unexpected, hub.unexpected
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert (commit.repo_id, commit.revision) == (REPO_ID, "main")
    assert rafdb_run.name in commit.summary and "best checkpoint" in commit.summary
    assert "accuracy" in commit.description and "remote code" in commit.description
    assert commit.files == {p.name: p.read_bytes() for p in dry_folder.iterdir()}
    assert commit.files == {p.name: p.read_bytes() for p in record.iterdir()}
    assert hub.validated == [commit.files["README.md"].decode()]
    assert f"{hub.url}/{REPO_ID}/commit/{commit.oid}" in out
    # The token came from HF_TOKEN (the usual source) and went to the Hub only.
    assert {r.headers.get("authorization") for r in hub.requests} == {f"Bearer {FAKE_TOKEN}"}
    assert FAKE_TOKEN not in out + err
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]
    assert not leaks, leaks
    assert not any(FAKE_TOKEN.encode() in content for content in commit.files.values())
    assert not list(online.iterdir()), "temporary files left behind"


def test_upload_to_a_private_repository_and_a_branch(rafdb_run, online, monkeypatch, capsys):
    skip_verification(monkeypatch)
    with FakeHub() as hub:
        assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--endpoint", hub.url, "--private",
                          "--revision", "dev", "--commit-message", "First MEK model"]) == 0
        # A second push to the same repository and branch is a new commit, not an error.
        assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--endpoint", hub.url,
                          "--revision", "dev"]) == 0
    assert hub.repos[REPO_ID]["visibility"] == "private"
    assert hub.branches[REPO_ID] == {"main", "dev"}
    assert [(c.revision, c.summary) for c in hub.commits] == [
        ("dev", "First MEK model"), ("dev", f"Upload fer-mek run {rafdb_run.name} (best checkpoint)")]
    assert 'trust_remote_code=True' in hub.commits[0].files["README.md"].decode()
    assert f'"{REPO_ID}", revision="dev"' in hub.commits[0].files["README.md"].decode()
    assert "commit:" in capsys.readouterr().out


@pytest.mark.parametrize(("endpoint", "status", "hint"), [("commit", 403, "write access"),
                                                          ("create", 401, "hf auth login")])
def test_refused_upload_is_clear_and_commits_nothing(rafdb_run, online, monkeypatch, capsys, endpoint, status, hint):
    skip_verification(monkeypatch)
    with FakeHub(refuse={endpoint: (status, "You don't have the rights to create a model under this namespace")}) as hub:
        code = push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--endpoint", hub.url])
    err = capsys.readouterr().err
    assert code == 1
    assert "the Hub refused the upload" in err and str(status) in err and hint in err
    assert "Nothing was committed" in err and "You don't have the rights" in err
    assert hub.commits == []
    assert not list(online.iterdir()), "temporary files left behind"


# --------------------------------------------------------------------------------------------------- errors
def test_missing_run_folder(tmp_path, capsys):
    assert push.main(["--run", str(tmp_path / "nowhere"), "--repo-id", REPO_ID, "--dry-run",
                      "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "--output-dir of a training run" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("repo_id", ["fer-mek", "alice/fer/mek", "alice/fer mek", "/fer-mek", "alice/", "alice/-x",
                                     "alice/fer--mek", "alice/fer..mek"])
def test_malformed_repo_id(rafdb_run, tmp_path, capsys, repo_id):
    assert push.main(["--run", str(rafdb_run), "--repo-id", repo_id, "--dry-run",
                      "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "--repo-id" in err and repr(repo_id) in err and "alice/fer-mek-rafdb" in err
    assert not (tmp_path / "out").exists()


def test_run_without_results_is_refused_unless_allowed(rafdb_run, tmp_path, monkeypatch, capsys):
    from huggingface_hub import ModelCard

    run = tmp_path / "interrupted"
    shutil.copytree(rafdb_run / "best", run / "best")
    (run / "checkpoint").mkdir()
    out = tmp_path / "out"
    assert push.main(["--run", str(run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "has no results.json" in err and "--allow-no-results" in err
    assert not out.exists()

    skip_verification(monkeypatch)
    assert push.main(["--run", str(run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out),
                      "--allow-no-results"]) == 0
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES - {"results.json", "confusion_matrix.png",
                                                                "training_curves.png"}
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results is None and card.data.license == "other"
    assert "No test results are published with this model" in card.text
    assert "<!-- fer-mek:" not in card.text


def test_last_checkpoint_is_refused_when_the_results_evaluate_other_weights(rafdb_run, tmp_path, capsys):
    from fer_mek.publish import load_run

    assert push.main(["--run", str(rafdb_run), "--checkpoint", "last", "--repo-id", REPO_ID, "--dry-run",
                      "--output-dir", str(tmp_path / "out")]) == 1
    assert "evaluates the 'best' checkpoint, not 'last'" in capsys.readouterr().err
    same = tmp_path / "same"
    shutil.copytree(rafdb_run, same, ignore=shutil.ignore_patterns("last"))
    shutil.copytree(rafdb_run / "best", same / "last")
    assert load_run(same, "last").test is not None  # identical weights: the test results do apply


def test_results_for_another_model_are_refused(rafdb_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(rafdb_run, run)
    results = json.loads((run / "results.json").read_text())
    results["label_names"] = list(reversed(results["label_names"]))
    (run / "results.json").write_text(json.dumps(results))
    assert push.main(["--run", str(run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                      str(tmp_path / "out")]) == 1
    assert "the results belong to another model" in capsys.readouterr().err


def test_output_dir_is_never_clobbered_nor_half_written(rafdb_run, tmp_path, monkeypatch, capsys):
    from fer_mek import publish as publish_module

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"

    def broken_card(*args, **kwargs):
        raise publish_module.PublishError("card template broken (test)")

    monkeypatch.setattr(publish_module, "build_card", broken_card)
    assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out),
                      "--overwrite"]) == 1
    assert "card template broken" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "keep.txt").read_text() == "mine"


def test_upload_needs_the_network_and_a_token(rafdb_run, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID]) == 1
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID]) == 1
    assert "hf auth login" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ verification
def _tampered(monkeypatch, tamper) -> None:
    from fer_mek import publish as publish_module

    assemble = publish_module.assemble

    def assemble_then_tamper(run, folder, *args, **kwargs):
        files = assemble(run, folder, *args, **kwargs)
        tamper(Path(folder))
        return files

    monkeypatch.setattr(publish_module, "assemble", assemble_then_tamper)


def test_verification_refuses_other_weights(rafdb_run, tmp_path, monkeypatch, capsys):
    _tampered(monkeypatch, lambda folder: shutil.copyfile(rafdb_run / "last" / "model.safetensors",
                                                          folder / "model.safetensors"))
    out = tmp_path / "out"
    assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out)]) == 1
    assert "logits differ from the run's model" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_verification_refuses_an_incomplete_auto_map(rafdb_run, tmp_path, monkeypatch, capsys):
    def drop_auto_model(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        del config["auto_map"]["AutoModel"]
        (folder / "config.json").write_text(json.dumps(config))

    _tampered(monkeypatch, drop_auto_model)
    assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                      str(tmp_path / "out")]) == 1
    assert "auto_map lacks ['AutoModel']" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_verification_refuses_remote_code_that_differs_from_the_package(rafdb_run, tmp_path, monkeypatch, capsys):
    """The package loads the folder correctly, but its own code (used without the package) computes otherwise."""
    patch = textwrap.dedent("""

        _forward = MEKForImageClassification.forward


        def _shifted(self, *args, **kwargs):
            output = _forward(self, *args, **kwargs)
            output.logits = output.logits + 1.0
            return output


        MEKForImageClassification.forward = _shifted
        """)
    _tampered(monkeypatch, lambda folder: (folder / "modeling_mek.py").write_text(
        (folder / "modeling_mek.py").read_text() + patch))
    assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                      str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "remote code, AutoModelForImageClassification: logits differ" in err
    assert list(tmp_path.iterdir()) == []


def test_verification_images_fall_back_to_generated_faces(rafdb_run):
    from fer_mek.publish import load_run, verification_images

    run = load_run(rafdb_run)
    pictures, where = verification_images(run, count=4)
    assert len(pictures) == 4 and "validation split (rafdb" in where
    pictures, where = verification_images(run, count=3, source="synthetic")
    assert len(pictures) == 3 and where == "3 generated synthetic faces"
    run.results = {**run.results, "dataset": {**run.results["dataset"], "root": "/nowhere/rafdb"}}
    pictures, where = verification_images(run, count=2)
    assert len(pictures) == 2 and "not available here" in where


def test_card_template_with_a_missing_marker_is_refused(rafdb_run, tmp_path, capsys):
    template = tmp_path / "card.md"
    template.write_text((REPO_ROOT / "MODEL_CARD.md").read_text().replace("<!-- fer-mek:usage -->", ""))
    out = tmp_path / "out"
    assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out),
                      "--card-template", str(template)]) == 1
    err = capsys.readouterr().err
    assert "{'usage': 0}" in err and "<!-- fer-mek:usage -->" in err
    assert [p.name for p in tmp_path.iterdir()] == ["card.md"]


@pytest.mark.parametrize("where", [".", "best", "best/folder", ".."])
def test_output_dir_may_not_replace_the_run(rafdb_run, capsys, where):
    before = sorted(p.name for p in rafdb_run.iterdir())
    assert push.main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                      str(rafdb_run / where), "--overwrite"]) == 1
    assert "would replace or sit inside the run's own files" in capsys.readouterr().err
    assert sorted(p.name for p in rafdb_run.iterdir()) == before

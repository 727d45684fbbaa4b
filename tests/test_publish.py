"""Publishing (``fer_mek.publish``, the command line of ``scripts/push.py``): the folder, its loading, the card,
the upload, the errors.

Offline: the upload goes to a loopback fake Hub (``tests/hub_server.py``). Most tests use a tiny run
(:func:`tests.publish_fixtures.make_run`: resnet18 at 32 px on a tiny RAF-DB tree, results in the exact schema of the
trainer); one test publishes a run of the real trainer on the synthetic set. The card's own functions are tested in
``test_model_card.py``, the verification in ``test_verify.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fer_mek import publish as publish_module
from fer_mek.model_card import default_card_template
from fer_mek.publish import PublishError, main, publish
from fer_mek.runs import RunError, load_run
from fer_mek.verify import VerificationReport

from .conftest import FAKE_TOKEN
from .hub_server import FakeHub
from .publish_fixtures import EXPECTED_FILES, REPO_ID, images, make_run, reference_logits


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def rafdb_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("publish-run"))


@pytest.fixture(scope="module")
def published(rafdb_run, tmp_path_factory):
    """The dry-run folder of the tiny RAF-DB run, through :func:`fer_mek.publish.publish` (with the real verification)."""
    out = tmp_path_factory.mktemp("publish-out") / "folder"
    lines: list[str] = []
    result = publish(rafdb_run, REPO_ID, dry_run=True, output_dir=out, echo=lines.append)
    return out, result, lines


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

# ----------------------------------------------------------------------------------- the real trainer, end to end
def test_synthetic_run_of_the_trainer_is_published_without_fer_claims(tmp_path, capsys):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForImageClassification

    from fer_mek.train import main as train

    run = tmp_path / "run"
    train(["--synthetic-images", "150", "--image-size", "32", "--batch-size", "16", "--num-workers", "0",
                "--log-with", "none", "--auto-augment", "", "--epochs", "1", "--output-dir", str(run)])
    out = tmp_path / "folder"
    assert main(["--run", str(run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out)]) == 0
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


def skip_verification(monkeypatch):
    """For tests about other things: verification is covered by test_verify.py and above (it takes a few seconds)."""
    monkeypatch.setattr(publish_module, "verify_folder",
                        lambda folder, run, pictures, source="", **kw: VerificationReport(source, 0))


def test_upload_commits_the_dry_run_folder_and_never_leaks_the_token(rafdb_run, published, upload_online, tmp_path, capfd):
    dry_folder, _, _ = published
    record = tmp_path / "uploaded"
    with FakeHub() as hub:
        code = main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--endpoint", hub.url,
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
    assert not list(upload_online.iterdir()), "temporary files left behind"


def test_upload_to_a_private_repository_and_a_branch(rafdb_run, upload_online, monkeypatch, capsys):
    skip_verification(monkeypatch)
    with FakeHub() as hub:
        assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--endpoint", hub.url, "--private",
                          "--revision", "dev", "--commit-message", "First MEK model"]) == 0
        # A second push to the same repository and branch is a new commit, not an error.
        assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--endpoint", hub.url,
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
def test_refused_upload_is_clear_and_commits_nothing(rafdb_run, upload_online, monkeypatch, capsys, endpoint, status, hint):
    skip_verification(monkeypatch)
    with FakeHub(refuse={endpoint: (status, "You don't have the rights to create a model under this namespace")}) as hub:
        code = main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--endpoint", hub.url])
    err = capsys.readouterr().err
    assert code == 1
    assert "the Hub refused the upload" in err and str(status) in err and hint in err
    assert "Nothing was committed" in err and "You don't have the rights" in err
    assert hub.commits == []
    assert not list(upload_online.iterdir()), "temporary files left behind"


# --------------------------------------------------------------------------------------------------- errors
def test_missing_run_folder(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "nowhere"), "--repo-id", REPO_ID, "--dry-run",
                      "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "--output-dir of a training run" in err and "did you mean" not in err
    assert not (tmp_path / "out").exists()


def test_a_mistyped_run_folder_gets_a_hint(rafdb_run, tmp_path, capsys):
    mistyped = rafdb_run.parent / (rafdb_run.name[:-1] + "x")
    assert main(["--run", str(mistyped), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(f"(did you mean {rafdb_run}?)"), err


@pytest.mark.parametrize("repo_id", ["fer-mek", "alice/fer/mek", "alice/fer mek", "/fer-mek", "alice/", "alice/-x",
                                     "alice/fer--mek", "alice/fer..mek"])
def test_malformed_repo_id(rafdb_run, tmp_path, capsys, repo_id):
    assert main(["--run", str(rafdb_run), "--repo-id", repo_id, "--dry-run",
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
    assert main(["--run", str(run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "has no results.json" in err and "--allow-no-results" in err
    assert not out.exists()

    skip_verification(monkeypatch)
    assert main(["--run", str(run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out),
                      "--allow-no-results"]) == 0
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES - {"results.json", "confusion_matrix.png",
                                                                "training_curves.png"}
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results is None and card.data.license == "other"
    assert "No test results are published with this model" in card.text
    assert "<!-- fer-mek:" not in card.text


def test_last_checkpoint_is_refused_when_the_results_evaluate_other_weights(rafdb_run, tmp_path, capsys):
    assert main(["--run", str(rafdb_run), "--checkpoint", "last", "--repo-id", REPO_ID, "--dry-run",
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
    assert main(["--run", str(run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                      str(tmp_path / "out")]) == 1
    assert "the results belong to another model" in capsys.readouterr().err


def test_output_dir_is_never_clobbered_nor_half_written(rafdb_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"

    def broken_card(*args, **kwargs):
        raise PublishError("card template broken (test)")

    monkeypatch.setattr(publish_module, "build_card", broken_card)
    assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out),
                      "--overwrite"]) == 1
    assert "card template broken" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "keep.txt").read_text() == "mine"


def test_upload_needs_the_network_and_a_token(rafdb_run, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID]) == 1
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID]) == 1
    assert "hf auth login" in capsys.readouterr().err


def test_card_template_with_a_missing_marker_is_refused(rafdb_run, tmp_path, capsys):
    template = tmp_path / "card.md"
    template.write_text(default_card_template().read_text().replace("<!-- fer-mek:usage -->", ""))
    out = tmp_path / "out"
    assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out),
                      "--card-template", str(template)]) == 1
    err = capsys.readouterr().err
    assert "{'usage': 0}" in err and "<!-- fer-mek:usage -->" in err
    assert [p.name for p in tmp_path.iterdir()] == ["card.md"]


@pytest.mark.parametrize("where", [".", "best", "best/folder", ".."])
def test_output_dir_may_not_replace_the_run(rafdb_run, capsys, where):
    before = sorted(p.name for p in rafdb_run.iterdir())
    assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                      str(rafdb_run / where), "--overwrite"]) == 1
    assert "would replace or sit inside the run's own files" in capsys.readouterr().err
    assert sorted(p.name for p in rafdb_run.iterdir()) == before


def test_run_errors_reach_publish_callers_as_publish_errors(rafdb_run, tmp_path):
    """load_run raises RunError; publish() reports it as its one error type, the RunError as the cause."""
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(PublishError, match="--output-dir of a training run") as caught:
        publish(tmp_path / "nowhere", REPO_ID, dry_run=True, output_dir=tmp_path / "out")
    assert isinstance(caught.value.__cause__, RunError)
    with pytest.raises(PublishError, match="--checkpoint must be") as caught:
        publish(rafdb_run, REPO_ID, checkpoint="middle", dry_run=True, output_dir=tmp_path / "out")
    assert isinstance(caught.value.__cause__, RunError)
    assert not (tmp_path / "out").exists()


def test_version(capsys):
    from fer_mek import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"fer-mek {__version__}"

"""The published MEK checkpoints from the Hub in one line (``fer_mek.from_published``, ``convert --checkpoint
REPO_ID/FILENAME[@REVISION]``, ``--all``): class order, architecture, training and serving settings, ``conversion.json``,
the cache, revision pinning and the errors.

Offline: a fake ``ToiTenBao/fer-mek-checkpoints`` is served by the loopback Hub (``tests/hub_server.py``), with a
checkpoint in MEK-CV's layout under every published file name (random torchvision ResNet-18/34 weights, stored in half
precision to keep the repository small); the Hub cache is a temporary folder.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import json

import pytest
import torch
import torchvision
from torch import nn

import fer_mek
from fer_mek import (
    FER2013_FOLDER_LABELS,
    RAFDB_LABELS,
    MEKConfig,
    MEKForImageClassification,
    MEKImageProcessor,
    convert,
)
from fer_mek.published import PUBLISHED_REPO, SERVING_DEFAULTS, CheckpointNotFoundError, parse_hub_reference
from fer_mek.runs import CONVERSION, RunError, read_conversion, write_conversion

from .hub_server import FakeHub

# The source's values, typed here from MEK-CV (scripts/push_to_hf.py:22-48 = the README table of the Hub repository,
# kaggle scripts for the settings): arch, classes, (eps, lambda, dropout), (accuracy, mean-class), dataset, test images.
PUBLISHED = {
    "mek_resnet18_rafdb_msceleb_best.pth": ("resnet18", RAFDB_LABELS, (0.1, 2.0, 0.4), (0.8641, 0.8137), "RAF-DB", 3068),
    "mek_resnet18_rafdb_imagenet_best.pth": ("resnet18", RAFDB_LABELS, (0.1, 2.0, 0.4), (0.8585, 0.7910), "RAF-DB", 3068),
    "mek_resnet34_rafdb_imagenet_best.pth": ("resnet34", RAFDB_LABELS, (0.2, 2.0, 0.45), (0.8657, 0.7892), "RAF-DB", 3068),
    "mek_resnet18_fer2013_imagenet_best.pth": ("resnet18", FER2013_FOLDER_LABELS, (0.1, 0.25, 0.4), (0.7081, 0.6928),
                                               "FER-2013", 7178),
    "mek_resnet34_fer2013_imagenet_best.pth": ("resnet34", FER2013_FOLDER_LABELS, (0.1, 0.1, 0.45), (0.7205, 0.6960),
                                               "FER-2013", 7178),
    "mek_webcam_resnet18_rafdb_clahe_facecrop_best.pth": ("resnet18", RAFDB_LABELS, (0.15, 0.1, 0.4), (0.8625, 0.8083),
                                                          "RAF-DB", 3068),
}
# demo.py: flip TTA always, CLAHE (L of LAB, clip 2, 8x8 tiles) on, Haar box + int(0.2 * longer side) per side clipped
# to the image, no rotation; FER-2013 checkpoints: every input grey.
# face_square: the source's Haar boxes are square, fer-mek's MTCNN boxes are squared to match (fer_mek/published.py).
SOURCE_SERVING = {"do_clahe": True, "clahe_clip_limit": 2.0, "clahe_tile_grid_size": 8, "face_margin": 0.2,
                  "face_square": True, "face_clip": True, "face_align": False, "default_tta": "flip"}


def mek_checkpoint(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A state_dict in the layout of MEK-CV's MEKResNet (``encoder = resnet.children()[:-2]``, ``bn``, ``classifier``)."""
    torch.manual_seed(seed)
    resnet = getattr(torchvision.models, arch)()
    state = {f"encoder.{key}": value for key, value in nn.Sequential(*list(resnet.children())[:-2]).state_dict().items()}
    state.update({f"bn.{key}": value for key, value in nn.BatchNorm2d(512).state_dict().items()})
    state.update({f"classifier.{key}": value for key, value in nn.Conv2d(512, 7, 1).state_dict().items()})
    return {key: value.half() if value.is_floating_point() else value for key, value in state.items()}


def to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """Every published file name -> the bytes of a fake checkpoint (one network per architecture, a distinct classifier
    bias per file)."""
    base = {arch: mek_checkpoint(arch, seed) for seed, arch in enumerate(("resnet18", "resnet34"))}
    out = {}
    for index, name in enumerate(PUBLISHED):
        state = dict(base[PUBLISHED[name][0]])
        state["classifier.bias"] = torch.full((7,), float(index), dtype=torch.half)
        out[name] = to_bytes(state)
    return out


@pytest.fixture(scope="module")
def hub(files):
    with FakeHub() as server:
        for name, data in files.items():
            server.add_file(PUBLISHED_REPO, name, data)
        server.add_file(PUBLISHED_REPO, "README.md", b"# FER / MEK checkpoints\n")
        v1 = dict(mek_checkpoint("resnet18", 7))
        v1["classifier.bias"] = torch.full((7,), -1.0, dtype=torch.half)
        server.add_file(PUBLISHED_REPO, "mek_resnet18_rafdb_msceleb_best.pth", to_bytes(v1), revision="v1")
        server.add_file("alice/other-mek", "best.pth", files["mek_resnet18_rafdb_imagenet_best.pth"])
        yield server


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Online towards the loopback Hub, no token, and a private Hub cache (also as the default one)."""
    import huggingface_hub.constants
    from huggingface_hub.utils import close_session

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    close_session()
    yield tmp_path / "cache"
    close_session()


def go_offline(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def hub_args(hub, cache) -> list[str]:
    return ["--endpoint", hub.url, "--cache-dir", str(cache)]


def check_converted(folder, name: str, data: bytes, commit: str | None, revision: str | None = "main") -> None:
    """The folder of ``name``: architecture, classes, training and serving settings, weights, conversion.json."""
    arch, labels, (eps, lam, dropout), (accuracy, mean_class), dataset, num_test = PUBLISHED[name]
    config = MEKConfig.from_pretrained(folder)
    assert (config.backbone, config.head, config.image_size) == (arch, "conv_bn", 224)
    assert [config.id2label[i] for i in range(7)] == list(labels)
    assert (config.smoothing, config.attention_weight, config.dropout) == (eps, lam, dropout)
    processor = MEKImageProcessor.from_pretrained(folder).to_dict()
    serving = {**SOURCE_SERVING, "do_grayscale": dataset == "FER-2013"}
    assert {key: processor[key] for key in serving} == serving
    model = MEKForImageClassification.from_pretrained(folder)
    source = torch.load(io.BytesIO(data), weights_only=True)
    assert torch.equal(model.mek.head.classifier.bias, source["classifier.bias"].float())
    assert torch.equal(model.mek.backbone.layer4[1].conv2.weight, source["encoder.7.1.conv2.weight"].float())

    record = read_conversion(folder)
    assert record["schema_version"] == 1
    assert record["source"] == {"repo_id": PUBLISHED_REPO if commit else None, "filename": name,
                                "revision": revision if commit else None, "commit": commit,
                                "sha256": hashlib.sha256(data).hexdigest()}
    reported = record["reported"]
    assert (reported["accuracy"], reported["mean_class_accuracy"]) == (accuracy, mean_class)
    assert (reported["dataset"], reported["num_test_images"], reported["verified"]) == (dataset, num_test, False)
    assert "scripts/push_to_hf.py:" in reported["where"] and "results-CV-project.md:" in reported["where"]
    training = record["training"]
    assert (training["epsilon"], training["lambda"], training["dropout"]) == (eps, lam, dropout)
    assert training["balance_weight_rule"].startswith("mean1") and training["early_stop_patience"] == 25
    assert record["serving"] == {key: processor[key] for key in SERVING_DEFAULTS}
    assert "demo.py:" in record["serving_source"]["where"]


# ------------------------------------------------------------------------------------------------ one line
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_each_published_file_converts_from_the_hub_in_one_line(hub, files, online, tmp_path, capsys, name):
    out = tmp_path / "out"
    assert convert.main(["--checkpoint", f"{PUBLISHED_REPO}/{name}", "--output", str(out), *hub_args(hub, online)]) == 0
    printed = capsys.readouterr().out
    assert f"converted {PUBLISHED_REPO}/{name} (mek-resnet" in printed and "not verified here" in printed
    check_converted(out, name, files[name], hub.commit_of(PUBLISHED_REPO, "main"))
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "preprocessor_config.json", CONVERSION}
    assert hub.unexpected == []


def test_fer_mek_convert_is_the_same_command(hub, files, online, tmp_path, capsys):
    from fer_mek.cli import main as fer_mek_main

    name = "mek_resnet18_fer2013_imagenet_best.pth"
    out = tmp_path / "via-cli"
    assert fer_mek_main(["convert", "--checkpoint", f"{PUBLISHED_REPO}/{name}", "--output", str(out),
                         *hub_args(hub, online)]) == 0
    check_converted(out, name, files[name], hub.commit_of(PUBLISHED_REPO, "main"))
    assert fer_mek_main(["convert", "--output", str(tmp_path / "x")]) != 0  # no checkpoint: one clear error
    assert "error: pass --checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        fer_mek_main(["convert", "--help"])
    assert done.value.code == 0 and "usage: fer-mek convert" in capsys.readouterr().out


def test_python_one_line_returns_the_model_with_its_processor(hub, files, online, tmp_path):
    name = "mek_resnet34_fer2013_imagenet_best.pth"
    model = fer_mek.from_published(PUBLISHED_REPO, name, endpoint=hub.url, output_dir=tmp_path / "saved")
    assert isinstance(model, MEKForImageClassification) and not model.training
    assert model.config.backbone == "resnet34" and model.config.id2label[0] == "angry"
    assert model.image_processor.do_grayscale is True and model.image_processor.default_tta == "flip"
    assert model.conversion["reported"]["accuracy"] == 0.7205
    # Saved as the command line saves it; the default cache ($HF_HUB_CACHE) was used.
    check_converted(tmp_path / "saved", name, files[name], hub.commit_of(PUBLISHED_REPO, "main"))
    assert (tmp_path / "default-cache" / "models--ToiTenBao--fer-mek-checkpoints").is_dir()
    # The whole reference as one argument.
    again = fer_mek.from_published(f"{PUBLISHED_REPO}/{name}@main", endpoint=hub.url)
    assert torch.equal(again.mek.head.classifier.weight, model.mek.head.classifier.weight)


def test_second_call_works_from_the_cache_with_the_hub_offline(hub, files, online, tmp_path, monkeypatch, capsys):
    name = "mek_webcam_resnet18_rafdb_clahe_facecrop_best.pth"
    args = ["--checkpoint", f"{PUBLISHED_REPO}/{name}", *hub_args(hub, online)]
    assert convert.main([*args, "--output", str(tmp_path / "online")]) == 0
    assert convert.main(["--all", "--output", str(tmp_path / "all-online"), *hub_args(hub, online)]) == 0
    go_offline(monkeypatch)
    seen = len(hub.requests)
    assert convert.main([*args, "--output", str(tmp_path / "offline")]) == 0
    check_converted(tmp_path / "offline", name, files[name], hub.commit_of(PUBLISHED_REPO, "main"))
    # Offline, --all lists the repository from the cache.
    assert convert.main(["--all", "--output", str(tmp_path / "all-offline"), *hub_args(hub, online)]) == 0
    assert sorted(p.name for p in (tmp_path / "all-offline").iterdir()) == sorted(n[:-4] for n in PUBLISHED)
    model = fer_mek.from_published(PUBLISHED_REPO, name, cache_dir=online, endpoint="http://127.0.0.1:9")
    assert model.config.id2label[0] == "surprise"
    assert len(hub.requests) == seen, "offline calls reached the Hub"
    # What was never downloaded is a clear error, not a hang or a traceback.
    capsys.readouterr()
    code = convert.cli_main(["--checkpoint", f"{PUBLISHED_REPO}/{name}@v1", "--output", str(tmp_path / "x"),
                             *hub_args(hub, online)])
    assert code == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {PUBLISHED_REPO}/{name}@v1: it is not in the Hub cache") and "HF_HUB_OFFLINE" in error


def test_all_converts_every_checkpoint_of_the_repository(hub, files, online, tmp_path, capsys):
    out = tmp_path / "published"
    assert convert.main(["--all", "--repo", PUBLISHED_REPO, "--output", str(out), *hub_args(hub, online)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(name.removesuffix(".pth") for name in PUBLISHED)
    commit = hub.commit_of(PUBLISHED_REPO, "main")
    for name in PUBLISHED:
        folder = out / name.removesuffix(".pth")
        assert read_conversion(folder)["source"]["filename"] == name
        assert MEKConfig.from_pretrained(folder).id2label[0] == PUBLISHED[name][1][0]
    check_converted(out / "mek_resnet34_rafdb_imagenet_best", "mek_resnet34_rafdb_imagenet_best.pth",
                    files["mek_resnet34_rafdb_imagenet_best.pth"], commit)
    assert f"converted 6 checkpoints of {PUBLISHED_REPO}" in capsys.readouterr().out
    # Nothing is overwritten without --overwrite; --all defaults to the published repository.
    with pytest.raises(FileExistsError):
        convert.main(["--all", "--output", str(out), *hub_args(hub, online)])
    # A repository with a file whose class order its name does not tell: an error before anything is downloaded.
    seen = len(hub.requests)
    assert convert.cli_main(["--all", "--repo", "alice/other-mek", "--output", str(tmp_path / "o"),
                             *hub_args(hub, online)]) == 1
    assert "cannot tell the class order of 'best.pth'" in capsys.readouterr().err
    assert not any("/resolve/" in request.path for request in hub.requests[seen:])
    assert convert.main(["--all", "--repo", "alice/other-mek", "--labels", "rafdb", "--output", str(tmp_path / "o"),
                         *hub_args(hub, online)]) == 0
    assert read_conversion(tmp_path / "o" / "best")["source"]["repo_id"] == "alice/other-mek"
    assert "reported" not in read_conversion(tmp_path / "o" / "best")


def test_revision_pinning_passes_the_revision_through(hub, online, tmp_path):
    name = "mek_resnet18_rafdb_msceleb_best.pth"
    v1 = hub.files[PUBLISHED_REPO]["v1"][name]
    commit = hub.commit_of(PUBLISHED_REPO, "v1")
    assert convert.main(["--checkpoint", f"{PUBLISHED_REPO}/{name}@v1", "--output", str(tmp_path / "a"),
                         *hub_args(hub, online)]) == 0
    check_converted(tmp_path / "a", name, v1, commit, revision="v1")
    assert any(r.method == "HEAD" and r.path == f"/{PUBLISHED_REPO}/resolve/v1/{name}" for r in hub.requests)
    # --revision and a commit hash pin the same file; the Python function takes revision=.
    assert convert.main(["--checkpoint", name, "--repo", PUBLISHED_REPO, "--revision", commit, "--output",
                         str(tmp_path / "b"), *hub_args(hub, online)]) == 0
    check_converted(tmp_path / "b", name, v1, commit, revision=commit)
    model = fer_mek.from_published(PUBLISHED_REPO, name, revision="v1", endpoint=hub.url, cache_dir=online)
    assert model.conversion["source"]["commit"] == commit
    assert torch.equal(model.mek.head.classifier.bias, torch.full((7,), -1.0))
    with pytest.raises(ValueError, match="names revision 'v1' but --revision is 'main'"):
        convert.main(["--checkpoint", f"{PUBLISHED_REPO}/{name}@v1", "--revision", "main", "--output",
                      str(tmp_path / "c"), *hub_args(hub, online)])


# ------------------------------------------------------------------------------------------------ errors
def test_wrong_file_repo_or_revision_is_one_clear_error(hub, online, tmp_path, capsys):
    out = tmp_path / "out"

    def error(reference: str) -> str:
        assert convert.cli_main(["--checkpoint", reference, "--output", str(out), *hub_args(hub, online)]) == 1
        assert not out.exists()
        return capsys.readouterr().err

    message = error(f"{PUBLISHED_REPO}/mek_resnet18_rafdb_msceleb_bset.pth")
    assert message.startswith(f"error: {PUBLISHED_REPO}/mek_resnet18_rafdb_msceleb_bset.pth: repository "
                              f"'{PUBLISHED_REPO}' has no file 'mek_resnet18_rafdb_msceleb_bset.pth' at revision 'main'")
    assert all(name in message for name in PUBLISHED) and "README.md" not in message
    assert "Did you mean 'mek_resnet18_rafdb_msceleb_best.pth'?" in message and len(message.splitlines()) == 1
    message = error("ToiTenBao/no-such-repo/mek_resnet18_rafdb_msceleb_best.pth")
    assert "there is no model repository 'ToiTenBao/no-such-repo'" in message
    assert f"the published MEK checkpoints are in {PUBLISHED_REPO}" in message and "nor is" in message
    message = error(f"{PUBLISHED_REPO}/mek_resnet18_rafdb_msceleb_best.pth@no-such-branch")
    assert "has no revision 'no-such-branch'" in message
    assert "checkpoint file not found: missing.pth" in error("missing.pth")
    assert convert.cli_main(["--all", "--repo", "alice/none", "--output", str(out), *hub_args(hub, online)]) == 1
    assert "there is no model repository 'alice/none'" in capsys.readouterr().err
    assert convert.cli_main(["--output", str(out)]) == 1
    assert "pass --checkpoint FILE" in capsys.readouterr().err
    # Python: the same errors, as FileNotFoundError; an unknown class order fails before downloading.
    with pytest.raises(CheckpointNotFoundError, match="Did you mean"):
        fer_mek.from_published(PUBLISHED_REPO, "mek_resnet18_rafdb_best.pth", endpoint=hub.url, cache_dir=online)
    seen = len(hub.requests)
    with pytest.raises(ValueError, match="cannot tell the class order of 'best.pth'"):
        fer_mek.from_published("alice/other-mek", "best.pth", endpoint=hub.url, cache_dir=online)
    assert len(hub.requests) == seen
    assert fer_mek.from_published("alice/other-mek", "best.pth", endpoint=hub.url, cache_dir=online,
                                  label_names=RAFDB_LABELS).conversion["source"]["repo_id"] == "alice/other-mek"


# ------------------------------------------------------------------------------------------------ the pieces
def test_local_published_file_gets_the_same_settings_and_record(files, tmp_path):
    name = "mek_resnet18_fer2013_imagenet_best.pth"
    (tmp_path / name).write_bytes(files[name])
    assert convert.main(["--checkpoint", str(tmp_path / name), "--output", str(tmp_path / "out")]) == 0
    check_converted(tmp_path / "out", name, files[name], commit=None)


def test_hub_references():
    reference = parse_hub_reference("ToiTenBao/fer-mek-checkpoints/sub/mek.pth@v1.0")
    assert (reference.repo_id, reference.filename, reference.revision) == ("ToiTenBao/fer-mek-checkpoints", "sub/mek.pth",
                                                                          "v1.0")
    assert str(reference) == "ToiTenBao/fer-mek-checkpoints/sub/mek.pth@v1.0"
    assert parse_hub_reference("hf://a/b/c.pth", revision="main").revision == "main"
    for not_a_reference in ("mek.pth", "runs/mek.pth", "/abs/a/b.pth", "./a/b/c.pth", "~/a/b/c.pth", "a//b/c.pth"):
        assert parse_hub_reference(not_a_reference) is None, not_a_reference


def test_conversion_json_round_trip_and_errors(tmp_path):
    assert read_conversion(tmp_path) is None
    write_conversion(tmp_path, {"source": {"repo_id": None, "filename": "x.pth"}, "serving": {}})
    assert read_conversion(tmp_path)["source"]["filename"] == "x.pth"
    with pytest.raises(ValueError, match="source"):
        write_conversion(tmp_path, {"serving": {}})
    (tmp_path / CONVERSION).write_text("{")
    with pytest.raises(RunError, match="not valid JSON"):
        read_conversion(tmp_path)
    (tmp_path / CONVERSION).write_text(json.dumps({"schema_version": 99, "source": {}}))
    with pytest.raises(RunError, match="upgrade fer-mek"):
        read_conversion(tmp_path)


def test_from_published_is_imported_on_first_use():
    """``import fer_mek`` stays light: its from_published imports the converter inside the function."""
    tree = ast.parse(inspect.getsource(fer_mek))
    top_level = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert not top_level & {"convert", "published", "checkpoint_io"}
    assert "fer_mek.convert.from_published" in fer_mek.from_published.__doc__

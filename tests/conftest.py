"""Shared test set-up: offline Hub, one thread per worker, tiny models."""

from __future__ import annotations

import os

# Tests never reach the network; set before transformers / huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per test worker (xdist runs two): fer_mek.train gives a CPU run all the cores unless the user set
# OMP_NUM_THREADS, which it reads as the caller's choice.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

DATA_DIR = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).resolve().parents[1]

# A small real backbone for fast tests: resnet18 on 32x32 inputs runs in milliseconds on one core.
TINY_BACKBONE = "resnet18"
TINY_IMAGE_SIZE = 32
#: The token of the upload tests: recognisable, so a test can assert it is never printed or written.
FAKE_TOKEN = "hf_FAKEtokenForTestsOnly0123456789abcdef"


@pytest.fixture(autouse=True)
def fp32_training(request, monkeypatch):
    """Runs in a test process train in fp32 even where the default recipe's ``--mixed-precision auto`` would pick
    bf16: accelerate keeps one precision per process, and the tests compare runs bit for bit. Tests of the
    resolution itself are marked ``real_precision``. (Subprocess runs pass ``--mixed-precision no``: tests.test_train.TINY.)"""
    if request.node.get_closest_marker("real_precision"):
        return
    from fer_mek import environment

    monkeypatch.setattr(environment, "bf16_support",
                        lambda device_type, **kwargs: (False, "the test suite trains in fp32"))


@pytest.fixture
def tiny_config():
    from fer_mek import MEKConfig

    return MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE, class_counts=[1290, 281, 717, 4772, 1982, 705, 2524])


@pytest.fixture
def tiny_model(tiny_config):
    from fer_mek import MEKForImageClassification

    torch.manual_seed(0)
    return MEKForImageClassification(tiny_config).eval()


@pytest.fixture(scope="session")
def saved_tiny_model(tmp_path_factory):
    """A tiny MEK model saved with save_pretrained, and the model itself."""
    from fer_mek import MEKConfig, MEKForImageClassification

    torch.manual_seed(0)
    model = MEKForImageClassification(MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE)).eval()
    folder = tmp_path_factory.mktemp("tiny-mek")
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Three tiny saved MEK models for prediction tests: two with RAF-DB's classes, one with FER-2013's (a different
    order)."""
    from fer_mek import FER2013_LABELS, RAFDB_LABELS, MEKConfig, MEKForImageClassification

    root = tmp_path_factory.mktemp("prediction-models")
    folders = {}
    for name, labels, seed in (("a", RAFDB_LABELS, 0), ("b", RAFDB_LABELS, 1), ("fer", FER2013_LABELS, 2)):
        torch.manual_seed(seed)
        config = MEKConfig(backbone="test_resnet", image_size=64, id2label=dict(enumerate(labels)))
        MEKForImageClassification(config).eval().save_pretrained(root / name)
        folders[name] = root / name
    return folders


@pytest.fixture
def upload_online(monkeypatch, tmp_path):
    """Upload tests: online mode towards the loopback hub, a recognisable fake token, and a private HF_HOME and temp dir."""
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

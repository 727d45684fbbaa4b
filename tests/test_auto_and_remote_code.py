"""Auto classes, the image-classification pipeline, the image processor, and trust_remote_code loading."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    pipeline,
)

from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor, MEKModel


def test_auto_classes_load_a_saved_folder(saved_tiny_model):
    folder, model = saved_tiny_model
    assert isinstance(AutoConfig.from_pretrained(folder), MEKConfig)
    assert isinstance(AutoImageProcessor.from_pretrained(folder), MEKImageProcessor)
    x = torch.randn(2, 3, 32, 32)
    for auto, expected in ((AutoModel, MEKModel), (AutoModelForImageClassification, MEKForImageClassification)):
        loaded = auto.from_pretrained(folder).eval()
        assert type(loaded) is expected
        with torch.no_grad():
            assert torch.equal(loaded(x).logits, model(x).logits)


def test_saved_folder_has_weights_code_and_full_auto_map(saved_tiny_model):
    folder, _ = saved_tiny_model
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "configuration_mek.py",
            "modeling_mek.py", "image_processing_mek.py", "losses.py", "labels.py"} <= names
    processor_map = json.loads((folder / "preprocessor_config.json").read_text())["auto_map"]
    assert processor_map == {"AutoImageProcessor": "image_processing_mek.MEKImageProcessor"}
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_mek.MEKConfig",
        "AutoModel": "modeling_mek.MEKModel",
        "AutoModelForImageClassification": "modeling_mek.MEKForImageClassification",
        "AutoImageProcessor": "image_processing_mek.MEKImageProcessor",
    }
    # The remote-code files must import each other flat, never the installed package.
    for name in ("configuration_mek.py", "modeling_mek.py", "image_processing_mek.py", "losses.py", "labels.py"):
        source = (folder / name).read_text()
        assert not re.search(r"^\s*(import|from) fer_mek", source, flags=re.MULTILINE), name


def test_pipeline_returns_the_model_class_names(saved_tiny_model):
    folder, model = saved_tiny_model
    classifier = pipeline("image-classification", model=str(folder))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    rows = classifier(image, top_k=7)
    assert {row["label"] for row in rows} == set(model.config.id2label.values())
    assert sum(row["score"] for row in rows) == pytest.approx(1.0, abs=1e-5)
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        probs = model(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
    best = int(probs.argmax())
    assert rows[0]["label"] == model.config.id2label[best]
    assert rows[0]["score"] == pytest.approx(float(probs[best]), abs=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_image_processor_converts_any_mode_to_normalised_rgb(mode):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 20, 3), dtype=np.uint8))
    image = rgb.convert("L").convert("I;16") if mode == "I;16" else rgb.convert(mode)
    processor = MEKImageProcessor.from_model_config(MEKConfig(image_size=48, image_mean=[0.5] * 3, image_std=[0.25] * 3))
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 48, 48) and pixels.dtype == torch.float32
    assert pixels.min() >= -2.0 - 1e-6 and pixels.max() <= 2.0 + 1e-6  # (x - 0.5) / 0.25 for x in [0, 1]


def test_image_processor_matches_manual_preprocessing():
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    config = MEKConfig(image_size=32)
    pixels = MEKImageProcessor.from_model_config(config)(image, return_tensors="pt")["pixel_values"][0]
    resized = np.asarray(image.resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255.0
    expected = (resized - np.array(config.image_mean)) / np.array(config.image_std)
    np.testing.assert_allclose(pixels.permute(1, 2, 0).numpy(), expected, atol=1e-5)


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockFerMek(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "fer_mek" or name.startswith("fer_mek."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockFerMek())
    try:
        import fer_mek  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("fer_mek should not be importable here")

    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    folder, inputs, out = sys.argv[1], sys.argv[2], sys.argv[3]
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
    x = torch.load(inputs, weights_only=True)
    with torch.no_grad():
        torch.save({"logits": model(x).logits, "base": base(x).logits,
                    "module": type(model).__module__, "processor": type(processor).__name__,
                    "balance_weight_rule": model.config.balance_weight_rule, "head_init": model.config.head_init,
                    "balance_weights": model.loss_fn.balance_weights,
                    "pipeline_labels": [r["label"] for r in classifier(__import__("PIL.Image").Image.new("RGB", (20, 20)))]},
                   out)
    """
)


def load_with_remote_code(folder, x: torch.Tensor, tmp_path) -> dict:
    """Run REMOTE_CODE_SCRIPT on a saved folder in a process where fer_mek cannot be imported."""
    torch.save(x, tmp_path / "inputs.pt")
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "out.pt", weights_only=True)


def test_trust_remote_code_loads_without_the_package(saved_tiny_model, tmp_path):
    folder, model = saved_tiny_model
    x = torch.randn(2, 3, 32, 32)
    out = load_with_remote_code(folder, x, tmp_path)
    assert out["module"].startswith("transformers_modules"), out["module"]
    assert out["processor"] == "MEKImageProcessor"
    assert set(out["pipeline_labels"]) <= set(model.config.id2label.values())
    with torch.no_grad():
        expected = model(x).logits
    assert torch.equal(out["logits"], expected)
    assert torch.equal(out["base"], expected)


def test_remote_code_keeps_the_balance_weight_rule_and_head_init(tmp_path):
    """A checkpoint trained with MEK-CV's mean-1 weights keeps them (and its head init) through remote code."""
    torch.manual_seed(0)
    config = MEKConfig(backbone="resnet18", image_size=32, head="conv_bn", class_counts=[1157, 254, 651, 4311, 1762, 627, 2282],
                       balance_weight_rule="mean1", head_init="normal")
    model = MEKForImageClassification(config).eval()
    model.save_pretrained(tmp_path / "model")
    x = torch.randn(2, 3, 32, 32)
    out = load_with_remote_code(tmp_path / "model", x, tmp_path)
    assert (out["balance_weight_rule"], out["head_init"]) == ("mean1", "normal")
    assert torch.equal(out["balance_weights"], model.loss_fn.balance_weights)
    assert out["balance_weights"].tolist() == pytest.approx([0.659773, 3.005343, 1.172592, 0.177072, 0.433233,
                                                             1.217475, 0.334512], abs=1e-6)
    with torch.no_grad():  # another process, other threads: the conv head may sum in another order
        torch.testing.assert_close(out["logits"], model(x).logits, rtol=1e-5, atol=1e-6)

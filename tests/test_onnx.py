"""ONNX export: onnxruntime matches PyTorch on logits and attention maps; class names travel in the metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fer_mek import MEKConfig, MEKForImageClassification
from fer_mek.labels import FER2013_LABELS

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'fer-mek[onnx]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install 'fer-mek[onnx]')")
pytest.importorskip("onnxscript", reason="onnxscript (torch's ONNX exporter) is not installed")

from fer_mek.cli import main  # noqa: E402
from fer_mek.onnx_export import export_onnx, read_onnx_metadata  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = MEKConfig(backbone="test_resnet", image_size=64, head="conv_bn", id2label=dict(enumerate(FER2013_LABELS)))
    folder = tmp_path_factory.mktemp("onnx-model")
    MEKForImageClassification(config).eval().save_pretrained(folder)
    return folder


def test_export_matches_pytorch_within_1e_4(tiny_model_dir: Path, tmp_path: Path) -> None:
    report = export_onnx(tiny_model_dir, tmp_path / "mek.onnx")
    assert report.path.is_file() and not (tmp_path / "mek.onnx.data").exists()  # one self-contained file
    assert report.max_abs_diff_logits < 1e-4 and report.max_abs_diff_attention < 1e-4
    assert report.labels == FER2013_LABELS

    metadata = read_onnx_metadata(report.path)
    assert metadata["id2label"] == dict(enumerate(FER2013_LABELS)) and metadata["image_size"] == 64

    # Dynamic batch size, and the same numbers on inputs the export never saw.
    model = MEKForImageClassification.from_pretrained(tiny_model_dir).eval()
    pixel_values = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    logits, maps = session.run(None, {"pixel_values": pixel_values.numpy()})
    with torch.no_grad():
        expected = model(pixel_values)
    assert logits.shape == (3, 7) and maps.shape == tuple(expected.attention_maps.shape)
    assert np.abs(logits - expected.logits.numpy()).max() < 1e-4
    assert np.abs(maps - expected.attention_maps.numpy()).max() < 1e-4


def test_export_command(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "nested" / "mek.onnx"
    assert main(["export", "--model", str(tiny_model_dir), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert output.is_file() and "max abs diff" in printed and "angry, disgust" in printed
    assert main(["export", "--model", str(tmp_path / "missing"), "--output", str(output)]) == 2
    assert "no such folder" in capsys.readouterr().err

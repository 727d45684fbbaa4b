"""Export MEK models to ONNX: logits and class attention maps, with the class names in the file's metadata.

Needs the ``onnx`` extra (``pip install "fer-mek[onnx]"``: onnx, onnxscript for torch's exporter, onnxruntime to
check the export).

Example:
    >>> from fer_mek.onnx_export import export_onnx
    >>> report = export_onnx("path/to/model", "mek.onnx")   # exports, then compares onnxruntime with PyTorch
    >>> report.max_abs_diff_logits < 1e-4
    True

The ONNX model takes ``pixel_values`` ``[batch, 3, S, S]`` (the output of the model's image processor: RGB, resized
to ``S = image_size``, ImageNet-normalised) and returns ``logits`` ``[batch, K]`` and ``attention_maps``
``[batch, K, h, w]``. Its metadata holds ``id2label`` (JSON), ``image_size``, ``image_mean`` and ``image_std``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

_EXTRA_HINT = 'install the ONNX extra: pip install "fer-mek[onnx]" (onnx, onnxscript, onnxruntime)'
#: Above this many parameter bytes the weights go to a separate ``.onnx.data`` file (protobuf's 2 GiB limit).
_EXTERNAL_DATA_BYTES = 1_800_000_000


class _LogitsAndMaps(nn.Module):
    """Plain-tensor outputs for the exporter: ``(logits, attention_maps)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model(pixel_values=pixel_values)
        return output.logits, output.attention_maps


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely onnxruntime matches PyTorch.

    Attributes:
        path: The ``.onnx`` file.
        labels: The class names, in output order.
        image_size: Input side length.
        max_abs_diff_logits: Largest ``|onnxruntime - torch|`` over the logits (``None`` when not verified).
        max_abs_diff_attention: The same for the attention maps.
    """

    path: Path
    labels: tuple[str, ...]
    image_size: int
    max_abs_diff_logits: float | None = None
    max_abs_diff_attention: float | None = None


def export_onnx(
    model: str | os.PathLike | nn.Module,
    output: str | os.PathLike,
    opset: int = 18,
    verify: bool = True,
    atol: float = 1e-4,
    trust_remote_code: bool = False,
) -> ExportReport:
    """Export a MEK model's logits and attention maps to ONNX (dynamic batch size), optionally checking it.

    Args:
        model: A ``save_pretrained`` folder, a Hub id or a loaded MEK model.
        output: The ``.onnx`` file to write (its folder is created).
        opset: ONNX opset version.
        verify: Run the file with onnxruntime on random inputs (batch of 2) and compare with PyTorch.
        atol: Largest allowed absolute difference when verifying.
        trust_remote_code: Passed to ``from_pretrained``.

    Raises:
        ImportError: onnx / onnxscript (or onnxruntime when verifying) are not installed.
        ValueError: The model gives no attention maps, or the export differs from PyTorch by more than ``atol``.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's exporter needs it; fail early with a clear message
    except ImportError as error:
        raise ImportError(f"ONNX export needs onnx and onnxscript: {_EXTRA_HINT}") from error
    from .inference import load_model, model_labels

    if isinstance(model, (str, os.PathLike)):
        loaded, _ = load_model(model, "cpu", trust_remote_code=trust_remote_code)
    else:
        loaded = model
    labels = model_labels(loaded)
    config = loaded.config
    image_size = int(getattr(config, "image_size", 224))
    was_training = loaded.training
    loaded.eval()
    try:
        wrapper = _LogitsAndMaps(loaded).eval()
        example = torch.randn(1, 3, image_size, image_size, device=next(loaded.parameters()).device)
        with torch.no_grad():
            check = wrapper(example)
        if check[1] is None:
            raise ValueError(f"{type(loaded).__name__} returns no attention_maps: only MEK models can be exported here")
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        parameter_bytes = sum(p.numel() * p.element_size() for p in loaded.parameters())
        torch.onnx.export(
            wrapper,
            (example,),
            str(output),
            input_names=["pixel_values"],
            output_names=["logits", "attention_maps"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=parameter_bytes > _EXTERNAL_DATA_BYTES,
            verbose=False,
        )
        _write_metadata(onnx, output, labels, config)
        report = ExportReport(output, labels, image_size)
        if verify:
            report.max_abs_diff_logits, report.max_abs_diff_attention = compare_with_pytorch(output, loaded)
    finally:
        loaded.train(was_training)
    if verify:
        worst = max(report.max_abs_diff_logits or 0.0, report.max_abs_diff_attention or 0.0)
        if worst > atol:
            raise ValueError(
                f"{output}: onnxruntime differs from PyTorch by {worst:.3g} (> {atol:g}); try another --opset"
            )
    return report


def _write_metadata(onnx: Any, path: Path, labels: tuple[str, ...], config: Any) -> None:
    proto = onnx.load(str(path), load_external_data=False)
    metadata = {
        "id2label": json.dumps(dict(enumerate(labels))),
        "image_size": str(getattr(config, "image_size", "")),
        "image_mean": json.dumps(list(getattr(config, "image_mean", []))),
        "image_std": json.dumps(list(getattr(config, "image_std", []))),
        "model_type": str(getattr(config, "model_type", "")),
        "backbone": str(getattr(config, "backbone", "")),
        "producer": "fer-mek",
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def compare_with_pytorch(
    path: str | os.PathLike, model: nn.Module, batch_size: int = 2, seed: int = 0
) -> tuple[float, float]:
    """Largest absolute differences ``(logits, attention maps)`` between onnxruntime and PyTorch on random inputs.

    Raises:
        ImportError: onnxruntime is not installed.
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"checking the export needs onnxruntime: {_EXTRA_HINT}") from error
    image_size = int(getattr(model.config, "image_size", 224))
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, maps = session.run(["logits", "attention_maps"], {"pixel_values": pixel_values.numpy()})
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(pixel_values=pixel_values.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    diff_logits = float((torch.from_numpy(logits) - expected.logits.float().cpu()).abs().max())
    diff_maps = float((torch.from_numpy(maps) - expected.attention_maps.float().cpu()).abs().max())
    return diff_logits, diff_maps


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata :func:`export_onnx` stored: ``id2label`` (``{int: str}``), ``image_size``, mean, std, ..."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    metadata: dict[str, Any] = {entry.key: entry.value for entry in proto.metadata_props}
    if "id2label" in metadata:
        metadata["id2label"] = {int(k): v for k, v in json.loads(metadata["id2label"]).items()}
    for key in ("image_mean", "image_std"):
        if key in metadata:
            metadata[key] = json.loads(metadata[key])
    if metadata.get("image_size"):
        metadata["image_size"] = int(metadata["image_size"])
    return metadata


__all__ = ["ExportReport", "compare_with_pytorch", "export_onnx", "read_onnx_metadata"]

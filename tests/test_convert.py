"""Conversion of existing checkpoints: backbone state_dicts and the published MEK ResNet checkpoints."""

from __future__ import annotations

import argparse

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from fer_mek import FER2013_FOLDER_LABELS, RAFDB_LABELS, MEKConfig, MEKForImageClassification, convert
from fer_mek.convert import (
    convert_mek_resnet_checkpoint,
    infer_resnet_name,
    load_backbone_weights,
    load_state_dict_file,
)


class PublishedMEKResNet(nn.Module):
    """The module of the published MEK ResNet checkpoints, built from torchvision as their training code does."""

    def __init__(self, resnet: nn.Module, num_classes: int = 7, drop: float = 0.4):
        super().__init__()
        channels = resnet.fc.in_features
        self.encoder = nn.Sequential(*list(resnet.children())[:-2])
        self.bn = nn.BatchNorm2d(channels)
        self.drop = nn.Dropout2d(drop)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.classifier(self.drop(self.bn(self.encoder(x))))
        return maps.mean(dim=(2, 3)), maps


def randomize_batchnorm(module: nn.Module) -> None:
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.weight.normal_()
                bn.bias.normal_()
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize(
    "arch,labels",
    [("resnet18", RAFDB_LABELS), ("resnet34", FER2013_FOLDER_LABELS), ("resnet50", RAFDB_LABELS)],
)
def test_published_mek_checkpoint_gives_same_logits_and_maps(tmp_path, arch, labels):
    torch.manual_seed(0)
    reference = PublishedMEKResNet(getattr(torchvision.models, arch)(), num_classes=len(labels))
    randomize_batchnorm(reference)
    reference.eval()
    path = tmp_path / f"mek_{arch}_best.pth"
    torch.save(reference.state_dict(), path)

    model = convert_mek_resnet_checkpoint(path, label_names=labels)
    assert model.config.backbone == arch and model.config.head == "conv_bn"
    assert [model.config.id2label[i] for i in range(len(labels))] == list(labels)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, maps = reference(x)
        out = model(x)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.attention_maps, maps, atol=1e-5, rtol=0)


def test_converted_checkpoint_survives_save_and_reload(tmp_path):
    torch.manual_seed(0)
    reference = PublishedMEKResNet(torchvision.models.resnet18()).eval()
    model = convert_mek_resnet_checkpoint(reference.state_dict())
    model.save_pretrained(tmp_path)
    again = MEKForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x).logits, model(x).logits)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix", "safetensors"])
def test_backbone_state_dict_in_any_wrapping_loads_and_drops_classifier(tmp_path, wrap):
    torch.manual_seed(1)
    face_resnet = torchvision.models.resnet18(num_classes=8631)  # e.g. a VGGFace2/MS-Celeb identity classifier
    state = face_resnet.state_dict()
    path = tmp_path / "resnet18_msceleb.pth"
    if wrap == "plain":
        torch.save(state, path)
    elif wrap == "state_dict":
        torch.save({"state_dict": state, "epoch": 30}, path)
    elif wrap == "model":
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "optimizer_name": "sgd"}, path)
    elif wrap == "module_prefix":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        path = tmp_path / "resnet18.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))

    model = MEKForImageClassification(MEKConfig(backbone="resnet18", image_size=64)).eval()
    report = load_backbone_weights(model, path)
    assert report["dropped_keys"] == ["fc.bias", "fc.weight"]
    assert report["source"] == str(path)
    for key, value in model.mek.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.mek(x).last_hidden_state, nn.Sequential(*list(face_resnet.eval().children())[:-2])(x))


def test_backbone_of_another_architecture_is_rejected_with_the_keys(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    model = MEKForImageClassification(MEKConfig(backbone="resnet18", image_size=32))
    with pytest.raises(ValueError, match=r"does not fit the model:\n.*not in the model: layer1\.2\."):
        load_backbone_weights(model, path)


def test_wrongly_shaped_keys_are_listed(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    path = tmp_path / "gray.pth"
    torch.save(state, path)
    model = MEKForImageClassification(MEKConfig(backbone="resnet18", image_size=32))
    with pytest.raises(ValueError, match=r"conv1\.weight \(checkpoint \(64, 1, 7, 7\) vs model \(64, 3, 7, 7\)\)"):
        load_backbone_weights(model, path)


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    # Old training scripts often pickle their argparse namespace beside the weights: not loadable safely.
    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_state_dict_file(path)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_state_dict_file(tmp_path / "missing.pth")
    (tmp_path / "truncated.pth").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_state_dict_file(tmp_path / "truncated.pth")
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, tmp_path / "meta.pth")
    with pytest.raises(ValueError, match="holds no state_dict"):
        load_state_dict_file(tmp_path / "meta.pth")


def test_not_a_mek_checkpoint_and_label_mismatch_are_clear_errors():
    plain = torchvision.models.resnet18().state_dict()
    with pytest.raises(ValueError, match="not a MEK ResNet checkpoint"):
        convert_mek_resnet_checkpoint(plain)
    published = PublishedMEKResNet(torchvision.models.resnet18(), num_classes=8).state_dict()
    with pytest.raises(ValueError, match="8 classes but 7 label names"):
        convert_mek_resnet_checkpoint(published, RAFDB_LABELS)


def test_resnet_depth_inference():
    assert infer_resnet_name(torchvision.models.resnet34().state_dict()) == "resnet34"
    assert infer_resnet_name(torchvision.models.resnet101().state_dict()) == "resnet101"
    with pytest.raises(ValueError, match="pass the timm backbone name"):
        infer_resnet_name({"layer1.0.conv1.weight": torch.zeros(1)})


def test_convert_script_end_to_end(tmp_path, capsys):
    torch.manual_seed(0)
    reference = PublishedMEKResNet(torchvision.models.resnet18()).eval()
    torch.save(reference.state_dict(), tmp_path / "mek.pth")
    assert convert.main(["--checkpoint", str(tmp_path / "mek.pth"), "--labels", "fer2013-folders",
                         "--output", str(tmp_path / "out")]) == 0
    assert "mek-resnet" in capsys.readouterr().out
    model = MEKForImageClassification.from_pretrained(tmp_path / "out").eval()
    assert model.config.id2label[0] == FER2013_FOLDER_LABELS[0]
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()
    with pytest.raises(FileExistsError):
        convert.main(["--checkpoint", str(tmp_path / "mek.pth"), "--output", str(tmp_path / "out")])

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "backbone.pth")
    assert convert.main(["--checkpoint", str(tmp_path / "backbone.pth"), "--backbone", "resnet18",
                         "--output", str(tmp_path / "out2")]) == 0
    assert "must be trained" in capsys.readouterr().out
    # The command line: errors are one line and exit status 1.
    assert convert.cli_main(["--checkpoint", str(tmp_path / "mek.pth"), "--output", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'out'} already exists")
    assert convert.cli_main(["--kind", "backbone", "--checkpoint", str(tmp_path / "backbone.pth"),
                             "--output", str(tmp_path / "out3")]) == 1
    assert "error: --kind backbone needs --backbone" in capsys.readouterr().err


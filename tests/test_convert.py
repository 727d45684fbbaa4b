"""Conversion of existing checkpoints: backbone state_dicts and the published MEK ResNet checkpoints."""

from __future__ import annotations

import argparse
import re

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from fer_mek import FER2013_FOLDER_LABELS, RAFDB_LABELS, MEKConfig, MEKForImageClassification, convert
from fer_mek.convert import (
    MEK_SWIN_BACKBONE,
    MEK_SWIN_BACKBONE_KWARGS,
    convert_mek_resnet_checkpoint,
    infer_label_set,
    infer_resnet_name,
    is_mek_swin_checkpoint,
    load_backbone_weights,
    load_state_dict_file,
    published_checkpoint,
    reset_final_norm,
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
    model = convert_mek_resnet_checkpoint(reference.state_dict(), RAFDB_LABELS)
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



# ------------------------------------------------------------------------------------------------ backbone sources
def test_torchvision_imagenet_file_loads_with_fc_dropped_and_counters_filled(tmp_path):
    """torchvision's ImageNet files (resnet18-f37072fd.pth, 2017) are a plain state_dict with fc.* and without the
    BatchNorm counters num_batches_tracked, which torch's own loader sets to 0 (as MEK-CV's fresh network has them)."""
    torch.manual_seed(2)
    resnet = torchvision.models.resnet18()
    state = {k: v for k, v in resnet.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    model = MEKForImageClassification(MEKConfig(backbone="resnet18", image_size=64)).eval()
    report = load_backbone_weights(model, path)
    assert report["dropped_keys"] == ["fc.bias", "fc.weight"]
    assert report["loaded_tensors"] == len(state) - 2 and len(report["filled_keys"]) == 20
    own = model.mek.backbone.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert all(int(own[key]) == 0 for key in report["filled_keys"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.mek(x).last_hidden_state, nn.Sequential(*list(resnet.eval().children())[:-2])(x))


def test_timm_tagged_weights_go_through_timm(tmp_path, monkeypatch):
    """"timm:resnet18.tv_in1k" asks timm for that tag's pretrained weights; here timm reads them from a local file
    (pretrained_cfg_overlay) instead of the Hub, through its real loading path."""
    torch.manual_seed(3)
    weights = torchvision.models.resnet18().state_dict()
    torch.save(weights, tmp_path / "tv.pth")
    calls = []
    real_create_model = timm.create_model

    def create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        if pretrained:
            kwargs["pretrained_cfg_overlay"] = {"file": str(tmp_path / "tv.pth")}
        return real_create_model(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    model = MEKForImageClassification(MEKConfig(backbone="resnet18", image_size=32))
    report = load_backbone_weights(model, "timm:resnet18.tv_in1k")
    assert ("resnet18.tv_in1k", True) in calls
    assert report["source"] == "timm:resnet18.tv_in1k" and report["weights"] == "timm/resnet18.tv_in1k"
    own = model.mek.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in weights.items() if not k.startswith("fc."))
    with pytest.raises(ValueError, match="names architecture 'resnet34' but the model's backbone is 'resnet18'"):
        load_backbone_weights(model, "timm:resnet34.tv_in1k")


def test_reset_final_norm():
    torch.manual_seed(0)
    model = MEKForImageClassification(MEKConfig(backbone="test_vit", image_size=160))
    with torch.no_grad():
        model.mek.backbone.norm.weight.normal_()
        model.mek.backbone.norm.bias.normal_()
    assert reset_final_norm(model) == {"final_norm": "norm reset to weight 1, bias 0"}
    assert torch.all(model.mek.backbone.norm.weight == 1) and torch.all(model.mek.backbone.norm.bias == 0)
    with pytest.raises(ValueError, match="has no final norm"):
        reset_final_norm(MEKForImageClassification(MEKConfig(backbone="resnet18", image_size=32)))


# ---------------------------------------------------------------------------- the official MEK Swin-T (start_0.pt)
def official_layout(timm_state: dict, buffers: dict) -> dict:
    """A timm Swin state in the official MEK layout (code/backbones/swin.py): patch merging at the end of stages
    0-2, the persistent position indices and shift masks, the final norm and the face-embedding head ``feature``."""
    state = {}
    for key, value in timm_state.items():
        state[re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)] = value
    state.update({k: v.clone() for k, v in buffers.items() if k.endswith(("relative_position_index", "attn_mask"))})
    generator = torch.Generator().manual_seed(5)
    state["norm.weight"], state["norm.bias"] = torch.randn(768, generator=generator), torch.randn(768, generator=generator)
    state["feature.0.weight"] = torch.randn(768, 768, generator=generator)
    state["feature.2.weight"] = torch.randn(512, 768, generator=generator)
    for index, width in ((1, 768), (3, 512)):
        state.update({f"feature.{index}.weight": torch.ones(width), f"feature.{index}.bias": torch.zeros(width),
                      f"feature.{index}.running_mean": torch.zeros(width), f"feature.{index}.running_var": torch.ones(width),
                      f"feature.{index}.num_batches_tracked": torch.tensor(7)})
    return state


@pytest.fixture(scope="module")
def mek_swin_file(tmp_path_factory):
    """A fake start_0.pt with the official key layout, from a randomly initialised Swin-T at 112 px / patch 2 (the
    real geometry: only a state_dict copy)."""
    torch.manual_seed(11)
    source = timm.create_model(MEK_SWIN_BACKBONE, num_classes=0, global_pool="", **MEK_SWIN_BACKBONE_KWARGS).eval()
    backbone = official_layout(source.state_dict(), dict(source.named_buffers()))
    path = tmp_path_factory.mktemp("mek-swin") / "start_0.pt"
    # As an insightface-style training saves it: backbone, margin head, optimizer state and counters.
    torch.save({"epoch": 0, "global_step": 0, "state_dict_backbone": backbone,
                "state_dict_softmax_fc": {"weight_activated": torch.zeros(4, 512)},
                "state_optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}, path)
    return path, source, backbone


def mek_swin_model(**kwargs) -> MEKForImageClassification:
    config = MEKConfig(backbone=MEK_SWIN_BACKBONE, backbone_kwargs=dict(MEK_SWIN_BACKBONE_KWARGS), image_size=112, **kwargs)
    return MEKForImageClassification(config).eval()


def test_official_mek_swin_checkpoint_places_every_tensor(mek_swin_file):
    path, source, backbone = mek_swin_file
    assert is_mek_swin_checkpoint(torch.load(path, weights_only=True))
    model = mek_swin_model()
    report = load_backbone_weights(model, path)
    assert report["layout"] == "mek-swin" and report["source"] == str(path)
    assert report["renamed_keys"] == {f"layers.{s}.downsample.{name}": f"layers.{s + 1}.downsample.{name}"
                                      for s in range(3) for name in ("norm.weight", "norm.bias", "reduction.weight")}
    dropped = set(report["dropped_keys"])
    assert {k for k in backbone if k.startswith(("feature.", "norm."))} <= dropped
    assert len([k for k in dropped if k.endswith("relative_position_index")]) == 12  # one per block
    assert sorted(k for k in dropped if k.endswith("attn_mask")) == [  # shifted blocks of stages 0-2
        "layers.0.blocks.1.attn_mask", "layers.1.blocks.1.attn_mask", "layers.2.blocks.1.attn_mask",
        "layers.2.blocks.3.attn_mask", "layers.2.blocks.5.attn_mask"]
    own = model.mek.backbone.state_dict()
    placed = {report["renamed_keys"].get(k, k): v for k, v in backbone.items() if k not in dropped}
    assert report["loaded_tensors"] == len(placed) == len(own) - 2
    for key, value in placed.items():
        assert torch.equal(own[key], value), key
    assert set(own) - set(placed) == {"norm.weight", "norm.bias"}
    assert torch.all(own["norm.weight"] == 1) and torch.all(own["norm.bias"] == 0)  # the official fresh LayerNorm
    # The loaded model computes what the official encoder + fresh LayerNorm compute: tokens 7x7x768, NHWC -> NCHW.
    with torch.no_grad():
        source.norm.reset_parameters()
        x = torch.randn(1, 3, 112, 112)
        torch.testing.assert_close(model.mek(x).last_hidden_state, source.forward_features(x).permute(0, 3, 1, 2))


def test_official_mek_swin_layout_is_told_by_its_keys_without_the_wrapper(mek_swin_file, tmp_path):
    _, _, backbone = mek_swin_file
    torch.save({f"module.{k}": v for k, v in backbone.items()}, tmp_path / "encoder.pth")
    assert load_backbone_weights(mek_swin_model(), tmp_path / "encoder.pth")["layout"] == "mek-swin"
    assert load_state_dict_file(tmp_path / "encoder.pth").keys() == backbone.keys()


def test_official_mek_swin_misfits_are_listed(mek_swin_file, tmp_path):
    path, _, backbone = mek_swin_file
    at_224 = MEKForImageClassification(MEKConfig(backbone=MEK_SWIN_BACKBONE, image_size=224))
    with pytest.raises(ValueError, match=r"(?s)official MEK Swin layout.*patch_embed\.proj\.weight \(checkpoint "
                                         r"\(96, 3, 2, 2\) vs model \(96, 3, 4, 4\)\).*'img_size': 112, 'patch_size': 2"):
        load_backbone_weights(at_224, path)
    broken = dict(backbone)
    broken["layers.0.blocks.1.attn_mask"] = torch.zeros_like(broken["layers.0.blocks.1.attn_mask"])
    del broken["layers.3.blocks.0.mlp.fc1.bias"]
    torch.save({"state_dict_backbone": broken}, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"(?s)layers\.0\.blocks\.1\.attn_mask: values differ.*1 missing from the "
                                         r"checkpoint: layers\.3\.blocks\.0\.mlp\.fc1\.bias"):
        load_backbone_weights(mek_swin_model(), tmp_path / "broken.pt")


def test_convert_script_reads_the_official_swin_checkpoint(mek_swin_file, tmp_path, capsys):
    path, _, _ = mek_swin_file
    assert convert.main(["--checkpoint", str(path), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "norm reset to weight 1, bias 0" in out and "must be trained" in out
    config = MEKConfig.from_pretrained(tmp_path / "out")
    assert config.backbone == MEK_SWIN_BACKBONE and config.backbone_kwargs == MEK_SWIN_BACKBONE_KWARGS
    assert config.image_size == 112 and config.image_mean == [0.5] * 3 and config.image_std == [0.5] * 3


# ------------------------------------------------------------- published checkpoints: class order and training settings
# The source's values, typed here from the MEK-CV scripts (facts §0, B1-B5, W): (arch, labels, eps, lambda, dropout).
PUBLISHED = {
    "mek_resnet18_rafdb_msceleb_best.pth": ("resnet18", RAFDB_LABELS, 0.1, 2.0, 0.4),
    "mek_resnet18_rafdb_imagenet_best.pth": ("resnet18", RAFDB_LABELS, 0.1, 2.0, 0.4),
    "mek_resnet34_rafdb_imagenet_best.pth": ("resnet34", RAFDB_LABELS, 0.2, 2.0, 0.45),
    "mek_resnet18_fer2013_imagenet_best.pth": ("resnet18", FER2013_FOLDER_LABELS, 0.1, 0.25, 0.4),
    "mek_resnet34_fer2013_imagenet_best.pth": ("resnet34", FER2013_FOLDER_LABELS, 0.1, 0.1, 0.45),
    "mek_webcam_resnet18_rafdb_clahe_facecrop_best.pth": ("resnet18", RAFDB_LABELS, 0.15, 0.1, 0.4),
}
# MEK-CV's mean-1 balance weights of its 90 % train parts (facts A.26).
MEKCV_WEIGHTS = {
    RAFDB_LABELS: [0.659773, 3.005343, 1.172592, 0.177072, 0.433233, 1.217475, 0.334512],
    FER2013_FOLDER_LABELS: [0.476581, 4.396883, 0.472809, 0.269882, 0.386777, 0.397424, 0.599644],
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_checkpoint_records_its_training_settings(tmp_path, capsys, name):
    arch, labels, smoothing, attention_weight, dropout = PUBLISHED[name]
    assert set(PUBLISHED) == set(convert.PUBLISHED_CHECKPOINTS)
    torch.manual_seed(0)
    torch.save(PublishedMEKResNet(getattr(torchvision.models, arch)()).state_dict(), tmp_path / name)
    assert convert.main(["--checkpoint", str(tmp_path / name), "--output", str(tmp_path / "out")]) == 0
    assert "training settings of the published checkpoint recorded" in capsys.readouterr().out
    config = MEKConfig.from_pretrained(tmp_path / "out")
    assert config.backbone == arch and config.head == "conv_bn"
    assert [config.id2label[i] for i in range(7)] == list(labels)
    assert (config.smoothing, config.attention_weight, config.dropout) == (smoothing, attention_weight, dropout)
    assert (config.balance_weight_rule, config.head_init) == ("mean1", "pytorch")
    assert config.get_balance_weights() == pytest.approx(MEKCV_WEIGHTS[labels], abs=1e-6)
    # Python: the same from the file name; explicit arguments win.
    model = convert_mek_resnet_checkpoint(tmp_path / name, smoothing=0.3)
    assert (model.config.smoothing, model.config.attention_weight) == (0.3, attention_weight)


def test_unknown_file_name_needs_labels_and_keeps_default_settings(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(PublishedMEKResNet(torchvision.models.resnet18()).state_dict(), tmp_path / "mek.pth")
    assert convert.cli_main(["--checkpoint", str(tmp_path / "mek.pth"), "--output", str(tmp_path / "out")]) == 1
    assert "cannot tell the class order of 'mek.pth'" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="label_names are needed for a state_dict"):
        convert_mek_resnet_checkpoint(torch.load(tmp_path / "mek.pth", weights_only=True))
    assert convert.main(["--checkpoint", str(tmp_path / "mek.pth"), "--labels", "rafdb", "--output", str(tmp_path / "out")]) == 0
    assert "is not a published MEK checkpoint name" in capsys.readouterr().out
    config, default = MEKConfig.from_pretrained(tmp_path / "out"), MEKConfig()
    for name in ("smoothing", "attention_weight", "dropout", "balance_weight_rule", "head_init", "class_counts"):
        assert getattr(config, name) == getattr(default, name), name


@pytest.mark.parametrize("name,label_set", [("my_rafdb_run.pth", "rafdb"), ("RAF-DB_best.pt", "rafdb"),
                                            ("resnet50_fer2013.pth", "fer2013-folders"),
                                            ("fer2013_vs_rafdb.pth", None), ("best.pth", None)])
def test_label_set_from_the_file_name(name, label_set):
    if label_set is None:
        with pytest.raises(ValueError, match="--labels"):
            infer_label_set(name)
    else:
        assert infer_label_set(name) == label_set
        assert published_checkpoint(name) is None

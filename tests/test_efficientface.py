"""EfficientFace (fer_mek/efficientface.py) and the conversion of its released files (fer_mek/convert.py).

The source (zengqunzhao/EfficientFace, models/EfficientFace.py and models/modulator.py) is written here as data and as
a functional forward pass over a state_dict, independently of the module under test: parameter count, state_dict
names and outputs must match it. The converter tests build small fake files in the source's layout
(``{"state_dict": {"module." + key: tensor}, ...}``, main.py:152) and compare every placed tensor and the logits.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from transformers import AutoModelForImageClassification

from fer_mek import MEKConfig, MEKForImageClassification, MEKModel, convert
from fer_mek.convert import (
    EFFICIENTFACE_RAFDB_MEAN,
    EFFICIENTFACE_RAFDB_STD,
    convert_efficientface_checkpoint,
    convert_ldg_checkpoint,
    is_efficientface_checkpoint,
    load_backbone_weights,
)
from fer_mek.efficientface import EfficientFace, channel_shuffle
from fer_mek.finetune import initialize_from
from fer_mek.labels import EFFICIENTFACE_LABELS, LABEL_SETS, get_label_set
from fer_mek.modeling_mek import remote_code_files
from tests.test_auto_and_remote_code import load_with_remote_code

#: EfficientFace.py:197-198: blocks of stage2..4 and channels of conv1, stage2..4, conv5.
REPEATS = (4, 8, 4)
CHANNELS = (29, 116, 232, 464, 1024)
#: The paper's "1.28 M" parameters, counted exactly (7 classes).
PARAMETERS_7_CLASSES = 1_275_293


# ---------------------------------------------------------------------------------------------- the source as data
def source_param_count(num_classes: int = 7) -> int:
    """Parameters of the source's efficient_face(), from its layer definitions (EfficientFace.py, modulator.py)."""
    bn = 2  # weight and bias per channel (running statistics are buffers)
    total = 3 * 29 * 9 + bn * 29  # conv1 (EfficientFace.py:158-160)
    previous = CHANNELS[0]
    for repeats, out in zip(REPEATS, CHANNELS[1:4], strict=True):
        half = out // 2
        # stride-2 unit: branch1 (dw 3x3, BN, 1x1, BN) and branch2 (1x1, BN, dw 3x3, BN, 1x1, BN), :114-131
        total += previous * 9 + bn * previous + previous * half + bn * half
        total += previous * half + bn * half + half * 9 + bn * half + half * half + bn * half
        # stride-1 units: branch2 on half the channels
        total += (repeats - 1) * (half * half + bn * half + half * 9 + bn * half + half * half + bn * half)
        previous = out
    # local: 4 x (depthwise 29 -> 116 with groups 29, BN, depthwise 116 -> 116, BN), :41-59
    total += 4 * (116 * 9 + bn * 116 + 116 * 9 + bn * 116)
    hidden = 116 // 16
    # modulator: channel gate Linear(116, 7), BN1d, Linear(7, 116) (modulator.py:19-23); spatial gate 1x1 116 -> 7,
    # BN, two dilated 3x3 7 -> 7 with bias, BN, 1x1 7 -> 1 (modulator.py:34-45)
    total += 116 * hidden + hidden + bn * hidden + hidden * 116 + 116
    total += 116 * hidden + hidden + bn * hidden + 2 * (hidden * hidden * 9 + hidden + bn * hidden) + hidden + 1
    total += 464 * 1024 + bn * 1024  # conv5 (:178-180)
    return total + 1024 * num_classes + num_classes  # fc (:182)


def _bn(x: torch.Tensor, p: dict, name: str) -> torch.Tensor:
    return F.batch_norm(x, p[f"{name}.running_mean"], p[f"{name}.running_var"], p[f"{name}.weight"], p[f"{name}.bias"],
                        False, 0.0, 1e-5)


def _unit(x: torch.Tensor, p: dict, name: str, stride: int) -> torch.Tensor:
    """InvertedResidual.forward (EfficientFace.py:133-142), eval mode."""
    def branch2(y):
        y = F.relu(_bn(F.conv2d(y, p[f"{name}.branch2.0.weight"]), p, f"{name}.branch2.1"))
        y = _bn(F.conv2d(y, p[f"{name}.branch2.3.weight"], stride=stride, padding=1, groups=y.shape[1]), p,
                f"{name}.branch2.4")
        return F.relu(_bn(F.conv2d(y, p[f"{name}.branch2.5.weight"]), p, f"{name}.branch2.6"))

    if stride == 1:
        kept, processed = x.chunk(2, dim=1)
        out = torch.cat((kept, branch2(processed)), dim=1)
    else:
        y = _bn(F.conv2d(x, p[f"{name}.branch1.0.weight"], stride=stride, padding=1, groups=x.shape[1]), p,
                f"{name}.branch1.1")
        y = F.relu(_bn(F.conv2d(y, p[f"{name}.branch1.2.weight"]), p, f"{name}.branch1.3"))
        out = torch.cat((y, branch2(x)), dim=1)
    b, c, h, w = out.shape  # channel_shuffle(out, 2), EfficientFace.py:21-29
    return out.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


def _local(x: torch.Tensor, p: dict) -> torch.Tensor:
    """LocalFeatureExtractor.forward (EfficientFace.py:61-100): patch_11 = rows 0:28, cols 0:28 -> conv1_*;
    patch_21 = rows 28:56, cols 0:28 -> conv2_*; patch_12 = rows 0:28, cols 28:56 -> conv3_*; patch_22 -> conv4_*.
    28 = half the 56x56 map of a 224-px input; other sizes cut at the half too (fer-mek's generalisation)."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    patches = {1: x[:, :, 0:h, 0:w], 2: x[:, :, h:2 * h, 0:w], 3: x[:, :, 0:h, w:2 * w], 4: x[:, :, h:2 * h, w:2 * w]}
    out = {}
    for i, patch in patches.items():
        y = F.relu(_bn(F.conv2d(patch, p[f"local.conv{i}_1.weight"], stride=2, padding=1, groups=patch.shape[1]), p,
                       f"local.bn{i}_1"))
        out[i] = F.relu(_bn(F.conv2d(y, p[f"local.conv{i}_2.weight"], padding=1, groups=y.shape[1]), p,
                            f"local.bn{i}_2"))
    return torch.cat([torch.cat([out[1], out[2]], dim=2), torch.cat([out[3], out[4]], dim=2)], dim=3)


def _modulator(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Modulator.forward (modulator.py:25-27, 47-48, 57-59), eval mode."""
    c, s = "modulator.channel_att.gate_c.", "modulator.spatial_att.gate_s."
    pooled = F.avg_pool2d(x, x.size(2), stride=x.size(2)).view(x.size(0), -1)
    gate = F.linear(pooled, p[c + "gate_c_fc_0.weight"], p[c + "gate_c_fc_0.bias"])
    gate = F.relu(F.batch_norm(gate, p[c + "gate_c_bn_1.running_mean"], p[c + "gate_c_bn_1.running_var"],
                               p[c + "gate_c_bn_1.weight"], p[c + "gate_c_bn_1.bias"], False, 0.0, 1e-5))
    gate = F.linear(gate, p[c + "gate_c_fc_final.weight"], p[c + "gate_c_fc_final.bias"])
    channel = gate.unsqueeze(2).unsqueeze(3).expand_as(x)
    y = F.relu(_bn(F.conv2d(x, p[s + "gate_s_conv_reduce0.weight"], p[s + "gate_s_conv_reduce0.bias"]), p,
                   s + "gate_s_bn_reduce0"))
    for i in range(2):
        y = F.conv2d(y, p[s + f"gate_s_conv_di_{i}.weight"], p[s + f"gate_s_conv_di_{i}.bias"], padding=4, dilation=4)
        y = F.relu(_bn(y, p, s + f"gate_s_bn_di_{i}"))
    spatial = F.conv2d(y, p[s + "gate_s_conv_final.weight"], p[s + "gate_s_conv_final.bias"]).expand_as(x)
    return torch.sigmoid(channel * spatial) * x


def source_forward(p: dict, x: torch.Tensor) -> torch.Tensor:
    """EfficientFace.forward (EfficientFace.py:184-194) over a state_dict, eval mode."""
    x = F.relu(_bn(F.conv2d(x, p["conv1.0.weight"], stride=2, padding=1), p, "conv1.1"))
    x = F.max_pool2d(x, 3, 2, 1)
    y = x
    for stage, repeats in zip((2, 3, 4), REPEATS, strict=True):
        for i in range(repeats):
            y = _unit(y, p, f"stage{stage}.{i}", 2 if i == 0 else 1)
        if stage == 2:
            y = _modulator(y, p) + _local(x, p)
    y = F.relu(_bn(F.conv2d(y, p["conv5.0.weight"]), p, "conv5.1"))
    return F.linear(y.mean([2, 3]), p["fc.weight"], p["fc.bias"])


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that eval outputs exercise every tensor."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.num_batches_tracked.fill_(7)
    return model


def source_file(state: dict, path, **extra) -> None:
    """A checkpoint as EfficientFace's main.py writes it: DataParallel's ``module.`` prefix under ``state_dict``."""
    torch.save({"state_dict": {f"module.{key}": value for key, value in state.items()}, **extra}, path)


# --------------------------------------------------------------------------------------------------- architecture
def test_parameter_count_is_the_sources():
    assert source_param_count() == PARAMETERS_7_CLASSES
    assert sum(p.numel() for p in timm.create_model("efficientface").parameters()) == PARAMETERS_7_CLASSES
    assert sum(p.numel() for p in timm.create_model("efficientface", num_classes=10).parameters()) == \
        source_param_count(10)
    # The MEK "linear" head is the source's fc: a MEK model has the source's parameters.
    model = MEKModel(MEKConfig(backbone="efficientface", image_size=64))
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS_7_CLASSES


def test_state_dict_names_are_the_sources():
    state = timm.create_model("efficientface").state_dict()
    for key in ("conv1.0.weight", "conv1.1.running_var", "stage2.0.branch1.0.weight", "stage2.0.branch1.2.weight",
                "stage2.0.branch1.3.num_batches_tracked", "stage2.3.branch2.0.weight", "stage2.3.branch2.3.weight",
                "stage2.3.branch2.6.bias", "stage3.7.branch2.5.weight", "stage4.0.branch1.1.running_mean",
                "local.conv1_1.weight", "local.bn4_2.running_var", "modulator.channel_att.gate_c.gate_c_fc_0.weight",
                "modulator.channel_att.gate_c.gate_c_bn_1.running_mean",
                "modulator.channel_att.gate_c.gate_c_fc_final.bias",
                "modulator.spatial_att.gate_s.gate_s_conv_reduce0.bias",
                "modulator.spatial_att.gate_s.gate_s_bn_di_1.weight",
                "modulator.spatial_att.gate_s.gate_s_conv_final.weight", "conv5.0.weight", "conv5.1.bias",
                "fc.weight", "fc.bias"):
        assert key in state, key
    assert not any(key.startswith("stage2.1.branch1") for key in state)  # stride-1 units have no branch1
    assert tuple(state["local.conv1_1.weight"].shape) == (116, 1, 3, 3)  # depthwise, groups 29 (EfficientFace.py:41)
    assert tuple(state["modulator.spatial_att.gate_s.gate_s_conv_final.weight"].shape) == (1, 7, 1, 1)


@pytest.mark.parametrize("side", [224, 64])
def test_outputs_equal_the_sources_forward(side):
    torch.manual_seed(0)
    model = randomise(timm.create_model("efficientface")).eval()
    p = dict(model.named_parameters()) | dict(model.named_buffers())
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(logits, source_forward(p, x), rtol=1e-5, atol=1e-5)
    assert logits.shape == (2, 7)


def test_local_patches_go_through_the_sources_convs():
    """Only the quadrant that changed changes, through the convs the source gives it (EfficientFace.py:63-98)."""
    torch.manual_seed(0)
    local = randomise(timm.create_model("efficientface")).eval().local
    x = torch.randn(1, 29, 56, 56)
    with torch.no_grad():
        for rows, cols, convs in ((slice(28, 56), slice(0, 28), "conv2_1"), (slice(0, 28), slice(28, 56), "conv3_1")):
            changed = x.clone()
            changed[..., rows, cols] += 1.0
            base, out = local(x), local(changed)
            moved = (out - base).abs().sum(dim=(0, 1)) > 0
            expected = torch.zeros(28, 28, dtype=torch.bool)
            expected[rows.start // 2 : rows.stop // 2, cols.start // 2 : cols.stop // 2] = True
            assert torch.equal(moved, expected)
            getattr(local, convs).weight.data.zero_()  # that quadrant's first conv: its output no longer moves
            assert torch.equal(local(changed)[..., rows.start // 2 : rows.stop // 2, cols.start // 2 : cols.stop // 2],
                               local(x)[..., rows.start // 2 : rows.stop // 2, cols.start // 2 : cols.stop // 2])


def test_feature_maps_and_timm_interface():
    model = timm.create_model("efficientface", num_classes=0, global_pool="").eval()
    assert model.num_features == 1024
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 1024, 7, 7)
        assert model.forward_features(torch.randn(2, 3, 64, 64)).shape == (2, 1024, 2, 2)
        x = torch.randn(2, 3, 64, 64)
        assert model(x).shape == (2, 1024, 2, 2)
        modules = dict(model.named_modules())
        assert all(info["module"] in modules for info in model.feature_info)
        model.reset_classifier(5, "avg")
        assert model.get_classifier() is model.fc and model(x).shape == (2, 5)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 1024)
        with pytest.raises(ValueError, match="multiple of 16"):
            model(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "max")
    with pytest.raises(ValueError, match="Pretrained_EfficientFace.tar"):
        timm.create_model("efficientface", pretrained=True)
    shuffled = channel_shuffle(torch.arange(6.0).view(1, 6, 1, 1), 2).flatten().tolist()
    assert shuffled == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


# --------------------------------------------------------------------------------------------------- as a MEK model
def test_mek_model_attention_maps_and_training_step():
    torch.manual_seed(0)
    model = MEKForImageClassification(MEKConfig(backbone="efficientface", image_size=64))
    x = torch.randn(2, 3, 64, 64)
    model.train()
    out = model(x, labels=torch.tensor([0, 6]), flipped_pixel_values=x.flip(-1))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.mek.backbone.modulator.channel_att.gate_c.gate_c_fc_0.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.logits.shape == (2, 7) and out.attention_maps.shape == (2, 7, 2, 2)
    bias = model.mek.head.classifier.bias
    torch.testing.assert_close(out.attention_maps.mean((2, 3)) + bias, out.logits, atol=1e-4, rtol=1e-4)


def _saved_model(folder):
    torch.manual_seed(0)
    config = MEKConfig(backbone="efficientface", image_size=64, id2label=dict(enumerate(EFFICIENTFACE_LABELS)))
    model = randomise(MEKForImageClassification(config)).eval()
    model.save_pretrained(folder)
    return model


def test_save_load_round_trip_is_bit_exact(tmp_path):
    assert "efficientface.py" in {path.name for path in remote_code_files()}
    model = _saved_model(tmp_path / "model")
    assert (tmp_path / "model" / "efficientface.py").is_file()
    x = torch.randn(2, 3, 64, 64)
    loaded = MEKForImageClassification.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    assert loaded.config.id2label == dict(enumerate(EFFICIENTFACE_LABELS))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.slow
def test_remote_code_round_trip(tmp_path):
    """Loaded with trust_remote_code=True in a process where fer_mek cannot be imported (~20 s)."""
    model = _saved_model(tmp_path / "model")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).logits
    out = load_with_remote_code(tmp_path / "model", x, tmp_path)
    assert out["module"].startswith("transformers_modules"), out["module"]
    torch.testing.assert_close(out["logits"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from fer_mek.onnx_export import export_onnx

    torch.manual_seed(0)
    model = randomise(MEKForImageClassification(MEKConfig(backbone="efficientface", image_size=64))).eval()
    model.save_pretrained(tmp_path / "model")
    report = export_onnx(tmp_path / "model", tmp_path / "efficientface.onnx")
    assert report.max_abs_diff_logits < 1e-4 and report.max_abs_diff_attention < 1e-4


# ------------------------------------------------------------------------------------------------------ label set
def test_label_set_is_the_sources_folder_order():
    # README.md:30 "0: Neutral; 1: Happiness; 2: Sadness; 3: Surprise; 4: Fear; 5: Disgust; 6: Anger"
    assert EFFICIENTFACE_LABELS == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")
    assert get_label_set("efficientface") == EFFICIENTFACE_LABELS and LABEL_SETS["efficientface"] is EFFICIENTFACE_LABELS
    assert set(EFFICIENTFACE_LABELS) == set(get_label_set("rafdb"))


# ----------------------------------------------------------------------------------------------------- converters
@pytest.fixture(scope="module")
def msceleb_file(tmp_path_factory):
    """A Pretrained_EfficientFace.tar lookalike: the MS-Celeb-1M network, fc Linear(1024, 12666) (main.py:52-56)."""
    torch.manual_seed(1)
    source = randomise(EfficientFace(num_classes=12666), seed=1)
    path = tmp_path_factory.mktemp("msceleb") / "Pretrained_EfficientFace.tar"
    source_file(source.state_dict(), path, epoch=1, best_acc=torch.tensor(0.0))
    return path, source.state_dict()


def test_msceleb_file_initialises_the_backbone_with_fc_dropped(msceleb_file):
    path, state = msceleb_file
    model = MEKForImageClassification(MEKConfig(backbone="efficientface", image_size=64,
                                                id2label=dict(enumerate(EFFICIENTFACE_LABELS))))
    head = {key: value.clone() for key, value in model.mek.head.state_dict().items()}
    report = initialize_from(model, str(path))  # what fer-mek train --init FILE does
    assert report["dropped_keys"] == ["fc.bias", "fc.weight"]
    assert report["loaded_tensors"] == len(state) - 2
    backbone = model.mek.backbone.state_dict()
    assert set(backbone) == set(state) - {"fc.weight", "fc.bias"}
    for key, value in backbone.items():
        assert torch.equal(value, state[key]), key
    for key, value in model.mek.head.state_dict().items():
        assert torch.equal(value, head[key])  # the new head is left as built
    assert is_efficientface_checkpoint(torch.load(path, weights_only=True))


def test_msceleb_file_misfits_are_listed(msceleb_file, tmp_path):
    _, state = msceleb_file
    model = MEKModel(MEKConfig(backbone="efficientface", image_size=64))
    missing = {key: value for key, value in state.items() if key != "local.bn2_1.running_var"}
    source_file(missing, tmp_path / "missing.tar")
    with pytest.raises(ValueError, match=r"missing from the checkpoint: local\.bn2_1\.running_var"):
        load_backbone_weights(model, tmp_path / "missing.tar")
    extra = {**state, "local.conv5_1.weight": torch.zeros(116, 1, 3, 3)}
    source_file(extra, tmp_path / "extra.tar")
    with pytest.raises(ValueError, match=r"not in the model: local\.conv5_1\.weight"):
        load_backbone_weights(model, tmp_path / "extra.tar")
    # The MS-Celeb classifier is no expression classifier: converting it as one says what to do instead.
    with pytest.raises(ValueError, match="MS-Celeb-1M.*--init"):
        convert_efficientface_checkpoint(msceleb_file[0])


def test_efficientface_classifier_converts_with_every_tensor_placed(tmp_path):
    torch.manual_seed(2)
    source = randomise(EfficientFace(num_classes=7), seed=2).eval()
    path = tmp_path / "EfficientFace_RAF-DB.pth.tar"
    source_file(source.state_dict(), path)
    model = convert_efficientface_checkpoint(path)
    config = model.config
    assert (config.backbone, config.head, config.image_size) == ("efficientface", "linear", 224)
    assert [config.id2label[i] for i in range(7)] == list(EFFICIENTFACE_LABELS)
    assert config.image_mean == list(EFFICIENTFACE_RAFDB_MEAN) and config.image_std == list(EFFICIENTFACE_RAFDB_STD)
    placed = {**{f"backbone.{k}": v for k, v in model.mek.backbone.state_dict().items()},
              "fc.weight": model.mek.head.classifier.weight, "fc.bias": model.mek.head.classifier.bias}
    assert len(placed) == len(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(placed[key if key.startswith("fc.") else f"backbone.{key}"], value), key
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, source(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(x).logits, source_forward(source.state_dict(), x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="8 classes"):
        convert_efficientface_checkpoint({"module." + k: v for k, v in
                                          randomise(EfficientFace(num_classes=8)).state_dict().items()})
    with pytest.raises(ValueError, match="not an EfficientFace"):
        convert_efficientface_checkpoint(torchvision.models.resnet18(num_classes=7).state_dict())
    bad = {k: v for k, v in source.state_dict().items() if k != "conv5.1.weight"}
    with pytest.raises(ValueError, match=r"missing from the checkpoint: backbone\.conv5\.1\.weight"):
        convert_efficientface_checkpoint(bad)


def test_convert_command_detects_efficientface_files(msceleb_file, tmp_path, capsys):
    torch.manual_seed(3)
    source = randomise(EfficientFace(num_classes=7), seed=3).eval()
    path = tmp_path / "raf-db-model_best.pth.tar"
    source_file(source.state_dict(), path, best_acc=torch.tensor(88.36))
    assert convert.main(["--checkpoint", str(path), "--output", str(tmp_path / "ef")]) == 0
    printed = capsys.readouterr().out
    assert "(efficientface, backbone efficientface, head linear" in printed and "main.py:96-97" in printed
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "ef").eval()
    assert loaded.config.id2label == dict(enumerate(EFFICIENTFACE_LABELS))
    processor = json.loads((tmp_path / "ef" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == list(EFFICIENTFACE_RAFDB_MEAN) and processor["size"]["height"] == 224
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, source(x), rtol=1e-5, atol=1e-5)
    # The MS-Celeb file: auto makes it backbone weights under a new head.
    assert convert.main(["--checkpoint", str(msceleb_file[0]), "--output", str(tmp_path / "init")]) == 0
    printed = capsys.readouterr().out
    assert "(backbone, backbone efficientface" in printed and "'fc.bias', 'fc.weight'" in printed
    # Told the wrong kind: one error line.
    assert convert.cli_main(["--kind", "efficientface", "--checkpoint", str(msceleb_file[0]),
                             "--output", str(tmp_path / "bad")]) == 1
    assert "MS-Celeb-1M" in capsys.readouterr().err
    assert convert.cli_main(["--kind", "ldg", "--checkpoint", str(path), "--output", str(tmp_path / "bad")]) == 1
    assert "is an EfficientFace network" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("arch", ["resnet50", "resnet18"])
def test_ldg_teacher_converts_to_a_model_folder(arch, tmp_path, capsys):
    """Pretrained_LDG.tar: torchvision ResNet-50 with fc Linear(2048, 7) (main.py:59-63); any torchvision ResNet
    classifier takes the same path."""
    torch.manual_seed(4)
    source = randomise(getattr(torchvision.models, arch)(num_classes=7), seed=4).eval()
    path = tmp_path / "Pretrained_LDG.tar"
    source_file(source.state_dict(), path, epoch=40)
    assert convert.main(["--checkpoint", str(path), "--output", str(tmp_path / "ldg")]) == 0
    printed = capsys.readouterr().out
    assert f"(ldg, backbone {arch}, head linear" in printed and "--teacher" in printed
    loaded = MEKForImageClassification.from_pretrained(tmp_path / "ldg").eval()
    config = loaded.config
    assert (config.backbone, config.head, config.image_size) == (arch, "linear", 224)
    assert [config.id2label[i] for i in range(7)] == list(EFFICIENTFACE_LABELS)
    assert config.image_mean == list(EFFICIENTFACE_RAFDB_MEAN) and config.image_std == list(EFFICIENTFACE_RAFDB_STD)
    backbone = loaded.mek.backbone.state_dict()
    for key, value in source.state_dict().items():
        placed = getattr(loaded.mek.head.classifier, key[3:]) if key.startswith("fc.") else backbone[key]
        assert torch.equal(placed, value), key
    assert len(backbone) + 2 == len(source.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, source(x), rtol=1e-5, atol=1e-5)


def test_ldg_converter_errors(tmp_path):
    resnet = randomise(torchvision.models.resnet18(num_classes=7)).state_dict()
    model = convert_ldg_checkpoint(resnet, label_names=list(reversed(EFFICIENTFACE_LABELS)), image_size=112)
    assert model.config.id2label[0] == "angry" and model.config.image_size == 112
    with pytest.raises(ValueError, match="no fc.weight"):
        convert_ldg_checkpoint({k: v for k, v in resnet.items() if not k.startswith("fc.")})
    with pytest.raises(ValueError, match="3 label names"):
        convert_ldg_checkpoint(resnet, label_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"not in the model: backbone\.layer1\.0\.extra"):
        convert_ldg_checkpoint({**resnet, "layer1.0.extra": torch.zeros(1)}, backbone="resnet18")
    # A ResNet classifier whose name does not say LDG is backbone weights to auto; --kind ldg converts it.
    source_file(resnet, tmp_path / "teacher.pth")
    assert convert.cli_main(["--checkpoint", str(tmp_path / "teacher.pth"), "--output", str(tmp_path / "a")]) == 1
    assert convert.main(["--kind", "ldg", "--checkpoint", str(tmp_path / "teacher.pth"),
                         "--output", str(tmp_path / "b")]) == 0

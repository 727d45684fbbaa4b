"""The FER-2013 reference architectures (fer_mek/fer_backbones.py): LetheSec's ResNet-18 and Khaireddin's VGG.

The sources' architectures are written here as data (their layer lists, from LetheSec
models/resnet.py:14-104 and usef-kh models/vgg.py:6-74) and as a functional forward pass, independently of the
module under test: parameter counts, state_dict names and outputs must match them.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from fer_mek import FER2013_LABELS, MEKConfig, MEKForImageClassification, MEKModel
from fer_mek.fer_backbones import to_grey
from fer_mek.modeling_mek import remote_code_files
from tests.test_auto_and_remote_code import load_with_remote_code

NAMES = ("lethesec_resnet18", "khaireddin_vgg")

# ---------------------------------------------------------------------------------------------- the sources as data

#: LetheSec ResNet-18 (models/resnet.py:79-93, 155-156): (in, out, stride) of each BasicBlock.
RESNET_BLOCKS = [(64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
                 (256, 512, 2), (512, 512, 1)]
#: usef-kh VGG (models/vgg.py:10-20, 36-37, 69): 3x3 convs with bias (in, out), then the linear layers (in, out).
VGG_CONVS = [(1, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
VGG_LINEARS = [(2048, 4096), (4096, 4096), (4096, 7)]


def conv_params(cin: int, cout: int, k: int, bias: bool) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def bn_params(c: int) -> int:
    return 2 * c  # weight and bias (running statistics are buffers)


def resnet_param_count(num_classes: int = 7, in_chans: int = 1) -> int:
    total = conv_params(in_chans, 64, 3, False) + bn_params(64)
    for cin, cout, stride in RESNET_BLOCKS:
        total += conv_params(cin, cout, 3, False) + bn_params(cout) + conv_params(cout, cout, 3, False) + bn_params(cout)
        if stride != 1 or cin != cout:
            total += conv_params(cin, cout, 1, False) + bn_params(cout)
    return total + 512 * num_classes + num_classes


def vgg_param_count() -> int:
    total = sum(conv_params(cin, cout, 3, True) + bn_params(cout) for cin, cout in VGG_CONVS)
    return total + sum(i * o + o for i, o in VGG_LINEARS)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def resnet_reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LetheSec's ResNet.forward (resnet.py:34-39, 95-104) with the model's tensors, in eval mode."""
    p = dict(model.named_parameters()) | dict(model.named_buffers())

    def bn(x, name):
        return F.batch_norm(x, p[f"{name}.running_mean"], p[f"{name}.running_var"], p[f"{name}.weight"],
                            p[f"{name}.bias"], False, 0.0, 1e-5)

    out = F.relu(bn(F.conv2d(x, p["conv1.weight"], padding=1), "bn1"))
    for index, (cin, cout, stride) in enumerate(RESNET_BLOCKS):
        name = f"layer{index // 2 + 1}.{index % 2}"
        y = F.relu(bn(F.conv2d(out, p[f"{name}.conv1.weight"], stride=stride, padding=1), f"{name}.bn1"))
        y = bn(F.conv2d(y, p[f"{name}.conv2.weight"], padding=1), f"{name}.bn2")
        if stride != 1 or cin != cout:
            shortcut = bn(F.conv2d(out, p[f"{name}.shortcut.0.weight"], stride=stride), f"{name}.shortcut.1")
        else:
            shortcut = out
        out = F.relu(y + shortcut)
    out = F.avg_pool2d(out, 4)
    return F.linear(out.view(out.size(0), -1), p["linear.weight"], p["linear.bias"])


def vgg_reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """usef-kh's Vgg.forward (vgg.py:41-63, 71-74) with the model's tensors, in eval mode (dropout off)."""
    p = dict(model.named_parameters()) | dict(model.named_buffers())
    for stage in range(1, 5):
        for part in "ab":
            x = F.conv2d(x, p[f"conv{stage}{part}.weight"], p[f"conv{stage}{part}.bias"], padding=1)
            bn = f"bn{stage}{part}"
            x = F.relu(F.batch_norm(x, p[f"{bn}.running_mean"], p[f"{bn}.running_var"], p[f"{bn}.weight"],
                                    p[f"{bn}.bias"], False, 0.0, 1e-5))
        x = F.max_pool2d(x, 2, 2)
    x = x.view(-1, 512 * 2 * 2)
    x = F.relu(F.linear(x, p["lin1.weight"], p["lin1.bias"]))
    x = F.relu(F.linear(x, p["lin2.weight"], p["lin2.bias"]))
    return F.linear(x, p["lin3.weight"], p["lin3.bias"])


REFERENCES = {"lethesec_resnet18": resnet_reference, "khaireddin_vgg": vgg_reference}


def randomise_batch_norm(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so that eval-mode outputs exercise them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


# ----------------------------------------------------------------------------------------------------------- tests


def test_parameter_counts_equal_the_sources_models():
    assert resnet_param_count() == 11_171_271
    assert vgg_param_count() == 29_890_759
    assert count(timm.create_model("lethesec_resnet18")) == resnet_param_count()
    assert count(timm.create_model("khaireddin_vgg")) == vgg_param_count()
    assert count(timm.create_model("lethesec_resnet18", in_chans=3, num_classes=10)) == resnet_param_count(10, 3)


@pytest.mark.parametrize("name", NAMES)
def test_a_mek_model_on_them_has_the_sources_parameters(name):
    """The MEK "linear" head (mean -> Linear) is the source's last layer: same parameter count as the source."""
    model = MEKModel(MEKConfig(backbone=name, image_size=40, id2label=dict(enumerate(FER2013_LABELS))))
    assert count(model) == (resnet_param_count() if name == "lethesec_resnet18" else vgg_param_count())


def test_state_dict_names_are_the_sources():
    resnet = timm.create_model("lethesec_resnet18").state_dict()
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.shortcut.0.weight",
                "layer2.0.shortcut.1.num_batches_tracked", "layer4.1.bn2.bias", "linear.weight", "linear.bias"):
        assert key in resnet
    assert not any(key.startswith("layer1.0.shortcut") for key in resnet)  # identity shortcut there
    vgg = timm.create_model("khaireddin_vgg").state_dict()
    for key in ("conv1a.weight", "conv1a.bias", "bn4b.running_mean", "lin1.weight", "lin2.bias", "lin3.weight"):
        assert key in vgg
    assert tuple(vgg["conv1a.weight"].shape) == (64, 1, 3, 3) and tuple(resnet["conv1.weight"].shape) == (64, 1, 3, 3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", [40, 48])
def test_outputs_equal_the_sources_forward(name, side):
    """At the sources' crop size (40) and FER-2013's (48; the VGG flattens a 2x2 map only, so 48 is an error)."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    randomise_batch_norm(model)
    x = torch.rand(3, 1, side, side)
    if name == "khaireddin_vgg" and side == 48:
        with pytest.raises(ValueError, match="512x2x2"):
            model(x)
        return
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (3, 7)
        torch.testing.assert_close(logits, REFERENCES[name](model, x), rtol=1e-4, atol=1e-5)


def test_feature_maps_and_timm_interface():
    x = torch.rand(2, 3, 40, 40)
    resnet = timm.create_model("lethesec_resnet18", num_classes=0, global_pool="")
    assert resnet.num_features == 512 and resnet(x).shape == (2, 512, 4, 4)  # the window avg_pool2d(4) reads
    full = timm.create_model("lethesec_resnet18", num_classes=0, global_pool="", source_window=False)
    assert full(x).shape == (2, 512, 5, 5)
    vgg = timm.create_model("khaireddin_vgg", num_classes=0, global_pool="")
    assert vgg.num_features == 4096 and vgg.eval()(x).shape == (2, 4096, 1, 1)
    for model, classifier in ((resnet, "linear"), (vgg, "lin3")):
        modules = dict(model.named_modules())
        assert all(info["module"] in modules for info in model.feature_info)
        model.reset_classifier(5, "avg")
        assert model.get_classifier() is getattr(model, classifier)
        assert model.eval()(x).shape == (2, 5)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)
    with pytest.raises(ValueError, match="no pretrained"):
        timm.create_model("lethesec_resnet18", pretrained=True)


@pytest.mark.parametrize("name", NAMES)
def test_grey_input_as_the_sources_feed_it(name):
    """One grey channel (the sources' stem); the processor's three equal channels give the same logits."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    grey = torch.rand(2, 1, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(grey.expand(-1, 3, -1, -1)), model(grey), rtol=1e-5, atol=1e-6)
    colour = torch.rand(1, 3, 8, 8)
    expected = 0.299 * colour[:, 0] + 0.587 * colour[:, 1] + 0.114 * colour[:, 2]  # PIL convert("L")
    torch.testing.assert_close(to_grey(colour, 1)[:, 0], expected)
    with pytest.raises(ValueError, match="channel"):
        to_grey(torch.rand(1, 2, 8, 8), 1)


@pytest.mark.parametrize("name", NAMES)
def test_mek_head_on_them_is_the_sources_head(name):
    """MEKModel(backbone) with the source's classifier weights = the source's model."""
    torch.manual_seed(0)
    source = timm.create_model(name).eval()
    randomise_batch_norm(source)
    mek = MEKModel(MEKConfig(backbone=name, image_size=40, id2label=dict(enumerate(FER2013_LABELS)))).eval()
    classifier = "linear" if name == "lethesec_resnet18" else "lin3"
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(classifier + ".")}
    assert not mek.backbone.load_state_dict(state, strict=False).unexpected_keys
    mek.head.classifier.load_state_dict(getattr(source, classifier).state_dict())
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(mek(x).logits, source(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_and_remote_code_round_trip(name, tmp_path):
    assert "fer_backbones.py" in {path.name for path in remote_code_files()}
    torch.manual_seed(0)
    config = MEKConfig(backbone=name, image_size=40, id2label=dict(enumerate(FER2013_LABELS)), image_mean=[0, 0, 0],
                       image_std=[1, 1, 1])
    model = MEKForImageClassification(config).eval()
    randomise_batch_norm(model)
    model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "fer_backbones.py").is_file()
    x = torch.rand(2, 3, 40, 40)
    loaded = MEKForImageClassification.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        expected = model(x).logits
        assert torch.equal(loaded(x).logits, expected)
    out = load_with_remote_code(tmp_path / "model", x, tmp_path)
    assert out["module"].startswith("transformers_modules"), out["module"]
    torch.testing.assert_close(out["logits"], expected, rtol=1e-5, atol=1e-6)

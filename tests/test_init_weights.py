"""Initialisation of the classifier (``head_init``): a fresh model gets the chosen init, loading never re-initialises.

``"pytorch"`` (the default, what fer-mek models have always had) is the default ``reset_parameters()`` of
``nn.Linear`` / ``nn.Conv2d`` that both MEK sources' heads have (MEK-CV: ``nn.Conv2d(512, K, 1)``; official:
``nn.Linear(768, 7)``), drawn once when the layer is built; ``"normal"`` is N(0, initializer_range) with zero bias.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fer_mek import MEKConfig, MEKForImageClassification, MEKModel, modeling_mek
from fer_mek.modeling_mek import reset_like_pytorch

HEADS = ["linear", "conv_bn"]
INITS = ["normal", "pytorch"]


def make(head: str, head_init: str, seed: int = 0) -> MEKForImageClassification:
    torch.manual_seed(seed)
    config = MEKConfig(backbone="resnet18", image_size=32, head=head, head_init=head_init)
    return MEKForImageClassification(config).eval()


def check_init(classifier: nn.Module, head_init: str) -> None:
    weight, bias = classifier.weight.detach().flatten(), classifier.bias.detach()
    bound = 1 / math.sqrt(512)  # fan_in of the 512-channel ResNet-18 features
    if head_init == "pytorch":
        assert weight.abs().max() <= bound and bias.abs().max() <= bound
        assert bias.abs().min() > 0
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)  # uniform(-b, b)
    else:
        assert torch.count_nonzero(bias) == 0
        assert weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert weight.abs().max() > bound  # a normal(0, 0.02) over 3,584 values reaches past 2.2 sigma


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("head_init", INITS)
def test_fresh_model_gets_the_chosen_head_init(head, head_init):
    model = make(head, head_init)
    check_init(model.mek.head.classifier, head_init)
    if head == "conv_bn":
        bn = model.mek.head.bn
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
        assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)


def test_default_head_init_is_pytorch():
    assert MEKConfig().head_init == "pytorch"


@pytest.mark.parametrize("head,layer", [("linear", lambda: nn.Linear(512, 7)), ("conv_bn", lambda: nn.Conv2d(512, 7, 1))])
def test_pytorch_head_init_is_the_layers_own_single_draw(monkeypatch, head, layer):
    """As in the sources: the classifier is what nn.Linear / nn.Conv2d draws right after the backbone is built, and
    nothing draws again (the random stream after the model is the same as after building the layer)."""
    states = []

    def create_backbone(config):
        backbone = modeling_mek.timm.create_model(config.backbone, pretrained=False, num_classes=0, global_pool="")
        states.append(torch.get_rng_state())
        return backbone

    monkeypatch.setattr(modeling_mek, "create_backbone", create_backbone)
    model = make(head, "pytorch")
    after_model = torch.get_rng_state()
    torch.set_rng_state(states[0])
    reference = layer()
    assert torch.equal(torch.get_rng_state(), after_model)
    assert torch.equal(model.mek.head.classifier.weight, reference.weight)
    assert torch.equal(model.mek.head.classifier.bias, reference.bias)


@pytest.mark.parametrize("layer", [nn.Linear(768, 7), nn.Conv2d(512, 7, 1), nn.Conv2d(8, 3, 3)])
def test_reset_like_pytorch_is_reset_parameters_draw_for_draw(layer):
    torch.manual_seed(123)
    reset_like_pytorch(layer)
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    torch.manual_seed(123)
    layer.reset_parameters()
    assert torch.equal(weight, layer.weight) and torch.equal(bias, layer.bias)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("head_init", INITS)
def test_from_pretrained_never_reinitialises_loaded_weights(tmp_path, head, head_init):
    model = make(head, head_init)
    with torch.no_grad():  # values no initialiser would give
        model.mek.head.classifier.weight.copy_(torch.linspace(-3, 3, model.mek.head.classifier.weight.numel())
                                               .view_as(model.mek.head.classifier.weight))
        model.mek.head.classifier.bias.fill_(5.0)
        if head == "conv_bn":
            model.mek.head.bn.weight.fill_(2.0)
            model.mek.head.bn.running_var.fill_(3.0)
    model.save_pretrained(tmp_path)
    for cls in (MEKForImageClassification, MEKModel):
        torch.manual_seed(99)
        loaded = cls.from_pretrained(tmp_path)
        assert loaded.config.head_init == head_init
        own = loaded.state_dict()
        prefix = "" if cls is MEKForImageClassification else "mek."
        for key, value in model.state_dict().items():
            if key.startswith(prefix):
                assert torch.equal(own[key[len(prefix):]], value), (cls.__name__, key)


@pytest.mark.parametrize("head_init", INITS)
def test_head_missing_from_the_file_gets_the_chosen_init_on_load(tmp_path, head_init):
    """from_pretrained builds on the meta device: what the file lacks gets _init_weights, never empty memory."""
    model = make("conv_bn", head_init)
    with torch.no_grad():
        model.mek.head.bn.running_var.fill_(3.0)
        model.mek.head.bn.running_mean.fill_(2.0)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = (".head.classifier.", ".head.bn.running_mean")
    save_file({k: v for k, v in weights.items() if not any(d in k for d in dropped)}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    loaded = MEKForImageClassification.from_pretrained(tmp_path)
    check_init(loaded.mek.head.classifier, head_init)
    assert torch.all(loaded.mek.head.bn.running_mean == 0)  # missing: a fresh BatchNorm's
    assert torch.all(loaded.mek.head.bn.running_var == 3.0)  # loaded: untouched

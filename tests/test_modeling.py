"""MEK models over timm backbones: shapes, maps, save/load, configuration errors."""

from __future__ import annotations

import json

import pytest
import torch

from fer_mek import (
    RAFDB_LABELS,
    MEKConfig,
    MEKForImageClassification,
    MEKImageClassifierOutput,
    MEKModel,
)

# (backbone, image size, channels, map side): the MEK paper's CNNs and its official Swin-T, plus tiny ones.
BACKBONES = [
    ("resnet18", 64, 512, 2),
    ("resnet34", 64, 512, 2),
    ("resnet50", 64, 2048, 2),
    ("swin_tiny_patch4_window7_224", 224, 768, 7),
    ("test_resnet", 64, 96, 2),
    ("test_vit", 160, 64, 10),
]


@pytest.mark.parametrize("backbone,size,channels,side", BACKBONES, ids=[b[0] for b in BACKBONES])
def test_output_shapes_per_backbone(backbone, size, channels, side):
    torch.manual_seed(0)
    model = MEKForImageClassification(MEKConfig(backbone=backbone, image_size=size)).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model(x, labels=torch.tensor([0, 6]), flipped_pixel_values=x.flip(-1))
    assert isinstance(out, MEKImageClassifierOutput)
    assert out.logits.shape == (2, 7)
    assert out.attention_maps.shape == (2, 7, side, side)
    assert out.pooler_output.shape == (2, channels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    # The maps decompose the logits: their spatial mean plus the bias gives the logits back.
    bias = model.mek.head.classifier.bias
    torch.testing.assert_close(out.attention_maps.mean((2, 3)) + bias, out.logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("head", ["linear", "conv_bn"])
def test_save_load_round_trip_is_bit_exact(tmp_path, head):
    torch.manual_seed(0)
    config = MEKConfig(backbone="resnet18", image_size=32, head=head, dropout=0.2, class_counts=[5, 1, 2, 9, 4, 2, 7])
    model = MEKForImageClassification(config).eval()
    if head == "conv_bn":  # non-trivial BatchNorm statistics, so that a lost buffer would show
        model.mek.head.bn.running_mean.normal_()
        model.mek.head.bn.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(tmp_path)
    reloaded = MEKForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), reloaded(x)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.attention_maps, b.attention_maps)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    assert torch.equal(reloaded.loss_fn.balance_weights, model.loss_fn.balance_weights)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))


def test_swin_round_trip_rebuilds_non_persistent_buffers(tmp_path):
    """transformers loads on the meta device: Swin's relative-position index must be rebuilt, not left empty."""
    torch.manual_seed(0)
    model = MEKForImageClassification(MEKConfig(backbone="swin_tiny_patch4_window7_224")).eval()
    model.save_pretrained(tmp_path)
    reloaded = MEKForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x).logits, reloaded(x).logits)


def test_config_round_trip_keeps_labels_and_mek_arguments(tmp_path):
    labels = {0: "angry", 1: "contempt", 2: "happy"}
    config = MEKConfig(
        backbone="resnet34",
        id2label=labels,
        head="conv_bn",
        dropout=0.1,
        image_size=112,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        smoothing=0.2,
        attention_weight=2.0,
        class_counts=[10, 3, 40],
        backbone_kwargs={"drop_path_rate": 0.1},
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "fer-mek"
    again = MEKConfig.from_pretrained(tmp_path)
    assert again.id2label == labels and again.label2id == {"angry": 0, "contempt": 1, "happy": 2}
    assert again.num_labels == 3
    for name in ("backbone", "head", "dropout", "image_size", "image_mean", "image_std", "smoothing",
                 "attention_weight", "class_counts", "backbone_kwargs"):
        assert getattr(again, name) == getattr(config, name), name
    assert again.get_balance_weights() == pytest.approx([53 / 100, 53 / 30, 53 / 400])
    assert saved["balance_weight_rule"] == "official" and saved["head_init"] == "pytorch"


def test_config_round_trip_keeps_balance_weight_rule_and_head_init(tmp_path):
    config = MEKConfig(backbone="resnet18", num_labels=3, class_counts=[10, 3, 40], balance_weight_rule="mean1",
                       head_init="normal")
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["balance_weight_rule"] == "mean1" and saved["head_init"] == "normal"
    again = MEKConfig.from_pretrained(tmp_path)
    assert (again.balance_weight_rule, again.head_init) == ("mean1", "normal")
    inverse = [1 / 10, 1 / 3, 1 / 40]
    assert again.get_balance_weights() == pytest.approx([3 * v / sum(inverse) for v in inverse], rel=1e-6)


def test_config_saved_before_the_rule_existed_loads_as_official(tmp_path):
    MEKConfig(backbone="resnet18", num_labels=3, class_counts=[10, 3, 40]).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    del saved["balance_weight_rule"], saved["head_init"]
    path.write_text(json.dumps(saved))
    old = MEKConfig.from_pretrained(tmp_path)
    assert (old.balance_weight_rule, old.head_init) == ("official", "pytorch")
    assert old.get_balance_weights() == pytest.approx([53 / 100, 53 / 30, 53 / 400])


def test_default_labels_are_rafdb_order():
    config = MEKConfig()
    assert [config.id2label[i] for i in range(7)] == list(RAFDB_LABELS)
    assert config.get_balance_weights() == [1.0] * 7


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"backbone": "resnet1000"}, r"unknown backbone 'resnet1000'; try timm.list_models\('resnet\*'\)"),
        ({"head": "mlp"}, "unknown head 'mlp'"),
        ({"class_counts": [1, 2, 3]}, "class_counts has 3 entries but the model has 7 labels"),
        ({"balance_weights": [1.0] * 6}, "balance_weights has 6 entries"),
        ({"class_counts": [1] * 7, "balance_weights": [1.0] * 7}, "not both"),
        ({"smoothing": 1.5}, "smoothing"),
        ({"dropout": 1.0}, "dropout"),
        ({"image_mean": [0.5]}, "image_mean must have 3 values"),
        ({"attention_weight": -1}, "attention_weight"),
        ({"balance_weight_rule": "mean"}, r"unknown balance_weight_rule 'mean'; choose one of \('official', 'mean1'\)"),
        ({"head_init": "xavier"}, r"unknown head_init 'xavier'; choose one of \('normal', 'pytorch'\)"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MEKConfig(**kwargs)


def test_flipped_pixel_values_need_labels_and_the_same_shape(tiny_model):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="pass labels too"):
        tiny_model(x, flipped_pixel_values=x.flip(-1))
    with pytest.raises(ValueError, match="must be the same images"):
        tiny_model(x, labels=torch.tensor([0]), flipped_pixel_values=torch.randn(1, 3, 16, 16))


def test_base_model_gives_logits_and_maps_without_loss(saved_tiny_model):
    folder, model = saved_tiny_model
    base = MEKModel.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = base(x)
        assert torch.equal(out.logits, model(x).logits)
    assert out.last_hidden_state.shape == (2, 512, 1, 1)
    assert not hasattr(out, "loss")


def test_set_balance_weights_updates_loss_and_config(tiny_model):
    tiny_model.set_balance_weights(class_counts=[1, 1, 1, 1, 1, 1, 4])
    assert tiny_model.config.class_counts == [1, 1, 1, 1, 1, 1, 4]
    torch.testing.assert_close(tiny_model.loss_fn.balance_weights, torch.tensor([1.0] * 6 + [0.25]))
    with pytest.raises(ValueError, match="no training sample"):
        tiny_model.set_balance_weights(class_counts=[0, 1, 1, 1, 1, 1, 4])


def test_return_dict_false_gives_tuple(tiny_model):
    out = tiny_model(torch.randn(1, 3, 32, 32), labels=torch.tensor([2]), return_dict=False)
    assert isinstance(out, tuple) and out[0].ndim == 0 and out[1].shape == (1, 7)

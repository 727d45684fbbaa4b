"""MEK losses against reference values computed with the official MEK training code's formulas."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fer_mek import MEKConfig, MEKForImageClassification, MEKLoss
from fer_mek.losses import (
    BALANCE_WEIGHT_RULES,
    attention_consistency_loss,
    balance_weight_values,
    balance_weights,
    rebalanced_smooth_label_loss,
    rebalanced_smooth_targets,
)
from fer_mek.modeling_mek import MEKLinearHead

from .conftest import DATA_DIR

REFERENCE = json.loads((DATA_DIR / "mek_reference_cases.json").read_text())
CASES = REFERENCE["cases"]
ATOL = 1e-5


def tensor(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual.detach(), tensor(expected), atol=ATOL, rtol=0)


def test_balance_weights_reproduce_reference_constants():
    close(balance_weights(REFERENCE["rafdb_train_class_counts"]), REFERENCE["balance_weights"])


# The official MEK code's hard-coded weights (train_exp.py:81, :239) = N / (10 n_c) with RAF-DB's full train counts.
OFFICIAL_CONSTANTS = [0.95124031, 4.36690391, 1.71143654, 0.25714585, 0.6191221, 1.74056738, 0.48617274]
RAFDB_FULL_TRAIN_COUNTS = [1290, 281, 717, 4772, 1982, 705, 2524]
# MEK-CV: counts of the 90 % train part of RAF-DB / FER-2013 (np.random.seed(42) permutation, 10 % held out) and
# the mean-1 weights its scripts compute from them (facts A.5, A.26).
MEKCV_RAFDB_COUNTS = [1157, 254, 651, 4311, 1762, 627, 2282]
MEKCV_RAFDB_WEIGHTS = [0.659773, 3.005343, 1.172592, 0.177072, 0.433233, 1.217475, 0.334512]
MEKCV_FER2013_COUNTS = [3635, 394, 3664, 6419, 4479, 4359, 2889]
MEKCV_FER2013_WEIGHTS = [0.476581, 4.396883, 0.472809, 0.269882, 0.386777, 0.397424, 0.599644]


def mekcv_balance_weights(class_counts) -> list[float]:
    """MEK-CV's computation (kaggle/mek_resnet18.py:195-197), verbatim."""
    class_counts = np.asarray(class_counts, dtype=np.float64)
    _inv = 1.0 / np.maximum(class_counts, 1.0)
    return torch.from_numpy(_inv * (len(class_counts) / _inv.sum())).float().tolist()


def test_official_rule_gives_the_official_codes_constants():
    assert BALANCE_WEIGHT_RULES == ("official", "mean1")
    assert balance_weight_values(RAFDB_FULL_TRAIN_COUNTS) == pytest.approx(OFFICIAL_CONSTANTS, abs=1e-6)
    assert balance_weight_values(RAFDB_FULL_TRAIN_COUNTS, rule="official") == balance_weight_values(RAFDB_FULL_TRAIN_COUNTS)


@pytest.mark.parametrize("counts,expected", [(MEKCV_RAFDB_COUNTS, MEKCV_RAFDB_WEIGHTS),
                                             (MEKCV_FER2013_COUNTS, MEKCV_FER2013_WEIGHTS)], ids=["rafdb", "fer2013"])
def test_mean1_rule_gives_mekcv_weights_bit_for_bit(counts, expected):
    values = balance_weight_values(counts, rule="mean1")
    assert values == pytest.approx(expected, abs=1e-6)
    assert values == mekcv_balance_weights(counts)  # float32 rounding of the source, exactly
    assert torch.equal(balance_weights(counts, rule="mean1"), torch.tensor(mekcv_balance_weights(counts)))
    assert sum(values) == pytest.approx(len(counts), abs=1e-5)


def test_mean1_rule_matches_the_source_for_any_counts():
    """NumPy sums in its own (pairwise) order; the float32 values must be the source's for any number of classes."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        counts = rng.integers(1, 20000, size=int(rng.integers(2, 40))).tolist()
        assert balance_weight_values(counts, "mean1") == mekcv_balance_weights(counts)


def test_the_two_rules_differ_by_a_constant_factor():
    official = np.array(balance_weight_values(MEKCV_RAFDB_COUNTS))
    mean1 = np.array(balance_weight_values(MEKCV_RAFDB_COUNTS, "mean1"))
    np.testing.assert_allclose(official / mean1, 1.4468, atol=1e-4)  # facts A.26: 1.4468 on RAF-DB's 90 % part
    # The smooth-label targets are renormalised per sample: the scale does not change them.
    labels = torch.tensor([0, 3, 6])
    torch.testing.assert_close(rebalanced_smooth_targets(labels, torch.tensor(official).float(), 0.1),
                               rebalanced_smooth_targets(labels, torch.tensor(mean1), 0.1))


def test_model_losses_use_the_configs_rule():
    config = MEKConfig(backbone="resnet18", image_size=32, class_counts=MEKCV_RAFDB_COUNTS, balance_weight_rule="mean1")
    model = MEKForImageClassification(config)
    assert torch.equal(model.loss_fn.balance_weights, torch.tensor(mekcv_balance_weights(MEKCV_RAFDB_COUNTS)))
    model.set_balance_weights(class_counts=MEKCV_FER2013_COUNTS)  # the rule stays the config's
    assert torch.equal(model.loss_fn.balance_weights, torch.tensor(mekcv_balance_weights(MEKCV_FER2013_COUNTS)))
    official = MEKForImageClassification(MEKConfig(backbone="resnet18", image_size=32, class_counts=RAFDB_FULL_TRAIN_COUNTS))
    close(official.loss_fn.balance_weights, OFFICIAL_CONSTANTS)


def test_unknown_balance_weight_rule_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown balance-weight rule 'mean'; choose one of \('official', 'mean1'\)"):
        balance_weight_values([1, 2], rule="mean")
    with pytest.raises(ValueError, match="no training sample"):
        balance_weight_values([1, 0], rule="mean1")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"batch{c['batch']}-C{c['channels']}")
def test_losses_match_reference(case):
    weights = tensor(REFERENCE["balance_weights"])
    eps, lam = REFERENCE["smoothing"], REFERENCE["attention_loss_weight"]
    expected = case["expected"]
    logits, labels = tensor(case["logits"]), torch.tensor(case["labels"])
    head = MEKLinearHead(case["channels"], 7)
    with torch.no_grad():
        head.classifier.weight.copy_(tensor(case["classifier_weight"]))
    _, maps, _ = head(tensor(case["features"]))
    _, maps_flipped, _ = head(tensor(case["features_of_flipped_input"]))

    close(maps, expected["attention_maps"])
    close(maps_flipped, expected["attention_maps_of_flipped_input"])
    close(rebalanced_smooth_targets(labels, weights, eps), expected["smoothed_targets"])
    close(rebalanced_smooth_label_loss(logits, labels, weights, eps), expected["smooth_label_loss"])
    close(attention_consistency_loss(maps, maps_flipped, weights, reduction="none"), expected["per_sample_weighted_attention_loss"])
    close(attention_consistency_loss(maps, maps_flipped, weights), expected["attention_loss"])

    terms = MEKLoss(weights, eps, lam)(logits, labels, maps, maps_flipped, output_dict=True)
    assert set(terms) == {"loss", "smooth_label_loss", "attention_loss"}
    close(terms["loss"], expected["total_loss"])
    close(MEKLoss(weights, eps, lam)(logits, labels, maps, maps_flipped), expected["total_loss"])


def test_model_loss_matches_reference_through_forward(monkeypatch):
    """The model's forward wires the same terms: RSL + lambda * RAC on its own maps."""
    case = CASES[0]
    config = MEKConfig(backbone="resnet18", image_size=32, class_counts=REFERENCE["rafdb_train_class_counts"])
    model = MEKForImageClassification(config).eval()
    x = torch.randn(4, 3, 32, 32)
    labels = torch.tensor(case["labels"][:4])
    out = model(x, labels=labels, flipped_pixel_values=x.flip(-1))
    flipped = model(x.flip(-1))
    weights = tensor(REFERENCE["balance_weights"])
    rsl = rebalanced_smooth_label_loss(out.logits, labels, weights, 0.3)
    rac = attention_consistency_loss(out.attention_maps, flipped.attention_maps, weights)
    torch.testing.assert_close(out.loss, rsl + 0.1 * rac)
    torch.testing.assert_close(out.smooth_label_loss, rsl)
    torch.testing.assert_close(out.attention_loss, rac)
    only_labels = model(x, labels=labels)
    torch.testing.assert_close(only_labels.loss, rsl)
    assert only_labels.attention_loss is None
    assert model(x).loss is None


def test_targets_rows_sum_to_one_and_favour_rare_classes():
    weights = balance_weights(REFERENCE["rafdb_train_class_counts"])
    targets = rebalanced_smooth_targets(torch.tensor([3, 3]), weights, 0.3)
    torch.testing.assert_close(targets.sum(1), torch.ones(2))
    assert targets[0, 1] == targets[0, [0, 1, 2, 4, 5, 6]].max()  # fear, the rarest class, gets the most mass


def test_attention_loss_is_zero_for_flip_equivariant_maps():
    maps = torch.randn(2, 7, 5, 5)
    assert attention_consistency_loss(maps, maps.flip(-1), torch.ones(7)) == 0


def test_attention_loss_gives_no_gradient_to_linear_head():
    config = MEKConfig(backbone="resnet18", image_size=32)
    model = MEKForImageClassification(config).train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x, labels=torch.tensor([0, 1]), flipped_pixel_values=x.flip(-1))
    head_weight = model.mek.head.classifier.weight
    (grad_head,) = torch.autograd.grad(out.attention_loss, [head_weight], allow_unused=True)
    assert grad_head is None
    grad_backbone = torch.autograd.grad(out.attention_loss, [model.mek.backbone.conv1.weight])[0]
    assert grad_backbone.abs().sum() > 0


def test_attention_loss_trains_the_conv_bn_head():
    """In the published ResNet layout the maps are the classifier's output: RAC does reach it."""
    model = MEKForImageClassification(MEKConfig(backbone="resnet18", image_size=32, head="conv_bn")).train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x, labels=torch.tensor([0, 1]), flipped_pixel_values=x.flip(-1))
    (grad,) = torch.autograd.grad(out.attention_loss, [model.mek.head.classifier.weight])
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("counts", [[10, 0, 5], [3, -1, 2]])
def test_class_without_samples_is_a_clear_error(counts):
    with pytest.raises(ValueError, match=r"class index\(es\) \[1\]"):
        balance_weights(counts)
    with pytest.raises(ValueError, match="no training sample"):
        MEKConfig(backbone="resnet18", num_labels=3, class_counts=counts)


def test_bad_loss_inputs_are_clear_errors():
    weights = torch.ones(7)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\]"):
        rebalanced_smooth_targets(torch.tensor([7]), weights, 0.3)
    with pytest.raises(ValueError, match="smoothing"):
        rebalanced_smooth_targets(torch.tensor([0]), weights, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        attention_consistency_loss(torch.zeros(1, 7, 3, 3), torch.zeros(1, 7, 4, 4), weights)
    with pytest.raises(ValueError, match="both"):
        MEKLoss(weights)(torch.zeros(1, 7), torch.tensor([0]), torch.zeros(1, 7, 3, 3))
    with pytest.raises(ValueError, match="finite positive"):
        MEKLoss([1.0, float("inf")])


def test_losses_stay_float32_under_bfloat16_inputs():
    logits = torch.randn(4, 7).bfloat16()
    loss = rebalanced_smooth_label_loss(logits, torch.tensor([0, 1, 2, 3]), torch.ones(7), 0.3)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)

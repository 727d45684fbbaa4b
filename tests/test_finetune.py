"""Fine-tuning a saved MEK model to another label set: ``from_pretrained(..., ignore_mismatched_sizes=True)`` and the
trainer's ``--init`` with a fer-mek model folder (``fer_mek.finetune``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
from transformers import AutoModelForImageClassification

from fer_mek import MEKConfig, MEKForImageClassification
from fer_mek.finetune import check_init, initialize_from, is_model_source
from fer_mek.losses import balance_weight_values

from .conftest import TINY_BACKBONE, TINY_IMAGE_SIZE

RAFDB_COUNTS = [1290, 281, 717, 4772, 1982, 705, 2524]
NEW = {0: "happy", 1: "sad", 2: "neutral"}
NEW_COUNTS = [30, 12, 5]


def save_seven_label_model(folder, head="linear", head_init="pytorch", seed=0):
    torch.manual_seed(seed)
    config = MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE, head=head, head_init=head_init,
                       class_counts=RAFDB_COUNTS)
    model = MEKForImageClassification(config).eval()
    if head == "conv_bn":  # statistics that differ from a fresh BatchNorm, so that a reset would show
        model.mek.head.bn.running_mean.normal_()
        model.mek.head.bn.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(folder)
    return model


def check_head_init(classifier, head_init):
    weight, bias = classifier.weight.detach().flatten(), classifier.bias.detach()
    bound = 1 / math.sqrt(512)  # fan_in of ResNet-18's 512 features
    if head_init == "pytorch":
        assert weight.abs().max() <= bound and bias.abs().max() <= bound and bias.abs().min() > 0
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    else:
        assert torch.count_nonzero(bias) == 0
        assert weight.std().item() == pytest.approx(0.02, rel=0.1)


def assert_all_finite(model):
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert torch.isfinite(tensor.float()).all(), name


def training_step_lowers_the_loss(model):
    torch.manual_seed(1)
    x, labels = torch.randn(6, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), torch.tensor([0, 1, 2, 0, 1, 2])
    model.eval()  # BatchNorm's running statistics: the same function before and after the step
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model(x, labels=labels, flipped_pixel_values=x.flip(-1))
    assert torch.isfinite(before.logits).all() and torch.isfinite(before.loss)
    before.loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = model(x, labels=labels, flipped_pixel_values=x.flip(-1))
    assert after.loss < before.loss - 1e-3, (before.loss.item(), after.loss.item())


@pytest.mark.parametrize("head", ["linear", "conv_bn"])
@pytest.mark.parametrize("head_init", ["pytorch", "normal"])
def test_new_label_set_reinitialises_exactly_the_classifier_and_the_balance_weights(tmp_path, head, head_init):
    saved = save_seven_label_model(tmp_path, head, head_init)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the new counts are given: nothing to warn about
        model = MEKForImageClassification.from_pretrained(
            tmp_path, id2label=NEW, label2id={v: k for k, v in NEW.items()}, class_counts=NEW_COUNTS,
            ignore_mismatched_sizes=True,
        )
    assert model.config.id2label == NEW and model.config.label2id == {"happy": 0, "sad": 1, "neutral": 2}
    assert model.config.num_labels == 3 and model.config.class_counts == NEW_COUNTS
    assert model.loss_fn.balance_weights.tolist() == pytest.approx(balance_weight_values(NEW_COUNTS))
    assert_all_finite(model)
    ours, theirs = model.state_dict(), saved.state_dict()
    kept = [key for key in theirs if not key.startswith("mek.head.classifier.")]
    assert kept and all(torch.equal(ours[key], theirs[key]) for key in kept)  # backbone (and conv_bn's BatchNorm)
    classifier = model.mek.head.classifier
    assert classifier.weight.shape[0] == 3 and classifier.bias.shape == (3,)
    check_head_init(classifier, head_init)
    training_step_lowers_the_loss(model)


def test_new_label_set_without_counts_warns_and_uses_uniform_weights(tmp_path):
    save_seven_label_model(tmp_path)
    with pytest.warns(UserWarning, match="class_counts no longer apply.*uniform.*pass class_counts"):
        model = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3, ignore_mismatched_sizes=True)
    assert isinstance(model, MEKForImageClassification)
    assert model.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert model.config.class_counts is None and model.loss_fn.balance_weights.tolist() == [1.0, 1.0, 1.0]
    assert_all_finite(model)
    training_step_lowers_the_loss(model)
    # Uniform weights asked for explicitly: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = MEKForImageClassification.from_pretrained(tmp_path, id2label=NEW, class_counts=None,
                                                          ignore_mismatched_sizes=True)
    assert model.config.label2id == {"happy": 0, "sad": 1, "neutral": 2}
    # set_balance_weights later gives the counts.
    model.set_balance_weights(NEW_COUNTS)
    assert model.loss_fn.balance_weights.tolist() == pytest.approx(balance_weight_values(NEW_COUNTS))


def test_the_same_label_set_loads_everything_unchanged(tmp_path):
    saved = save_seven_label_model(tmp_path)
    model = MEKForImageClassification.from_pretrained(tmp_path, num_labels=7)  # the count it has: nothing changes
    assert model.config.class_counts == RAFDB_COUNTS
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.state_dict().items())
    # New counts for the same classes are validated like any config argument.
    model = MEKForImageClassification.from_pretrained(tmp_path, class_counts=[1] * 7)
    assert model.loss_fn.balance_weights.tolist() == pytest.approx(balance_weight_values([1] * 7))
    with pytest.raises(ValueError, match="class_counts has 3 entries but the model has 7 labels"):
        MEKForImageClassification.from_pretrained(tmp_path, class_counts=NEW_COUNTS)


def test_label_arguments_that_disagree_are_a_clear_error(tmp_path):
    save_seven_label_model(tmp_path)
    with pytest.raises(ValueError, match="num_labels=4 but id2label / label2id name 3 classes"):
        MEKForImageClassification.from_pretrained(tmp_path, num_labels=4, id2label=NEW, ignore_mismatched_sizes=True)
    with pytest.raises(ValueError, match="label2id .* does not invert id2label"):
        MEKForImageClassification.from_pretrained(tmp_path, id2label=NEW, label2id={"happy": 1, "sad": 0, "neutral": 2},
                                                  ignore_mismatched_sizes=True)
    with pytest.raises(ValueError, match="number the classes 0..2"):
        MEKForImageClassification.from_pretrained(tmp_path, id2label={0: "a", 1: "b", 5: "c"},
                                                  ignore_mismatched_sizes=True)


# ------------------------------------------------------------------------------------------- --init from a model
def test_is_model_source_and_check_init(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(b"")
    save_seven_label_model(tmp_path / "runs" / "x" / "best")
    assert is_model_source(tmp_path) and is_model_source("someone/fer-mek")
    assert not any(is_model_source(s) for s in ("random", "timm", "timm:resnet18.tv_in1k", str(tmp_path / "w.pth"),
                                                "weights/resnet18.pth", "start_0.pt"))
    monkeypatch.chdir(tmp_path)
    for ok in ("random", "timm:resnet18.tv_in1k", "w.pth", "runs/x/best", "someone/fer-mek"):
        check_init(ok)  # a Hub id is checked when it loads
    with pytest.raises(ValueError, match=r"--init no such folder: runs/x/bset \(did you mean runs/x/best\?\)"):
        check_init("runs/x/bset")
    with pytest.raises(ValueError, match="--init runs/x: folder has no config.json"):
        check_init("runs/x")
    with pytest.raises(ValueError, match="not random, timm, nor an existing state_dict file"):
        check_init("missing.pth")


@pytest.mark.parametrize("head", ["linear", "conv_bn"])
def test_initialize_from_a_model_with_other_classes(tmp_path, head):
    saved = save_seven_label_model(tmp_path / "seven", head)
    torch.manual_seed(5)
    model = MEKForImageClassification(MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE, head=head,
                                                id2label=NEW, class_counts=NEW_COUNTS))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = initialize_from(model, tmp_path / "seven")
    ours, theirs = model.state_dict(), saved.state_dict()
    for key in ours:
        expected = fresh[key] if key.startswith("mek.head.classifier.") else theirs[key]
        assert torch.equal(ours[key], expected), key
    assert model.loss_fn.balance_weights.tolist() == pytest.approx(balance_weight_values(NEW_COUNTS))
    assert report["kind"] == "fer-mek model" and report["labels"][0] == "surprise"
    assert report["loaded"] == ["mek.backbone"] + (["mek.head.bn"] if head == "conv_bn" else [])
    assert set(report["reinitialised"]) == {"mek.head.classifier.weight", "mek.head.classifier.bias"}
    assert "other classes" in report["reinitialised"]["mek.head.classifier.weight"]
    json.dumps(report)  # goes into results.json


def test_initialize_from_a_model_with_the_same_classes_loads_the_classifier_too(tmp_path):
    saved = save_seven_label_model(tmp_path / "seven")
    torch.manual_seed(5)
    model = MEKForImageClassification(MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE))
    report = initialize_from(model, tmp_path / "seven")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.state_dict().items())
    assert report["reinitialised"] == {} and report["loaded"][-1] == "mek.head.classifier"


def test_initialize_from_what_is_no_fer_mek_model_is_a_clear_error(tmp_path):
    model = MEKForImageClassification(MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="model_type 'vit', not 'fer-mek'"):
        initialize_from(model, tmp_path / "other")
    with pytest.raises(ValueError, match="--init no such folder: nobody/nothing-here; as a Hub id it cannot be loaded"):
        initialize_from(model, "nobody/nothing-here")
    save_seven_label_model(tmp_path / "r18")
    wider = MEKForImageClassification(MEKConfig(backbone="resnet34", image_size=TINY_IMAGE_SIZE))
    with pytest.raises(ValueError, match="backbone is 'resnet18'.*--backbone resnet18"):
        initialize_from(wider, tmp_path / "r18")


def test_train_init_from_a_seven_label_model_trains_three_labels(tmp_path, capsys):
    from fer_mek import train
    from fer_mek.data.fixtures import write_image_folder

    from .test_train import TINY

    saved = save_seven_label_model(tmp_path / "seven")
    data = write_image_folder(tmp_path / "data", ["happy", "neutral", "sad"], [12, 10, 8], [3, 3, 3],
                              size=TINY_IMAGE_SIZE)
    run = tmp_path / "run"
    tiny = [a for a in TINY if a not in ("--synthetic-images", "150")]
    results = train.main([*tiny, "--source", "folder", "--data-root", str(data), "--epochs", "1",
                          "--init", str(tmp_path / "seven"), "--output-dir", str(run)])
    opening = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("fer-mek training"))
    assert (f"(init {tmp_path / 'seven'}: loaded mek.backbone; fresh mek.head.classifier (its classes: surprise, fear,"
            in opening)
    init = json.loads((run / "results.json").read_text())["init"]
    assert init["source"] == str(tmp_path / "seven") and init["kind"] == "fer-mek model"
    assert init["loaded"] == ["mek.backbone"] and set(init["reinitialised"]) == {"mek.head.classifier.weight",
                                                                                  "mek.head.classifier.bias"}
    assert results["label_names"] == ["happy", "neutral", "sad"]
    model = MEKForImageClassification.from_pretrained(run / "last")
    assert model.config.num_labels == 3 and model.config.class_counts is not None
    assert_all_finite(model)
    # It did start from the saved backbone: the first convolution moved little from it (one epoch, small lr).
    start = saved.mek.backbone.conv1.weight
    assert (model.mek.backbone.conv1.weight - start).norm() < 0.5 * start.norm()


def test_a_label_set_changed_on_the_config_object_is_a_clear_error_not_a_loss_size_mismatch(tmp_path):
    save_seven_label_model(tmp_path)
    config = MEKConfig.from_pretrained(tmp_path)
    config.id2label = NEW  # after construction: the saved class_counts stay (7 entries)
    with pytest.raises(ValueError, match="class_counts has 7 entries but the model has 3 labels: give one per class"):
        MEKForImageClassification.from_pretrained(tmp_path, config=config, ignore_mismatched_sizes=True)
    config.class_counts = NEW_COUNTS
    model = MEKForImageClassification.from_pretrained(tmp_path, config=config, ignore_mismatched_sizes=True)
    assert model.loss_fn.balance_weights.tolist() == pytest.approx(balance_weight_values(NEW_COUNTS))
    assert_all_finite(model)


@pytest.mark.parametrize("head_init", ["pytorch", "normal"])
def test_the_issues_case_a_model_saved_without_counts_gives_finite_logits(saved_tiny_model, head_init):
    """Issue 14: from_pretrained(folder, num_labels=3, ignore_mismatched_sizes=True) gave NaN logits."""
    folder, saved = saved_tiny_model
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the saved model had uniform weights: nothing is dropped
        model = MEKForImageClassification.from_pretrained(folder, num_labels=3, head_init=head_init,
                                                          ignore_mismatched_sizes=True)
    assert_all_finite(model)
    check_head_init(model.mek.head.classifier, head_init)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.state_dict().items() if "backbone" in k)
    training_step_lowers_the_loss(model)


def test_mek_arguments_given_to_from_pretrained_are_validated(tmp_path):
    save_seven_label_model(tmp_path)
    with pytest.raises(ValueError, match="unknown head_init 'xavier'"):
        MEKForImageClassification.from_pretrained(tmp_path, head_init="xavier")
    model = MEKForImageClassification.from_pretrained(tmp_path, smoothing=0.1, attention_weight=0.0)
    assert (model.loss_fn.smoothing, model.loss_fn.attention_weight) == (0.1, 0.0)


def test_initialize_from_a_hub_id_in_the_cache(tmp_path, monkeypatch):
    """A Hub id loads offline from the Hub cache (here a cache written by hand in the hub's layout)."""
    import huggingface_hub.constants

    revision = "0" * 40
    snapshot = tmp_path / "hub" / "models--someone--fer-mek-tiny" / "snapshots" / revision
    saved = save_seven_label_model(snapshot)
    (tmp_path / "hub" / "models--someone--fer-mek-tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--fer-mek-tiny" / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = MEKForImageClassification(MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE, id2label=NEW))
    report = initialize_from(model, "someone/fer-mek-tiny")
    assert report["source"] == "someone/fer-mek-tiny" and report["loaded"] == ["mek.backbone"]
    assert torch.equal(model.mek.backbone.conv1.weight, saved.mek.backbone.conv1.weight)


REMOTE_FINETUNE_SCRIPT = """
import importlib.abc, sys, warnings

class BlockFerMek(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fer_mek" or name.startswith("fer_mek."):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, BlockFerMek())
import torch
from transformers import AutoModelForImageClassification

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = AutoModelForImageClassification.from_pretrained(
        sys.argv[1], trust_remote_code=True, id2label={0: "happy", 1: "sad", 2: "neutral"}, ignore_mismatched_sizes=True)
x = torch.randn(2, 3, 32, 32)
out = model.eval()(x, labels=torch.tensor([0, 2]), flipped_pixel_values=x.flip(-1))
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
assert model.loss_fn.balance_weights.tolist() == [1.0, 1.0, 1.0]
assert any("no longer apply" in str(w.message) for w in caught), [str(w.message) for w in caught]
print("ok")
"""


def test_fine_tuning_works_through_remote_code_without_the_package(tmp_path):
    save_seven_label_model(tmp_path / "model")
    (tmp_path / "finetune_remote.py").write_text(REMOTE_FINETUNE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, str(tmp_path / "finetune_remote.py"), str(tmp_path / "model")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]

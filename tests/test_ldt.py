"""Label-distribution training (``--method ldt``, issue 17): the loss against EfficientFace's formula, the frozen
teacher (no gradient, eval mode, its own preprocessing, its classes mapped), the gradient of a step, the run's records
(results.json, card, --print-config), exact resume, the teacher's digest on resume, and two processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fer_mek import RAFDB_LABELS, MEKConfig, MEKForImageClassification, MEKImageProcessor, evaluation, train
from fer_mek.losses import label_distribution_loss
from fer_mek.train.config import parse_config
from fer_mek.train.distill import distilled_forward
from fer_mek.train.teacher import label_map_indices, load_teacher, weights_digest

from .conftest import REPO_ROOT

# As tests/test_train.py: 150 synthetic images at 32 px (RAF-DB's class names and order), fp32.
TINY = ["--synthetic-images", "150", "--image-size", "32", "--batch-size", "16", "--num-workers", "0",
        "--log-with", "none", "--auto-augment", "", "--lr", "0.003", "--mixed-precision", "no"]

# Fixed logits: 2 samples, 3 classes.
STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [0.5, 0.5, -1.0]]
# Computed by hand (NumPy, float64) from EfficientFace main.py:248, torch.mean(-p_teacher * log p_student), with
# p = softmax(logits / T): "elementwise" is that mean over batch x classes, "batchmean" the sum over classes averaged
# over the batch; both x T^2 at T = 2.
EXPECTED = {(1.0, "elementwise"): 0.7465421711672807, (1.0, "batchmean"): 2.2396265135018427,
            (2.0, "elementwise"): 1.8978826381905396, (2.0, "batchmean"): 5.693647914571619}


def save_mek_teacher(folder: Path, labels=RAFDB_LABELS, seed: int = 0, size: int = 32, **config) -> Path:
    """A tiny random fer-mek model folder (resnet18) with its image processor."""
    torch.manual_seed(seed)
    mek_config = MEKConfig(backbone="resnet18", image_size=size, id2label=dict(enumerate(labels)), **config)
    MEKForImageClassification(mek_config).save_pretrained(folder)
    MEKImageProcessor.from_model_config(mek_config).save_pretrained(folder)
    return folder


def save_transformers_teacher(folder: Path, labels=RAFDB_LABELS, size: int = 48) -> Path:
    """A tiny transformers (not fer-mek) image classifier: a two-stage ResNet with a ViT image processor (48 px,
    mean and std 0.5)."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(1)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=len(labels),
                          id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    ResNetForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                      resample=2).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return save_mek_teacher(tmp_path_factory.mktemp("teacher") / "best")


def student_processor(size: int = 32) -> MEKImageProcessor:
    return MEKImageProcessor.from_model_config(MEKConfig(backbone="resnet18", image_size=size))


# ------------------------------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("reduction", ["elementwise", "batchmean"])
def test_the_loss_equals_efficientfaces_formula_on_fixed_inputs(temperature, reduction):
    student = torch.tensor(STUDENT, requires_grad=True)
    loss = label_distribution_loss(student, torch.tensor(TEACHER), temperature, reduction)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(EXPECTED[temperature, reduction], rel=1e-6)
    loss.backward()
    # d/ds of sum_k -p_t log softmax(s) is softmax(s) - p_t (per sample; x T for the temperature, over B or B x K).
    p_t = torch.softmax(torch.tensor(TEACHER) / temperature, dim=-1)
    p_s = torch.softmax(torch.tensor(STUDENT) / temperature, dim=-1)
    scale = temperature / (2 * (3 if reduction == "elementwise" else 1))
    torch.testing.assert_close(student.grad, (p_s - p_t) * scale)


def test_the_elementwise_loss_is_the_sources_expression_and_bf16_inputs_are_computed_in_float32():
    student, teacher = torch.randn(5, 7), torch.randn(5, 7)
    # EfficientFace main.py:181-189 and :248, verbatim in its operations.
    source = torch.mean(-torch.softmax(teacher, dim=1) * torch.log(torch.softmax(student, dim=1)))
    torch.testing.assert_close(label_distribution_loss(student, teacher, reduction="elementwise"), source)
    low = label_distribution_loss(student.bfloat16(), teacher.bfloat16(), reduction="elementwise")
    assert low.dtype == torch.float32
    with pytest.raises(ValueError, match="temperature"):
        label_distribution_loss(student, teacher, temperature=0.0)
    with pytest.raises(ValueError, match="reduction"):
        label_distribution_loss(student, teacher, reduction="sum")
    with pytest.raises(ValueError, match="same shape"):
        label_distribution_loss(student, teacher[:, :6])


# ------------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("argv, message", [
    (["--method", "ldt"], "--method ldt needs --teacher"),
    (["--teacher", "x/y"], "--teacher applies to --method ldt"),
    (["--distill-weight", "0.5", "--distill-attention"], "--distill-weight, --distill-attention apply to --method ldt"),
    (["--method", "ldt", "--teacher", "x/y", "--distill-weight", "1.5"], r"--distill-weight \(alpha\) must be in \[0, 1\]"),
    (["--method", "ldt", "--teacher", "x/y", "--distill-temperature", "0"], "--distill-temperature must be"),
    (["--method", "ldt", "--teacher", "x/y", "--mixup-alpha", "0.2"], "--mixup-alpha 0.2 does not combine"),
    (["--method", "ldt", "--teacher", "x/y", "--label-smoothing", "0.1"], "--label-smoothing"),
    (["--method", "ldt", "--teacher", "x/y", "--distill-attention", "--attention-weight", "0"],
     "--distill-attention adds MEK's attention consistency"),
    (["--method", "ldt", "--teacher", "x/y", "--teacher-label-map", "happy"], "--teacher-label-map: 'happy' is not"),
    (["--method", "ldt", "--teacher", "./no/such/folder"], "--teacher"),
])
def test_bad_distillation_options_are_refused_naming_the_option(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_config(argv)


def test_a_revision_of_a_local_teacher_folder_is_refused(teacher_dir):
    with pytest.raises(ValueError, match="--teacher-revision 'main' selects a revision of a Hub teacher"):
        parse_config(["--method", "ldt", "--teacher", str(teacher_dir), "--teacher-revision", "main"])


# ------------------------------------------------------------------------------------------------- the teacher
def test_class_maps():
    student = list(RAFDB_LABELS)
    assert label_map_indices(student, student) is None
    reordered = list(reversed(student))
    with pytest.raises(ValueError) as error:
        label_map_indices(reordered, student)
    assert str(reordered) in str(error.value) and str(student) in str(error.value)
    assert "--teacher-label-map by-name" in str(error.value)
    assert label_map_indices(reordered, student, "by-name") == [6 - i for i in range(7)]
    # A teacher with an eighth class (contempt): left out; capitalised names match by name.
    eight = [n.capitalize() for n in student] + ["Contempt"]
    assert label_map_indices(eight, student, "by-name") == list(range(7))
    with pytest.raises(ValueError, match=r"the teacher has no class named \['neutral'\]"):
        label_map_indices(student[:6] + ["calm"], student, "by-name")
    other = ["astonished", "scared", "disgusted", "joy", "sorrow", "anger", "calm"]
    pairs = ",".join(f"{t}={s}" for t, s in zip(other, student, strict=True))
    assert label_map_indices(list(reversed(other)), student, pairs) == [6 - i for i in range(7)]
    with pytest.raises(ValueError, match=r"no teacher class is given for the student class\(es\) \['neutral'\]"):
        label_map_indices(other, student, pairs.rsplit(",", 1)[0])
    with pytest.raises(ValueError, match="'smile' is not a class of the teacher"):
        label_map_indices(other, student, "smile=happy")


def test_a_teacher_with_another_order_is_refused_then_permuted_by_name_and_by_pairs(tmp_path):
    student = list(RAFDB_LABELS)
    reordered = [student[i] for i in (3, 0, 6, 1, 5, 2, 4)]
    folder = save_mek_teacher(tmp_path / "reordered", labels=reordered)
    with pytest.raises(ValueError, match="are not the student's"):
        load_teacher(str(folder), student_processor(), student)
    x = torch.randn(4, 3, 32, 32)
    bare = MEKForImageClassification.from_pretrained(folder).eval()(pixel_values=x).logits.detach()
    permutation = [reordered.index(name) for name in student]
    by_name = load_teacher(str(folder), student_processor(), student, label_map="by-name")
    torch.testing.assert_close(by_name.logits(x), bare[:, permutation])
    renamed = [f"t_{name}" for name in reordered]
    folder = save_mek_teacher(tmp_path / "renamed", labels=renamed)
    pairs = ",".join(f"t_{name}={name}" for name in student)
    explicit = load_teacher(str(folder), student_processor(), student, label_map=pairs)
    torch.testing.assert_close(explicit.logits(x), bare[:, permutation])
    assert explicit.record()["label_map"] == pairs and "classes mapped" in explicit.describe()


def test_a_teacher_with_the_students_size_and_normalisation_gets_the_students_tensor_untouched(teacher_dir):
    teacher = load_teacher(str(teacher_dir), student_processor(), list(RAFDB_LABELS))
    x = torch.randn(2, 3, 32, 32)
    assert teacher.preprocess(x) is x
    assert teacher.record()["preprocessing"] == "the student's tensor"
    assert teacher.digest == weights_digest(teacher_dir)
    assert teacher.digest.startswith("sha256:") and len(teacher.digest) == 7 + 64


def image(seed: int, size: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)  # smooth enough for resampling to agree
    return Image.fromarray(base).resize((size, size), Image.BILINEAR)


def test_a_teacher_with_another_normalisation_gets_its_own(tmp_path):
    """Same size, other mean / std: un-normalised and normalised again, as the teacher's processor does."""
    folder = save_mek_teacher(tmp_path / "t", image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    teacher = load_teacher(str(folder), student_processor(), list(RAFDB_LABELS))
    assert not teacher.identity
    pictures = [image(seed, 32) for seed in range(3)]
    student = student_processor()(pictures, return_tensors="pt")["pixel_values"]
    expected = MEKImageProcessor.from_pretrained(folder)(pictures, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(teacher.preprocess(student), expected, rtol=0, atol=2e-6)


def test_a_transformers_teacher_with_another_size_gets_its_own_resize_and_normalisation(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    folder = save_transformers_teacher(tmp_path / "hf", size=48)
    teacher = load_teacher(str(folder), student_processor(64), list(RAFDB_LABELS))
    assert teacher.kind == "transformers" and teacher.settings["height"] == 48
    pictures = [image(seed, 64) for seed in range(3)]
    student = student_processor(64)(pictures, return_tensors="pt")["pixel_values"]
    expected = AutoImageProcessor.from_pretrained(folder)(pictures, return_tensors="pt")["pixel_values"]
    ours = teacher.preprocess(student)
    assert ours.shape == expected.shape == (3, 3, 48, 48)
    # PIL's antialiased bilinear resize of the 8-bit image against torch's of the float tensor: 8-bit rounding
    # (1/255 / 0.5 after normalisation) apart.
    torch.testing.assert_close(ours, expected, rtol=0, atol=0.02)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    torch.testing.assert_close(teacher.logits(student), model(pixel_values=ours).logits)


# ------------------------------------------------------------------------------------------------- a step
def trainer_of(argv: list[str]):
    trainer = train.Trainer(parse_config(argv))
    trainer.setup()
    return trainer


def test_the_teacher_gets_no_gradient_and_stays_in_eval_mode_during_a_step(teacher_dir, tmp_path):
    trainer = trainer_of([*TINY, "--method", "ldt", "--teacher", str(teacher_dir), "--distill-weight", "0.5",
                          "--distill-attention", "--optimizer", "sgd", "--lr", "0.5", "--output-dir",
                          str(tmp_path / "run")])
    teacher = trainer.teacher
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    assert teacher.model not in list(trainer.model.modules())
    teacher.model.train()  # a stray .train() keeps it in eval mode
    assert not any(m.training for m in teacher.model.modules())
    list(teacher.model.modules())[5].training = True  # a submodule switched to training by hand
    trainer.model.train()
    outputs = trainer.train_step(trainer.model_inputs(next(iter(trainer.train_loader))))
    assert outputs.distill_loss > 0 and outputs.attention_loss is not None and outputs.smooth_label_loss is not None
    assert not any(m.training for m in teacher.model.modules())
    assert all(not p.requires_grad and p.grad is None for p in teacher.model.parameters())
    after = teacher.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no BatchNorm statistic moved either


def test_with_weight_1_and_no_attention_term_the_gradient_is_the_bare_formulas(teacher_dir, tmp_path):
    trainer = trainer_of([*TINY, "--method", "ldt", "--teacher", str(teacher_dir), "--distill-reduction",
                          "elementwise", "--output-dir", str(tmp_path / "run")])
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert model.config.attention_weight == 0.0
    inputs = trainer.model_inputs(next(iter(trainer.train_loader)))
    assert "flipped_pixel_values" not in inputs
    trainer.model.train()
    outputs = distilled_forward(trainer, inputs)
    outputs.loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    # The bare formula: EfficientFace main.py:180-189 and :248.
    student = model(pixel_values=inputs["pixel_values"]).logits
    with torch.no_grad():
        soft_label = trainer.teacher.model(pixel_values=inputs["pixel_values"]).logits
    loss = torch.mean(-torch.softmax(soft_label, dim=1) * torch.log(torch.softmax(student, dim=1)))
    torch.testing.assert_close(outputs.loss, loss)
    loss.backward()
    bare = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert ours.keys() == bare.keys() and ours
    for name in ours:
        torch.testing.assert_close(ours[name], bare[name], rtol=1e-4, atol=1e-7, msg=name)


# ------------------------------------------------------------------------------------------------- a run
@pytest.fixture(scope="module")
def ldt_run(tmp_path_factory, teacher_dir):
    run = tmp_path_factory.mktemp("runs") / "ldt"
    results = train.main([*TINY, "--epochs", "1", "--method", "ldt", "--teacher", str(teacher_dir),
                          "--distill-temperature", "2", "--output-dir", str(run)])
    return run, results


def test_results_card_and_print_config_name_the_teacher_and_its_digest(ldt_run, teacher_dir, capsys):
    from fer_mek.model_card import build_card
    from fer_mek.runs import load_run

    run, results = ldt_run
    digest = weights_digest(teacher_dir)
    saved = json.loads((run / "results.json").read_text())["teacher"]
    assert saved["model"] == str(teacher_dir) and saved["digest"] == digest and saved["revision"] is None
    assert (saved["temperature"], saved["weight"], saved["reduction"], saved["attention"], saved["label_map"]) == (
        2.0, 1.0, "batchmean", False, "")
    assert results["history"][0]["train_distill_loss"] == results["history"][0]["train_loss"]
    card = str(build_card(load_run(run), "bob/student"))
    assert "label-distribution training" in card and digest in card and f"{teacher_dir.parent.name}/best" in card
    with pytest.raises(SystemExit):
        train.main([*TINY, "--method", "ldt", "--teacher", str(teacher_dir), "--print-config"])
    printed = capsys.readouterr().out
    assert f"teacher: {teacher_dir}" in printed and f"# teacher weights: {digest}" in printed
    assert "distill_temperature: 1.0" in printed and "distill_reduction: batchmean" in printed


def test_the_start_banner_names_the_teacher(teacher_dir, tmp_path):
    trainer = trainer_of([*TINY, "--method", "ldt", "--teacher", str(teacher_dir), "--distill-weight", "0.7",
                          "--output-dir", str(tmp_path / "run")])
    banner = trainer.describe()
    assert f"teacher: {teacher_dir} (fer-mek" in banner and weights_digest(teacher_dir)[:19] in banner
    assert "loss 0.7 x LD(T=1, batch mean) + 0.3 x RSL(eps=0.3)" in banner


LDT_RESUMED = [*TINY, "--epochs", "2", "--checkpoint-every", "3", "--method", "ldt", "--distill-weight", "0.5",
               "--distill-attention", "--distill-temperature", "2", "--dropout", "0.3"]


def test_resume_with_a_teacher_is_exact_and_refuses_a_changed_teacher(tmp_path):
    teacher = save_mek_teacher(tmp_path / "teacher", seed=3)
    common = [*LDT_RESUMED, "--teacher", str(teacher)]
    straight = train.main([*common, "--output-dir", str(tmp_path / "straight")])
    assert train.main([*common, "--max-steps", "5", "--output-dir", str(tmp_path / "resumed")]) == {
        "finished": False, "global_step": 5}
    identity = json.loads((tmp_path / "resumed" / "checkpoint" / "teacher.json").read_text())
    assert identity["digest"] == weights_digest(teacher)
    resumed = train.main([*common, "--resume", "--output-dir", str(tmp_path / "resumed")])
    assert resumed["history"] == straight["history"] and resumed["test"] == straight["test"]
    expected = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    actual = load_file(tmp_path / "resumed" / "last" / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert not [key for key in expected if not torch.equal(expected[key], actual[key])]
    # Stopped again, then the teacher's weights change: the resume is refused, naming both digests.
    assert train.main([*common, "--max-steps", "2", "--output-dir", str(tmp_path / "changed")])["global_step"] == 2
    old = weights_digest(teacher)
    save_mek_teacher(teacher, seed=4)
    with pytest.raises(ValueError, match=f"is not the one this run was trained with \\(digest {old} -> sha256:"):
        train.main([*common, "--resume", "--output-dir", str(tmp_path / "changed")])


def test_two_processes_give_the_metrics_of_a_single_process_evaluation(tmp_path, teacher_dir):
    """Real DDP on CPU (gloo), as tests/test_train.py's: the teacher runs in each process, unwrapped; validation
    metrics equal a one-process evaluation of the same weights."""
    run = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(REPO_ROOT / "scripts" / "train.py"), *TINY, "--synthetic-images", "160", "--batch-size", "4",
               "--epochs", "1", "--method", "ldt", "--teacher", str(teacher_dir), "--distill-weight", "0.5",
               "--distill-attention", "--output-dir", str(run)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((run / "results.json").read_text())
    assert results["environment"]["num_processes"] == 2 and results["teacher"]["digest"] == weights_digest(teacher_dir)
    assert results["history"][0]["train_distill_loss"] > 0
    single = evaluation.main(["--model", str(run / "best"), "--synthetic-images", "160",
                              "--split", "validation", "--batch-size", "4", "--num-workers", "0"])
    for key in ("accuracy", "mean_class_accuracy", "macro_f1", "confusion_matrix", "num_samples"):
        assert single[key] == results["validation"][key], key


def test_a_hub_teacher_records_its_revision_and_resolved_commit(tmp_path, monkeypatch):
    """A Hub id loads (offline, from a cache written by hand in the Hub's layout); the record holds the revision asked
    for, the commit it resolved to and the weights' digest."""
    import huggingface_hub.constants

    commit = "1" * 40
    repo = tmp_path / "hub" / "models--someone--fer-mek-teacher"
    snapshot = save_mek_teacher(repo / "snapshots" / commit, seed=5)
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    teacher = load_teacher("someone/fer-mek-teacher", student_processor(), list(RAFDB_LABELS), revision="v1")
    record = teacher.record()
    assert (record["model"], record["revision"], record["commit"]) == ("someone/fer-mek-teacher", "v1", commit)
    assert record["digest"] == weights_digest(snapshot) and "@v1" in teacher.describe()
    with pytest.raises(ValueError, match="--teacher someone/fer-mek-teacher --teacher-revision v2: cannot get"):
        load_teacher("someone/fer-mek-teacher", student_processor(), list(RAFDB_LABELS), revision="v2")


def test_the_reduction_choices_are_the_losss():
    from fer_mek.losses import DISTILL_REDUCTIONS
    from fer_mek_cli.train import CHOICES

    assert CHOICES["distill_reduction"] == DISTILL_REDUCTIONS
    assert "ldt" in CHOICES["method"]


def test_a_per_sample_run_with_the_attention_term_pairs_every_image_with_its_flip(teacher_dir, tmp_path):
    results = train.main([*TINY, "--epochs", "1", "--data-pipeline", "per-sample", "--method", "ldt", "--teacher",
                          str(teacher_dir), "--distill-weight", "0.8", "--distill-attention",
                          "--output-dir", str(tmp_path / "run")])
    row = results["history"][0]
    assert row["train_attention_loss"] > 0 and row["train_distill_loss"] > 0
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert config["attention_weight"] == 0.1 and config["smoothing"] == 0.3

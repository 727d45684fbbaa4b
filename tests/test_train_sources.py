"""The training features of the FER-2013 single-network sources (issue 18), each against a reference written here from
the source's own steps: SGD with Nesterov momentum, ReduceLROnPlateau on the validation accuracy, mixup with the sources'
label smoothing (and an exact resume), the five- / ten-crop augmentation and ten-crop evaluation.

Sources (read for the facts): LetheSec/Fer2013-Facial-Emotion-Recognition-Pytorch @ f1f6cfd (train.py, dataset.py,
utils.py) and usef-kh/fer @ 3c5de07 (train.py, data/fer2013.py, utils/loops.py, utils/hparams.py).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from fer_mek import train
from fer_mek.data import collate_fn
from fer_mek.data.transforms import build_ncrop_eval_transform, build_train_transform, make_transform
from fer_mek.train import Trainer, parse_config
from fer_mek.train.mixup import draw_mixup, mix, mixed_soft_target_loss
from fer_mek.train.schedule import PlateauSchedule
from fer_mek.train.trainer import create_optimizer

from .test_reliability_train import assert_same_run
from .test_train import TINY


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 7))


# ----------------------------------------------------------------------------------------------- SGD with Nesterov
@pytest.mark.parametrize("nesterov", [True, False])
def test_the_sgd_step_is_torchs_sgd_with_nesterov_momentum(nesterov):
    """LetheSec train.py:90-91 and usef-kh/fer train.py:32: torch.optim.SGD(model.parameters(), lr, momentum=0.9,
    weight_decay=1e-4, nesterov=True). Three steps on the same batches (momentum enters from the second) give the same
    weights to the bit."""
    argv = ["--optimizer", "sgd", "--lr", "0.1", "--weight-decay", "1e-4", "--weight-decay-all"]
    config = parse_config([*argv, *([] if nesterov else ["--no-nesterov"])])
    ours, reference = tiny_net(), tiny_net()
    optimizer = create_optimizer(ours, config, 0.1)
    torch_sgd = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=nesterov)
    assert optimizer.param_groups[0]["nesterov"] is nesterov and optimizer.param_groups[0]["momentum"] == 0.9
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        images, labels = torch.randn(8, 3, 12, 12, generator=generator), torch.randint(0, 7, (8,), generator=generator)
        for model, opt in ((ours, optimizer), (reference, torch_sgd)):
            opt.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            opt.step()
    for (name, a), (_, b) in zip(ours.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_sgd_options_are_checked():
    with pytest.raises(ValueError, match="momentum"):
        parse_config(["--optimizer", "adamw", "--momentum", "0.5"])
    with pytest.raises(ValueError, match="nesterov"):
        parse_config(["--optimizer", "sgd", "--momentum", "0"])
    assert parse_config(["--optimizer", "sgd", "--momentum", "0", "--no-nesterov"]).momentum == 0.0


# ----------------------------------------------------------------------------------------------- ReduceLROnPlateau
def test_the_plateau_schedule_is_torchs_reduce_lr_on_plateau_and_resumes():
    """ReduceLROnPlateau(optimizer, mode='max', factor=0.75, patience=5) stepped on the validation accuracy once per
    epoch (LetheSec train.py:95-97, 117-118; usef-kh/fer train.py:34, 55); optimizer steps leave the rate alone; its
    state survives a JSON round trip (the checkpoint) mid-plateau."""
    accuracies = [0.30, 0.40, 0.41, 0.41, 0.40, 0.41, 0.405, 0.41, 0.409, 0.42, 0.40, 0.40, 0.40, 0.40, 0.40, 0.40,
                  0.40, 0.40, 0.40, 0.40, 0.40, 0.40]

    def optimizer():
        return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)

    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer(), mode="max", factor=0.75, patience=5)
    ours = PlateauSchedule(optimizer(), mode="max", factor=0.75, patience=5)
    expected, got = [], []
    for epoch, accuracy in enumerate(accuracies):
        for _ in range(3):
            ours.step()  # after every optimizer step: no change
        reference.step(accuracy)
        ours.step_metric(accuracy)
        expected.append(reference.optimizer.param_groups[0]["lr"])
        got.append(ours.optimizer.param_groups[0]["lr"])
        if epoch == 12:  # a checkpoint: strict JSON, loaded into a fresh schedule
            state = json.loads(json.dumps(ours.state_dict(), allow_nan=False))
            lr = ours.optimizer.param_groups[0]["lr"]
            fresh = optimizer()
            fresh.param_groups[0]["lr"] = lr  # the optimizer's own state is restored by accelerate
            ours = PlateauSchedule(fresh, mode="max", factor=0.75, patience=5)
            ours.load_state_dict(state)
    assert got == expected
    assert expected[-1] < 0.1 * 0.75  # two drops happened
    assert ours.get_last_lr() == [expected[-1]]


def test_the_plateau_scheduler_steps_on_validation_accuracy_in_training(tmp_path, monkeypatch):
    """A run whose validation accuracy is scripted: 0.5, then 0.4, 0.4 -> with patience 0 the rate drops after epoch 2
    (history's lr is the rate each epoch trained with)."""
    scripted = iter([0.5, 0.4, 0.4])
    original = Trainer.evaluate

    def evaluate(self, split, model=None):
        metrics = original(self, split, model)
        if split == "validation" and model is None:
            metrics = {**metrics, "accuracy": next(scripted)}
        return metrics

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    results = train.main([*TINY, "--optimizer", "sgd", "--weight-decay", "1e-4", "--scheduler", "plateau",
                          "--plateau-factor", "0.5", "--plateau-patience", "0", "--epochs", "3",
                          "--select-metric", "accuracy", "--output-dir", str(tmp_path / "run")])
    assert [row["lr"] for row in results["history"]] == pytest.approx([0.003, 0.003, 0.0015])
    assert results["selection"]["best_epoch"] == 1
    with pytest.raises(ValueError, match="validation"):
        parse_config(["--scheduler", "plateau", "--val-split", "none"])


# ----------------------------------------------------------------------------------------------- mixup + smoothing
def reference_smooth_one_hot(labels: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    """LetheSec utils.py:16-36, step by step: one_hot, fill smoothing / (classes - 1), scatter 1 - smoothing."""
    one_hot = F.one_hot(labels, classes)
    dist = torch.empty((labels.size(0), classes)).fill_(smoothing / (classes - 1))
    _, index = torch.max(one_hot, 1)
    return dist.scatter_(1, index.unsqueeze(1), 1.0 - smoothing)


def test_the_baseline_loss_with_mixup_is_the_sources():
    """LetheSec train.py:165-186: mixed = lam * x + (1 - lam) * x[index]; loss = lam * KL(smooth(y_a)) + (1 - lam) *
    KL(smooth(y_b)) with KLDivLoss(reduction='batchmean') on log_softmax (utils.py:11-13, 69-85)."""
    generator = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(10, 7, generator=generator), torch.randint(0, 7, (10,), generator=generator)
    lam, perm = draw_mixup(1.0, 10, seed=0, epoch=2, step=5)
    perm = torch.as_tensor(perm)
    kl = torch.nn.KLDivLoss(reduction="batchmean")
    expected = (lam * kl(F.log_softmax(logits, dim=1), reference_smooth_one_hot(labels, 7, 0.1))
                + (1 - lam) * kl(F.log_softmax(logits, dim=1), reference_smooth_one_hot(labels[perm], 7, 0.1)))
    assert torch.allclose(mixed_soft_target_loss(logits, labels, perm, lam, 0.1), expected, rtol=1e-6, atol=1e-7)
    # no smoothing, no mixup: plain cross-entropy (usef-kh/fer train.py:39)
    assert torch.allclose(mixed_soft_target_loss(logits, labels, None, 1.0, 0.0), F.cross_entropy(logits, labels))
    images = torch.randn(10, 3, 4, 4, generator=generator)
    assert torch.equal(mix(images, lam, perm), lam * images + (1 - lam) * images[perm])


def test_mixup_draws_are_a_function_of_seed_epoch_step_and_process():
    lam, perm = draw_mixup(1.0, 16, seed=7, epoch=1, step=3, process=0)
    again = draw_mixup(1.0, 16, seed=7, epoch=1, step=3, process=0)
    assert lam == again[0] and np.array_equal(perm, again[1]) and sorted(perm) == list(range(16))
    assert draw_mixup(1.0, 16, seed=7, epoch=1, step=4)[0] != lam
    assert draw_mixup(1.0, 16, seed=7, epoch=1, step=3, process=1)[0] != lam
    assert draw_mixup(0.0, 4, seed=7, epoch=1, step=3) == (1.0, pytest.approx(np.arange(4)))
    lams = [draw_mixup(1.0, 2, seed=0, epoch=0, step=s)[0] for s in range(2000)]
    assert abs(np.mean(lams) - 0.5) < 0.03 and abs(np.var(lams) - 1 / 12) < 0.01  # Beta(1, 1) = uniform


def test_label_smoothing_is_the_baselines_only():
    with pytest.raises(ValueError, match="re-balanced"):
        parse_config(["--label-smoothing", "0.1"])  # --method mek (the default)
    with pytest.raises(ValueError, match="mixup"):
        parse_config(["--mixup-alpha", "-1"])


SOURCES_RUN = [*TINY, "--synthetic-image-size", "48", "--batch-size", "8", "--data-pipeline", "per-sample",
               "--method", "baseline", "--crop", "ncrop", "--ncrop-resize", "40", "--train-crops", "5",
               "--eval-crops", "10", "--crop-scale", "0.8", "1.2", "--color-jitter", "0.5", "0.5", "0.5",
               "--color-jitter-prob", "0.5", "--translate", "0.2", "--translate-prob", "0.5", "--hflip", "0.5",
               "--rotation", "10", "--rotation-prob", "0.5", "--rotation-interpolation", "nearest",
               "--re-mode", "torchvision", "--re-prob", "0.5", "--re-scale", "0.02", "0.33",
               "--label-smoothing", "0.1", "--mixup-alpha", "1.0", "--train-mode-forward", "--no-drop-last",
               "--optimizer", "sgd", "--lr", "0.01", "--weight-decay", "1e-4", "--weight-decay-all",
               "--scheduler", "plateau", "--plateau-factor", "0.5", "--plateau-patience", "0",
               "--clip-grad-norm", "0", "--epochs", "2", "--synthetic-images", "120"]
MEK_MIXUP_RUN = [*TINY, "--mixup-alpha", "0.4", "--optimizer", "sgd", "--scheduler", "plateau",
                 "--plateau-patience", "0", "--plateau-factor", "0.5", "--epochs", "3", "--dropout", "0.2"]


@pytest.mark.parametrize("argv", [SOURCES_RUN, MEK_MIXUP_RUN], ids=["lethesec-like-baseline", "mek-mixup"])
def test_a_run_with_mixup_resumed_mid_epoch_equals_the_straight_run(argv, tmp_path):
    """Mixup's draws come from (seed, epoch, step, process) and the plateau state is checkpointed: stopped with
    --max-steps inside an epoch and resumed, the run ends with the weights, history and test metrics of the
    uninterrupted run (the LetheSec-like run: five crops per image, the last short batch kept, ten-crop
    evaluation, the extra train-mode pass)."""
    straight = tmp_path / "straight"
    reference = straight, train.main([*argv, "--output-dir", str(straight)])
    run = tmp_path / "run"
    stopped = train.main([*argv, "--max-steps", "5", "--output-dir", str(run)])
    assert stopped == {"finished": False, "global_step": 5}
    assert_same_run(run, train.main([*argv, "--resume", "--output-dir", str(run)]), reference)


# ----------------------------------------------------------------------------------------------- augmentation
def face(seed: int, size: int = 48) -> Image.Image:
    """A grey 48-px image as FER-2013's, given to the transforms as three equal channels (fer-mek's RGB decoding)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    return Image.fromarray(pixels).convert("RGB")


PROCESSOR = SimpleNamespace(image_size=40, image_mean=[0.0] * 3, image_std=[255.0] * 3)


def lethesec_train_compose() -> T.Compose:
    """LetheSec dataset.py:91-107 (after its Grayscale, on three equal channels; Normalize per channel)."""
    return T.Compose([
        T.RandomResizedCrop(48, scale=(0.8, 1.2)),
        T.RandomApply([T.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5)], p=0.5),
        T.RandomApply([T.RandomAffine(0, translate=(0.2, 0.2))], p=0.5),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.RandomRotation(10)], p=0.5),
        T.FiveCrop(40),
        T.Lambda(lambda crops: torch.stack([T.ToTensor()(crop) for crop in crops])),
        T.Lambda(lambda tensors: torch.stack([T.Normalize(mean=(0, 0, 0), std=(255, 255, 255))(t) for t in tensors])),
        T.Lambda(lambda tensors: torch.stack([T.RandomErasing()(t) for t in tensors])),
    ])


def khaireddin_train_compose() -> T.Compose:
    """usef-kh/fer data/fer2013.py:60-70 (Normalize per channel, std 1: fer-mek's 8-bit ToTensor gives [0, 1])."""
    return T.Compose([
        T.RandomResizedCrop(48, scale=(0.8, 1.2)),
        T.RandomApply([T.RandomAffine(0, translate=(0.2, 0.2))], p=0.5),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.RandomRotation(10)], p=0.5),
        T.TenCrop(40),
        T.Lambda(lambda crops: torch.stack([T.ToTensor()(crop) for crop in crops])),
        T.Lambda(lambda tensors: torch.stack([T.Normalize(mean=(0, 0, 0), std=(1, 1, 1))(t) for t in tensors])),
        T.Lambda(lambda tensors: torch.stack([T.RandomErasing(p=0.5)(t) for t in tensors])),
    ])


def recipe_transform(name: str, processor) -> object:
    config = parse_config(["--recipe", name, "--data-root", "/data/not-here"])
    from fer_mek.train.config import augmentation_options

    return build_train_transform(processor, **augmentation_options(config))


@pytest.mark.parametrize(("name", "reference", "std", "crops"), [
    ("fer2013-resnet18-lethesec", lethesec_train_compose, 255.0, 5),
    ("fer2013-vgg-khaireddin", khaireddin_train_compose, 1.0, 10),
])
def test_the_recipes_augmentation_is_the_sources_compose(name, reference, std, crops):
    """The same torch random state gives the same crops, to the bit, as the source's torchvision Compose."""
    processor = SimpleNamespace(image_size=40, image_mean=[0.0] * 3, image_std=[std] * 3)
    ours, theirs = recipe_transform(name, processor), reference()
    for seed in range(12):
        image = face(seed)
        torch.manual_seed(seed)
        expected = theirs(image)
        torch.manual_seed(seed)
        got = ours(image)
        assert got.shape == (crops, 3, 40, 40)
        assert torch.equal(got, expected), seed


def test_ncrop_batches_are_crops_as_samples_and_eval_crops_are_the_sources_tencrop():
    transform = make_transform(PROCESSOR, train=True, with_flip=True, crop="ncrop", ncrop_resize=48, train_crops=5,
                               auto_augment="", re_prob=0.0, rotation=0.0, color_jitter=None)
    batch = transform({"image": [face(0), face(1)], "label": [3, 5]})
    collated = collate_fn([{k: v[i] for k, v in batch.items()} for i in range(2)])
    assert collated["pixel_values"].shape == (2, 5, 3, 40, 40)
    assert torch.equal(collated["flipped_pixel_values"], collated["pixel_values"].flip(-1))
    # evaluation: TenCrop(40) of the 48-px image, ToTensor, Normalize (LetheSec dataset.py:82-89)
    image = face(4)
    expected = T.Compose([T.TenCrop(40), T.Lambda(lambda crops: torch.stack([T.ToTensor()(c) for c in crops])),
                          T.Lambda(lambda ts: torch.stack([T.Normalize((0, 0, 0), (255, 255, 255))(t) for t in ts]))])
    assert torch.equal(build_ncrop_eval_transform(PROCESSOR, resize=48, crops=10)(image), expected(image))


def test_ncrop_options_are_checked():
    with pytest.raises(ValueError, match="per-sample"):
        parse_config(["--crop", "ncrop", "--auto-augment", "", "--image-size", "40"])  # the cached pipeline
    with pytest.raises(ValueError, match="ncrop"):
        parse_config(["--translate", "0.2", "--data-pipeline", "per-sample"])
    with pytest.raises(ValueError, match="smaller"):
        parse_config(["--crop", "ncrop", "--auto-augment", "", "--data-pipeline", "per-sample", "--image-size", "64"])
    with pytest.raises(ValueError, match="PublicTest"):
        parse_config(["--source", "fer2013", "--data-root", "x", "--fer2013-val", "PrivateTest"])


# ----------------------------------------------------------------------------------------------- the recipes, end to end
@pytest.mark.parametrize("name", ["fer2013-resnet18-lethesec", "fer2013-vgg-khaireddin-mek"])
def test_the_source_recipes_train_on_a_fer2013_csv(name, tmp_path):
    """The recipe as it is (validation = the CSV's PrivateTest, test = PublicTest, crops as samples, ten-crop
    evaluation, SGD, plateau), shortened to one epoch of a tiny CSV; the source's backbone when registered."""
    import timm

    from fer_mek.data.fixtures import write_fer2013_csv

    counts = {"Training": (2,) * 7, "PublicTest": (1,) * 7, "PrivateTest": (1, 1, 1, 2, 1, 1, 1)}
    csv = write_fer2013_csv(tmp_path / "fer2013.csv", counts, style="flat")
    backbone = parse_config(["--recipe", name, "--data-root", str(csv)]).backbone
    if backbone not in timm.list_models(backbone):
        backbone = "resnet18"  # until fer_mek.fer_backbones registers the sources' networks
    results = train.main(["--recipe", name, "--data-root", str(csv), "--backbone", backbone, "--epochs", "1",
                          "--batch-size", "4", "--mixed-precision", "no", "--num-workers", "0", "--log-with", "none",
                          "--output-dir", str(tmp_path / "run")])
    assert {split: sum(n) for split, n in results["class_counts"].items()} == {
        "train": 14, "validation": 8, "test": 7}
    assert results["dataset"]["validation"] == "Usage == PrivateTest"
    assert results["history"][0]["lr"] == parse_config(["--recipe", name, "--data-root", str(csv)]).lr
    saved = json.loads((tmp_path / "run" / "best" / "preprocessor_config.json").read_text())
    assert saved["default_tta"] == "tencrop_source"
    # Evaluation and publishing rebuild the same splits from the run's configuration (fer_mek.runs.DataOptions).
    from fer_mek.runs import DataOptions

    rebuilt = DataOptions.from_config(results["config"]).load()
    assert {split: len(rebuilt[split]) for split in rebuilt} == {"train": 14, "validation": 8, "test": 7}

"""One-step parity: the training step of each source, rebuilt here from its code, against fer-mek's trainer.

The sources' steps are written in this file from the facts read in their code (file:line below), not imported from
fer-mek: MEK-CV's Kaggle scripts (``frichickens/MEK-CV`` @ 3fb255f, ``kaggle/mek_resnet18.py`` = R18) for the
published ResNet checkpoints, and the official MEK code (``zyh-uaiaaaa/Mine-Extra-Knowledge`` @ 2ec823d, ``code/``)
for Swin-T. fer-mek's side is the :class:`~fer_mek.train.Trainer` configured by the packaged recipe, overridden only
where the test must run offline and small (synthetic source, random init, a small input, no fp16 on a CPU), fed the
same batch through ``Trainer.model_inputs`` / ``Trainer.train_step``. The recipes choose the sources' kernels
themselves (``channels_last: false``, ``fused_optimizer: false``; see :func:`make_trainer`).
Both start from the same weights; after three steps the losses, learning rates and every parameter and BatchNorm
buffer must agree to 1e-5 (relative, fp32 CPU; on the machine this was written on the ResNet step agrees to the
last bit).

Dropout. Dropout2d (MEK-CV's head, p = 0.4) and drop path (Swin, 0.1) draw their masks from torch's global
generator, inside the forward passes, and neither side draws anything else there (timm's ResNet and Swin draw no
random numbers in a forward pass besides these; the trainer's step draws none). Seeding the generator with the same
value before each side's step therefore gives both the same masks in the same order: the original image's pass, then
the flipped image's. The ResNet step is checked with p = 0 (no randomness at all) and with the recipe's p = 0.4.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fer_mek import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# Offline, small and on a CPU in fp32: what the test overrides in each recipe (nothing of the training step).
OFFLINE = ["--source", "synthetic", "--synthetic-images", "150", "--synthetic-image-size", "32", "--init", "random",
           "--batch-size", "8", "--num-workers", "0", "--log-with", "none", "--mixed-precision", "no"]
LABELS = torch.tensor([0, 1, 2, 3, 4, 5, 6, 3])
STEPS = 3


def make_trainer(tmp_path, recipe: str, *options: str) -> train.Trainer:
    config = train.parse_config(["--recipe", recipe, *OFFLINE, *options, "--output-dir", str(tmp_path / recipe)])
    # The sources' kernels, set by the recipe: NCHW convolutions and torch's default (not fused) Adam / AdamW.
    # fer-mek's defaults (channels-last, fused) compute the same step with other kernels whose results differ in the
    # last bits (ResNet-18 gradients by ~1.5e-5 relative in channels-last; the fused Adam update by an ulp), and Adam
    # amplifies such differences on parameters whose true gradient is ~0 (e.g. the biases of a BatchNorm followed by
    # another BatchNorm: 10-30 % apart after two steps). With the recipe's kernels the ResNet step is bit-identical.
    assert not config.channels_last and not config.fused_optimizer, f"{recipe} must use the sources' kernels"
    trainer = train.Trainer(config)
    trainer.setup()
    return trainer


def fer_mek_step(trainer: train.Trainer, images: torch.Tensor, labels: torch.Tensor, seed: int):
    """One optimizer step of fer-mek's trainer on a batch (as the per-sample loader gives it: the flipped copy is the
    flip of the augmented tensor); returns the loss and the learning rate the step ran at."""
    lr = trainer.optimizer.param_groups[0]["lr"]
    torch.manual_seed(seed)
    batch = {"pixel_values": images.clone(), "flipped_pixel_values": images.flip(-1), "labels": labels.clone()}
    outputs = trainer.train_step(trainer.model_inputs(batch))
    return float(outputs.loss.detach()), lr


def assert_relative(actual: torch.Tensor, expected: torch.Tensor, what: str, tolerance: float = 1e-5) -> None:
    """``max |actual - expected| <= tolerance * max |expected|`` (relative to the tensor's scale)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().item() or 1.0
    error = (actual - expected).abs().max().item()
    assert error <= tolerance * scale, f"{what}: max error {error:.3g}, scale {scale:.3g}"


# ------------------------------------------------------------------------------------------- MEK-CV (ResNet)
class MEKCVNet(nn.Module):
    """MEK-CV's model (R18:220-231): ``encoder = Sequential(*children(resnet)[:-2])``, ``BatchNorm2d(512)``,
    ``Dropout2d(p)``, ``Conv2d(512, K, 1)``; logits = ``adaptive_avg_pool2d(maps, 1)``."""

    def __init__(self, net: nn.Module, dropout: float, num_classes: int = 7):
        super().__init__()
        self.encoder = nn.Sequential(*list(net.children())[:-2])
        self.bn = nn.BatchNorm2d(512)
        self.drop = nn.Dropout2d(p=dropout)
        self.classifier = nn.Conv2d(512, num_classes, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.drop(self.bn(self.encoder(x)))
        hm = self.classifier(feat)
        return F.adaptive_avg_pool2d(hm, 1).flatten(1), hm


def mek_cv_balance_weights(counts: list[int]) -> torch.Tensor:
    """R18:195-197: ``_inv = 1 / max(n_c, 1)``; ``_inv * (K / _inv.sum())`` in float64, then ``.float()``."""
    import numpy as np

    inverse = 1.0 / np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return torch.from_numpy(inverse * (len(counts) / inverse.sum())).float()


def rebalanced_smooth_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, epsilon: float):
    """R18:260-269 (= the official LSR2): the true class gets 1 - eps, eps is spread over the others in proportion to
    their balance weights, renormalised per sample; cross-entropy, mean over the batch."""
    log_p = F.log_softmax(logits, dim=1)
    smooth = torch.zeros_like(logits)
    smooth.scatter_(1, target.view(-1, 1), 1.0 - epsilon)
    mask = smooth == 0
    bw_m = weights.unsqueeze(0).expand_as(logits) * mask
    bw_n = bw_m / bw_m.sum(dim=1, keepdim=True).clamp_min(1e-8)
    smooth = smooth + bw_n * epsilon
    return -(log_p * smooth).sum(dim=1).mean()


def flip_grid(batch: int, height: int, width: int) -> torch.Tensor:
    """The sources' ``make_flip_grid`` / ``generate_flip_grid``: x = -(2j/(W-1) - 1), y = 2i/(H-1) - 1."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    grid = torch.stack([-(2 * xs / (width - 1) - 1), 2 * ys / (height - 1) - 1], dim=-1)
    return grid.unsqueeze(0).expand(batch, -1, -1, -1)


def attention_consistency(hm: torch.Tensor, hm_flipped: torch.Tensor) -> torch.Tensor:
    """``[B, K]``: the flipped image's maps unflipped with ``grid_sample(bilinear, border, align_corners=True)``,
    squared difference averaged over the positions (R18:282-288; official ``ACLoss``, train_exp.py:43-49)."""
    batch, _, height, width = hm.shape
    unflipped = F.grid_sample(hm_flipped, flip_grid(batch, height, width), mode="bilinear", padding_mode="border",
                              align_corners=True)
    return F.mse_loss(hm, unflipped, reduction="none").mean(dim=[-1, -2])


def mek_cv_step(model, optimizer, images, labels, weights, epsilon, lam, seed) -> float:
    """MEK-CV's step (R18:337-354) in fp32: two forward passes (original, then flipped), RSL on the original logits,
    RAC ``(fl @ balance_w).mean()``, ``clip_grad_norm_(model.parameters(), 5.0)``, ``optimizer.step()``."""
    torch.manual_seed(seed)
    optimizer.zero_grad(set_to_none=True)
    logits_o, hm_o = model(images)
    _, hm_f = model(images.flip(-1))
    lsr = rebalanced_smooth_loss(logits_o, labels, weights, epsilon)
    fl = (attention_consistency(hm_o, hm_f) @ weights).mean()
    loss = lsr + lam * fl
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
    optimizer.step()
    return float(loss.detach())


def resnet_pairs(source: MEKCVNet, net: nn.Module, model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every parameter and buffer of the source with its counterpart in fer-mek's model (torchvision and timm
    ResNet names agree; the encoder's modules are ``net``'s)."""
    theirs = dict(model.state_dict(keep_vars=True))
    pairs = {}
    for name, tensor in net.state_dict(keep_vars=True).items():
        if not name.startswith("fc."):
            pairs[name] = (tensor, theirs[f"mek.backbone.{name}"])
    for module, prefix in ((source.bn, "mek.head.bn"), (source.classifier, "mek.head.classifier")):
        for name, tensor in module.state_dict(keep_vars=True).items():
            pairs[f"head.{prefix.rsplit('.', 1)[1]}.{name}"] = (tensor, theirs[f"{prefix}.{name}"])
    return pairs


@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_resnet_step_equals_mek_cv(tmp_path, dropout):
    import torchvision

    trainer = make_trainer(tmp_path, "rafdb-resnet18-imagenet", "--image-size", "64", "--dropout", str(dropout))
    config = trainer.config
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert (config.single_pass, config.optimizer, config.weight_decay_all, config.balance_weight_rule) == (
        False, "adam", True, "mean1")

    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None)
    source = MEKCVNet(net, dropout).train()
    with torch.no_grad():  # the source's initial weights, in fer-mek's model
        for ours, theirs in resnet_pairs(source, net, model).values():
            theirs.copy_(ours)
    optimizer = torch.optim.Adam(source.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    weights = mek_cv_balance_weights(trainer.class_counts["train"])
    assert torch.equal(model.loss_fn.balance_weights, weights)

    generator = torch.Generator().manual_seed(2)
    model.train()
    for step in range(STEPS):
        images = torch.randn(8, 3, 64, 64, generator=generator)
        expected = mek_cv_step(source, optimizer, images, LABELS, weights, config.smoothing, config.attention_weight,
                               seed=100 + step)
        loss, lr = fer_mek_step(trainer, images, LABELS, seed=100 + step)
        assert lr == config.lr  # ExponentialLR(0.9) changes the rate at epoch ends only
        assert loss == pytest.approx(expected, rel=1e-5), step
    for name, (ours, theirs) in resnet_pairs(source, net, model).items():
        if ours.dtype.is_floating_point:
            assert_relative(theirs, ours, name)
        else:
            assert torch.equal(theirs, ours), name  # num_batches_tracked: two passes per step


# ------------------------------------------------------------------------------------------- official Swin
# A tiny Swin with the official geometry's ratios (patch 2, window 7, a 7x7 final map): 28 px, 2 stages.
TINY_SWIN = {"img_size": 28, "patch_size": 2, "embed_dim": 16, "depths": [2, 2], "num_heads": [1, 2],
             "window_size": 7}


class OfficialSwinFER(nn.Module):
    """The official ``SwinTransFER`` (expression/models.py:12-41): the encoder's ``forward_features`` (patch
    embedding and stages, without the encoder's own final norm: swin.py:575-587), a fresh ``LayerNorm`` on the 49
    tokens, their mean, ``Linear(C, K)``; the maps are ``tokens . W`` with ``W`` detached and no bias."""

    def __init__(self, encoder: nn.Module, num_features: int, num_classes: int = 7):
        super().__init__()
        self.encoder = encoder
        self.norm = nn.LayerNorm(num_features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(num_features, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder.layers(self.encoder.patch_embed(x))  # [B, 7, 7, C]
        batch, height, width, channels = x.shape
        x = self.norm(x.reshape(batch, height * width, channels))  # B L C, L = 7h + w
        output = self.head(torch.flatten(self.avgpool(x.transpose(1, 2)), 1))
        fc_weights = self.head.weight.view(1, self.num_classes, channels, 1, 1).detach()
        feat = x.transpose(1, 2).reshape(batch, 1, channels, height, width)
        return output, (feat * fc_weights).sum(2)


def official_balance_weights(counts: list[int]) -> torch.Tensor:
    """N / (10 n_c): the official constants (train_exp.py:81, 239) with RAF-DB's counts."""
    total = sum(counts)
    return torch.tensor([total / (10 * n) for n in counts], dtype=torch.float32)


def official_step(model, optimizer, scheduler, images, labels, weights, global_step, seed) -> float:
    """train_exp.py:229-258 in fp32: two passes, ``LSR2(0.3)(out, y) + 0.1 * mm(ACLoss.mean.mean, w).mean()``,
    clip 5, ``opt.step()``, ``opt.zero_grad()``, ``lr_scheduler.step_update(global_step)``."""
    torch.manual_seed(seed)
    output, hm = model(images)
    _, hm1 = model(images.flip(-1))
    flip_loss = torch.mm(attention_consistency(hm, hm1), weights.view(-1, 1)).squeeze()
    loss = rebalanced_smooth_loss(output, labels, weights, 0.3) + 0.1 * flip_loss.mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5)
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step_update(global_step)
    return float(loss.detach())


def test_swin_step_equals_the_official_code(tmp_path):
    """The rafdb-swin-t recipe's step (AdamW on every parameter, N / (10 n_c), eps 0.3, lambda 0.1, two passes,
    clip 5, drop path 0.1, timm's cosine stepped as the official loop) against the official step on a tiny Swin.

    The learning rates are the recipe's schedule with larger values (lr 1e-3, warm-up 2 steps from 1e-4, floor 1e-5,
    10 steps): with the recipe's own 3.125e-8 warm-up start the three steps would barely move a weight and the test
    would prove little. The call order is the official one: steps 0 and 1 run at the warm-up start, step 2 at lr(1).
    """
    import timm
    from timm.scheduler import CosineLRScheduler

    trainer = make_trainer(tmp_path, "rafdb-swin-t", "--backbone-kwargs", json.dumps(TINY_SWIN), "--image-size", "28",
                           "--lr", "1e-3", "--warmup-steps", "2", "--warmup-lr", "1e-4", "--min-lr", "1e-5",
                           "--train-steps", "10", "--epoch-size", "0")
    config = trainer.config
    assert (config.single_pass, config.optimizer, config.weight_decay_all, config.balance_weight_rule,
            config.scheduler, config.drop_path, config.reset_final_norm) == (
        False, "adamw", True, "official", "timm-cosine", 0.1, True)
    model = trainer.accelerator.unwrap_model(trainer.model)

    torch.manual_seed(1)
    encoder = timm.create_model(config.backbone, pretrained=False, num_classes=0, drop_path_rate=config.drop_path,
                                **TINY_SWIN)
    source = OfficialSwinFER(encoder, encoder.num_features).train()
    # The source's initial weights in fer-mek's model: the encoder's (its own final norm is never used), the fresh
    # LayerNorm as the backbone's final norm (the slot --reset-final-norm resets), the head as the classifier.
    theirs = dict(model.state_dict(keep_vars=True))
    pairs = {f"encoder.{k}": (v, theirs[f"mek.backbone.{k}"]) for k, v in encoder.state_dict(keep_vars=True).items()
             if not k.startswith("norm.")}
    pairs.update({f"norm.{k}": (v, theirs[f"mek.backbone.norm.{k}"]) for k, v in source.norm.state_dict(keep_vars=True).items()})
    pairs.update({f"head.{k}": (v, theirs[f"mek.head.classifier.{k}"]) for k, v in source.head.state_dict(keep_vars=True).items()})
    with torch.no_grad():
        for ours, fer_mek_tensor in pairs.values():
            fer_mek_tensor.copy_(ours)
    optimizer = torch.optim.AdamW([{"params": source.parameters(), "lr": config.lr}], lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=config.train_steps, cycle_mul=1.0, lr_min=config.min_lr,
                                  warmup_lr_init=config.warmup_lr, warmup_t=config.warmup_steps, cycle_limit=1,
                                  t_in_epochs=False)
    weights = official_balance_weights(trainer.class_counts["train"])
    assert torch.allclose(model.loss_fn.balance_weights, weights, rtol=1e-6)

    generator = torch.Generator().manual_seed(2)
    model.train()
    rates = []
    for step in range(STEPS):
        images = torch.randn(8, 3, 28, 28, generator=generator)
        expected_lr = optimizer.param_groups[0]["lr"]
        expected = official_step(source, optimizer, scheduler, images, LABELS, weights, step, seed=100 + step)
        loss, lr = fer_mek_step(trainer, images, LABELS, seed=100 + step)
        rates.append(lr)
        assert lr == expected_lr, step
        assert loss == pytest.approx(expected, rel=1e-5), step
    assert rates == [1e-4, 1e-4, pytest.approx(5.5e-4, rel=1e-12)]
    for name, (ours, fer_mek_tensor) in pairs.items():
        if name.endswith(".attn.qkv.bias"):
            # The key biases have no gradient at all (softmax ignores a constant added to every key of a query):
            # theirs is rounding noise, ~1e-12, which Adam scales up to lr * g / (|g| + eps), ~1e-4 lr per step. The
            # class maps are the same numbers summed in another order (fer-mek: einsum; the source: a broadcast
            # product summed over channels, expression/models.py:39-41), so the noise, and those updates, differ.
            # Query and value biases are held to 1e-5; the key biases must stay at noise level on both sides.
            third = ours.shape[0] // 3
            for part, rows in (("q", slice(0, third)), ("v", slice(2 * third, None))):
                assert_relative(fer_mek_tensor[rows], ours[rows], f"{name} ({part})")
            for tensor in (ours, fer_mek_tensor):
                assert tensor[third:2 * third].abs().max() <= 1e-3 * sum(rates), name
            continue
        assert_relative(fer_mek_tensor, ours, name)

"""EfficientFace's training, rebuilt here from its code, against fer-mek's trainer configured by the
``rafdb-efficientface-ldt`` recipe; and the recipe against the source's settings, row by row.

The source is ``zengqunzhao/EfficientFace`` @ 8d19537 (read for the facts, no code copied): ``main.py`` (cited as
main.py:LINE), ``models/EfficientFace.py`` (EF:LINE), ``models/modulator.py`` (MOD:LINE), ``models/resnet.py``.
Its step (main.py:173-199): the student (EfficientFace, train mode) and the LDG teacher (a torchvision-layout
ResNet-50 with a 7-class fc, eval mode, ``torch.no_grad``) see the same normalised batch; ``loss =
torch.mean(-softmax(teacher) * torch.log(softmax(student)))`` (main.py:181-189, 247-248); ``SGD(lr 0.1, momentum 0.9,
weight_decay 1e-4)`` on every parameter (main.py:69-72), no clipping, fp32.

The source's student is written below as a functional forward over its ``state_dict`` (names as the source's, so
the same tensors as ``Pretrained_EfficientFace.tar``), independent of :mod:`fer_mek.efficientface`. Two deviations,
both forced by the small test input and neither touching the step: the local feature extractor cuts the map at
``H // 2`` where the source hard-codes 28 (its 56-px map at 224 px, EF:63-66; the same cut there), and the input is
64 px. The fake ``Pretrained_EfficientFace.tar`` (MS-Celeb-1M: fc 12666) and ``Pretrained_LDG.tar`` are built here
in the source's layout (``{"state_dict": {"module." + key: tensor}}``) and go through fer-mek's ``--init`` and
``fer-mek convert`` exactly as the real files would; the student trains on the synthetic set's classes, which are
RAF-DB's in RAF-DB's order, and the teacher's are in the source's folder order, mapped by name as the recipe does.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fer_mek import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

RECIPE = "rafdb-efficientface-ldt"
SIZE = 64  # 224 in the source; a multiple of 16 keeps EfficientFace's stage2 and local maps the same size
BATCH = 8
#: The source's class order: its ImageFolder dirs 0..6 (README.md: 0 Neutral, 1 Happiness, 2 Sadness, 3 Surprise,
#: 4 Fear, 5 Disgust, 6 Anger), written with fer-mek's names.
SOURCE_ORDER = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")
RAFDB_MEAN = [0.57535914, 0.44928582, 0.40079932]  # main.py:96-97
RAFDB_STD = [0.20735591, 0.18981615, 0.18132027]

#: The recipe's values, written from main.py (line numbers) and run.sh (only --data and --gpu given).
EFFICIENTFACE = {
    "source": "rafdb",
    "val_split": "none",                  # 92-93, 99-108: the whole train folder; test evaluated every epoch
    "data_pipeline": "per-sample",        # torchvision transforms per image
    "backbone": "efficientface",          # 51 EfficientFace.efficient_face()
    "head": "linear",                     # 57 fc = nn.Linear(1024, 7) after x.mean([2, 3]) (EF:191-192)
    "head_init": "pytorch",               # a fresh nn.Linear
    "dropout": 0.0,
    "drop_path": 0.0,
    "init": "Pretrained_EfficientFace.tar",  # 54-56
    "image_size": 224,                    # 100, 106
    "image_mean": RAFDB_MEAN,             # 96-97
    "image_std": RAFDB_STD,
    "method": "ldt",                      # 67, 180-189
    "teacher_label_map": "by-name",       # the LDG's classes in the source's folder order
    "distill_temperature": 1.0,           # 167 nn.Softmax(dim=1) on the raw outputs
    "distill_weight": 1.0,                # 189: the teacher's distribution only
    "distill_reduction": "elementwise",   # 248 torch.mean over batch x classes
    "distill_attention": False,
    "label_smoothing": 0.0,
    "mixup_alpha": 0.0,
    "batch_size": 128,                    # 30
    "grad_accum": 1,
    "drop_last": False,                   # 110-114 DataLoader default; log/RAF-DB.txt: 96 batches of 12,271 images
    "balanced_sampler": False,            # shuffle=True
    "epoch_size": 0,
    "crop": "random-resized",             # 100 RandomResizedCrop((224, 224)) with torchvision's defaults:
    "crop_scale": [0.08, 1.0],
    "crop_ratio": [3.0 / 4.0, 4.0 / 3.0],
    "train_interpolation": "bilinear",
    "rotation": 0.0,
    "hflip": 0.5,                         # 101 RandomHorizontalFlip()
    "color_jitter": [0.0, 0.0, 0.0],
    "auto_augment": "",
    "re_prob": 0.0,
    "eval_crops": 1,                      # 106-108 Resize((224, 224)), ToTensor, Normalize
    "default_tta": "none",
    "optimizer": "sgd",                   # 69-72
    "momentum": 0.9,                      # 34
    "nesterov": False,
    "lr": 0.1,                            # 31
    "weight_decay": 1e-4,                 # 35
    "weight_decay_all": True,             # model_cla.parameters()
    "scheduler": "step",                  # 127, 296-300
    "step_size": 30,                      # 33 --af
    "gamma": 0.1,                         # 32 --factor
    "epochs": 100,                        # 28
    "train_steps": 0,
    "clip_grad_norm": 0.0,                # 197-199
    "mixed_precision": "no",              # fp32
    "ema_decay": 0.0,
    "early_stopping_patience": 0,
    "train_mode_forward": False,
}


# ----------------------------------------------------------------------------------------------- the recipe
def test_the_recipe_is_the_source_row_by_row():
    config, _ = train.parse_command_line(["--recipe", RECIPE, "--data-root", "/data/not-here", "--print-config"])
    resolved = vars(config)
    wrong = {}
    for key, value in EFFICIENTFACE.items():
        got = resolved[key]
        if isinstance(value, list):
            same = [float(v) for v in got] == pytest.approx([float(v) for v in value], rel=1e-12)
        elif isinstance(value, float):
            same = got == pytest.approx(value, rel=1e-12)
        else:
            same = got == value
        if not same:
            wrong[key] = (got, value)
    assert wrong == {}, "(recipe, source) differ"
    assert config.teacher  # the converted LDG folder, a path the user passes


def test_the_recipe_header_names_source_target_and_what_is_not_reproduced():
    text = (train.RECIPE_DIR / f"{RECIPE}.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "Target (test accuracy / mean-class accuracy): 0.8836" in header
    assert "EfficientFace @ 8d19537" in header and "0.8817" in header  # the final epoch, which fer-mek reports
    settings = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    cited = [line for line in settings if "#" in line]
    assert len(cited) >= 0.9 * len(settings), "nearly every setting names the line of main.py it comes from"


# ----------------------------------------------------------------------------------------------- augmentation
def source_train_transform(size: int):
    """main.py:99-103: RandomResizedCrop((s, s)) (scale (0.08, 1), ratio (3/4, 4/3), bilinear), RandomHorizontalFlip,
    ToTensor, Normalize(RAF-DB)."""
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop((size, size)), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(RAFDB_MEAN, RAFDB_STD)])


def test_the_training_augmentation_is_the_sources_for_the_same_crop(monkeypatch):
    """fer-mek's chain is timm's ``RandomResizedCropAndInterpolation`` (the same algorithm and distribution as
    torchvision's ``RandomResizedCrop``, drawing from Python's ``random`` instead of torch's generator), then
    torchvision's flip: given the crop fer-mek drew, the source's pipeline gives the same tensor, flip included."""
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision import transforms as T

    from fer_mek import MEKImageProcessor
    from fer_mek.data import build_train_transform, render_face
    from fer_mek.train.config import augmentation_options

    config, _ = train.parse_command_line(["--recipe", RECIPE, "--data-root", "x", "--image-size", str(SIZE),
                                          "--print-config"])
    processor = MEKImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=RAFDB_MEAN, image_std=RAFDB_STD)
    ours = build_train_transform(processor, **augmentation_options(config))
    image = render_face(3, 100, [0, 11])  # RAF-DB's aligned faces are 100 x 100
    crops = []
    timm_params = RandomResizedCropAndInterpolation.get_params

    def recording(img, scale, ratio):
        assert (tuple(scale), tuple(ratio)) == ((0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0))  # torchvision's defaults
        crops.append(timm_params(img, scale, ratio))
        return crops[-1]

    monkeypatch.setattr(RandomResizedCropAndInterpolation, "get_params", staticmethod(recording))
    monkeypatch.setattr(T.RandomResizedCrop, "get_params", staticmethod(lambda img, scale, ratio: crops[-1]))
    source = source_train_transform(SIZE)
    flipped = 0
    for seed in range(12):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        got = ours(image)
        torch.manual_seed(seed)  # the flip's torch.rand draw: fer-mek's crop drew from Python's random only
        expected = source(image)
        assert got.dtype == torch.float32 and got.shape == (3, SIZE, SIZE)
        assert torch.allclose(got, expected, rtol=0, atol=1e-6), f"seed {seed}"
        flipped += not torch.allclose(got, got.flip(-1))
    assert len(set(crops)) == len(crops)  # the crops do vary
    assert flipped > 0  # (a face is nearly symmetric: counted only to see the chain ran)


def test_the_evaluation_transform_is_the_sources_resize_without_centre_crop():
    """main.py:105-108: ``Resize((224, 224))`` (bilinear) -> ``ToTensor`` -> ``Normalize``; no centre crop."""
    from torchvision import transforms as T

    from fer_mek import MEKImageProcessor
    from fer_mek.data import build_eval_transform, render_face

    processor = MEKImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=RAFDB_MEAN, image_std=RAFDB_STD)
    source = T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor(), T.Normalize(RAFDB_MEAN, RAFDB_STD)])
    for image in (render_face(2, 100, [0, 11]), render_face(5, 80, [1])):
        expected = source(image)
        assert torch.allclose(build_eval_transform(processor)(image), expected, rtol=0, atol=1e-5)
        inference = processor(image, return_tensors="pt")["pixel_values"][0]
        assert torch.allclose(inference, expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------- the source's network
def _bn(x: torch.Tensor, p: dict, name: str) -> torch.Tensor:
    """A BatchNorm in train mode (batch statistics; running statistics updated with momentum 0.1, eps 1e-5)."""
    p[f"{name}.num_batches_tracked"].add_(1)
    return F.batch_norm(x, p[f"{name}.running_mean"], p[f"{name}.running_var"], p[f"{name}.weight"],
                        p[f"{name}.bias"], training=True, momentum=0.1, eps=1e-5)


def _conv(x: torch.Tensor, p: dict, name: str, stride: int = 1, padding: int = 0, dilation: int = 1,
          depthwise: bool = False) -> torch.Tensor:
    return F.conv2d(x, p[f"{name}.weight"], p.get(f"{name}.bias"), stride, padding, dilation,
                    groups=x.shape[1] if depthwise else 1)


def _block(x: torch.Tensor, p: dict, name: str, stride: int) -> torch.Tensor:
    """EF:103-142, ShuffleNet-V2's unit: stride 2: branch1 = [dw 3x3 s2, BN, 1x1, BN, ReLU] (EF:115-120) and branch2
    on the input; stride 1: the second channel half through branch2 (EF:134-136); branch2 = [1x1, BN, ReLU, dw 3x3,
    BN, 1x1, BN, ReLU] (EF:122-131); concatenation, then a channel shuffle with 2 groups (EF:21-29, 140)."""
    def branch2(z: torch.Tensor) -> torch.Tensor:
        z = F.relu(_bn(_conv(z, p, f"{name}.branch2.0"), p, f"{name}.branch2.1"))
        z = _bn(_conv(z, p, f"{name}.branch2.3", stride, 1, depthwise=True), p, f"{name}.branch2.4")
        return F.relu(_bn(_conv(z, p, f"{name}.branch2.5"), p, f"{name}.branch2.6"))

    if stride == 1:
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, branch2(x2)), dim=1)
    else:
        b1 = _bn(_conv(x, p, f"{name}.branch1.0", stride, 1, depthwise=True), p, f"{name}.branch1.1")
        b1 = F.relu(_bn(_conv(b1, p, f"{name}.branch1.2"), p, f"{name}.branch1.3"))
        out = torch.cat((b1, branch2(x)), dim=1)
    batch, channels, height, width = out.shape
    return out.view(batch, 2, channels // 2, height, width).transpose(1, 2).contiguous().view(batch, -1, height, width)


def _local(x: torch.Tensor, p: dict) -> torch.Tensor:
    """EF:32-100: four quadrants (top-left -> conv1_*, bottom-left -> conv2_*, top-right -> conv3_*, bottom-right ->
    conv4_*), each [dw 3x3 s2, BN, ReLU, dw 3x3, BN, ReLU], put back in place."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    patches = {1: x[:, :, :h, :w], 2: x[:, :, h:, :w], 3: x[:, :, :h, w:], 4: x[:, :, h:, w:]}
    out = {}
    for i, patch in patches.items():
        z = F.relu(_bn(_conv(patch, p, f"local.conv{i}_1", 2, 1, depthwise=True), p, f"local.bn{i}_1"))
        out[i] = F.relu(_bn(_conv(z, p, f"local.conv{i}_2", 1, 1, depthwise=True), p, f"local.bn{i}_2"))
    return torch.cat([torch.cat([out[1], out[2]], dim=2), torch.cat([out[3], out[4]], dim=2)], dim=3)


def _modulator(x: torch.Tensor, p: dict) -> torch.Tensor:
    """MOD:11-59: ``sigmoid(channel(x) * spatial(x)) * x``; channel = avg_pool2d(x, x.size(2)) -> flatten -> Linear ->
    BatchNorm1d -> ReLU -> Linear; spatial = 1x1 conv, BN, ReLU, 2 x (3x3 dilation 4, BN, ReLU), 1x1 conv to 1."""
    c, s = "modulator.channel_att.gate_c", "modulator.spatial_att.gate_s"
    pooled = F.avg_pool2d(x, x.size(2), stride=x.size(2)).flatten(1)
    gate = F.relu(_bn(F.linear(pooled, p[f"{c}.gate_c_fc_0.weight"], p[f"{c}.gate_c_fc_0.bias"]), p, f"{c}.gate_c_bn_1"))
    channel = F.linear(gate, p[f"{c}.gate_c_fc_final.weight"], p[f"{c}.gate_c_fc_final.bias"])[:, :, None, None]
    z = F.relu(_bn(_conv(x, p, f"{s}.gate_s_conv_reduce0"), p, f"{s}.gate_s_bn_reduce0"))
    for i in range(2):
        z = F.relu(_bn(_conv(z, p, f"{s}.gate_s_conv_di_{i}", 1, 4, 4), p, f"{s}.gate_s_bn_di_{i}"))
    spatial = _conv(z, p, f"{s}.gate_s_conv_final")
    return torch.sigmoid(channel.expand_as(x) * spatial.expand_as(x)) * x


def source_student(x: torch.Tensor, p: dict) -> torch.Tensor:
    """EF:184-194: conv1 (3x3 s2, BN, ReLU), maxpool 3 s2 p1, ``modulator(stage2(x)) + local(x)``, stage3, stage4,
    conv5 (1x1, BN, ReLU), mean over H, W, fc; stages of 4, 8, 4 units, the first with stride 2 (EF:165-171, 198)."""
    x = F.relu(_bn(_conv(x, p, "conv1.0", 2, 1), p, "conv1.1"))
    x = F.max_pool2d(x, 3, 2, 1)
    stage2 = x
    for i in range(4):
        stage2 = _block(stage2, p, f"stage2.{i}", 2 if i == 0 else 1)
    x = _modulator(stage2, p) + _local(x, p)
    for stage, repeats in (("stage3", 8), ("stage4", 4)):
        for i in range(repeats):
            x = _block(x, p, f"{stage}.{i}", 2 if i == 0 else 1)
    x = F.relu(_bn(_conv(x, p, "conv5.0"), p, "conv5.1"))
    return F.linear(x.mean([2, 3]), p["fc.weight"], p["fc.bias"])


def source_step(params: dict, teacher: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor) -> float:
    """main.py:180-199: softmax of the student; without gradient, softmax of the eval-mode teacher on the same
    images; ``torch.mean(-soft_label * torch.log(output_prob))``; ``zero_grad``, ``backward``, ``step``."""
    output_prob = torch.softmax(source_student(images, params), dim=1)
    with torch.no_grad():
        soft_label_prob = torch.softmax(teacher(images), dim=1)
    loss = torch.mean(-soft_label_prob * torch.log(output_prob))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _randomise_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BatchNorm affine weights and running statistics, as trained weights have (the defaults 1 / 0
    would hide a swapped weight and bias, or a running statistic read in place of another)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))


def _save_source_file(path, model: nn.Module) -> None:
    """The source's checkpoint layout: ``{"state_dict": {"module." + key: tensor}}`` (DataParallel, main.py:53, 152)."""
    torch.save({"state_dict": {f"module.{k}": v.clone() for k, v in model.state_dict().items()}, "epoch": 1},
               path)


@pytest.fixture(scope="module")
def source_files(tmp_path_factory):
    """A fake Pretrained_EfficientFace.tar (fc 12666, main.py:52), a fake Pretrained_LDG.tar (resnet50, fc 7,
    main.py:59-60) converted with fer-mek convert, and the source's modules they were made from."""
    import timm
    import torchvision

    from fer_mek.convert import main as convert_main

    folder = tmp_path_factory.mktemp("efficientface")
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    pretrained = timm.create_model("efficientface", num_classes=12666)
    _randomise_norms(pretrained, generator)
    _save_source_file(folder / "Pretrained_EfficientFace.tar", pretrained)
    ldg = torchvision.models.resnet50(num_classes=7)
    _randomise_norms(ldg, generator)
    with torch.no_grad():  # logits of about unit spread: a soft distribution, as a trained teacher's (not one-hot)
        spread = ldg.eval()(torch.randn(8, 3, SIZE, SIZE, generator=generator)).std()
        ldg.fc.weight.div_(spread)
        ldg.fc.bias.zero_()
    _save_source_file(folder / "Pretrained_LDG.tar", ldg)
    assert convert_main(["--checkpoint", str(folder / "Pretrained_LDG.tar"), "--output", str(folder / "ldg-rafdb"),
                         "--image-size", str(SIZE)]) == 0
    return folder, pretrained.state_dict(), ldg.eval()


def _compare(model: nn.Module, params: dict, to_source: list[int], tolerance: float, when: str) -> None:
    """Every parameter and BatchNorm buffer of fer-mek's model against the source's, relative to each tensor's scale
    (``max |ours - theirs| <= tolerance * max |theirs|``); the classifier's rows in the source's class order."""
    ours = dict(model.state_dict())
    for key, value in params.items():
        mine = ours[f"mek.head.classifier.{key[3:]}"][to_source] if key.startswith("fc.") else ours[f"mek.backbone.{key}"]
        if not value.is_floating_point():
            assert torch.equal(mine, value), f"{key} {when}"  # num_batches_tracked
            continue
        value, mine = value.detach().double(), mine.double()
        scale = value.abs().max().item() or 1.0
        error = (mine - value).abs().max().item()
        assert error <= tolerance * scale, f"{key} {when}: max error {error:.3g}, scale {scale:.3g}"


def test_one_training_step_equals_the_sources(tmp_path, source_files):
    """The recipe's training step (lr 0.1: epoch 0 of the step schedule) against the source's on the same batch: the
    teacher's targets, the loss and every parameter and BatchNorm buffer agree to 1e-6, SGD's momentum buffers (the
    gradients) to 1e-5 of the largest.

    A second step checks the momentum's use (its update is 0.1 x (0.9 x buffer + gradient + 1e-4 x weight)) at 1e-5:
    this small network (64 px: 2x2 maps in stage4, BatchNorm over 8 images) at lr 0.1 is so ill-conditioned that the
    source's own step in float32 and in float64 already differ by ~6e-4 after two steps (and by 3 % after four),
    while fer-mek and the source, the same float32 operations, stay within ~1e-6.
    """
    folder, pretrained, ldg = source_files
    config = train.parse_config(["--recipe", RECIPE, "--source", "synthetic", "--synthetic-images", "80",
                                 "--synthetic-image-size", str(SIZE), "--image-size", str(SIZE), "--batch-size",
                                 str(BATCH), "--num-workers", "0", "--log-with", "none",
                                 "--init", str(folder / "Pretrained_EfficientFace.tar"),
                                 "--teacher", str(folder / "ldg-rafdb"), "--output-dir", str(tmp_path / "run")])
    assert (config.optimizer, config.nesterov, config.lr, config.weight_decay, config.clip_grad_norm) == (
        "sgd", False, 0.1, 1e-4, 0.0)
    assert not config.channels_last and not config.fused_optimizer
    trainer = train.Trainer(config)
    trainer.setup()
    model = trainer.accelerator.unwrap_model(trainer.model)
    names = list(trainer.label_names)
    assert names == ["surprise", "fear", "disgust", "happy", "sad", "angry", "neutral"]  # RAF-DB's order
    to_source = [names.index(name) for name in SOURCE_ORDER]  # fer-mek row of each source class
    group = trainer.optimizer.param_groups[0]
    assert (group["momentum"], group["dampening"], group["nesterov"], group["weight_decay"]) == (0.9, 0, False, 1e-4)

    # The source's student: the MS-Celeb-1M weights with a fresh 7-class fc (main.py:54-57). fer-mek loaded the same
    # backbone through --init (its fc dropped); its fresh classifier is copied into the source's fc, in source order.
    ours = dict(model.state_dict(keep_vars=True))
    params = {}
    for key, value in pretrained.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(ours[f"mek.backbone.{key}"].detach(), value), f"--init did not load {key}"
        buffer = key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        params[key] = value.clone().requires_grad_(not buffer)
    for part in ("weight", "bias"):
        params[f"fc.{part}"] = ours[f"mek.head.classifier.{part}"].detach()[to_source].clone().requires_grad_(True)
    trainable = {key: value for key, value in params.items() if value.requires_grad}
    assert len(trainable) == sum(1 for _ in model.parameters())  # every parameter, and only those, trained
    optimizer = torch.optim.SGD(trainable.values(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    generator = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 3])  # used for the accuracy only (main.py:192), not the loss
    model.train()
    for step, tolerance in enumerate((1e-6, 1e-5)):
        images = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator)
        # The teacher's targets: the LDG in eval mode (main.py:171, 184-186); in fer-mek in RAF-DB's order.
        with torch.no_grad():
            source_teacher = ldg(images)
        assert torch.allclose(trainer.teacher.logits(images), source_teacher[:, [SOURCE_ORDER.index(n) for n in names]],
                              rtol=1e-5, atol=1e-6)
        lr = group["lr"]
        expected = source_step(params, ldg, optimizer, images)
        outputs = trainer.train_step(trainer.model_inputs({"pixel_values": images.clone(), "labels": labels}))
        assert lr == 0.1  # adjust_learning_rate(epoch 0): 0.1 * 0.1 ** (0 // 30)
        assert float(outputs.loss.detach()) == pytest.approx(expected, rel=1e-6), step
        _compare(model, params, to_source, tolerance, f"after step {step + 1}")
        if step == 0:  # SGD's momentum buffers: gradient + 1e-4 x weight of the first step
            # Against the largest buffer of the model: some tensors have no true gradient at all (the bias of a
            # BatchNorm whose output goes through a 1x1 conv into another BatchNorm, which removes any constant
            # shift: ShuffleNet's branches), and their rounding noise has no scale of its own to be compared with.
            state = trainer.optimizer.optimizer.state if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer.state
            mine = {name: state[parameter]["momentum_buffer"] for name, parameter in model.named_parameters()}
            errors, scale = {}, 0.0
            for key, value in trainable.items():
                theirs = optimizer.state[value]["momentum_buffer"].double()
                name = f"mek.head.classifier.{key[3:]}" if key.startswith("fc.") else f"mek.backbone.{key}"
                buffer = mine[name][to_source] if key.startswith("fc.") else mine[name]
                errors[key] = (buffer.double() - theirs).abs().max().item()
                scale = max(scale, theirs.abs().max().item())
            worst = max(errors, key=errors.get)
            assert errors[worst] <= 1e-5 * scale, f"momentum of {worst}: {errors[worst]:.3g} (scale {scale:.3g})"
    assert not any(m.training for m in trainer.teacher.model.modules())
    assert all(not p.requires_grad and p.grad is None for p in trainer.teacher.model.parameters())

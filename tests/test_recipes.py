"""Each recipe that names a published target is its source's training: the source's values, written here from the
source code (frichickens/MEK-CV @ 3fb255f, kaggle/*.py; zyh-uaiaaaa/Mine-Extra-Knowledge @ 2ec823d, code/), against
the fully resolved configuration (recipe + defaults), row by row.

The rows cover the audit of the reproduction issue: lr / epsilon / lambda / dropout, the balance-weight rule, the
sampler, every augmentation step, the optimiser's weight decay, selection and split, passes and precision, the Swin-T
geometry and schedule, the FER-2013 test set and the ImageNet weights.
"""

from __future__ import annotations

import math

import pytest

from fer_mek.train import list_recipes, load_recipe, parse_config

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

#: Settings common to the five MEK-CV scripts (kaggle/mek_resnet18_MS-Celeb-1M.py, mek_resnet18.py, mek_resnet34.py).
MEK_CV = {
    "val_split": "permutation",          # idx = np.random.permutation(len(full_aug)); not stratified
    "val_fraction": 0.1,                 # VAL_SPLIT = 0.1
    "split_seed": 42,                    # SEED = 42; np.random.seed(SEED)
    "data_pipeline": "per-sample",       # torchvision transforms per PIL image
    "head": "conv_bn",                   # BatchNorm2d -> Dropout2d -> Conv2d(512, K, 1); logits = mean of the maps
    "head_init": "pytorch",              # the modules' own default initialisation
    "image_size": 224,                   # IMG_SIZE = CROP_SIZE = 224
    "method": "mek",
    "balance_weight_rule": "mean1",      # _inv * (NUM_CLASSES / _inv.sum())
    "single_pass": False,                # model(img), then model(img_flip)
    "balanced_sampler": True,            # WeightedRandomSampler(1 / n_label, len(train), replacement=True)
    "batch_size": 64,                    # BATCH_SIZE = 64, drop_last=True
    "crop": "padded",                    # Resize((224, 224)) -> RandomCrop(224, padding=8)
    "crop_padding": 8,                   # CROP_PADDING = 8
    "train_interpolation": "bilinear",   # torchvision Resize's default
    "rotation_interpolation": "nearest", # torchvision RandomRotation's default
    "hflip": 0.0,                        # no RandomHorizontalFlip: the paired flip is the only flip
    "auto_augment": "",                  # no RandAugment
    "re_scale": [0.02, 0.2],             # RandomErasing(p, scale=(0.02, 0.2))
    "re_mode": "torchvision",            # torchvision RandomErasing, value 0, after Normalize
    "image_mean": IMAGENET_MEAN,         # NORM_MEAN
    "image_std": IMAGENET_STD,           # NORM_STD
    "optimizer": "adam",                 # optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    "weight_decay": 1e-4,                # WEIGHT_DECAY = 1e-4 (coupled L2)
    "weight_decay_all": True,            # model.parameters(): biases and norms too
    "scheduler": "exponential",          # ExponentialLR(optimizer, gamma=0.9), once per epoch
    "gamma": 0.9,
    "clip_grad_norm": 5.0,               # GRAD_CLIP = 5.0
    "mixed_precision": "fp16",           # torch.amp.autocast("cuda") + GradScaler("cuda")
    "grad_scaler_growth_interval": 2000, # GradScaler's default
    "select_metric": "accuracy",         # if va["accuracy"] > best_val_acc
    "early_stopping_patience": 25,       # EARLY_STOP_PATIENCE = 25
    "seed": 42,
}

#: Per published checkpoint: (source, backbone, init, lr, epsilon, lambda, dropout, epochs, rotation, jitter, erasing p).
MEK_CV_RECIPES = {
    # kaggle/mek_resnet18_MS-Celeb-1M.py:110-114, 123-124, 81; LR=3e-4 injected by kaggle/tuning/prep_msceleb.py:109
    "rafdb-resnet18-msceleb": ("rafdb", "resnet18", "resnet18_msceleb.pth", 3e-4, 0.1, 2.0, 0.4, 60, 15, 0.3, 0.25),
    # kaggle/mek_resnet18.py:94-100, 63, 60 (rafdb block)
    "rafdb-resnet18-imagenet": ("rafdb", "resnet18", "timm:resnet18.tv_in1k", 3e-4, 0.1, 2.0, 0.4, 60, 15, 0.3, 0.25),
    # kaggle/mek_resnet34.py:93-99, 62, 59 (rafdb block)
    "rafdb-resnet34-imagenet": ("rafdb", "resnet34", "timm:resnet34.tv_in1k", 2e-4, 0.2, 2.0, 0.45, 60, 15, 0.3, 0.25),
    # kaggle/mek_resnet18.py:78-84, 63, 60 (fer2013 block); LR, lambda injected by kaggle/tuning/prep_fine.py:27
    "fer2013-resnet18-imagenet": ("fer2013", "resnet18", "timm:resnet18.tv_in1k", 1e-4, 0.1, 0.25, 0.4, 80, 10, 0.2, 0.5),
    # kaggle/mek_resnet34.py:77-83, 62, 59 (fer2013 block); LR, lambda injected by kaggle/tuning/prep_fine.py:30
    "fer2013-resnet34-imagenet": ("fer2013", "resnet34", "timm:resnet34.tv_in1k", 1e-4, 0.1, 0.1, 0.45, 80, 10, 0.2, 0.5),
}

#: The official MEK Swin-T training (code/configs/exp.py, code/train_exp.py, code/expression/, code/backbones/swin.py).
OFFICIAL_SWIN = {
    "source": "rafdb",
    "val_split": "none",                  # the test list is only monitored; the final checkpoint is reported
    "epoch_size": 1_000_000,              # standard_train_sample_num: the train list repeated to 1,000,000 entries
    "backbone": "swin_tiny_patch4_window7_224",
    "backbone_kwargs": {"img_size": 112, "patch_size": 2},
    "image_size": 112,                    # config.img_size = 112
    "drop_path": 0.1,                     # SwinTransformer(drop_path_rate=0.1)
    "head": "linear",                     # LayerNorm on tokens -> mean -> Linear; maps use the head weight detached
    "head_init": "pytorch",               # nn.Linear's own default initialisation
    "dropout": 0.0,
    "init": "start_0.pt",                 # torch.load("start_0.pt")["state_dict_backbone"]
    "reset_final_norm": True,             # a fresh nn.LayerNorm(768) replaces the encoder's own norm
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "method": "mek",
    "smoothing": 0.3,                     # LSR2(0.3)
    "attention_weight": 0.1,              # + 0.1 * flip_loss.mean()
    "balance_weight_rule": "official",    # the hard-coded N / (10 n_c) of RAF-DB's train counts
    "single_pass": False,                 # two forward passes
    "balanced_sampler": False,            # DistributedSampler(shuffle=True)
    "batch_size": 32,
    "data_pipeline": "per-sample",
    "crop": "random-resized",             # timm create_transform, scale (1, 1), ratio (1, 1)
    "crop_scale": [1.0, 1.0],
    "crop_ratio": [1.0, 1.0],
    "train_interpolation": "bicubic",
    "rotation": 0.0,
    "hflip": 0.5,
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "re_prob": 0.25,
    "re_mode": "pixel",
    "optimizer": "adamw",
    "lr": 5e-4 * 32 / 512,                # lr 5e-4 x total batch / 512
    "weight_decay": 0.05,
    "weight_decay_all": True,             # AdamW(model.parameters())
    "scheduler": "timm-cosine",           # timm CosineLRScheduler(t_initial=60000, warmup_t=2000, t_in_epochs=False)
    "schedule_unit": "step",
    "warmup_steps": 2000,
    "warmup_lr": 5e-7 * 32 / 512,
    "min_lr": 5e-6 * 32 / 512,
    "train_steps": 60_000,
    "clip_grad_norm": 5.0,
    "mixed_precision": "fp16",
    "grad_scaler_growth_interval": 100,   # GradScaler(growth_interval=100)
    "seed": 2048,
}


def resolved(name: str, **overrides: str) -> dict:
    """The recipe resolved as training resolves it; the data root and an init file are the only things a machine
    without the data must supply (they name no setting of the training)."""
    argv = ["--recipe", name, "--data-root", "/data/not-here"]
    init = load_recipe(name).get("init", "random")
    if init not in ("random", "timm") and not str(init).startswith("timm:"):
        argv += ["--init", "random"]  # a file the test machine does not have; its name is checked on the recipe
    config = parse_config(argv)
    return {**vars(config), "init": init}


def assert_matches(config: dict, expected: dict, name: str) -> None:
    wrong = {}
    for key, value in expected.items():
        got = config[key]
        same = math.isclose(got, value, rel_tol=1e-12) if isinstance(value, float) and got is not None else got == value
        if isinstance(value, list):
            same = [float(v) for v in got] == pytest.approx([float(v) for v in value], rel=1e-12)
        if not same:
            wrong[key] = (got, value)
    assert wrong == {}, f"{name}: (recipe, source) differ"


@pytest.mark.parametrize("name", sorted(MEK_CV_RECIPES))
def test_mek_cv_recipes_are_the_scripts_that_trained_the_checkpoints(name):
    source, backbone, init, lr, eps, lam, dropout, epochs, rotation, jitter, re_prob = MEK_CV_RECIPES[name]
    expected = {
        **MEK_CV, "source": source, "backbone": backbone, "init": init, "lr": lr, "smoothing": eps,
        "attention_weight": lam, "dropout": dropout, "epochs": epochs, "rotation": float(rotation),
        "color_jitter": [jitter, jitter, 0.0, 0.0], "re_prob": re_prob,
    }
    if source == "fer2013":
        expected["fer2013_test"] = "PublicTest+PrivateTest"  # the folder release's test/: 7,178 images
    assert_matches(resolved(name), expected, name)


def test_the_swin_recipe_is_the_official_training():
    assert_matches(resolved("rafdb-swin-t"), OFFICIAL_SWIN, "rafdb-swin-t")


def test_every_recipe_with_a_target_is_checked_here():
    targets = {name for name in list_recipes() if name != "synthetic"}
    assert targets == set(MEK_CV_RECIPES) | {"rafdb-swin-t"}


@pytest.mark.parametrize("name", sorted(MEK_CV_RECIPES) + ["rafdb-swin-t"])
def test_recipe_headers_name_source_target_and_split(name):
    from fer_mek.train import RECIPE_DIR

    text = (RECIPE_DIR / f"{name}.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "Target (test accuracy / mean-class accuracy)" in header
    assert "Source:" in header and ("MEK-CV @ 3fb255f" in header or "Mine-Extra-Knowledge @ 2ec823d" in header)
    assert "test" in header.split("Target", 1)[1].split("\n# Source", 1)[0]  # the split the target is measured on
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    cited = [line for line in settings if "#" in line]
    assert len(cited) >= 0.8 * len(settings), "nearly every setting names the line of the source it comes from"


def test_print_config_shows_every_setting(capsys):
    from fer_mek.train import TrainConfig, main

    with pytest.raises(SystemExit) as exit_info:
        main(["--recipe", "rafdb-resnet18-imagenet", "--data-root", "/data/not-here", "--print-config"])
    assert exit_info.value.code in (0, None)
    import yaml

    printed = yaml.safe_load(capsys.readouterr().out)
    import dataclasses

    assert set(printed) >= {f.name for f in dataclasses.fields(TrainConfig)}
    assert printed["balance_weight_rule"] == "mean1" and printed["lr"] == 3e-4

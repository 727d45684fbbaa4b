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


#: Both FER-2013 single-network sources, written from their code: LetheSec/Fer2013-Facial-Emotion-Recognition-Pytorch
#: @ f1f6cfd (train.py, dataset.py, utils.py, models/resnet.py) and usef-kh/fer @ 3c5de07 (train.py, data/fer2013.py,
#: utils/loops.py, utils/hparams.py, utils/setup_network.py, models/vgg.py). What they share:
FER2013_SOURCES = {
    "source": "fer2013",
    "fer2013_val": "PrivateTest",         # xval, yval = prepare_data(fer2013[Usage == 'PrivateTest'])
    "fer2013_test": "PublicTest",         # xtest, ytest = ... 'PublicTest'
    "val_split": "none",                  # train = every Training row (np.vstack with val commented out)
    "data_pipeline": "per-sample",
    "head": "linear",                     # nn.Linear classifier
    "head_init": "pytorch",
    "dropout": 0.0,                       # no dropout in front of the classifier (the VGG's is inside its features)
    "init": "random",                     # from scratch
    "image_size": 40,                     # TenCrop(40) / FiveCrop(40)
    "image_mean": [0.0, 0.0, 0.0],        # mu, st = 0, 255: Normalize(mean=(0,), std=(255,))
    "crop": "ncrop",
    "ncrop_resize": 48,                   # RandomResizedCrop(48, scale=(0.8, 1.2))
    "crop_scale": [0.8, 1.2],
    "crop_ratio": [3.0 / 4.0, 4.0 / 3.0], # torchvision's default ratio
    "train_interpolation": "bilinear",    # torchvision's default
    "auto_augment": "",
    "translate": 0.2,                     # RandomApply([RandomAffine(0, translate=(0.2, 0.2))], p=0.5)
    "translate_prob": 0.5,
    "hflip": 0.5,                         # RandomHorizontalFlip()
    "rotation": 10.0,                     # RandomApply([RandomRotation(10)], p=0.5)
    "rotation_prob": 0.5,
    "rotation_interpolation": "nearest",  # RandomRotation's default
    "re_prob": 0.5,                       # RandomErasing() / RandomErasing(p=0.5) per crop
    "re_scale": [0.02, 0.33],             # RandomErasing's default scale, ratio (0.3, 3.3), value 0
    "re_mode": "torchvision",
    "eval_crops": 10,                     # TenCrop(40); outputs summed over the crops / ncrops
    "default_tta": "tencrop_source",      # the same ten crops for evaluation and inference of the saved model
    "optimizer": "sgd",                   # torch.optim.SGD(params, lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    "nesterov": True,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "weight_decay_all": True,             # model.parameters()
    "scheduler": "plateau",               # ReduceLROnPlateau(optimizer, mode='max', factor=0.75, patience=5)
    "plateau_metric": "accuracy",         # scheduler.step(val_acc)
    "plateau_mode": "max",
    "plateau_factor": 0.75,
    "plateau_patience": 5,
    "plateau_threshold": 1e-4,            # torch's defaults from here
    "plateau_threshold_mode": "rel",
    "plateau_cooldown": 0,
    "plateau_min_lr": 0.0,
    "epochs": 300,
    "drop_last": False,                   # DataLoader(train, batch_size=bs, shuffle=True)
    "balanced_sampler": False,
    "epoch_size": 0,
    "clip_grad_norm": 0.0,                # no clipping
    "mixed_precision": "fp16",            # autocast() + GradScaler()
    "grad_scaler_growth_interval": 2000,
    "ema_decay": 0.0,
    "select_metric": "accuracy",          # best val_acc
    "early_stopping_patience": 0,         # every epoch runs
    "train_steps": 0,
    "grad_accum": 1,
}
#: What differs between them.
FER2013_SOURCE_RECIPES = {
    "fer2013-resnet18-lethesec": {
        "backbone": "lethesec_resnet18",  # get_model('ResNet18') = ResNet(BasicBlock, [2, 2, 2, 2]), 1-channel stem
        "image_std": [255.0] * 3,         # Grayscale() -> 8-bit, ToTensor /255, then Normalize /255 again
        "color_jitter": [0.5, 0.5, 0.5],  # RandomApply([ColorJitter(0.5, 0.5, 0.5)], p=0.5)
        "color_jitter_prob": 0.5,
        "train_crops": 5,                 # FiveCrop(40)
        "method": "baseline",
        "label_smoothing": 0.1,           # label_smooth True, label_smooth_value 0.1 (smooth_one_hot, KLDivLoss)
        "mixup_alpha": 1.0,               # mixup True, mixup_alpha 1.0
        "train_mode_forward": True,       # model(org_images) in train mode for the train accuracy
        "lr": 0.1,
        "batch_size": 128,
        "seed": 0,                        # --seed 0
    },
    "fer2013-vgg-khaireddin": {
        "backbone": "khaireddin_vgg",     # nets['vgg'] = vgg.Vgg() (drop 0.2 inside)
        "image_std": [1.0] * 3,           # float (mode F) image: ToTensor keeps 0-255, Normalize /255
        "color_jitter": [0.0, 0.0, 0.0],  # no ColorJitter
        "train_crops": 10,                # TenCrop(40)
        "method": "baseline",
        "label_smoothing": 0.0,           # nn.CrossEntropyLoss()
        "mixup_alpha": 0.0,
        "train_mode_forward": False,
        "lr": 0.01,                       # hps['lr'] = 0.01
        "batch_size": 64,                 # hps['bs'] = 64
        "seed": 0,                        # unseeded: fer-mek's default
    },
}
#: The --method mek twins: the same, with MEK's loss.
FER2013_MEK_TWINS = {
    "fer2013-resnet18-lethesec-mek": ("fer2013-resnet18-lethesec", 0.1),  # RSL epsilon = the source's smoothing
    "fer2013-vgg-khaireddin-mek": ("fer2013-vgg-khaireddin", 0.3),        # MEK's reference epsilon
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
    # rafdb-efficientface-ldt is checked row by row against EfficientFace's main.py in
    # tests/test_step_parity_efficientface.py; rafdb-distill-efficientface is fer-mek's own (no target).
    targets = {name for name in list_recipes() if name not in ("synthetic", "rafdb-distill-efficientface")}
    assert targets == (set(MEK_CV_RECIPES) | {"rafdb-swin-t", "rafdb-efficientface-ldt"} | set(FER2013_SOURCE_RECIPES)
                       | set(FER2013_MEK_TWINS))


@pytest.mark.parametrize("name", sorted(FER2013_SOURCE_RECIPES))
def test_the_fer2013_source_recipes_are_their_train_py(name):
    assert_matches(resolved(name), {**FER2013_SOURCES, **FER2013_SOURCE_RECIPES[name]}, name)


@pytest.mark.parametrize("name", sorted(FER2013_MEK_TWINS))
def test_the_mek_twins_differ_from_their_source_recipe_in_the_loss_only(name):
    base, epsilon = FER2013_MEK_TWINS[name]
    twin, source = resolved(name), resolved(base)
    loss = {"method", "smoothing", "label_smoothing", "attention_weight", "balance_weight_rule", "single_pass",
            "recipe", "output_dir"}
    assert {k: v for k, v in twin.items() if k not in loss} == {k: v for k, v in source.items() if k not in loss}
    assert (twin["method"], twin["smoothing"], twin["label_smoothing"]) == ("mek", epsilon, 0.0)
    assert (twin["attention_weight"], twin["balance_weight_rule"], twin["single_pass"]) == (0.1, "official", False)


@pytest.mark.parametrize("name", sorted(FER2013_SOURCE_RECIPES) + sorted(FER2013_MEK_TWINS))
def test_the_fer2013_source_recipes_cite_their_lines(name):
    from fer_mek.train import RECIPE_DIR

    text = (RECIPE_DIR / f"{name}.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "Target" in header and "PrivateTest" in header
    settings = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    if name in FER2013_SOURCE_RECIPES:
        assert "Source:" in header and ("@ f1f6cfd" in header or "@ 3c5de07" in header)
        uncited = [line for line in settings if "#" not in line]
        # the few uncited lines continue the cited line above them (e.g. re_mode after re_scale's citation)
        assert len(uncited) <= 0.1 * len(settings), uncited


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

"""The training command line (``scripts/train.py``): its options, :class:`TrainConfig`, and :func:`build_parser`.

Light (see :mod:`fer_mek_cli`): the standard library and PyYAML only, so ``--help``, ``--version`` and a usage error
answer without importing torch; :func:`main` imports :mod:`fer_mek.train` only to run the command. The dataclass of
every training option (with its help), the choices, the packaged recipes' folder and the parser are written here once;
:mod:`fer_mek.train.config` re-exports them under the same names and holds the rest (recipes' loading, validation,
``--print-config``, the run-folder checks).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .arguments import add_version_argument
from .defaults import (  # the official MEK augmentation
    COLOR_JITTER,
    CROP_RATIO,
    CROP_SCALE,
    CROPS,
    FER2013_TEST_SPLITS,
    HFLIP,
    RAND_AUGMENT,
    RE_PROB,
    ROTATION,
    SOURCE_ROOTS,
    SYNTHETIC_IMAGE_SIZE,
    SYNTHETIC_NUM_IMAGES,
    VAL_SPLITS,
)

__all__ = [
    "CHOICES",
    "DESCRIPTION",
    "DICT_OPTIONS",
    "LIST_OPTIONS",
    "RECIPE_DIR",
    "TrainConfig",
    "build_parser",
    "list_recipes",
    "main",
]

#: The command line's description (``--help``).
DESCRIPTION = """Train a MEK facial-expression classifier: ``accelerate launch scripts/train.py [--recipe NAME] [options]``
(or ``python -m fer_mek.train``).

With no arguments it runs the ``synthetic`` recipe: MEK on the embedded synthetic expression set, leaving a complete,
loadable, evaluated run folder. A recipe (``fer_mek/train/recipes/<name>.yaml`` or a path) sets the published
configurations; command-line options override the recipe; options no recipe sets keep the defaults below, which are
the official MEK hyper-parameters. Runs on one CPU, one GPU or many (``accelerate config`` / ``accelerate launch``).

Run folder (``--output-dir``):
    best/, last/                 save_pretrained folders (safetensors, config with id2label, preprocessor, code)
    checkpoint/                  state for --resume (model, optimizer, scheduler, RNG, EMA; no pickle runs code)
    results.json                 validation and test metrics, class counts, balance weights, init, versions, time
    confusion_matrix.png         test confusion matrix of the chosen checkpoint (row-normalised)
    training_curves.png          losses and validation metrics per epoch
    train_config.yaml            the resolved configuration
    logs/                        TensorBoard logs (when tensorboard is installed)

The test split is evaluated once, at the end, on the checkpoint chosen on validation (with --val-split none: on the
final checkpoint, which best/ then holds too). --print-config shows every option's resolved value and exits.
"""

#: The packaged recipes (package data): ``<name>.yaml`` per published configuration, in ``fer_mek/train/recipes``
#: (located without importing :mod:`fer_mek`, whose ``__init__`` loads torch).
RECIPE_DIR = Path(importlib.util.find_spec("fer_mek").submodule_search_locations[0]) / "train" / "recipes"


@dataclass
class TrainConfig:
    """Every option of a training run. Field metadata holds the command-line help."""

    recipe: str = field(default="synthetic", metadata={"help": "recipe name in fer_mek/train/recipes/ (e.g. rafdb-resnet18-imagenet) or a YAML path; options given on the command line override it"})
    # Data
    source: str = field(default="synthetic", metadata={"help": "dataset source: synthetic, rafdb, fer2013, folder or hub"})
    data_root: str | None = field(default=None, metadata={"help": "dataset root (file, folder or Hub id) for every source but synthetic"})
    val_split: str = field(default="stratified", metadata={"help": "validation split: stratified (a stratified --val-fraction of train), permutation (MEK-CV: np.random.seed(--split-seed), the first int(N x --val-fraction) of np.random.permutation(N) over train in (class, file name) order; not stratified) or none (train on all of train, no per-epoch validation; the final checkpoint is reported)"})
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of train held out for validation (in (0, 1); unused with --val-split none)"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/validation split (recorded in results.json)"})
    fer2013_test: str = field(default="PrivateTest", metadata={"help": "fer2013 CSV: the test split: PrivateTest (3,589 images), PublicTest, or PublicTest+PrivateTest (7,178: the test/ folder of the image-folder release, on which MEK-CV reports)"})
    fer2013_val: str = field(default="", metadata={"help": "fer2013 CSV: validate on this Usage (PrivateTest or PublicTest) instead of a part of train: train keeps every Training row (--val-split and --val-fraction unused), as both FER-2013 single-network sources (validation = PrivateTest, test = PublicTest); '' (default): validation carved from train by --val-split"})
    epoch_size: int = field(default=0, metadata={"help": "samples per epoch: 0 = one pass over train; N = the train list repeated in order to N entries and shuffled each epoch (official MEK: 1000000)"})
    synthetic_images: int = field(default=SYNTHETIC_NUM_IMAGES, metadata={"help": "synthetic source: number of images (train+validation+test)"})
    synthetic_image_size: int = field(default=SYNTHETIC_IMAGE_SIZE, metadata={"help": "synthetic source: side of the generated images (draw them at the model's input size to skip a resize)"})
    data_pipeline: str = field(default="cached", metadata={"help": "cached: decode and resize every image once into a memory-mapped uint8 cache, augment whole batches on the device (fast); per-sample: PIL decode + timm transforms per image in DataLoader workers (any timm auto-augment policy)"})
    skip_bad: bool = field(default=False, metadata={"help": "skip unreadable images and bad rows (listed in results.json) instead of stopping"})
    # Model
    backbone: str = field(default="resnet18", metadata={"help": "timm backbone name, e.g. resnet18, resnet34, swin_tiny_patch4_window7_224"})
    backbone_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "keyword arguments of timm.create_model for the backbone; on the command line a JSON object, e.g. '{\"img_size\": 112, \"patch_size\": 2}' (--drop-path adds drop_path_rate)"})
    head: str = field(default="linear", metadata={"help": "linear (MEK reference) or conv_bn (published MEK ResNet layout)"})
    head_init: str = field(default="pytorch", metadata={"help": "head initialisation: pytorch (PyTorch's default nn.Linear / nn.Conv2d init, as both MEK sources and every fer-mek model so far) or normal (N(0, 0.02) weights, zero bias)"})
    init: str = field(default="random", metadata={"help": "initial weights: random, timm (timm's default pretrained weights), timm:NAME.TAG (e.g. timm:resnet18.tv_in1k = torchvision IMAGENET1K_V1; needs the Hub or its cache), a file: a torchvision/timm state_dict (e.g. an MS-Celeb-1M ResNet) or the official MEK Swin checkpoint (start_0.pt), or a saved fer-mek model (a folder such as runs/NAME/best, or a Hub id) with any classes: its backbone loads, its classifier too when the classes are the same, else the classifier starts fresh (fine-tuning to a new label set; results.json says what loaded)"})
    reset_final_norm: bool = field(default=False, metadata={"help": "after --init, reset the backbone's final norm to weight 1 / bias 0 (official MEK Swin: a fresh LayerNorm before the head)"})
    image_size: int = field(default=224, metadata={"help": "input side in pixels (the published recipes use 224)"})
    image_mean: list[float] | None = field(default=None, metadata={"help": "normalisation mean, 3 values (default: ImageNet's); saved with the model, so evaluation and inference use it too"})
    image_std: list[float] | None = field(default=None, metadata={"help": "normalisation standard deviation, 3 values (default: ImageNet's)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout before the classifier"})
    drop_path: float = field(default=0.0, metadata={"help": "stochastic depth rate of the backbone (timm drop_path_rate)"})
    method: str = field(default="mek", metadata={"help": "mek (RSL + attention consistency on the flipped pair), baseline (plain cross-entropy) or ldt (label-distribution training, EfficientFace: the cross-entropy between a frozen --teacher's class distribution and the student's, optionally mixed with RSL by --distill-weight and with the attention term by --distill-attention)"})
    smoothing: float = field(default=0.3, metadata={"help": "MEK re-balanced label smoothing epsilon"})
    attention_weight: float = field(default=0.1, metadata={"help": "MEK attention consistency weight lambda"})
    balance_weight_rule: str = field(default="official", metadata={"help": "MEK balance weights from the train class counts: official (w_c = N / (10 n_c)) or mean1 (inverse frequency normalised to mean 1, MEK-CV)"})
    single_pass: bool = field(default=True, metadata={"help": "MEK: one forward pass over [x; flip(x)] instead of the reference's two (BatchNorm statistics then span both halves; measured faster at 64-112 px and slower at 224 px on a 2-core CPU: see BENCHMARKS.md)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "baseline: uniform label smoothing as the FER-2013 sources' smooth_one_hot (true class 1 - s, every other class s / (K - 1); loss KL(targets || softmax), mean over the batch: cross-entropy with soft targets, same gradient); 0: plain cross-entropy. MEK has its own, re-balanced smoothing (--smoothing)"})
    mixup_alpha: float = field(default=0.0, metadata={"help": "mixup (Zhang et al.): lambda ~ Beta(alpha, alpha), images mixed with a random permutation of the batch, loss lambda * L(y) + (1 - lambda) * L(y[perm]) (baseline: with --label-smoothing; MEK: on the RSL term, the attention term on the mixed image and its flip as usual); 0: off. Drawn from (seed, epoch, step, process), so resumed runs equal straight ones (LetheSec: 1.0)"})
    # Label-distribution training (--method ldt)
    teacher: str = field(default="", metadata={"help": "ldt: the frozen teacher: a fer-mek model folder (e.g. runs/NAME/best), a transformers image-classification folder, or a Hub id; it runs in eval mode, without gradient, with its own image size and normalisation on the same augmented image the student sees"})
    teacher_revision: str = field(default="", metadata={"help": "ldt: Hub revision (branch, tag or commit) of a Hub --teacher ('': the default branch); recorded with the resolved commit"})
    teacher_label_map: str = field(default="", metadata={"help": "ldt: how the teacher's classes map to the student's: '' (the teacher's class names and their order must equal the student's, else an error lists both), by-name (reorder the teacher's classes by name; every student class must be among them) or explicit pairs 'teacher_name=student_name,...' covering every student class"})
    distill_temperature: float = field(default=1.0, metadata={"help": "ldt: temperature T > 0: softmax(teacher / T) against log_softmax(student / T), the loss x T^2 when T != 1 (Hinton); 1: EfficientFace"})
    distill_weight: float = field(default=1.0, metadata={"help": "ldt: alpha in [0, 1]: loss = alpha x distillation + (1 - alpha) x RSL (the re-balanced smooth hard label, --smoothing; 0 for plain cross-entropy) [+ lambda x RAC with --distill-attention]; 1: the teacher's distribution only (EfficientFace)"})
    distill_reduction: str = field(default="batchmean", metadata={"help": "ldt: batchmean (per-sample cross-entropy averaged over the batch, on the hard-label loss's scale) or elementwise (torch.mean over batch x classes of -p_teacher x log p_student: EfficientFace main.py:248, 1/K of batchmean)"})
    distill_attention: bool = field(default=False, metadata={"help": "ldt: add MEK's re-balanced attention consistency on the image and its flip, weighted by --attention-weight (lambda)"})
    # Optimisation
    epochs: int = field(default=40, metadata={"help": "number of epochs (unused when --train-steps > 0)"})
    batch_size: int = field(default=64, metadata={"help": "batch size per process"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    optimizer: str = field(default="adamw", metadata={"help": "adamw, adam or sgd (timm create_optimizer_v2; sgd is torch.optim.SGD with --momentum and --nesterov)"})
    momentum: float = field(default=0.9, metadata={"help": "sgd: momentum factor (torch.optim.SGD momentum; timm's and both FER-2013 sources' 0.9); unused by adam / adamw"})
    nesterov: bool = field(default=True, metadata={"help": "sgd: Nesterov momentum (torch.optim.SGD nesterov=True: timm's 'sgd', as LetheSec and usef-kh/fer use); --no-nesterov: classical momentum (timm's 'momentum'); unused by adam / adamw"})
    lr: float | None = field(default=None, metadata={"help": "learning rate; default: 5e-4 x total batch / 512 (official MEK rule)"})
    weight_decay: float = field(default=0.05, metadata={"help": "weight decay (adam: L2 added to the gradient; adamw: decoupled)"})
    weight_decay_all: bool = field(default=False, metadata={"help": "decay every parameter (both MEK sources) instead of excluding biases and norms"})
    scheduler: str = field(default="cosine", metadata={"help": "cosine (transformers' cosine with linear warm-up), timm-cosine (timm's CosineLRScheduler stepped as the official MEK loop: step_update(global_step) after each optimizer step), exponential (x gamma after every epoch), step (torch StepLR: x gamma every --step-size epochs, EfficientFace), plateau (torch ReduceLROnPlateau stepped once per epoch on the validation --plateau-metric, as both FER-2013 sources) or constant"})
    schedule_unit: str = field(default="step", metadata={"help": "cosine and timm-cosine: change the learning rate after every optimizer step or only at epoch ends (exponential and step are always per epoch)"})
    warmup_epochs: float = field(default=1.0, metadata={"help": "linear warm-up length in epochs (cosine, timm-cosine)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up length in optimizer steps; > 0 overrides --warmup-epochs"})
    warmup_lr: float = field(default=0.0, metadata={"help": "learning rate the warm-up starts from"})
    min_lr: float = field(default=0.0, metadata={"help": "floor of the cosine schedules"})
    gamma: float = field(default=0.9, metadata={"help": "decay of the exponential scheduler (per epoch) and of the step scheduler (per --step-size epochs; torch StepLR's default 0.1, EfficientFace's --factor)"})
    step_size: int = field(default=30, metadata={"help": "step scheduler: epochs between two decays by --gamma (torch StepLR step_size; EfficientFace's --af 30); epoch e runs at lr x gamma^(e // step_size)"})
    plateau_metric: str = field(default="accuracy", metadata={"help": "plateau: the validation metric the scheduler watches (the FER-2013 sources: accuracy)"})
    plateau_mode: str = field(default="max", metadata={"help": "plateau: max (the metric should rise, as every --plateau-metric does) or min; ReduceLROnPlateau mode"})
    plateau_factor: float = field(default=0.1, metadata={"help": "plateau: learning rate x factor on a plateau (torch's default 0.1; the FER-2013 sources 0.75)"})
    plateau_patience: int = field(default=10, metadata={"help": "plateau: epochs without improvement before the rate drops (torch's default 10; the FER-2013 sources 5)"})
    plateau_threshold: float = field(default=1e-4, metadata={"help": "plateau: minimal relative (--plateau-threshold-mode rel) or absolute (abs) change that counts as an improvement (torch's default 1e-4, rel)"})
    plateau_threshold_mode: str = field(default="rel", metadata={"help": "plateau: rel or abs (ReduceLROnPlateau threshold_mode; torch's default rel, scale-free: a metric in percent or as a fraction behaves the same)"})
    plateau_cooldown: int = field(default=0, metadata={"help": "plateau: epochs to wait after a drop before counting again (torch's default 0)"})
    plateau_min_lr: float = field(default=0.0, metadata={"help": "plateau: floor of the learning rate (torch's default 0)"})
    train_steps: int = field(default=0, metadata={"help": "> 0: train exactly this many optimizer steps (the schedule's length; the last epoch is cut) instead of --epochs"})
    clip_grad_norm: float = field(default=5.0, metadata={"help": "gradient norm clipping (0: off)"})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16 (autocast; fp16 with a GradScaler), or auto: bf16 where the device computes in bf16 natively (a GPU of compute capability 8.0+, a CPU with AVX-512 BF16 or AMX), else no; the run prints what it uses and why, and results.json records it"})
    grad_scaler_growth_interval: int = field(default=2000, metadata={"help": "fp16: optimizer steps without inf/NaN gradients before the GradScaler doubles its scale (torch's default 2000; official MEK 100)"})
    channels_last: bool = field(default=True, metadata={"help": "channels-last memory format for model and inputs (faster convolutions; their results differ from the NCHW layout the MEK sources use in the last bits, which near-zero gradients amplify: --no-channels-last for a bit-level reproduction)"})
    fused_optimizer: bool = field(default=True, metadata={"help": "torch's fused Adam/AdamW kernel (one kernel per step; its results differ from torch's default implementation, which the MEK sources use, in the last bits: --no-fused-optimizer for a bit-level reproduction)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (slow start, faster steps on a GPU)"})
    ema_decay: float = field(default=0.0, metadata={"help": "EMA of the weights (timm ModelEmaV3) with this decay; 0: off. Evaluation and saved weights use the EMA"})
    train_mode_forward: bool = field(default=False, metadata={"help": "after every training step, one more forward pass in training mode over the step's un-mixed batch, without gradient: BatchNorm's running statistics (the ones evaluation uses) then also follow the clean images, as LetheSec's train-accuracy pass model(org_images) does (train.py:207-213; the source runs it in fp32, fer-mek under the run's autocast)"})
    drop_last: bool = field(default=True, metadata={"help": "drop the last, incomplete training batch of every epoch (fer-mek's default); --no-drop-last keeps it, as torch's DataLoader default that both FER-2013 sources use"})
    balanced_sampler: bool = field(default=False, metadata={"help": "sample classes equally often: weights 1/n_label, drawn with replacement (WeightedRandomSampler)"})
    # Augmentation (training; the per-sample pipeline runs every option, the cached one a subset)
    crop: str = field(default="random-resized", metadata={"help": "random-resized (timm RandomResizedCrop: --crop-scale, --crop-ratio; rotation before it), padded (MEK-CV: Resize to the input size, RandomCrop with --crop-padding, rotation after it) or ncrop (the FER-2013 sources: torchvision RandomResizedCrop to --ncrop-resize with --crop-scale / --crop-ratio, colour jitter (--color-jitter-prob), translation (--translate), flip, rotation (--rotation-prob), then --train-crops crops of --image-size, every crop a training sample with its own random erasing; per-sample pipeline)"})
    ncrop_resize: int = field(default=48, metadata={"help": "crop ncrop: side of the random resized crop that the --train-crops crops of --image-size are cut from (the FER-2013 sources: 48, the images' own size); with --eval-crops, evaluation images are resized to it before their crops"})
    train_crops: int = field(default=5, metadata={"help": "crop ncrop: 5 (torchvision FiveCrop: corners and centre; LetheSec) or 10 (TenCrop: the five and their horizontal flips; usef-kh/fer) crops per image, each a sample: a batch of --batch-size images trains on batch x crops samples"})
    default_tta: str = field(default="none", metadata={"help": "the test-time augmentation saved with the model (its image processor's default_tta), used by evaluation, predict and the demo: none, flip, tencrop or tencrop_source (the FER-2013 sources' ten 40-px crops of the 48-px image, logits averaged; what --eval-crops 10 does during training)"})
    eval_crops: int = field(default=1, metadata={"help": "validation and test during training: 1 (the image processor's single view) or 10 (the image resized to --ncrop-resize, TenCrop to --image-size, the logits of the ten crops averaged: both FER-2013 sources' Ncrop evaluation)"})
    crop_scale: list[float] = field(default_factory=lambda: list(CROP_SCALE), metadata={"help": "random-resized crop: area range, 2 values"})
    crop_ratio: list[float] = field(default_factory=lambda: list(CROP_RATIO), metadata={"help": "random-resized crop: aspect-ratio range, 2 values"})
    crop_padding: int = field(default=0, metadata={"help": "padded crop: zero padding on each side before the random crop (MEK-CV 8)"})
    train_interpolation: str = field(default="bilinear", metadata={"help": "training resize/crop interpolation: bilinear, bicubic (official MEK), nearest (padded crop only) or random (timm's, random-resized only)"})
    rotation: float = field(default=ROTATION, metadata={"help": "random rotation in [-deg, +deg] (0: off); before the crop with --crop random-resized, after it with padded"})
    rotation_prob: float = field(default=1.0, metadata={"help": "crop ncrop: probability of the random rotation (torchvision RandomApply; the FER-2013 sources 0.5)"})
    translate: float = field(default=0.0, metadata={"help": "crop ncrop: random translation up to this fraction of the width / height (torchvision RandomAffine(0, translate=(t, t)); the FER-2013 sources 0.2); 0: off"})
    translate_prob: float = field(default=1.0, metadata={"help": "crop ncrop: probability of the random translation (RandomApply; the FER-2013 sources 0.5)"})
    rotation_interpolation: str = field(default="bilinear", metadata={"help": "rotation interpolation: bilinear, nearest (torchvision's default; MEK-CV) or bicubic"})
    hflip: float = field(default=HFLIP, metadata={"help": "random horizontal flip probability (MEK-CV 0: the paired flip is the only one)"})
    color_jitter: list[float] = field(default_factory=lambda: [COLOR_JITTER] * 3, metadata={"help": "colour jitter brightness, contrast, saturation[, hue]; as in timm only applied without --auto-augment"})
    color_jitter_prob: float = field(default=1.0, metadata={"help": "crop ncrop: probability of the colour jitter (RandomApply; LetheSec 0.5)"})
    auto_augment: str = field(default=RAND_AUGMENT, metadata={"help": "timm RandAugment policy ('' for none)"})
    re_prob: float = field(default=RE_PROB, metadata={"help": "random erasing probability"})
    re_scale: list[float] = field(default_factory=lambda: [0.02, 1.0 / 3.0], metadata={"help": "random erasing: area range of the box, 2 values"})
    re_mode: str = field(default="const", metadata={"help": "random erasing fill: timm's const, pixel or rand, or torchvision (torchvision.transforms.RandomErasing, value 0 after normalisation, ratio (0.3, 3.3): MEK-CV)"})
    # Selection and stopping
    select_metric: str = field(default="mean_class_accuracy", metadata={"help": "validation metric that chooses the best checkpoint"})
    early_stopping_patience: int = field(default=0, metadata={"help": "stop after this many epochs without improvement (0: off)"})
    # Run
    output_dir: str = field(default="runs/fer-mek", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing run folder"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --output-dir from its last checkpoint"})
    checkpoint_every: int = field(default=0, metadata={"help": "also checkpoint every N optimizer steps (0: at epoch ends only)"})
    max_steps: int = field(default=0, metadata={"help": "stop after N optimizer steps in total, leaving a resumable checkpoint (0: no limit; for smoke tests; see --train-steps for a run of N steps)"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, sampling and augmentation"})
    num_workers: int = field(default=-1, metadata={"help": "DataLoader workers per process; -1: automatic (the CPU cores a process can spare)"})
    log_with: str = field(default="tensorboard", metadata={"help": "tracker: tensorboard or none"})

    def __post_init__(self) -> None:
        # Canonical values (a recipe's `rotation: 15` or `crop_scale: [1, 1]` is the float option): what
        # train_config.yaml and --print-config show. Values that are not numbers are left for validate_config.
        for name in LIST_OPTIONS:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in value):
                setattr(self, name, [float(v) for v in value])
        for name in ("rotation", "hflip", "warmup_lr", "min_lr"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))
        if isinstance(self.backbone_kwargs, dict):
            self.backbone_kwargs = dict(self.backbone_kwargs)


CHOICES = {
    "source": tuple(SOURCE_ROOTS),
    "val_split": VAL_SPLITS,
    "fer2013_test": FER2013_TEST_SPLITS,
    "data_pipeline": ("cached", "per-sample"),
    "head": ("linear", "conv_bn"),
    "head_init": ("pytorch", "normal"),
    "method": ("mek", "baseline", "ldt"),
    "distill_reduction": ("batchmean", "elementwise"),
    "balance_weight_rule": ("official", "mean1"),
    "optimizer": ("adamw", "adam", "sgd"),
    "scheduler": ("cosine", "timm-cosine", "exponential", "step", "plateau", "constant"),
    "plateau_metric": ("accuracy", "mean_class_accuracy", "macro_f1"),
    "plateau_mode": ("max", "min"),
    "plateau_threshold_mode": ("rel", "abs"),
    "schedule_unit": ("step", "epoch"),
    "mixed_precision": ("no", "bf16", "fp16", "auto"),
    "crop": CROPS,
    "fer2013_val": ("", "PrivateTest", "PublicTest"),
    "train_crops": (5, 10),
    "eval_crops": (1, 10),
    "default_tta": ("none", "flip", "tencrop", "tencrop_source"),
    "train_interpolation": ("bilinear", "bicubic", "nearest", "random"),
    "rotation_interpolation": ("bilinear", "nearest", "bicubic"),
    "re_mode": ("const", "pixel", "rand", "torchvision"),
    "select_metric": ("mean_class_accuracy", "accuracy", "macro_f1"),
    "log_with": ("tensorboard", "none"),
}
#: List-valued options and the numbers of values they take (``nargs`` on the command line).
LIST_OPTIONS: dict[str, tuple[int, ...]] = {
    "crop_scale": (2,), "crop_ratio": (2,), "re_scale": (2,), "color_jitter": (3, 4), "image_mean": (3,),
    "image_std": (3,),
}
#: Options that are a mapping (a JSON object on the command line).
DICT_OPTIONS = ("backbone_kwargs",)


def _field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


# ----------------------------------------------------------------------------------------------- recipes
def list_recipes(recipe_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the recipes in ``recipe_dir`` (default: the packaged :data:`RECIPE_DIR`)."""
    folder = Path(recipe_dir) if recipe_dir is not None else RECIPE_DIR
    return sorted(path.stem for path in folder.glob("*.yaml"))


# ----------------------------------------------------------------------------------------------- command line
def _json_object(text: str) -> dict[str, Any]:
    """``--backbone-kwargs``: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}; give an object, e.g. "
                                         "'{\"img_size\": 112, \"patch_size\": 2}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object; give one, e.g. '{{\"img_size\": 112}}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    """One ``--long-flag`` per :class:`TrainConfig` field (booleans also take ``--no-...``; list options take their
    values one after the other, ``--crop-scale 0.8 1.0``; ``--backbone-kwargs`` a JSON object), and
    ``--print-config``. Unset flags stay absent from the parsed namespace, so a recipe's values are only overridden
    by options actually given."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS
    )
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = _field_default(f)
        help_text = f"{f.metadata['help']} (default: {'none' if default is None else default!r})".replace("%", "%%")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif f.name in LIST_OPTIONS:
            counts = LIST_OPTIONS[f.name]
            parser.add_argument(flag, type=float, nargs=counts[0] if len(counts) == 1 else "+", metavar="X",
                                help=help_text)
        elif f.name in DICT_OPTIONS:
            parser.add_argument(flag, type=_json_object, metavar="JSON", help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            parser.add_argument(flag, type=kind, choices=CHOICES.get(f.name), help=help_text, metavar=None)
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration (defaults < recipe < command line: every option and "
                             "its value) as YAML, a recipe in itself, and exit without training or touching "
                             "--output-dir")
    add_version_argument(parser)
    return parser


# ----------------------------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/train.py``: parse the command line first (``--help``, ``--version`` and a usage error answer here,
    without heavy imports), then run :func:`fer_mek.train.cli_main` on the same ``argv``. Returns its exit status."""
    build_parser().parse_args(argv)
    from fer_mek.train import cli_main

    return cli_main(None if argv is None else list(argv))

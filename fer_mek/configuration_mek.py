"""Configuration of MEK models.

This file is copied flat next to saved weights for ``trust_remote_code=True`` loading: it may only import its
siblings with single-dot relative imports, never ``fer_mek`` itself.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedConfig

from .labels import RAFDB_LABELS
from .losses import BALANCE_WEIGHT_RULES
from .losses import balance_weight_values as _balance_weights_from_counts

HEADS = ("linear", "conv_bn")
#: How a fresh model's classifier is initialised (see :class:`MEKConfig`).
HEAD_INITS = ("normal", "pytorch")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MEKConfig(PreTrainedConfig):
    r"""Configuration of a MEK facial-expression classifier over a timm backbone.

    MEK: Zhang et al., "Leave No Stone Unturned: Mine Extra Knowledge for Imbalanced Facial Expression Recognition",
    NeurIPS 2023.

    Args:
        backbone (`str`, defaults to `"resnet18"`):
            Any timm model name (with or without a pretrained tag, e.g. `"resnet18.a1_in1k"`). The model's final
            feature map, before pooling, gives the class attention maps. See `timm.list_models()` for names.
        backbone_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model` (e.g. `{"drop_path_rate": 0.1}`).
        head (`str`, defaults to `"linear"`):
            `"linear"`: spatially averaged features -> `Linear`, the maps use the head weight without gradient (the
            MEK reference). `"conv_bn"`: `BatchNorm2d -> Dropout2d -> 1x1 Conv2d` producing the maps, logits = spatial
            mean of the maps (the layout of the published MEK ResNet checkpoints).
        dropout (`float`, defaults to 0.0):
            Dropout before the classifier (`Dropout` for `"linear"`, `Dropout2d` for `"conv_bn"`).
        image_size (`int`, defaults to 224):
            Side of the square input image. Preprocessing resizes to it.
        image_mean (`list[float]`, defaults to ImageNet's mean):
            Per-channel mean used to normalise inputs (RGB order).
        image_std (`list[float]`, defaults to ImageNet's std):
            Per-channel standard deviation used to normalise inputs.
        smoothing (`float`, defaults to 0.3):
            Mass epsilon of the re-balanced smooth labels (RSL).
        attention_weight (`float`, defaults to 0.1):
            Weight lambda of the re-balanced attention consistency loss (RAC).
        class_counts (`list[int]`, *optional*):
            Training samples per class (label order); gives the balance weights by `balance_weight_rule`. Every class
            needs at least one sample.
        balance_weights (`list[float]`, *optional*):
            Explicit per-class balance weights; use instead of `class_counts`. With neither, all weights are 1.
        balance_weight_rule (`str`, defaults to `"official"`):
            How `class_counts` give the balance weights. `"official"`: `w_c = N / (10 n_c)` with `N` the number of
            training samples (the official MEK code). `"mean1"`: `w_c = (1 / n_c) K / sum_j (1 / n_j)`, inverse
            frequency normalised to mean 1, rounded to float32 (MEK-CV's scripts, which trained the published ResNet
            checkpoints). Same proportions, different scale: it scales the attention term. Configs saved before this
            argument existed load as `"official"`.
        head_init (`str`, defaults to `"pytorch"`):
            Initialisation of a fresh model's classifier. `"pytorch"`: PyTorch's default `reset_parameters()` of the
            `nn.Linear` / `nn.Conv2d` (weight kaiming-uniform with `a = sqrt(5)`, bias uniform in
            `+-1 / sqrt(fan_in)`), drawn once when the layer is built, as both MEK sources' heads have; what fer-mek
            models have always had. `"normal"`: weight `N(0, initializer_range)`, bias 0. Loaded weights are never
            re-initialised; a classifier missing from a loaded file gets this init.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of the classifier (`head_init="normal"`).
        num_labels, id2label, label2id:
            The classes. Defaults to RAF-DB's seven expressions in RAF-DB order (surprise, fear, disgust, happy,
            sad, angry, neutral).

    Fine-tuning to another label set: `MEKForImageClassification.from_pretrained(folder, id2label=...,
    label2id=..., ignore_mismatched_sizes=True)` (or `num_labels=...`) keeps every loaded weight except the
    classifier (the only layer whose shape depends on the classes), which gets `head_init`; a `"conv_bn"` head keeps
    its loaded `BatchNorm2d` (it normalises features, not classes). The saved `class_counts` / `balance_weights`
    describe the old classes and are dropped: pass the new training set's `class_counts=[...]` (or
    `balance_weights=[...]`) to `from_pretrained`, or call `model.set_balance_weights(class_counts)` later;
    without them the balance weights are uniform (1.0 per class) and a `UserWarning` says so.

    Example:
        >>> from fer_mek import MEKConfig, MEKForImageClassification
        >>> config = MEKConfig(backbone="resnet18", class_counts=[1290, 281, 717, 4772, 1982, 705, 2524])
        >>> model = MEKForImageClassification(config)
    """

    model_type = "fer-mek"
    #: What `transformers.Trainer.prediction_step` leaves out of the predictions: the outputs besides the logits, so
    #: that `compute_metrics` receives the logits alone (`np.argmax(predictions, axis=1)` works). Not saved.
    keys_to_ignore_at_inference = ["attention_maps", "pooler_output", "last_hidden_state", "smooth_label_loss",
                                   "attention_loss"]

    def __init__(
        self,
        backbone: str = "resnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        head: str = "linear",
        dropout: float = 0.0,
        image_size: int = 224,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        smoothing: float = 0.3,
        attention_weight: float = 0.1,
        class_counts: Sequence[int] | None = None,
        balance_weights: Sequence[float] | None = None,
        initializer_range: float = 0.02,
        balance_weight_rule: str = "official",
        head_init: str = "pytorch",
        **kwargs: Any,
    ):
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(enumerate(RAFDB_LABELS))
        if kwargs.get("id2label") is not None and kwargs.get("label2id") is None:
            kwargs["label2id"] = {name: int(i) for i, name in kwargs["id2label"].items()}
        self.backbone = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.head = head
        self.dropout = float(dropout)
        self.image_size = int(image_size)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.smoothing = float(smoothing)
        self.attention_weight = float(attention_weight)
        self.class_counts = None if class_counts is None else [int(n) for n in class_counts]
        self.balance_weights = None if balance_weights is None else [float(w) for w in balance_weights]
        self.initializer_range = float(initializer_range)
        self.balance_weight_rule = balance_weight_rule
        self.head_init = head_init
        super().__init__(**kwargs)
        self.validate_mek()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """`PreTrainedConfig.from_dict`, with a new label set and new balance weights taken in before validation.

        transformers builds the config from the saved dict and only then sets keyword arguments such as `id2label`:
        with another label set the saved `class_counts` would no longer fit. Here the label arguments and
        `class_counts` / `balance_weights` enter the dict first, and when the classes change, the saved counts and
        weights (of the old classes) are dropped (see the class docstring).
        """
        config_dict = dict(config_dict)
        new_id2label = _requested_id2label(kwargs, config_dict)
        if new_id2label is not None:
            for key in ("num_labels", "id2label", "label2id"):
                kwargs.pop(key, None)
            config_dict.pop("num_labels", None)
            config_dict["id2label"] = new_id2label
            config_dict["label2id"] = {name: i for i, name in new_id2label.items()}
        given = {key: kwargs.pop(key) for key in ("class_counts", "balance_weights") if key in kwargs}
        # The other MEK arguments too, so that they are validated as in MEKConfig(...) (head_init="xavier" raises).
        config_dict.update({key: kwargs.pop(key) for key in _MEK_ARGUMENTS if key in kwargs})
        if given:
            config_dict["class_counts"] = given.get("class_counts")
            config_dict["balance_weights"] = given.get("balance_weights")
        elif new_id2label is not None:
            old = [key for key in ("class_counts", "balance_weights") if config_dict.get(key) is not None]
            if old:
                warnings.warn(
                    f"the new label set ({len(new_id2label)} classes: {', '.join(map(str, new_id2label.values()))}) "
                    f"replaces the saved one, whose {' and '.join(old)} no longer apply: the balance weights are "
                    "uniform (1.0 per class); pass class_counts=[...] (train samples per new class) to "
                    "from_pretrained, or call model.set_balance_weights(class_counts)",
                    UserWarning,
                    stacklevel=2,
                )
            config_dict["class_counts"] = config_dict["balance_weights"] = None
        return super().from_dict(config_dict, **kwargs)

    def validate_mek(self) -> None:
        """Check the MEK arguments; raises `ValueError` saying what to change."""
        import timm  # imported here so that reading a config does not import timm's model zoo eagerly

        from .efficientface import efficientface  # noqa: F401  (registers EfficientFace)
        from .fer_backbones import lethesec_resnet18  # noqa: F401  (registers the FER-2013 reference backbones)

        if not isinstance(self.backbone, str) or not timm.is_model(self.backbone):
            family = re.match(r"[A-Za-z]*", str(self.backbone)).group(0) or ""
            raise ValueError(
                f"unknown backbone {self.backbone!r}; try timm.list_models({family + '*'!r}) for valid names "
                f"(timm {timm.__version__})"
            )
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {HEADS}")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"unknown head_init {self.head_init!r}; choose one of {HEAD_INITS}")
        if self.balance_weight_rule not in BALANCE_WEIGHT_RULES:
            raise ValueError(
                f"unknown balance_weight_rule {self.balance_weight_rule!r}; choose one of {BALANCE_WEIGHT_RULES}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} must have 3 values (RGB), got {getattr(self, name)}")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.attention_weight < 0:
            raise ValueError(f"attention_weight must be >= 0, got {self.attention_weight}")
        if self.class_counts is not None and self.balance_weights is not None:
            raise ValueError("give class_counts or balance_weights, not both")
        for name in ("class_counts", "balance_weights"):
            values = getattr(self, name)
            if values is not None and len(values) != self.num_labels:
                raise ValueError(
                    f"{name} has {len(values)} entries but the model has {self.num_labels} labels: give one per class, "
                    "in label order (for a new label set, the new training set's class_counts; see MEKConfig)"
                )
        if self.class_counts is not None:
            _balance_weights_from_counts(self.class_counts, self.balance_weight_rule)  # raises on a class without samples
        if self.balance_weights is not None and any(not w > 0 for w in self.balance_weights):
            raise ValueError(f"balance_weights must be positive, got {self.balance_weights}")

    def get_balance_weights(self) -> list[float]:
        """The per-class balance weights the losses use: explicit, from `class_counts` by `balance_weight_rule`, or
        all ones."""
        if self.balance_weights is not None:
            return list(self.balance_weights)
        if self.class_counts is not None:
            return _balance_weights_from_counts(self.class_counts, self.balance_weight_rule)
        return [1.0] * self.num_labels


# MEKConfig's own arguments (those of __init__ besides **kwargs).
_MEK_ARGUMENTS = tuple(name for name in inspect.signature(MEKConfig.__init__).parameters if name not in ("self", "kwargs"))


def _requested_id2label(kwargs: Mapping[str, Any], config_dict: Mapping[str, Any]) -> dict[int, str] | None:
    """The label set that `num_labels` / `id2label` / `label2id` in `kwargs` ask for, when it differs from the saved
    one in `config_dict`; else None. `num_labels` alone keeps the saved names when the count is unchanged (as
    transformers does) and names the classes `LABEL_i` otherwise."""
    saved = config_dict.get("id2label")
    saved = None if saved is None else {int(i): name for i, name in saved.items()}
    if kwargs.get("id2label") is not None:
        wanted = {int(i): name for i, name in kwargs["id2label"].items()}
    elif kwargs.get("label2id") is not None:
        wanted = {int(i): name for name, i in kwargs["label2id"].items()}
    elif kwargs.get("num_labels") is not None:
        count = int(kwargs["num_labels"])
        if saved is not None and len(saved) == count:
            return None
        wanted = {i: f"LABEL_{i}" for i in range(count)}
    else:
        return None
    if sorted(wanted) != list(range(len(wanted))):
        raise ValueError(f"id2label must number the classes 0..{len(wanted) - 1}, got ids {sorted(wanted)}")
    if kwargs.get("num_labels") is not None and int(kwargs["num_labels"]) != len(wanted):
        raise ValueError(f"num_labels={kwargs['num_labels']} but id2label / label2id name {len(wanted)} classes")
    wanted = {i: wanted[i] for i in range(len(wanted))}
    label2id = kwargs.get("label2id")
    if label2id is not None and {name: int(i) for name, i in label2id.items()} != {n: i for i, n in wanted.items()}:
        raise ValueError(f"label2id {dict(label2id)} does not invert id2label {wanted}")
    return None if wanted == saved else wanted


__all__ = ["MEKConfig"]

"""MEK facial-expression classifiers as transformers models over any timm backbone.

Zhang et al., "Leave No Stone Unturned: Mine Extra Knowledge for Imbalanced Facial Expression Recognition",
NeurIPS 2023.

This file is copied flat next to saved weights for ``trust_remote_code=True`` loading: it may only import its
siblings with single-dot relative imports, never ``fer_mek`` itself.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.utils import ModelOutput

from .configuration_mek import MEKConfig
from .efficientface import efficientface  # noqa: F401  (registers it with timm)
from .fer_backbones import khaireddin_vgg, lethesec_resnet18  # noqa: F401  (registers them with timm)
from .losses import MEKLoss

#: What ``save_pretrained`` writes into ``config.json`` so that every Auto class finds the remote code.
AUTO_MAP = {
    "AutoConfig": "configuration_mek.MEKConfig",
    "AutoModel": "modeling_mek.MEKModel",
    "AutoModelForImageClassification": "modeling_mek.MEKForImageClassification",
    "AutoImageProcessor": "image_processing_mek.MEKImageProcessor",
}
# The code files a saved folder needs besides this one (their own relative imports are followed).
_REMOTE_CODE_FILES = ("modeling_mek.py", "image_processing_mek.py")


def remote_code_files() -> list[Path]:
    """The package's own code files that a saved folder needs for ``trust_remote_code=True``: ``modeling_mek.py``,
    ``image_processing_mek.py`` and every file they import relatively; resolved paths, no duplicates, sorted by name.
    ``save_pretrained`` copies exactly these."""
    here = Path(__file__).resolve().parent
    files = {}
    for name in _REMOTE_CODE_FILES:
        for source in [here / name, *map(Path, get_relative_import_files(str(here / name)))]:
            files[source.name] = source.resolve()
    return [files[name] for name in sorted(files)]


@dataclass
class MEKModelOutput(ModelOutput):
    """Output of :class:`MEKModel`.

    Args:
        logits: Classification scores before softmax, ``[B, K]``.
        attention_maps: Class attention maps ``[B, K, h, w]``; their spatial mean equals the logits up to the bias.
        pooler_output: Spatially averaged features that the classifier sees, ``[B, C]``.
        last_hidden_state: The backbone's final feature map, ``[B, C, h, w]`` (always channels-first).
    """

    logits: torch.Tensor | None = None
    attention_maps: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


@dataclass
class MEKImageClassifierOutput(ModelOutput):
    """Output of :class:`MEKForImageClassification`.

    Args:
        loss: With ``labels``: the re-balanced smooth-label loss; with ``labels`` and ``flipped_pixel_values``: the
            full MEK loss ``RSL + attention_weight * RAC``.
        logits: Classification scores before softmax, ``[B, K]``.
        attention_maps: Class attention maps ``[B, K, h, w]``.
        pooler_output: Spatially averaged features, ``[B, C]``.
        smooth_label_loss: The RSL term alone (when ``labels`` are given).
        attention_loss: The RAC term alone, before weighting (when ``flipped_pixel_values`` are given too).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    attention_maps: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    smooth_label_loss: torch.Tensor | None = None
    attention_loss: torch.Tensor | None = None


def _head_layer(layer: nn.Module, role: str) -> nn.Module:
    """Mark a head layer for :meth:`MEKPreTrainedModel._init_weights`.

    transformers initialises module by module and, for code outside transformers, skips every module whose own
    parameters are all loaded, which includes any module without parameters of its own, such as the head containers:
    so the init is dispatched on these layers. ``_mek_drawn`` records whether the constructor drew PyTorch's default
    init (it did not when ``from_pretrained`` builds the model on the meta device).
    """
    layer._mek_role = role
    layer._mek_drawn = layer.weight.device.type != "meta"
    return layer


class MEKLinearHead(nn.Module):
    """Average pooling -> dropout -> ``Linear``; maps ``A[k] = sum_c W[k, c] F[c]`` with ``W`` detached (reference)."""

    def __init__(self, num_features: int, num_labels: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = _head_layer(nn.Linear(num_features, num_labels), "classifier")

    def forward(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = feature_map.mean(dim=(2, 3))
        logits = self.classifier(self.dropout(pooled))
        # MEK's reference builds the maps from the head weight's `.data`: the attention loss trains the backbone only.
        weight = self.classifier.weight.detach().to(feature_map.dtype)
        maps = torch.einsum("bchw,kc->bkhw", feature_map, weight)
        return logits, maps, pooled


class MEKConvBNHead(nn.Module):
    """``BatchNorm2d -> Dropout2d -> 1x1 Conv2d`` giving the maps; logits = spatial mean of the maps.

    The layout of the published MEK ResNet checkpoints (``bn``, ``classifier``).
    """

    def __init__(self, num_features: int, num_labels: int, dropout: float = 0.0):
        super().__init__()
        self.bn = _head_layer(nn.BatchNorm2d(num_features), "norm")
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = _head_layer(nn.Conv2d(num_features, num_labels, kernel_size=1), "classifier")

    def forward(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        normalized = self.dropout(self.bn(feature_map))
        maps = self.classifier(normalized)
        return maps.mean(dim=(2, 3)), maps, normalized.mean(dim=(2, 3))


_HEADS = {"linear": MEKLinearHead, "conv_bn": MEKConvBNHead}


def create_backbone(config: MEKConfig) -> nn.Module:
    """The timm model of ``config.backbone`` without pooling or classifier, randomly initialised.

    Pretrained weights are never downloaded here (transformers re-initialises and meta-loads models); load them after
    construction with :func:`fer_mek.convert.load_backbone_weights`.
    """
    return timm.create_model(config.backbone, pretrained=False, num_classes=0, global_pool="", **config.backbone_kwargs)


def backbone_feature_map(backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The final feature map of a timm model as ``[B, C, h, w]``, whatever layout the model uses.

    CNNs give NCHW; Swin-style models NHWC (``output_fmt``); ViT-style models tokens, whose prefix tokens (class,
    registers) are dropped and whose patch tokens are laid back on their grid.
    """
    features = backbone.forward_features(pixel_values)
    if features.ndim == 4:
        return features.permute(0, 3, 1, 2) if getattr(backbone, "output_fmt", "NCHW") == "NHWC" else features
    if features.ndim == 3 and hasattr(backbone, "patch_embed"):
        tokens = features[:, getattr(backbone, "num_prefix_tokens", 0) :]
        if hasattr(backbone.patch_embed, "dynamic_feat_size"):
            height, width = backbone.patch_embed.dynamic_feat_size(pixel_values.shape[-2:])
        else:
            height, width = backbone.patch_embed.grid_size
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)
    raise ValueError(
        f"cannot build class attention maps from {type(backbone).__name__}: forward_features gave shape "
        f"{tuple(features.shape)}; use a CNN, Swin or ViT-style timm model"
    )


def reset_like_pytorch(layer: nn.Linear | nn.Conv2d) -> None:
    """PyTorch's default ``reset_parameters()`` of an ``nn.Linear`` / ``nn.Conv2d``, through transformers' guarded
    init functions (which leave tensors that ``from_pretrained`` loaded alone).

    Weight: kaiming-uniform with ``a = sqrt(5)``, i.e. uniform in ``+-1 / sqrt(fan_in)``; bias: uniform in
    ``+-1 / sqrt(fan_in)``. Same draws, in the same order, from the same generator as ``layer.reset_parameters()``.
    """
    init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    if layer.bias is not None:
        fan_in = layer.weight[0].numel()  # in_features, or in_channels / groups * kernel area
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(layer.bias, -bound, bound)


class MEKPreTrainedModel(PreTrainedModel):
    """Base class: weight initialisation, saving with remote code, and backbone weight loading."""

    config_class = MEKConfig
    config: MEKConfig
    base_model_prefix = "mek"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["MEKModel"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Only the head is ours to initialise: the backbone keeps timm's own initialisation (or loaded weights).
        # `transformers.initialization` skips parameters already loaded by `from_pretrained`.
        role = getattr(module, "_mek_role", None)
        if role == "classifier":
            if self.config.head_init == "normal":
                init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
                init.zeros_(module.bias)
            elif not module._mek_drawn:
                # "pytorch": the constructor's own reset_parameters() is that init (one draw, as in the sources); only
                # a layer built on the meta device and missing from the loaded file needs it drawn here.
                reset_like_pytorch(module)
        elif role == "norm":
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        if isinstance(module, MEKLoss):
            # A buffer that is not saved: rebuilt from the config when from_pretrained builds on the meta device.
            module.balance_weights = torch.tensor(self.config.get_balance_weights(), dtype=torch.float32)
        # timm buffers that are not saved (e.g. Swin's relative position index) must be rebuilt after meta loading.
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """``PreTrainedModel.from_pretrained``, with the loaded tensors moved into memory of their own.

        Tensors loaded from safetensors can be views into the memory-mapped file at 8-byte alignment; BLAS then
        takes another code path and the logits differ from the saved model's in the last bits. Fresh allocations
        make a save/load round trip bit-exact, and free the file (so that it can be overwritten while loaded).
        """
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        with torch.no_grad():
            for module in model.modules():
                for tensors in (module._parameters, module._buffers):
                    for name, tensor in tensors.items():
                        if tensor is not None and tensor.device.type == "cpu":
                            if isinstance(tensor, nn.Parameter):
                                tensor.data = tensor.data.clone()
                            else:
                                tensors[name] = tensor.clone()
        return loaded

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """Save weights (safetensors), ``config.json`` with a complete ``auto_map``, the code that
        ``trust_remote_code=True`` needs and, unless present, a ``preprocessor_config.json`` from the config."""
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        save_directory = Path(save_directory)
        for source in remote_code_files():
            shutil.copyfile(source, save_directory / source.name)
        if not (save_directory / "preprocessor_config.json").exists():
            from .image_processing_mek import MEKImageProcessor

            MEKImageProcessor.from_model_config(self.config).save_pretrained(save_directory)


class MEKModel(MEKPreTrainedModel):
    """Backbone and classification head: logits and class attention maps, no loss.

    This is what ``AutoModel`` loads; :class:`MEKForImageClassification` adds the MEK losses.
    """

    def __init__(self, config: MEKConfig):
        super().__init__(config)
        self.backbone = create_backbone(config)
        self.head = _HEADS[config.head](self.backbone.num_features, config.num_labels, config.dropout)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs: Any) -> MEKModelOutput | tuple:
        """Args:
        pixel_values: Normalised images ``[B, 3, H, W]`` (see :class:`MEKImageProcessor`).
        """
        feature_map = backbone_feature_map(self.backbone, pixel_values)
        logits, maps, pooled = self.head(feature_map)
        output = MEKModelOutput(logits=logits, attention_maps=maps, pooler_output=pooled, last_hidden_state=feature_map)
        return output if return_dict is not False else output.to_tuple()


class MEKForImageClassification(MEKPreTrainedModel):
    """MEK classifier: :class:`MEKModel` plus the MEK training losses.

    ``forward(pixel_values)`` gives logits and attention maps; with ``labels`` the re-balanced smooth-label loss;
    with ``labels`` and ``flipped_pixel_values`` (the exact horizontal flip of ``pixel_values``) the full MEK loss.
    Trained with labels but without ``flipped_pixel_values`` while ``attention_weight > 0``, it warns once (MEK's
    attention term is then missing); with ``transformers.Trainer``, ``fer_mek.hf_trainer.MEKDataCollator`` adds them.
    """

    def __init__(self, config: MEKConfig):
        super().__init__(config)
        config.validate_mek()  # attributes set after the config was built (e.g. a new id2label) must still fit
        self.mek = MEKModel(config)
        self.loss_fn = MEKLoss(config.get_balance_weights(), config.smoothing, config.attention_weight)
        self.post_init()

    def set_balance_weights(self, class_counts: list[int] | None = None, balance_weights: list[float] | None = None) -> None:
        """Set the losses' balance weights (and the config) from the train class counts or explicit weights."""
        self.config.class_counts = None if class_counts is None else [int(n) for n in class_counts]
        self.config.balance_weights = None if balance_weights is None else [float(w) for w in balance_weights]
        self.config.validate_mek()
        weights = torch.tensor(self.config.get_balance_weights(), device=self.loss_fn.balance_weights.device)
        self.loss_fn.balance_weights = weights

    def _warn_without_flipped_images(self) -> None:
        """Once per model: training with labels but without ``flipped_pixel_values`` drops MEK's attention term."""
        if getattr(self, "_mek_warned_without_flip", False):
            return
        self._mek_warned_without_flip = True
        warnings.warn(
            f"MEKForImageClassification is training without flipped_pixel_values: the loss is the smooth-label term "
            f"alone, without MEK's attention consistency term (attention_weight={self.loss_fn.attention_weight}). "
            "Pass flipped_pixel_values=pixel_values.flip(-1) (with transformers.Trainer: "
            "data_collator=fer_mek.hf_trainer.MEKDataCollator()), or build the model with attention_weight=0 to train "
            "without it",
            UserWarning,
            stacklevel=3,
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        flipped_pixel_values: torch.Tensor | None = None,
        single_pass: bool = False,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MEKImageClassifierOutput | tuple:
        """Args:
        pixel_values: Normalised images ``[B, 3, H, W]``.
        labels: Class indices ``[B]``; when given, the loss is computed.
        flipped_pixel_values: ``pixel_values`` flipped horizontally (``pixel_values.flip(-1)`` of the same augmented
            image); with ``labels``, adds the attention consistency term.
        single_pass: Run the backbone once over ``[pixel_values; flipped_pixel_values]`` instead of twice (the
            reference). Faster; in training mode BatchNorm then normalises with statistics of both halves together
            (and updates its running statistics once per step, not twice). In eval mode the two are equal.
        """
        if flipped_pixel_values is not None and labels is None:
            raise ValueError("flipped_pixel_values only enter the training loss: pass labels too")
        if flipped_pixel_values is not None and flipped_pixel_values.shape != pixel_values.shape:
            raise ValueError(
                f"flipped_pixel_values has shape {tuple(flipped_pixel_values.shape)}, "
                f"pixel_values {tuple(pixel_values.shape)}: they must be the same images, flipped"
            )
        flipped_maps = None
        if flipped_pixel_values is not None and single_pass:
            both = self.mek(torch.cat([pixel_values, flipped_pixel_values]))
            half = pixel_values.shape[0]
            output = MEKModelOutput(
                logits=both.logits[:half],
                attention_maps=both.attention_maps[:half],
                pooler_output=None if both.pooler_output is None else both.pooler_output[:half],
                last_hidden_state=both.last_hidden_state[:half],
            )
            flipped_maps = both.attention_maps[half:]
        else:
            output = self.mek(pixel_values)
            if flipped_pixel_values is not None:
                flipped_maps = self.mek(flipped_pixel_values).attention_maps
        loss = terms = None
        if labels is not None and flipped_maps is None and self.training and self.loss_fn.attention_weight > 0:
            self._warn_without_flipped_images()
        if labels is not None:
            terms = self.loss_fn(
                output.logits,
                labels.to(output.logits.device),
                output.attention_maps if flipped_maps is not None else None,
                flipped_maps,
                output_dict=True,
            )
            loss = terms["loss"]
        result = MEKImageClassifierOutput(
            loss=loss,
            logits=output.logits,
            attention_maps=output.attention_maps,
            pooler_output=output.pooler_output,
            smooth_label_loss=None if terms is None else terms["smooth_label_loss"],
            attention_loss=None if terms is None else terms.get("attention_loss"),
        )
        return result if return_dict is not False else result.to_tuple()


__all__ = [
    "MEKForImageClassification",
    "MEKImageClassifierOutput",
    "MEKModel",
    "MEKModelOutput",
    "MEKPreTrainedModel",
    "remote_code_files",
]

"""EfficientFace (Zhao, Liu & Zhou, "Robust Lightweight Facial Expression Recognition Network with Label Distribution
Training", AAAI 2021) as the timm model ``efficientface``.

Written from the facts of the authors' code, zengqunzhao/EfficientFace (commit 8d195375), ``models/EfficientFace.py``
and ``models/modulator.py`` (no source code copied); the parameter and buffer names are the source's, so its released
``state_dict`` (``Pretrained_EfficientFace.tar``, the RAF-DB / CAER-S / AffectNet models, after stripping the
``module.`` prefix of ``DataParallel``) loads with ``strict=True``:

- ``conv1``: ``Conv2d(3, 29, 3, stride 2, padding 1, no bias)`` + BatchNorm + ReLU (EfficientFace.py:156-160);
  ``maxpool``: ``MaxPool2d(3, 2, 1)`` (EfficientFace.py:163).
- ``stage2``, ``stage3``, ``stage4``: ShuffleNet-V2 ``InvertedResidual`` blocks, 4, 8 and 4 of them, 116, 232 and 464
  channels, the first of each with stride 2 (EfficientFace.py:165-171, 197-198). A block (EfficientFace.py:103-142):
  stride 2: ``branch1`` = [depthwise 3x3 stride 2, BN, 1x1 conv, BN, ReLU] on the input, ``branch2`` = [1x1 conv, BN,
  ReLU, depthwise 3x3, BN, 1x1 conv, BN, ReLU] on the input, concatenated; stride 1: the input is split in two channel
  halves, the second goes through ``branch2``; then a channel shuffle with two groups.
- ``local``: the local feature extractor on the max-pool output (EfficientFace.py:32-100, built as
  ``LocalFeatureExtractor(29, 116, 1)`` at :173): the map is cut into four quadrants, each goes through its own
  [depthwise conv 3x3 stride 2 (29 -> 116 channels, groups 29), BN, ReLU, depthwise 3x3 (groups 116), BN, ReLU], and
  the four results are put back in place. Which quadrant goes through which convs (EfficientFace.py:63-98):
  ``conv1_*`` top-left, ``conv2_*`` bottom-left, ``conv3_*`` top-right, ``conv4_*`` bottom-right. The source cuts at
  the fixed indices 0:28 / 28:56 of the 56x56 map of a 224-px input; here the cut is at ``H // 2``, ``W // 2``, which
  is the same at 224 px and also works at other input sizes (multiples of 16 px give maps that fit stage2's).
- ``modulator``: ``Modulator(116)`` (modulator.py:51-59, EfficientFace.py:174) on stage2's output: ``att =
  sigmoid(channel_gate(x) * spatial_gate(x))``, output ``att * x``. Channel gate (modulator.py:11-27, reduction 16,
  one hidden layer): global average pool -> ``gate_c_fc_0`` ``Linear(116, 7)`` -> ``gate_c_bn_1`` ``BatchNorm1d(7)``
  -> ReLU -> ``gate_c_fc_final`` ``Linear(7, 116)``, one value per channel. Spatial gate (modulator.py:30-48):
  ``gate_s_conv_reduce0`` 1x1 conv 116 -> 7 + BN + ReLU, two 3x3 convs with dilation 4 and padding 4
  (``gate_s_conv_di_0/1``) + BN + ReLU, ``gate_s_conv_final`` 1x1 conv 7 -> 1, one value per position. The source's
  channel pooling is ``avg_pool2d(x, x.size(2))`` (modulator.py:26), a global mean for the square maps it is built
  for (a non-square map makes its ``Flatten`` -> ``Linear`` fail); here it pools over the whole ``(H, W)`` window,
  the same operation on square maps.
- ``forward``: ``x = maxpool(conv1(x)); x = modulator(stage2(x)) + local(x); x = stage4(stage3(x)); x = conv5(x)``
  (1x1 conv 464 -> 1024, BN, ReLU: EfficientFace.py:176-180), then the mean over ``H, W`` and ``fc`` ``Linear(1024,
  num_classes)`` (EfficientFace.py:182-194).

Initialisation: PyTorch's defaults, as in the source (it initialises nothing itself).

Parameters: 1,275,293 with 7 classes (the paper's "1.28 M"), 1,268,118 without ``fc``.

timm interface (as :mod:`fer_mek.fer_backbones`): ``forward_features`` returns the ``[B, 1024, h, w]`` map of
``conv5`` (7x7 at 224 px, 2x2 at 64 px), ``forward_head(x, pre_logits)`` the source's mean -> ``fc``;
``num_features`` 1024, ``get_classifier`` / ``reset_classifier(num_classes, global_pool)`` with ``global_pool``
``"avg"`` or ``""`` (no pooling), ``feature_info``. fer-mek's ``"linear"`` MEK head (spatial mean -> dropout ->
``Linear``) on ``forward_features`` is therefore the source's head, and its class attention maps decompose its logits.

Training note: the channel gate's ``BatchNorm1d`` sees one value per image, so in training mode a batch of one image
is an error (in PyTorch and in the source alike).

This file is copied flat beside saved weights for ``trust_remote_code=True`` loading (``modeling_mek.py`` imports it
so that the name is registered): standard library, torch and timm imports only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EfficientFace", "efficientface"]

#: ``efficient_face()`` of the source (EfficientFace.py:197-198): blocks per stage and channels of
#: conv1, stage2, stage3, stage4, conv5.
STAGES_REPEATS = (4, 8, 4)
STAGES_OUT_CHANNELS = (29, 116, 232, 464, 1024)


def _check_pool(global_pool: str) -> str:
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool must be 'avg' or '' (no pooling), got {global_pool!r}")
    return global_pool


def _depthwise(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d:
    """3x3 conv with padding 1, groups = ``in_channels``, no bias (the source's ``depthwise_conv``, EfficientFace.py:17)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    """``Conv2d`` (no bias) + BatchNorm + ReLU as a Sequential (keys ``0.weight``, ``1.*``), the source's conv1 / conv5."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: channels ``[g0 c0, g0 c1, ..., g1 c0, ...]`` -> ``[g0 c0, g1 c0, g0 c1, ...]``."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class InvertedResidual(nn.Module):
    """ShuffleNet-V2 unit (EfficientFace.py:103-142); ``branch1`` exists only with stride > 1."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2, 3):
            raise ValueError(f"stride must be 1, 2 or 3, got {stride}")
        half = out_channels // 2
        if stride == 1 and in_channels != 2 * half:
            raise ValueError(f"a stride-1 unit keeps its channels: in_channels {in_channels} != out_channels {2 * half}")
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(in_channels, in_channels, stride),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_channels if stride > 1 else half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            _depthwise(half, half, stride),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, processed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(processed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class LocalFeatureExtractor(nn.Module):
    """Four quadrants, each through its own two depthwise convs + BN + ReLU, put back in place (EfficientFace.py:32-100).

    ``conv1_*``: top-left, ``conv2_*``: bottom-left, ``conv3_*``: top-right, ``conv4_*``: bottom-right; the cut is at
    ``H // 2``, ``W // 2`` (the source's fixed 28 of a 56x56 map, i.e. the same at 224 px).
    """

    def __init__(self, in_channels: int, out_channels: int, index: int = 1) -> None:
        super().__init__()
        self.index = index  # kept as in the source's signature; unused there too
        self.relu = nn.ReLU()
        for patch in range(1, 5):
            self.add_module(f"conv{patch}_1", _depthwise(in_channels, out_channels, 2))
            self.add_module(f"bn{patch}_1", nn.BatchNorm2d(out_channels))
            self.add_module(f"conv{patch}_2", _depthwise(out_channels, out_channels, 1))
            self.add_module(f"bn{patch}_2", nn.BatchNorm2d(out_channels))

    def _patch(self, x: torch.Tensor, patch: int) -> torch.Tensor:
        x = self.relu(getattr(self, f"bn{patch}_1")(getattr(self, f"conv{patch}_1")(x)))
        return self.relu(getattr(self, f"bn{patch}_2")(getattr(self, f"conv{patch}_2")(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2] // 2, x.shape[-1] // 2
        top_left = self._patch(x[..., :height, :width], 1)
        bottom_left = self._patch(x[..., height:, :width], 2)
        top_right = self._patch(x[..., :height, width:], 3)
        bottom_right = self._patch(x[..., height:, width:], 4)
        left = torch.cat((top_left, bottom_left), dim=2)
        right = torch.cat((top_right, bottom_right), dim=2)
        return torch.cat((left, right), dim=3)


class ChannelGate(nn.Module):
    """Global average pool -> Linear -> BatchNorm1d -> ReLU -> Linear: one attention logit per channel
    (modulator.py:11-27; ``gate_c`` keys as the source's)."""

    def __init__(self, channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction_ratio
        self.gate_c = nn.Sequential(OrderedDict([
            ("gate_c_fc_0", nn.Linear(channels, hidden)),
            ("gate_c_bn_1", nn.BatchNorm1d(hidden)),
            ("gate_c_relu_1", nn.ReLU()),
            ("gate_c_fc_final", nn.Linear(hidden, channels)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, kernel_size=tuple(x.shape[-2:])).flatten(1)
        return self.gate_c(pooled)[:, :, None, None]


class SpatialGate(nn.Module):
    """1x1 reduction, two dilated 3x3 convs (dilation 4), 1x1 to one map: one attention logit per position
    (modulator.py:30-48; ``gate_s`` keys as the source's)."""

    def __init__(self, channels: int, reduction_ratio: int = 16, dilation_conv_num: int = 2, dilation: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction_ratio
        layers: list[tuple[str, nn.Module]] = [
            ("gate_s_conv_reduce0", nn.Conv2d(channels, hidden, 1)),
            ("gate_s_bn_reduce0", nn.BatchNorm2d(hidden)),
            ("gate_s_relu_reduce0", nn.ReLU()),
        ]
        for i in range(dilation_conv_num):
            layers += [
                (f"gate_s_conv_di_{i}", nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation)),
                (f"gate_s_bn_di_{i}", nn.BatchNorm2d(hidden)),
                (f"gate_s_relu_di_{i}", nn.ReLU()),
            ]
        layers.append(("gate_s_conv_final", nn.Conv2d(hidden, 1, 1)))
        self.gate_s = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_s(x)


class Modulator(nn.Module):
    """``x * sigmoid(channel_gate(x) * spatial_gate(x))`` (modulator.py:51-59)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channel_att = ChannelGate(channels)
        self.spatial_att = SpatialGate(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.channel_att(x) * self.spatial_att(x)) * x


class EfficientFace(nn.Module):
    """EfficientFace (EfficientFace.py:145-194): conv1, maxpool, stage2 + modulator (+ local features), stage3, stage4,
    conv5, mean, fc.

    Args:
        stages_repeats: Blocks of stage2, stage3, stage4 ((4, 8, 4)).
        stages_out_channels: Channels of conv1, stage2, stage3, stage4, conv5 ((29, 116, 232, 464, 1024)).
        num_classes: ``fc`` outputs (7, EfficientFace.py:147); 0 for none.
        in_chans: Input channels (3).
        global_pool: ``"avg"`` (the source's mean over H, W) or ``""`` (none: ``forward`` returns the feature map).
    """

    def __init__(self, stages_repeats: tuple[int, ...] = STAGES_REPEATS,
                 stages_out_channels: tuple[int, ...] = STAGES_OUT_CHANNELS, num_classes: int = 7, in_chans: int = 3,
                 global_pool: str = "avg") -> None:
        super().__init__()
        if len(stages_repeats) != 3 or len(stages_out_channels) != 5:
            raise ValueError(f"stages_repeats needs 3 values and stages_out_channels 5, got {list(stages_repeats)} and "
                             f"{list(stages_out_channels)}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = _check_pool(global_pool)
        self.conv1 = _conv_bn_relu(in_chans, stages_out_channels[0], 3, 2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        previous = stages_out_channels[0]
        for index, (repeats, channels) in enumerate(zip(stages_repeats, stages_out_channels[1:4], strict=True)):
            blocks = [InvertedResidual(previous, channels, 2)]
            blocks += [InvertedResidual(channels, channels, 1) for _ in range(repeats - 1)]
            self.add_module(f"stage{index + 2}", nn.Sequential(*blocks))
            previous = channels
        self.local = LocalFeatureExtractor(stages_out_channels[0], stages_out_channels[1], 1)
        self.modulator = Modulator(stages_out_channels[1])
        self.conv5 = _conv_bn_relu(previous, stages_out_channels[4], 1, 1)
        self.num_features = self.head_hidden_size = stages_out_channels[4]
        self.feature_info = [
            dict(num_chs=stages_out_channels[0], reduction=2, module="conv1"),
            dict(num_chs=stages_out_channels[1], reduction=8, module="stage2"),  # + modulator and local features
            dict(num_chs=stages_out_channels[2], reduction=16, module="stage3"),
            dict(num_chs=stages_out_channels[3], reduction=32, module="stage4"),
            dict(num_chs=stages_out_channels[4], reduction=32, module="conv5"),
        ]
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = _check_pool(global_pool)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        global_features = self.modulator(self.stage2(x))
        local_features = self.local(x)
        if global_features.shape[-2:] != local_features.shape[-2:]:
            raise ValueError(
                f"EfficientFace: stage2 gives a {tuple(global_features.shape[-2:])} map but the four local patches "
                f"{tuple(local_features.shape[-2:])}; use an input side that is a multiple of 16 px (224 as the source)"
            )
        x = self.stage4(self.stage3(global_features + local_features))
        return self.conv5(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def efficientface(pretrained: bool = False, **kwargs: Any) -> EfficientFace:
    """EfficientFace as the source's ``efficient_face()`` (EfficientFace.py:197-198): 1,275,293 parameters with 7
    classes. Its MS-Celeb-1M pretrained weights are a file (``Pretrained_EfficientFace.tar``), not timm weights: train
    with ``--init Pretrained_EfficientFace.tar`` (its 12666-class ``fc`` is dropped)."""
    if pretrained:
        raise ValueError("there are no pretrained timm weights for efficientface; load the source's "
                         "Pretrained_EfficientFace.tar instead (fer-mek train --init FILE, or "
                         "fer_mek.convert.load_backbone_weights(model, FILE))")
    for name in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(name, None)
    return EfficientFace(**kwargs)


# Registered once: the remote-code copy of this file (another module name) leaves the package's registration alone.
if not timm.is_model("efficientface"):
    timm.models.register_model(efficientface)

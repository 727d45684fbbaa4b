"""The two FER-2013 single-network references as timm models: ``lethesec_resnet18`` and ``khaireddin_vgg``.

- ``lethesec_resnet18``: the CIFAR-style ResNet-18 of LetheSec/Fer2013-Facial-Emotion-Recognition-Pytorch (73.70 %
  ten-crop accuracy on FER-2013 PrivateTest), ``models/resnet.py`` there: a 3x3 stride-1 stem on one grey channel
  without max-pooling (resnet.py:79-80), four stages of two ``BasicBlock`` (64, 128, 256, 512 channels, strides 1, 2, 2,
  2; 1x1 conv + BatchNorm shortcuts where the shape changes, resnet.py:14-39, 81-93), then ``F.avg_pool2d(out, 4)``,
  flatten and ``Linear(512, 7)`` (resnet.py:85, 101-103). Input: 40-px crops of the 48-px images (``TenCrop(40)`` /
  ``FiveCrop(40)``, dataset.py:84, 100).
- ``khaireddin_vgg``: the VGG variant of usef-kh/fer (Khaireddin & Chen, arXiv:2105.03588, 73.28 %), ``models/vgg.py``
  there: four stages of two 3x3 conv (with bias) + BatchNorm + ReLU and a 2x2 max-pool (64, 128, 256, 512 channels,
  vgg.py:10-34, 41-56), flatten of the 512x2x2 map, ``Linear(2048, 4096)`` -> Dropout -> ReLU -> ``Linear(4096,
  4096)`` -> Dropout -> ReLU (vgg.py:36-39, 59-61) and ``Linear(4096, 7)`` (vgg.py:69-73). Input: 40-px crops
  (``TenCrop(40)``, data/fer2013.py:54, 66). Dropout 0.2: ``Vgg(drop=0.2)`` is built without arguments
  (utils/setup_network.py:12); the ``drop: 0.1`` of utils/hparams.py:12 never reaches the model.

Both are written from those descriptions (no source code copied); their parameter and buffer names are the sources'
(``conv1``, ``layer1.0.shortcut.0``, ``linear``; ``conv1a``, ``bn4b``, ``lin1``, ``lin3``), so the sources' published
``state_dict`` loads into them. PyTorch's default initialisation, as in the sources (neither initialises anything).

Grey input: both sources feed one grey channel (``Conv2d(1, 64, ...)``). fer-mek's processor always gives three
channels; with ``in_chans=1`` (the default, the sources') an input of three channels is reduced to one by the
ITU-R 601-2 luma weights of PIL's ``convert("L")`` (what LetheSec's ``transforms.Grayscale()`` does, dataset.py:83).
A grey image replicated into three equal channels (FER-2013's images, or ``do_grayscale``) gives back its channel, up
to rounding (the weights sum to 1). ``in_chans=3`` builds a three-channel stem instead (not the sources').

timm interface: ``forward_features`` (``[B, C, h, w]``), ``forward_head(x, pre_logits)``, ``num_features``,
``get_classifier`` / ``reset_classifier(num_classes, global_pool)``; ``global_pool`` is ``"avg"`` or ``""`` (no
pooling, as fer-mek's MEK heads use the models). The sources' heads are reproduced so that fer-mek's ``"linear"``
MEK head (spatial mean -> dropout -> ``Linear``) on ``forward_features`` *is* the source's head:

- ResNet: ``avg_pool2d(out, 4)`` of the 5x5 map of a 40-px crop reads only its top-left 4x4 window (a 48-px image
  gives 6x6, read the same way). ``forward_features`` returns that window (``source_window=True``, the default), so
  the mean over it equals the source's pooling; ``source_window=False`` returns the whole map (a global average
  instead: not the source, but a map whose mirror image is the mirror image's map, for MEK's attention term).
- VGG: the map is the 4096-d output of ``lin2`` as ``[B, 4096, 1, 1]``, so the head's ``Linear(4096, K)`` is ``lin3``.
  MEK's attention maps on it are 1x1 (class scores): the source has no spatial map after its fully connected layers.
  The flatten needs a 2x2 map (inputs of 32-47 px); other sizes raise ``ValueError`` (the source's ``view(-1, 2048)``
  would silently mix images of a batch).

This file is copied flat beside saved weights for ``trust_remote_code=True`` loading (``modeling_mek.py`` imports it
so that the names are registered): standard library, torch and timm imports only.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KhaireddinVgg", "LetheSecResNet", "khaireddin_vgg", "lethesec_resnet18", "to_grey"]

#: ITU-R 601-2 luma weights, those of PIL's ``Image.convert("L")``.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def to_grey(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """``x`` ``[B, C, H, W]`` with the channels the stem takes: three channels reduced to one grey channel by the
    luma weights when the stem has one, else ``x`` as it is."""
    if in_chans == 1 and x.shape[1] == 3:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    if x.shape[1] != in_chans:
        raise ValueError(f"the stem takes {in_chans} channel(s) (or 3, reduced to grey), got {x.shape[1]}")
    return x


def _check_pool(global_pool: str) -> str:
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool must be 'avg' or '' (no pooling), got {global_pool!r}")
    return global_pool


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm, identity or 1x1 conv + BatchNorm shortcut, ReLU after the sum (resnet.py:14-39)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class LetheSecResNet(nn.Module):
    """LetheSec's ResNet (``models/resnet.py``): 3x3 stem, no max-pool, ``BasicBlock`` stages, ``avg_pool2d(4)``.

    Args:
        depths: Blocks per stage ((2, 2, 2, 2): ResNet-18, resnet.py:155-156).
        num_classes: Classifier outputs (7, resnet.py:74); 0 for none.
        in_chans: Stem channels (1, resnet.py:79); three-channel inputs are reduced to grey (:func:`to_grey`).
        global_pool: ``"avg"`` (the source's pooling) or ``""`` (none: ``forward`` returns the feature map).
        source_window: Feature map = the window the source's ``avg_pool2d(out, 4)`` reads (see the module text).
    """

    def __init__(self, depths: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 7, in_chans: int = 1,
                 global_pool: str = "avg", source_window: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = _check_pool(global_pool)
        self.source_window = bool(source_window)
        self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for index, (planes, stride, depth) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2), depths, strict=True)):
            blocks = []
            for block_stride in [stride] + [1] * (depth - 1):
                blocks.append(BasicBlock(in_planes, planes, block_stride))
                in_planes = planes
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_features = self.head_hidden_size = 512
        stages = zip((64, 128, 256, 512), (1, 2, 4, 8), strict=True)
        self.feature_info = [dict(num_chs=64, reduction=1, module="bn1")] + [
            dict(num_chs=c, reduction=r, module=f"layer{i + 1}") for i, (c, r) in enumerate(stages)]
        self.linear = nn.Linear(512, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.linear

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = _check_pool(global_pool)
        self.linear = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(to_grey(x, self.in_chans))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.source_window:
            height, width = 4 * (x.shape[-2] // 4), 4 * (x.shape[-1] // 4)
            if height == 0 or width == 0:
                raise ValueError(f"a {tuple(x.shape[-2:])} map is smaller than the source's 4x4 average pool: "
                                 "give inputs of at least 25 px")
            x = x[..., :height, :width]
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        return x if pre_logits else self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class KhaireddinVgg(nn.Module):
    """usef-kh's VGG variant (``models/vgg.py``, ``Vgg``): 4 x (conv-BN-ReLU, conv-BN-ReLU, max-pool), two dropout FC
    layers of 4096, ``Linear(4096, 7)``.

    Args:
        num_classes: Classifier outputs (7, vgg.py:69); 0 for none.
        in_chans: Stem channels (1, vgg.py:10); three-channel inputs are reduced to grey (:func:`to_grey`).
        drop_rate: Dropout after ``lin1`` and ``lin2``, before their ReLU (0.2: vgg.py:7, 60-61, setup_network.py:12).
        global_pool: ``"avg"`` or ``""``; the feature map is 1x1, so both give the same numbers up to its shape.
    """

    def __init__(self, num_classes: int = 7, in_chans: int = 1, drop_rate: float = 0.2,
                 global_pool: str = "avg") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = _check_pool(global_pool)
        widths = (64, 128, 256, 512)
        previous = in_chans
        for stage, width in enumerate(widths, start=1):
            for part in "ab":
                self.add_module(f"conv{stage}{part}", nn.Conv2d(previous, width, 3, padding=1))
                self.add_module(f"bn{stage}{part}", nn.BatchNorm2d(width))
                previous = width
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.lin1 = nn.Linear(512 * 2 * 2, 4096)
        self.lin2 = nn.Linear(4096, 4096)
        self.drop = nn.Dropout(p=drop_rate)
        self.num_features = self.head_hidden_size = 4096
        self.feature_info = [dict(num_chs=w, reduction=2 ** s, module=f"bn{s + 1}b") for s, w in enumerate(widths)]
        self.lin3 = nn.Linear(4096, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.lin3

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = _check_pool(global_pool)
        self.lin3 = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = to_grey(x, self.in_chans)
        for stage in range(1, 5):
            for part in "ab":
                x = F.relu(getattr(self, f"bn{stage}{part}")(getattr(self, f"conv{stage}{part}")(x)))
            x = self.pool(x)
        if tuple(x.shape[-2:]) != (2, 2):
            raise ValueError(f"khaireddin_vgg flattens a 512x2x2 map (inputs of 32-47 px, the source's 40); this input "
                             f"gives {tuple(x.shape[-2:])}")
        x = x.flatten(1)  # channel-major, as the source's view(-1, 512 * 2 * 2)
        x = F.relu(self.drop(self.lin1(x)))
        x = F.relu(self.drop(self.lin2(x)))
        return x[:, :, None, None]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        return x if pre_logits else self.lin3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _no_weights(pretrained: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop timm's factory keywords (``pretrained_cfg``, ...); there are no pretrained weights to load."""
    if pretrained:
        raise ValueError("there are no pretrained timm weights for the FER-2013 reference models; train them, or load "
                         "the sources' published state_dict (same parameter names)")
    for name in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(name, None)
    return kwargs


def lethesec_resnet18(pretrained: bool = False, **kwargs: Any) -> LetheSecResNet:
    """LetheSec's ResNet-18 for 40-px grey FER-2013 crops (11,171,271 parameters with 7 classes and 1 channel)."""
    return LetheSecResNet((2, 2, 2, 2), **_no_weights(pretrained, kwargs))


def khaireddin_vgg(pretrained: bool = False, **kwargs: Any) -> KhaireddinVgg:
    """Khaireddin & Chen's VGG variant (usef-kh/fer ``Vgg``) for 40-px grey FER-2013 crops (29,890,759 parameters
    with 7 classes and 1 channel)."""
    return KhaireddinVgg(**_no_weights(pretrained, kwargs))


# Registered once: the remote-code copy of this file (another module name) leaves the package's registration alone.
for _entrypoint in (lethesec_resnet18, khaireddin_vgg):
    if not timm.is_model(_entrypoint.__name__):
        timm.models.register_model(_entrypoint)

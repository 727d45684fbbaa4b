"""The optimizer of a training run: :func:`create_optimizer` (timm ``create_optimizer_v2`` with fer-mek's options)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["create_optimizer"]


def create_optimizer(model: torch.nn.Module, config: Any, lr: float, device_type: str = "cpu"
                     ) -> torch.optim.Optimizer:
    """The run's optimizer (timm ``create_optimizer_v2``) for ``config``'s ``optimizer``, ``weight_decay``,
    ``weight_decay_all``, ``momentum``, ``nesterov`` and ``fused_optimizer``.

    timm's ``adam`` is ``torch.optim.Adam`` (L2 added to the gradient), ``adamw`` ``torch.optim.AdamW`` (decoupled
    decay); ``filter_bias_and_bn=False`` decays every parameter, as both MEK sources and both FER-2013 sources do
    (``--weight-decay-all``). timm's ``sgd`` is ``torch.optim.SGD(nesterov=True)`` and its ``momentum`` the same with
    ``nesterov=False`` (``timm/optim/_optim_factory.py``); ``--nesterov`` picks between them and ``--momentum`` is
    passed explicitly. The FER-2013 sources: ``torch.optim.SGD(model.parameters(), lr, momentum=0.9,
    weight_decay=1e-4, nesterov=True)`` (LetheSec ``train.py:90-91``, usef-kh/fer ``train.py:32``).
    """
    import timm.optim

    # torch's fused Adam(W) kernels: one kernel per step instead of one per tensor on a GPU; on a CPU the
    # optimizer step of a ResNet-18 drops from about 25 to 11 ms (BENCHMARKS.md).
    # --no-fused-optimizer: torch's default implementation, the MEK sources' (bit-level parity).
    extra: dict[str, Any] = ({"fused": True} if config.fused_optimizer and config.optimizer in ("adam", "adamw")
                             and device_type in ("cuda", "cpu") else {})
    opt = config.optimizer
    if opt == "sgd":
        opt = "sgd" if config.nesterov else "momentum"
        extra["momentum"] = config.momentum
    return timm.optim.create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=config.weight_decay,
                                          filter_bias_and_bn=not config.weight_decay_all, **extra)

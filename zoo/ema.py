"""Exponential moving average of a network's weights (used for sampling when enabled).

The average lives in a frozen copy of the network: after every training iteration each parameter moves
towards the live one, `shadow ← decay·shadow + (1 − decay)·live`, and buffers (BatchNorm statistics)
are copied as they are. Sampling from the average is smoother than sampling from the last step
(Yazıcı et al. 2019; ProGAN/StyleGAN sample from it too).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.lerp_(p.detach(), 1.0 - self.decay)
        for s, b in zip(self.shadow.buffers(), module.buffers()):
            s.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.shadow.load_state_dict(state["shadow"])

"""Stabilisers any two-player family can select through its recipe (zoo/base.py `Recipe`), beside the loss,
TTUR, smoothing, clipping, GP, R1 and instance noise the recipe already has.

- Spectral normalisation (Miyato et al. 2018, "Spectral Normalization for GANs", ICLR, §2.1): every weight of
  D divided by an estimate of its largest singular value, refined by one power iteration per training
  forward pass (torch's `parametrizations.spectral_norm`, which keeps the iteration vectors as buffers, so
  they are checkpointed with D).
- DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS, §3):
  the same kind of random, differentiable transform applied to every image D sees, real and fake, in D's step
  and in G's, so D cannot memorise the few real images and G is not taught the augmentation. `color`:
  brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5); `translation`: an integer shift of up
  to 1/8 of the side with zero fill; `cutout`: a zeroed square of half the side at a random centre.
- Balanced consistency regularisation, bCR (Zhao et al. 2021, "Improved Consistency Regularization for GANs",
  AAAI, §3): λ_real·E‖D(x) − D(T(x))‖² + λ_fake·E‖D(G(z)) − D(T(G(z)))‖² added to D's loss, with T a random
  horizontal flip and a translation of up to 1/8 of the side (the paper's flip-and-translate).
- Historical averaging (Salimans et al. 2016, "Improved Techniques for Training GANs", §3.3): each player's
  loss gets λ·‖θ − θ̄‖², θ̄ the mean of that player's parameters over all its past updates (checkpointed).
- Minibatch discrimination (Salimans et al. 2016, §3.2), a layer for D's last features: `MinibatchDiscrimination`.
- Self-attention (Zhang et al. 2019, SAGAN, ICML, §3): `SelfAttention`, a non-local block at one resolution.
- Initialisation choices: `normal` N(0, 0.02) (DCGAN), `xavier` (Glorot and Bengio 2010, uniform, as Keras'
  default in the course MNIST GAN), `orthogonal` (Saxe et al. 2014), applied to every conv and linear weight;
  `family` keeps the family's own.

Every random draw comes from the model's seeded noise generator (`local_rand`), never the global RNG.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

DIFFAUG_POLICIES = ("color", "translation", "cutout")
WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def parse_policy(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in DIFFAUG_POLICIES]
    if bad:
        raise ValueError(f"diffaug: unknown policy '{bad[0]}'; choose from {', '.join(DIFFAUG_POLICIES)} "
                         "(comma-separated)")
    return parts


def diffaugment(x: torch.Tensor, policy: tuple[str, ...], rand: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Augment a batch (B, C, H, W) in [-1, 1]; `rand(n, *shape)` gives U(0, 1) draws of shape (n, *shape)."""
    for name in policy:
        x = _OPS[name](x, rand)
    return x


def _color(x, rand):
    b = len(x)
    x = x + (rand(b, 1, 1, 1).to(x.dtype) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand(b, 1, 1, 1).to(x.dtype) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (rand(b, 1, 1, 1).to(x.dtype) + 0.5) + mean  # contrast


def _translation(x, rand, ratio: float = 0.125):
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # integer shifts in [-s, s], uniform, per sample
    dy = (rand(b, 1) * (2 * sh + 1)).floor().long().clamp(max=2 * sh).squeeze(1) - sh
    dx = (rand(b, 1) * (2 * sw + 1)).floor().long().clamp(max=2 * sw).squeeze(1) - sw
    padded = nn.functional.pad(x, (sw, sw, sh, sh))  # zero fill where the image moved away
    rows = (torch.arange(h, device=x.device)[None, :] + sh - dy.to(x.device)[:, None])  # (B, H)
    cols = (torch.arange(w, device=x.device)[None, :] + sw - dx.to(x.device)[:, None])  # (B, W)
    idx_b = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def _cutout(x, rand, ratio: float = 0.5):
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # the square's centre anywhere in the image (so it may be clipped at a border)
    cy = (rand(b, 1) * (h + (1 - ch % 2))).floor().long().squeeze(1).to(x.device)
    cx = (rand(b, 1) * (w + (1 - cw % 2))).floor().long().squeeze(1).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - ch // 2)
    xs = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def apply_spectral_norm(module: nn.Module, what: str = "D") -> int:
    """Wrap every conv and linear weight of `module` in spectral normalisation; returns how many. Refuses a
    network whose weights live in other layer types (equalised-learning-rate layers scale their weights at
    run time, and leaving them unnormalised would silently skip most of D)."""
    from torch.nn.utils.parametrizations import spectral_norm

    layers = [m for m in module.modules() if isinstance(m, WEIGHTED)]
    covered = {id(m.weight) for m in layers}
    other = [n for n, p in module.named_parameters() if p.dim() >= 2 and id(p) not in covered]
    if other or not layers:
        raise ValueError(f"spectral_norm: {what} has weights outside conv/linear layers ({other[0] if other else 'none'}); "
                         "this family's layers cannot be spectrally normalised")
    for m in layers:
        spectral_norm(m)
    return len(layers)


def reinit(module: nn.Module, kind: str) -> None:
    """Re-initialise every conv and linear weight (biases to 0); norm layers keep the family's init."""
    if kind == "family":
        return
    for m in module.modules():
        if isinstance(m, WEIGHTED):
            if kind == "normal":
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif kind == "xavier":
                nn.init.xavier_uniform_(m.weight)
            elif kind == "orthogonal":
                nn.init.orthogonal_(m.weight)
            else:
                raise ValueError(f"init: unknown '{kind}'")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def flip_translate(x: torch.Tensor, rand: Callable[..., torch.Tensor]) -> torch.Tensor:
    """bCR's T: a horizontal flip with probability 1/2, then DiffAugment's translation."""
    flip = rand(len(x), 1, 1, 1).to(x.device) < 0.5
    return _translation(torch.where(flip, x.flip(-1), x), rand)


def consistency_penalty(disc: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, out: torch.Tensor,
                        rand: Callable[..., torch.Tensor]) -> torch.Tensor:
    """E‖D(x) − D(T(x))‖² for D outputs `out` = D(x) already computed (both sides carry gradients to D)."""
    other = disc(flip_translate(x.detach(), rand)).float()
    return (out - other).pow(2).flatten(1).sum(1).mean()


class HistoricalAverage:
    """θ̄, the running mean of a network's parameters over every update so far, and the penalty ‖θ − θ̄‖²."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.count = 0
        self.mean = [torch.zeros_like(p, dtype=torch.float32) for p in module.parameters()]

    def penalty(self) -> torch.Tensor:
        if not self.count:  # no history before the first update: θ̄ = θ
            return torch.zeros((), device=next(self.module.parameters()).device)
        return sum((p.float() - m).pow(2).sum() for p, m in zip(self.module.parameters(), self.mean))

    @torch.no_grad()
    def record(self) -> None:
        """Fold the current parameters into θ̄ (after each update)."""
        self.count += 1
        for p, m in zip(self.module.parameters(), self.mean):
            m += (p.float() - m) / self.count

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": [m.cpu() for m in self.mean]}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.mean = [m.to(p.device) for m, p in zip(state["mean"], self.module.parameters())]


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016, §3.2: features f (N, A) -> M = f·T (N, B, C); c_b(i, j) = exp(−‖M_i,b − M_j,b‖₁);
    o(i)_b = Σ_{j≠i} c_b(i, j); output [f, o] (N, A + B). D can then see how alike the samples of a batch are,
    which is what a collapsed generator cannot hide. B = 100 kernels of C = 5 dims as the paper's code."""

    def __init__(self, in_features: int, kernels: int = 100, kernel_dim: int = 5):
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.05)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        m = (f @ self.T).view(len(f), self.kernels, self.kernel_dim)
        l1 = (m[:, None] - m[None]).abs().sum(-1)  # (N, N, B)
        c = torch.exp(-l1) * (1 - torch.eye(len(f), device=f.device, dtype=f.dtype))[:, :, None]  # j ≠ i
        return torch.cat([f, c.sum(1)], dim=1)


class SelfAttention(nn.Module):
    """SAGAN's attention block (Zhang et al. 2019, §3, Eq. 1-3): f, g, h are 1x1 convs to C/8 channels, the
    attention β = softmax over positions i of f(x_i)ᵀg(x_j), o_j = v(Σ_i β_{j,i} h(x_i)) with v a 1x1 conv back
    to C, and y = γ·o + x with γ a learned scalar starting at 0 (so the block starts as the identity and the
    network learns how much non-local evidence to use)."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 8, 1)
        self.f = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.h = nn.Conv2d(channels, inner, 1)
        self.v = nn.Conv2d(inner, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        f, g, h = self.f(x).flatten(2), self.g(x).flatten(2), self.h(x).flatten(2)  # (B, C/8, N)
        beta = torch.softmax(f.transpose(1, 2) @ g, dim=1)  # (B, N_i, N_j): for each j, a distribution over i
        o = (h @ beta).view(b, -1, hh, ww)  # o_j = Σ_i β_{j,i} h(x_i)
        return x + self.gamma * self.v(o)

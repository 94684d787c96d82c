"""Blocks shared by the progressive families (ProGAN, Karras et al. 2018; StyleGAN, Karras et al. 2019).

- Equalised learning rate (Karras et al. 2018, §4.1): weights are stored N(0, 1) and scaled at run time by
  gain/√fan_in, so Adam's per-parameter step size is the same for every layer whatever its fan-in. A common
  course version sets the constant to c = 1.0; ProGAN/StyleGAN use He's √2 for layers followed by LeakyReLU
  (tkarras/progressive_growing_of_gans `networks.py`, `get_weight`); the families make it a config key.
  A learning-rate multiplier `lrmul` (StyleGAN's mapping network, 0.01) stores weights N(0, 1/lrmul²)
  and multiplies weight and bias by lrmul at run time, as the official code.
- PixelNorm: a / sqrt(mean_c(a²) + 1e-8) at every pixel (Karras et al. 2018, §4.2).
- Minibatch standard deviation (Karras et al. 2018, §3; the official `minibatch_stddev_layer`: group 4,
  biased variance, ε 1e-8, one extra channel).
- StyleGAN's constant input, noise injection, AdaIN and the [1, 2, 1] blur.
- The growth schedule and the fade-in blend: (1 − α)·old + α·new, with the old path skipped at α = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
LRELU = 0.2
EPS = 1e-8


def nf(stage: int, fmap_base: int, fmap_max: int) -> int:
    """Feature maps of the official code: min(fmap_base / 2^stage, fmap_max), stage = log2(resolution) − 1
    (so 8192/512 gives 512 up to 32 px, then 256, 128, 64, 32, 16 at 1024 px)."""
    return max(1, min(int(fmap_base / 2.0 ** stage), fmap_max))


def width(res: int, fmap_base: int, fmap_max: int) -> int:
    """Channels of the feature maps at `res` px."""
    return nf(int(math.log2(res)) - 1, fmap_base, fmap_max)


# -- equalised learning rate -----------------------------------------------------------------------------

class EqualLinear(nn.Module):
    """y = x·(w·gain/√fan_in·lrmul)ᵀ + b·lrmul, with w stored N(0, 1/lrmul²)."""

    def __init__(self, in_features: int, out_features: int, gain: float = SQRT2, lrmul: float = 1.0,
                 bias: bool = True, bias_init: float | torch.Tensor = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.gain, self.lrmul = in_features, out_features, gain, lrmul
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lrmul)
        self.scale = gain / math.sqrt(in_features) * lrmul
        if bias:
            init = torch.as_tensor(bias_init, dtype=torch.float32).expand(out_features).clone()
            self.bias = nn.Parameter(init / lrmul)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lrmul if self.bias is not None else None
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, gain={self.gain:.4g}, lrmul={self.lrmul:g}"


class EqualConv2d(nn.Module):
    """A stride-1 'same' conv with weights N(0, 1) scaled by gain/√(c_in·k·k) at run time."""

    def __init__(self, c_in: int, c_out: int, kernel: int, gain: float = SQRT2, bias: bool = True):
        super().__init__()
        self.c_in, self.c_out, self.kernel, self.gain = c_in, c_out, kernel, gain
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.scale = gain / math.sqrt(c_in * kernel * kernel)
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.kernel // 2)

    def extra_repr(self) -> str:
        return f"{self.c_in}, {self.c_out}, kernel={self.kernel}, gain={self.gain:.4g}"


class LatentTo4x4(nn.Module):
    """ProGAN's first layer: a dense map z -> C·4·4 reshaped to (C, 4, 4), then one bias per channel (the
    official code applies the bias after the reshape, so it holds C values, not 16·C)."""

    def __init__(self, latent_dim: int, channels: int, gain: float):
        super().__init__()
        self.channels = channels
        self.dense = EqualLinear(latent_dim, channels * 16, gain=gain, bias=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.dense(z).view(-1, self.channels, 4, 4) + self.bias.view(1, -1, 1, 1)


# -- normalisation and statistics --------------------------------------------------------------------------

class PixelNorm(nn.Module):
    """b = a / sqrt(mean over channels of a² + ε): per pixel (images) or per vector (latents)."""

    def __init__(self, eps: float = EPS):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


def group_size_for(n: int, group_size: int) -> int:
    """The largest divisor of the batch not above group_size (the official code demands divisibility)."""
    g = min(group_size, n)
    while n % g:
        g -= 1
    return g


class MinibatchStdDev(nn.Module):
    """Appends one channel: the std of every feature over a group of samples (biased variance + ε), averaged
    over C, H and W into one number per group and broadcast spatially. Groups are strided as in the official
    `reshape(G, -1, C, H, W)`: sample n belongs to group n mod (N / G)."""

    def __init__(self, group_size: int = 4, eps: float = EPS):
        super().__init__()
        self.group_size, self.eps = group_size, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = group_size_for(n, self.group_size)
        y = x.float().reshape(g, -1, c, h, w)
        y = y - y.mean(dim=0, keepdim=True)
        std = torch.sqrt(y.pow(2).mean(dim=0) + self.eps)  # (M, C, H, W)
        s = std.mean(dim=(1, 2, 3)).to(x.dtype)  # one value per group
        s = s.repeat(g).view(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, s], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


def instance_norm(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(x − μ)/σ per sample and channel over H, W (biased variance), as StyleGAN's instance_norm."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + eps)


# -- StyleGAN blocks ------------------------------------------------------------------------------------------

class ConstantInput(nn.Module):
    """The learned 4×4 input of the synthesis network (initialised to ones, as the official code)."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.const = nn.Parameter(torch.ones(1, channels, size, size))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.const.expand(w.shape[0], -1, -1, -1)


class NoiseInjection(nn.Module):
    """F'[c, y, x] = F[c, y, x] + s_c·N[y, x]: one single-channel N(0, 1) map per sample shared by all channels,
    a learned scale per channel, initialised to zero. `noise=None` adds nothing."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.weight.view(1, -1, 1, 1) * noise.to(x.dtype)


class Bias(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, 1, 1)


class AdaIN(nn.Module):
    """AdaIN(x, y) = y_s·(x − μ(x))/σ(x) + y_b per channel, with (y_s, y_b) = A(w), A a learned affine map
    (equalised, gain 1). The y_s half of A's bias starts at 1: the official `x·(style_s + 1) + style_b` with
    a zero bias, written as a plain affine."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.channels = channels
        self.affine = EqualLinear(w_dim, 2 * channels, gain=1.0,
                                  bias_init=torch.cat([torch.ones(channels), torch.zeros(channels)]))

    def styles(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y_s, y_b = self.affine(w).chunk(2, dim=1)
        return y_s, y_b

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y_s, y_b = self.styles(w)
        return y_s[:, :, None, None] * instance_norm(x) + y_b[:, :, None, None]


class Blur(nn.Module):
    """The fixed [1, 2, 1] ⊗ [1, 2, 1] / 16 low-pass filter StyleGAN applies after upsampling and before
    downsampling convs (no parameters; zero padding as the official 'SAME' conv)."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16.0)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, 3, 3), padding=1, groups=c)


# -- growth ----------------------------------------------------------------------------------------------

def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def upsample_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest upsampling to `size` px (an integer factor), the identity when x is already that size."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="nearest")


def blend(old: torch.Tensor, new: torch.Tensor, alpha: float) -> torch.Tensor:
    """The fade-in: (1 − α)·old + α·new. At α = 0 this is `old` exactly."""
    return (1.0 - alpha) * old + alpha * new


def grown(new: torch.Tensor, old: Callable[[], torch.Tensor], alpha: float) -> torch.Tensor:
    """`new` alone once α reaches 1 (the old path is not even computed), else the blend."""
    return new if alpha >= 1.0 else blend(old(), new, alpha)


@dataclass(frozen=True)
class Phase:
    stage: int  # 0 = 4x4, s = 4·2^s px
    alpha: float  # weight of the newest block, 1 when stable
    fading: bool

    @property
    def resolution(self) -> int:
        return 4 * 2 ** self.stage


@dataclass(frozen=True)
class GrowthSchedule:
    """Progressive growing in training steps: the first stage trains `stable_steps`, every later stage fades in
    over `fade_steps` (α = i / fade_steps on the i-th step of the fade, so the first fade step is α = 0) and
    then stabilises for `stable_steps`; the final stage then stays. The paper counts real images instead:
    800k images of fade plus 800k of stabilisation per resolution (the official code defaults to 600k)."""

    start_stage: int
    final_stage: int
    fade_steps: int
    stable_steps: int

    def at(self, steps: int) -> Phase:
        final = Phase(self.final_stage, 1.0, False)
        if self.start_stage >= self.final_stage:
            return final
        if steps < self.stable_steps:
            return Phase(self.start_stage, 1.0, False)
        period = self.fade_steps + self.stable_steps
        if period == 0:
            return final
        k, r = divmod(steps - self.stable_steps, period)
        stage = self.start_stage + 1 + k
        if stage > self.final_stage:
            return final
        if r < self.fade_steps:
            return Phase(stage, r / self.fade_steps, True)
        return Phase(stage, 1.0, False)

    def boundary(self, steps: int) -> bool:
        """True when step `steps` starts a new fade or a new stable phase (the official code resets the Adam
        moments there: `reset_opt_for_new_lod`)."""
        if steps <= 0:
            return False
        a, b = self.at(steps - 1), self.at(steps)
        return (a.stage, a.fading) != (b.stage, b.fading)

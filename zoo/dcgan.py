"""DCGAN (Radford, Metz & Chintala 2016, "Unsupervised Representation Learning with Deep Convolutional
GANs", ICLR; arXiv 2015) at 32 or 64 px, 1 or 3 channels.

G: z(100) -> Dense -> 4x4x(8*ngf) + BN + ReLU, then stride-2 transposed convs halving the width at
   each doubling (32 px: 512-256-128-C; 64 px: 512-256-128-64-C), BN + ReLU except the output, tanh.
D: stride-2 convs (32 px: C-64-128-256; 64 px: C-64-128-256-512), LeakyReLU 0.2, BN except the first,
   flatten -> Dense 1 (a logit). No pooling, no hidden FC layers.
The layer shapes fix no kernel size: kernel 4 (p1, as pytorch/examples `dcgan/main.py`) is the default,
kernel 5 (p2, the paper's released code) and 3 (the course's) are selectable, and so is G's upsampling
(`upsample`: transposed convs as the paper, or nearest-neighbour + conv, or PixelShuffle; zoo/layers.py). Init N(0, 0.02); Adam 2e-4, beta1 0.5 (§4);
non-saturating BCE by default, and every loss variant of the shared recipe
(`loss: minimax | nonsaturating | lsgan | hinge | wasserstein`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from zoo.base import Recipe, TwoPlayerGAN, trace_shapes
from zoo.layers import dcgan_init, down_conv, up_conv
from zoo.stabilisers import MinibatchDiscrimination, SelfAttention


@dataclass(frozen=True)
class Config(Recipe):
    resolution: Literal[32, 64] = 32
    latent_dim: int = 100
    ngf: int = 64  # G widths are 8*ngf, 4*ngf, ... (ngf 64: 512-256-128-64, as pytorch/examples dcgan)
    ndf: int = 64  # D widths are ndf, 2*ndf, ...
    kernel: Literal[3, 4, 5] = 4  # 3 and 5 are the course's choices, 4 pytorch/examples', 5 the paper code's
    upsample: Literal["transposed", "nearest", "pixelshuffle"] = "transposed"  # G's upsampling (zoo/layers.py)
    # > 0: minibatch discrimination before D's last layer with this many kernels (Salimans et al. 2016, §3.2: 100)
    minibatch_kernels: int = 0
    # > 0: a SAGAN self-attention block (Zhang et al. 2019) in G and in D where their feature maps have this side
    attention_res: int = 0
    # D normalisation after every conv but the first: BatchNorm (DCGAN), or none / layer / instance
    # for critics trained with a gradient penalty, where BN would couple the samples of a batch.
    d_norm: Literal["batch", "none", "layer", "instance"] = "batch"

    def __post_init__(self):
        super().__post_init__()
        if self.ngf < 1 or self.ndf < 1 or self.latent_dim < 1 or self.minibatch_kernels < 0:
            raise ValueError("ngf, ndf and latent_dim must be positive, minibatch_kernels >= 0")
        inner = [4 * 2**i for i in range(int(math.log2(self.resolution // 4)))]  # G's maps before the output
        if self.attention_res and self.attention_res not in inner:
            raise ValueError(f"attention_res must be one of the inner feature-map sides {inner} (or 0 = off)")
        if self.gp_lambda and self.d_norm == "batch":
            # Gulrajani et al. 2017, §4: BN couples the samples whose per-sample gradient norms the penalty
            # targets.
            raise ValueError("a gradient penalty needs a critic without BatchNorm: set d_norm to none, layer or instance")


class Generator(nn.Module):
    def __init__(self, cfg: Config, channels: int):
        super().__init__()
        n_up = int(math.log2(cfg.resolution // 4))
        widths = [cfg.ngf * 8 // 2**i for i in range(n_up)]
        self.start = widths[0]
        self.project = nn.Linear(cfg.latent_dim, 4 * 4 * widths[0])
        self.bn0 = nn.BatchNorm2d(widths[0])
        blocks: list[nn.Module] = [SelfAttention(widths[0])] if cfg.attention_res == 4 else []
        size = 4
        for c_in, c_out in zip(widths, widths[1:]):
            size *= 2
            blocks += [up_conv(c_in, c_out, cfg.kernel, bias=False, upsample=cfg.upsample), nn.BatchNorm2d(c_out),
                       nn.ReLU(), *([SelfAttention(c_out)] if size == cfg.attention_res else [])]
        blocks += [up_conv(widths[-1], channels, cfg.kernel, upsample=cfg.upsample), nn.Tanh()]  # no BN on the output
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.project(z).view(-1, self.start, 4, 4)))
        return self.body(x)


def d_norm_layer(kind: str, channels: int, size: int) -> nn.Module | None:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # normalises each sample over (C, H, W): no coupling across the batch
        return nn.LayerNorm([channels, size, size])
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return None


class Discriminator(nn.Module):
    def __init__(self, cfg: Config, channels: int):
        super().__init__()
        n_down = int(math.log2(cfg.resolution // 4))
        widths = [cfg.ndf * 2**i for i in range(n_down)]
        size = cfg.resolution // 2
        layers: list[nn.Module] = [down_conv(channels, widths[0], cfg.kernel), nn.LeakyReLU(0.2),
                                   *([SelfAttention(widths[0])] if size == cfg.attention_res else [])]
        for c_in, c_out in zip(widths, widths[1:]):
            size //= 2
            norm = d_norm_layer(cfg.d_norm, c_out, size)
            layers += [down_conv(c_in, c_out, cfg.kernel, bias=norm is None), *([norm] if norm else []),
                       nn.LeakyReLU(0.2), *([SelfAttention(c_out)] if size == cfg.attention_res else [])]
        self.body = nn.Sequential(*layers)
        features = 4 * 4 * widths[-1]
        self.minibatch = MinibatchDiscrimination(features, cfg.minibatch_kernels) if cfg.minibatch_kernels else None
        self.fc = nn.Linear(features + cfg.minibatch_kernels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x).flatten(1)
        return self.fc(self.minibatch(f) if self.minibatch is not None else f)


class DCGAN(TwoPlayerGAN):
    family = "dcgan"
    seed_section = "Radford et al. 2016, DCGAN (ICLR), §3-4; pytorch/examples dcgan"
    summary = "DCGAN 32/64 px: strided (transposed) convs, BN, ReLU/LeakyReLU, N(0,0.02) init, NS-BCE"
    Config = Config

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        if data.channels not in (1, 3):
            raise ValueError(f"dcgan supports 1 or 3 channels, the data has {data.channels}")
        self.G = Generator(cfg, data.channels)
        self.D = Discriminator(cfg, data.channels)
        dcgan_init(self.G)
        dcgan_init(self.D)
        self.build_optimizers()

    latent_dim = property(lambda self: self.cfg.latent_dim)
    resolution = property(lambda self: self.cfg.resolution)

    def inspect(self):
        r, c = self.cfg.resolution, self.data.channels
        return {
            "G": trace_shapes(self.G, torch.zeros(1, self.cfg.latent_dim, device=self.device)),
            "D": trace_shapes(self.D, torch.zeros(1, c, r, r, device=self.device)),
        }

"""DCGAN (Radford et al. 2015) at 32 or 64 px, 1 or 3 channels (SEEDS.md §2.3-2.4).

G: z(100) -> Dense -> 4x4x(8*ngf) + BN + ReLU, then stride-2 transposed convs halving the width at
   each doubling (32 px: 512-256-128-C; 64 px: 512-256-128-64-C), BN + ReLU except the output, tanh.
D: stride-2 convs (32 px: C-64-128-256; 64 px: C-64-128-256-512), LeakyReLU 0.2, BN except the first,
   flatten -> Dense 1 (a logit). No pooling, no hidden FC layers.
The seeds give shapes but no kernel (FLAG §2.3): kernel 4 (p1) is the default, kernel 5 (p2) is
selectable. Init N(0, 0.02); Adam 2e-4, beta1 0.5; non-saturating BCE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from zoo import losses
from zoo.base import TwoPlayerGAN, trace_shapes
from zoo.layers import dcgan_init, down_conv, up_conv


@dataclass(frozen=True)
class Config:
    resolution: Literal[32, 64] = 32
    latent_dim: int = 100
    ngf: int = 64  # G widths are 8*ngf, 4*ngf, ... (ngf 64 gives the seeds' 512-256-128-64)
    ndf: int = 64  # D widths are ndf, 2*ndf, ...
    kernel: Literal[4, 5] = 4
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    def __post_init__(self):
        if self.ngf < 1 or self.ndf < 1 or self.latent_dim < 1 or self.lr <= 0:
            raise ValueError("ngf, ndf, latent_dim and lr must be positive")


class Generator(nn.Module):
    def __init__(self, cfg: Config, channels: int):
        super().__init__()
        n_up = int(math.log2(cfg.resolution // 4))
        widths = [cfg.ngf * 8 // 2**i for i in range(n_up)]
        self.start = widths[0]
        self.project = nn.Linear(cfg.latent_dim, 4 * 4 * widths[0])
        self.bn0 = nn.BatchNorm2d(widths[0])
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(widths, widths[1:]):
            blocks += [up_conv(c_in, c_out, cfg.kernel, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        blocks += [up_conv(widths[-1], channels, cfg.kernel), nn.Tanh()]  # no BN on the output layer
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.project(z).view(-1, self.start, 4, 4)))
        return self.body(x)


class Discriminator(nn.Module):
    def __init__(self, cfg: Config, channels: int):
        super().__init__()
        n_down = int(math.log2(cfg.resolution // 4))
        widths = [cfg.ndf * 2**i for i in range(n_down)]
        layers: list[nn.Module] = [down_conv(channels, widths[0], cfg.kernel), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [down_conv(c_in, c_out, cfg.kernel, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(4 * 4 * widths[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


class DCGAN(TwoPlayerGAN):
    family = "dcgan"
    seed_section = "SEEDS.md §2.3-2.4 (002:L522-556, L1670-1891)"
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
        betas = (cfg.beta1, cfg.beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=betas)

    latent_dim = property(lambda self: self.cfg.latent_dim)
    resolution = property(lambda self: self.cfg.resolution)

    def backward_D(self, real: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            fake = self.G(self.noise(real.shape[0]))
        real_logits, fake_logits = self.D(real), self.D(fake)
        loss = losses.d_loss_bce(real_logits, fake_logits)
        self.opt_D.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_D.step()
        return {"D": loss.item(), "D/p_real": torch.sigmoid(real_logits).mean().item(),
                "D/p_fake": torch.sigmoid(fake_logits).mean().item()}

    def inspect(self):
        r, c = self.cfg.resolution, self.data.channels
        return {
            "G": trace_shapes(self.G, torch.zeros(1, self.cfg.latent_dim, device=self.device)),
            "D": trace_shapes(self.D, torch.zeros(1, c, r, r, device=self.device)),
        }

"""The fully connected ("vanilla") GAN (Goodfellow et al. 2014, "Generative Adversarial Nets", NeurIPS).

G: z(100) -> Linear 256 -> Linear 512 -> Linear 1024 (LeakyReLU 0.2 after each) -> Linear C·R·R, tanh.
D: C·R·R -> Linear 512 -> Linear 256 (LeakyReLU 0.2) -> Linear 1 (a logit).
The usual template says only "2-3 fully connected layers with gradually increasing sizes" for G and
decreasing ones for D; the widths above are ganbench's choice (no source fixes them) and are config keys.
No normalisation layers, so every sample is processed on its own (which also makes data-parallel
training match a single process exactly). PyTorch's default Linear init; non-saturating BCE; Adam 2e-4,
beta1 0.5 as DCGAN (Radford et al. 2016).
Trainable parameters on 28x28x1: G 1,486,352, D 533,505.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo.base import Recipe, TwoPlayerGAN, trace_shapes


@dataclass(frozen=True)
class Config(Recipe):
    latent_dim: int = 100
    g_widths: tuple[int, ...] = (256, 512, 1024)  # ganbench's choice: 2-3 widening hidden layers
    d_widths: tuple[int, ...] = (512, 256)  # ganbench's choice: 2-3 narrowing hidden layers

    def __post_init__(self):
        super().__post_init__()
        for name, widths, grows in (("g_widths", self.g_widths, True), ("d_widths", self.d_widths, False)):
            if not 2 <= len(widths) <= 3 or min(widths) < 1:
                raise ValueError(f"{name} needs 2 or 3 positive widths (the seeds' 2-3 hidden layers)")
            pairs = list(zip(widths, widths[1:]))
            if not all((b > a) if grows else (b < a) for a, b in pairs):
                raise ValueError(f"{name} must {'increase' if grows else 'decrease'} layer by layer")
        if self.latent_dim < 1:
            raise ValueError("latent_dim must be positive")


def _mlp(sizes: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    return layers


class Generator(nn.Module):
    def __init__(self, cfg: Config, shape: tuple[int, int, int]):
        super().__init__()
        self.shape = shape
        out = shape[0] * shape[1] * shape[2]
        self.body = nn.Sequential(*_mlp([cfg.latent_dim, *cfg.g_widths]), nn.Linear(cfg.g_widths[-1], out), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z).view(-1, *self.shape)


class Discriminator(nn.Module):
    def __init__(self, cfg: Config, shape: tuple[int, int, int]):
        super().__init__()
        d_in = shape[0] * shape[1] * shape[2]
        self.body = nn.Sequential(*_mlp([d_in, *cfg.d_widths]), nn.Linear(cfg.d_widths[-1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


class MlpGAN(TwoPlayerGAN):
    family = "mlp_gan"
    seed_section = "Goodfellow et al. 2014, Generative Adversarial Nets (NeurIPS), Eq. 1; MLP G and D"
    summary = "Fully connected GAN: z -> 256-512-1024 -> image (tanh); D image -> 512-256 -> logit (widths non-seed)"
    Config = Config

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        shape = (data.channels, data.resolution, data.resolution)
        self.G = Generator(cfg, shape)
        self.D = Discriminator(cfg, shape)
        self.build_optimizers()

    latent_dim = property(lambda self: self.cfg.latent_dim)
    resolution = property(lambda self: self.data.resolution)

    def inspect(self):
        r, c = self.data.resolution, self.data.channels
        return {
            "G": trace_shapes(self.G, torch.zeros(1, self.cfg.latent_dim, device=self.device)),
            "D": trace_shapes(self.D, torch.zeros(1, c, r, r, device=self.device)),
        }

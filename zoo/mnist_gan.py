"""The MNIST convolutional GAN of a GANs course's Keras case study (a small DCGAN, cf. Radford et al. 2016),
as specified.

G: z(100) -> Dense 6272 (no activation, no BN) -> 7x7x128 -> ConvT 64 k5 s2 'same' + BN + ReLU
   -> 14x14x64 -> ConvT 1 k5 s2 'same' + tanh -> 28x28x1.
D: 28x28x1 -> Conv 64 k5 s2 'same' + LeakyReLU 0.2 (no BN) -> Conv 128 k5 s2 'same' + BN + LeakyReLU 0.2
   -> flatten 6272 -> Dense 1 (a logit; sigmoid only when a probability is reported).
Trainable parameters with Keras conventions (bias everywhere): G 840,065, D 213,121.
Loss: BCE, real target 0.9 (one-sided smoothing), fake 0, non-saturating G; Adam 2e-4, beta1 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo.base import Recipe, TwoPlayerGAN, trace_shapes


@dataclass(frozen=True)
class Config(Recipe):
    latent_dim: int = 100
    lr_G: float = 2e-4
    lr_D: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999  # Keras default; the course code only sets beta_1
    real_target: float = 0.9  # one-sided label smoothing, fake target stays 0
    # Keras BatchNormalization: momentum 0.99 of the old statistics == PyTorch momentum 0.01, eps 1e-3.
    bn_momentum: float = 0.01
    bn_eps: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        if self.latent_dim < 1 or self.bn_eps <= 0 or not 0 <= self.bn_momentum <= 1:
            raise ValueError("latent_dim >= 1, bn_eps > 0 and 0 <= bn_momentum <= 1 are required")


class Generator(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.project = nn.Linear(cfg.latent_dim, 7 * 7 * 128)
        # Keras 'same' for a stride-2 k5 transposed conv doubles the size: padding 2 + output_padding 1.
        self.up1 = nn.ConvTranspose2d(128, 64, 5, stride=2, padding=2, output_padding=1)
        self.bn1 = nn.BatchNorm2d(64, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.up2 = nn.ConvTranspose2d(64, 1, 5, stride=2, padding=2, output_padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(-1, 128, 7, 7)  # the course code applies no activation here
        x = torch.relu(self.bn1(self.up1(x)))
        return torch.tanh(self.up2(x))


class Discriminator(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(64, 128, 5, stride=2, padding=2)
        self.bn2 = nn.BatchNorm2d(128, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.fc = nn.Linear(7 * 7 * 128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.leaky_relu(self.conv1(x), 0.2)  # no BN on the first layer
        x = nn.functional.leaky_relu(self.bn2(self.conv2(x)), 0.2)
        return self.fc(x.flatten(1))


class MnistGAN(TwoPlayerGAN):
    family = "mnist_gan"
    seed_section = "Course MNIST DCGAN case study (Keras); cf. Radford et al. 2016, DCGAN (ICLR)"
    summary = "Seed MNIST conv GAN: Dense->7x7x128->ConvT k5 x2, BCE with one-sided smoothing 0.9"
    Config = Config

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        if data.channels != 1:
            raise ValueError(f"mnist_gan generates 1-channel images, the data has {data.channels}")
        self.G = Generator(cfg)
        self.D = Discriminator(cfg)
        self.build_optimizers()

    latent_dim = property(lambda self: self.cfg.latent_dim)
    resolution = property(lambda self: 28)

    def inspect(self):
        return {
            "G": trace_shapes(self.G, torch.zeros(1, self.cfg.latent_dim, device=self.device)),
            "D": trace_shapes(self.D, torch.zeros(1, 1, 28, 28, device=self.device)),
        }

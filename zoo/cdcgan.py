"""Class-conditional DCGAN with conditional batch normalisation in G and a projection discriminator
(Miyato & Koyama 2018, "cGANs with Projection Discriminator", ICLR; conditional BN as de Vries et al. 2017 and
Dumoulin et al. 2017), on a labelled data set (MNIST, CIFAR-10).

G: DCGAN's generator (zoo/dcgan.py shapes: z -> Dense -> 4x4x(8·ngf), stride-2 transposed convs, tanh) with
every BatchNorm replaced by a conditional one: normalise without affine parameters, then scale and shift by
γ_y, β_y looked up for the class y (γ starts at 1, β at 0, so at init it is plain BN).
D: DCGAN's discriminator body φ(x) (flattened features) and the projection output
    D(x, y) = ψ(φ(x)) + ⟨V e_y, φ(x)⟩,
ψ a linear unit and V a class embedding (a bias-free linear map of the one-hot e_y, so spectral normalisation
can wrap it as the paper does). The class enters D only through that inner product.
Loss: the paper's hinge loss by default; the shared recipe's other losses are selectable. Training draws real
(image, label) pairs from the whole labelled training part and labels for fakes uniformly.

For evaluation a latent is z with its class appended as the last coordinate (`sample_latent` draws both from
the same seeded generator: classes are uniform), so every metric of unconditional models applies unchanged;
`generate` rounds that coordinate to a class. Latent-space metrics (PPL) then also interpolate the class
coordinate, which is rounded: read PPL of this family with that in mind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from zoo import losses
from zoo.base import Recipe, TwoPlayerGAN, trace_shapes
from zoo.dcgan import d_norm_layer
from zoo.layers import dcgan_init, down_conv, up_conv


@dataclass(frozen=True)
class Config(Recipe):
    resolution: Literal[32, 64] = 32
    latent_dim: int = 100
    ngf: int = 64
    ndf: int = 64
    kernel: Literal[3, 4, 5] = 4
    loss: Literal["minimax", "nonsaturating", "lsgan", "hinge", "wasserstein"] = "hinge"  # Miyato & Koyama 2018 train with the hinge loss
    d_norm: Literal["batch", "none", "layer", "instance"] = "none"  # the projection D has no BatchNorm

    def __post_init__(self):
        super().__post_init__()
        if self.ngf < 1 or self.ndf < 1 or self.latent_dim < 1:
            raise ValueError("ngf, ndf and latent_dim must be positive")


class ConditionalBatchNorm2d(nn.Module):
    """BN without its own affine map, then γ_y·x̂ + β_y for each sample's class y."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Embedding(num_classes, channels)
        self.beta = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gamma(y)[:, :, None, None] + self.beta(y)[:, :, None, None]


class Generator(nn.Module):
    def __init__(self, cfg: Config, channels: int, num_classes: int):
        super().__init__()
        n_up = int(math.log2(cfg.resolution // 4))
        widths = [cfg.ngf * 8 // 2**i for i in range(n_up)]
        self.start = widths[0]
        self.project = nn.Linear(cfg.latent_dim, 4 * 4 * widths[0])
        self.norms = nn.ModuleList([ConditionalBatchNorm2d(widths[0], num_classes)])
        self.ups = nn.ModuleList()
        for c_in, c_out in zip(widths, widths[1:]):
            self.ups.append(up_conv(c_in, c_out, cfg.kernel, bias=False))
            self.norms.append(ConditionalBatchNorm2d(c_out, num_classes))
        self.out = up_conv(widths[-1], channels, cfg.kernel)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norms[0](self.project(z).view(-1, self.start, 4, 4), y))
        for up, norm in zip(self.ups, self.norms[1:]):
            x = torch.relu(norm(up(x), y))
        return torch.tanh(self.out(x))


class Discriminator(nn.Module):
    def __init__(self, cfg: Config, channels: int, num_classes: int):
        super().__init__()
        n_down = int(math.log2(cfg.resolution // 4))
        widths = [cfg.ndf * 2**i for i in range(n_down)]
        layers: list[nn.Module] = [down_conv(channels, widths[0], cfg.kernel), nn.LeakyReLU(0.2)]
        size = cfg.resolution // 2
        for c_in, c_out in zip(widths, widths[1:]):
            size //= 2
            norm = d_norm_layer(cfg.d_norm, c_out, size)
            layers += [down_conv(c_in, c_out, cfg.kernel, bias=norm is None), *([norm] if norm else []),
                       nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        features = 4 * 4 * widths[-1]
        self.psi = nn.Linear(features, 1)
        self.embed = nn.Linear(num_classes, features, bias=False)  # V: class -> feature-space direction
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        phi = self.features(x)
        onehot = nn.functional.one_hot(y, self.num_classes).to(phi.dtype)
        return self.psi(phi) + (self.embed(onehot) * phi).sum(1, keepdim=True)


class ConditionalDCGAN(TwoPlayerGAN):
    family = "cdcgan"
    seed_section = "Miyato & Koyama 2018, cGANs with Projection Discriminator (ICLR), §3; Radford et al. 2016"
    summary = "class-conditional DCGAN: conditional BN in G, projection D, hinge loss, uniform labels for fakes"
    Config = Config
    default_channels = 1
    # Its own steps (D and G take labels), so the shared augmentation, pool and penalties do not apply.
    stabilisers = frozenset({"spectral_norm", "init"})

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        if data.num_classes < 2:
            raise ValueError("cdcgan needs a labelled data set (e.g. mnist or cifar10)")
        if data.channels not in (1, 3):
            raise ValueError(f"cdcgan supports 1 or 3 channels, the data has {data.channels}")
        self.num_classes = data.num_classes
        self.G = Generator(cfg, data.channels, data.num_classes)
        self.D = Discriminator(cfg, data.channels, data.num_classes)
        dcgan_init(self.G)
        dcgan_init(self.D)
        for m in self.G.modules():  # conditional BN's per-class affine starts as the identity
            if isinstance(m, ConditionalBatchNorm2d):
                nn.init.ones_(m.gamma.weight)
                nn.init.zeros_(m.beta.weight)
        self.build_optimizers()

    latent_dim = property(lambda self: self.cfg.latent_dim + 1)  # z and the class
    resolution = property(lambda self: self.cfg.resolution)

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.cfg.latent_dim, generator=generator)
        y = torch.randint(0, self.num_classes, (n, 1), generator=generator)
        return torch.cat([z, y.float()], dim=1)

    def split(self, zy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = zy[:, -1].round().long().clamp(0, self.num_classes - 1)
        return zy[:, :-1], y

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        G = self.sampling_net("G")
        G.eval()
        latent, y = self.split(z.to(self.device))
        return G(latent, y).float()

    def train_step(self, draw, step):
        self.train(True)
        cfg, logs = self.cfg, {}
        for _ in range(cfg.n_d):
            real, labels = draw.labelled_all()
            z, y = self.split(self.noise(real.shape[0]))
            with torch.no_grad(), self.autocast():
                fake = self.G(z, y).float()
            with self.autocast():
                real_out, fake_out = self.D(real, labels).float(), self.D(fake, y).float()
            loss = losses.d_loss(cfg.loss, real_out, fake_out, cfg.real_target, cfg.fake_target)
            self.update("D", loss)
            logs["D"], logs["D/real"], logs["D/fake"] = loss.item(), real_out.mean().item(), fake_out.mean().item()
        self.D.requires_grad_(False)
        z, y = self.split(self.noise(real.shape[0]))
        with self.autocast():
            out = self.D(self.G(z, y), y).float()
        loss = losses.G_LOSSES[cfg.loss](out)
        self.update("G", loss)
        self.D.requires_grad_(True)
        logs["G"] = loss.item()
        return logs

    def inspect(self):
        r, c = self.cfg.resolution, self.data.channels
        y = torch.zeros(1, dtype=torch.long, device=self.device)
        return {
            "G": trace_shapes(self.G, torch.zeros(1, self.cfg.latent_dim, device=self.device), y),
            "D": trace_shapes(self.D, torch.zeros(1, c, r, r, device=self.device), y),
        }

"""Pix2Pix (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks", CVPR):
U-Net generator + conditional PatchGAN (reference code junyanz/pytorch-CycleGAN-and-pix2pix).

G (no z: dropout is the noise, the paper's §3.1), all convs k4 s2 p1. Encoder level: LeakyReLU 0.2 →
conv → norm; decoder level: ReLU → transposed conv → norm (→ dropout 0.5); each decoder level's output
is concatenated with the encoder features of the same size (skip first); the last level maps to C
channels with tanh. As in the reference code the activation opens the next level, so skips carry the
normalised, pre-activation encoder features. Three generators:
- `unet_256` [reference, default]: 8 levels to 1x1x512 (64-128-256-512-512-512-512-512); no norm on the first
  and innermost encoder convs; dropout on decoder levels 2-4 (the reference code's placement: the
  innermost decoder level has none); 54,413,955 parameters with BatchNorm (bias only on the output conv).
- `unet_128` [reference]: 7 levels to 1x1 (dropout on decoder levels 2-3); 41,828,995 parameters.
- `unet_seed` [course]: 6 levels 256 → 4x4x512 (64-128-256-512-512-512), the U-Net of a common course
  description, not the paper's; BN on every encoder level but the first (the bottleneck is 4x4 here, so it
  is normalised too), dropout on every decoder level but the output (that description's "typically 50%"
  on each step). That description implies BN on the first level as well; by default it has none
  (reference code; DCGAN's "no BN on the input layer", Radford et al. 2016 §3) and `first_norm: true`
  adds it.
D: conditional PatchGAN on concat(input, output) (6 channels for RGB pairs), `n_layers_D` 0/1/3/5 for the
paper's 1/16/70/286 patches. Loss (reference): BCE on logits averaged over patches (`loss: lsgan`
selectable), G: ℓ(D(x, G(x)), 1) + λ_L1·‖y − G(x)‖₁ with λ_L1 = 100; D: 0.5·(real + fake), D step first.
`real_target: 0.9` gives one-sided smoothing (Salimans et al. 2016 §3.4; often recommended for pix2pix
in course notes, but not in the paper or its code). `l1_only` drops D: the paper's L1-only U-Net
baseline. Adam 2e-4 (0.5, 0.999), N(0, 0.02) init.

Inference keeps dropout on by default (`test_dropout`; the paper's §3.3) and uses BatchNorm's running
statistics. The paper also normalises with the test batch's own statistics; that makes an image's
translation depend on the rest of its evaluation batch, so here it does not. For the same reason the
evaluation passes one seed per image (`translate(x, sample_seeds=...)`) and each image's dropout masks
are drawn from its own generator; training keeps plain dropout on the global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo import losses as L
from zoo.layers import dcgan_init
from zoo.patchgan import conv_bias, norm_layer, patch_discriminator
from zoo.base import make_optimizer
from zoo.translation import TranslationGAN

GENERATORS = {"unet_256": 8, "unet_128": 7, "unet_seed": 6}  # stride-2 levels


@dataclass(frozen=True)
class Config:
    resolution: int = 256
    generator: Literal["unet_256", "unet_128", "unet_seed"] = "unet_256"
    ngf: int = 64
    ndf: int = 64
    n_layers_D: Literal[0, 1, 2, 3, 4, 5] = 3  # 0 PixelGAN, 1 → 16x16, 3 → 70x70, 5 → 286x286 patches
    norm: Literal["batch", "instance"] = "batch"  # G and D; instance for style-like tasks (reference `--norm`)
    first_norm: bool = False  # norm on the first encoder conv (a course U-Net implies it; the reference has none)
    dropout: float = 0.5
    test_dropout: bool = True  # keep dropout on in translate(): pix2pix's noise at inference
    loss: Literal["nonsaturating", "lsgan"] = "nonsaturating"
    lambda_L1: float = 100.0
    l1_only: bool = False  # no D and no adversarial term: the L1-only baseline of the paper
    real_target: float = 1.0  # 0.9 = one-sided smoothing (Salimans et al. 2016; not in the pix2pix paper)
    lr_G: float = 2e-4
    lr_D: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    def __post_init__(self):
        levels = GENERATORS[self.generator]
        if self.resolution < 2**levels or self.resolution % 2**levels:
            raise ValueError(f"{self.generator} halves the image {levels} times: resolution must be a multiple "
                             f"of {2**levels}, got {self.resolution}")
        if self.ngf < 1 or self.ndf < 1:
            raise ValueError("ngf and ndf must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must lie in [0, 1)")
        if self.lambda_L1 < 0 or (self.l1_only and self.lambda_L1 == 0):
            raise ValueError("lambda_L1 must be >= 0, and > 0 with l1_only")
        if not 0.0 < self.real_target <= 1.0:
            raise ValueError("real_target must lie in (0, 1]")
        if self.lr_G <= 0 or self.lr_D <= 0 or not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("learning rates must be > 0 and betas in [0, 1)")


class NoiseDropout(nn.Module):
    """Dropout that can stay on in eval mode (`always_on`). With `sample_generators`, one CPU generator per
    row of the batch, row i's mask is drawn from generator i alone, so a test-time translation is
    reproducible from that image's seed whatever else is in its batch. Without them (training, and
    unseeded sample grids) it is plain `F.dropout` on the global RNG, exactly what training always drew."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.always_on = False
        self.sample_generators: list[torch.Generator] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0 or not (self.training or self.always_on):
            return x
        gens = self.sample_generators
        if gens is None:
            return F.dropout(x, self.p, training=True)
        if len(gens) != x.shape[0]:
            raise ValueError(f"NoiseDropout: {len(gens)} per-sample generators for a batch of {x.shape[0]}")
        keep = torch.stack([torch.rand(x.shape[1:], generator=g) for g in gens]) >= self.p
        return x * keep.to(device=x.device, dtype=x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class UNetGenerator(nn.Module):
    """U-Net with `num_downs` stride-2 levels; widths ngf·min(2**i, 8). `dropout_levels` are decoder level
    indices counted from the innermost (0); None = the reference placement (levels 1 .. num_downs − 5)."""

    def __init__(self, in_ch: int, out_ch: int, num_downs: int = 8, ngf: int = 64, norm: str = "batch",
                 dropout: float = 0.5, dropout_levels: set[int] | None = None, first_norm: bool = False,
                 innermost_norm: bool = False):
        super().__init__()
        n = num_downs
        widths = [ngf * min(2**i, 8) for i in range(n)]
        bias = conv_bias(norm)
        if dropout_levels is None:
            dropout_levels = set(range(1, n - 4))

        def maybe_norm(use: bool, c: int) -> list[nn.Module]:
            m = norm_layer(norm, c) if use else None
            return [m] if m is not None else []

        self.down = nn.ModuleList()
        c_prev = in_ch
        for i, w in enumerate(widths):
            use_norm = (0 < i < n - 1) or (i == 0 and first_norm) or (i == n - 1 and innermost_norm)
            self.down.append(nn.Sequential(
                *([nn.LeakyReLU(0.2)] if i > 0 else []),
                nn.Conv2d(c_prev, w, 4, stride=2, padding=1, bias=bias),
                *maybe_norm(use_norm, w),
            ))
            c_prev = w
        self.up = nn.ModuleList()
        for k in range(n):
            c_in = widths[-1] if k == 0 else 2 * widths[n - 1 - k]
            if k == n - 1:  # output level: C channels, tanh, and the only bias under BatchNorm
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(c_in, out_ch, 4, stride=2, padding=1),
                                             nn.Tanh()))
                continue
            c_out = widths[n - 2 - k]
            self.up.append(nn.Sequential(
                nn.ReLU(),
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=bias),
                *maybe_norm(True, c_out),
                *([NoiseDropout(dropout)] if k in dropout_levels and dropout > 0 else []),
            ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
        skips.pop()  # the bottleneck feeds the decoder directly
        for level in self.up:
            x = level(x)
            if skips:
                x = torch.cat([skips.pop(), x], 1)
        return x


def unet(kind: str, in_ch: int, out_ch: int, ngf: int = 64, norm: str = "batch", dropout: float = 0.5,
         first_norm: bool = False) -> UNetGenerator:
    """The named generator: `unet_256` / `unet_128` (reference) or `unet_seed` (the 6-level course U-Net)."""
    n = GENERATORS[kind]
    if kind == "unet_seed":
        return UNetGenerator(in_ch, out_ch, n, ngf, norm, dropout, set(range(n - 1)), first_norm, innermost_norm=True)
    return UNetGenerator(in_ch, out_ch, n, ngf, norm, dropout, None, first_norm)


def set_test_dropout(net: nn.Module, on: bool, sample_generators: list[torch.Generator] | None = None) -> None:
    for m in net.modules():
        if isinstance(m, NoiseDropout):
            m.always_on, m.sample_generators = on, sample_generators


class Pix2Pix(TranslationGAN):
    family = "pix2pix"
    task = "paired"
    seed_section = "Isola et al. 2017, pix2pix (CVPR), §3, Eq. 4; junyanz/pytorch-CycleGAN-and-pix2pix"
    summary = "Pix2Pix: U-Net G (dropout as noise) + conditional 70x70 PatchGAN, BCE + 100·L1"
    Config = Config

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        c = data.channels
        self.G = unet(cfg.generator, c, c, cfg.ngf, cfg.norm, cfg.dropout, cfg.first_norm)
        dcgan_init(self.G)
        self.opt_G = make_optimizer(self.G.parameters(), cfg, cfg.lr_G)
        self.D = self.opt_D = None
        if not cfg.l1_only:
            self.D = patch_discriminator(2 * c, cfg.ndf, cfg.n_layers_D, cfg.norm)
            dcgan_init(self.D)
            self.opt_D = make_optimizer(self.D.parameters(), cfg, cfg.lr_D)

    def modules(self):
        return {"G": self.G} if self.D is None else {"G": self.G, "D": self.D}

    def optimizers(self):
        return {"G": self.opt_G} if self.D is None else {"G": self.opt_G, "D": self.opt_D}

    def backward_D(self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        with self.autocast():
            real_out = self.D(torch.cat([x, y], 1)).float()
            fake_out = self.D(torch.cat([x, fake.detach()], 1)).float()
        loss = L.d_adversarial(cfg.loss, real_out, fake_out, cfg.real_target)
        self.update("D", loss)
        return {"D": loss.item(), "D/real": L.adversarial(cfg.loss, real_out, cfg.real_target).item(),
                "D/fake": L.adversarial(cfg.loss, fake_out, 0.0).item()}

    def backward_G(self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        loss_l1 = L.l1(fake.float(), y)
        loss, logs = cfg.lambda_L1 * loss_l1, {"G/L1": loss_l1.item()}
        if self.D is not None:
            self.D.requires_grad_(False)  # D frozen in the G step
            with self.autocast():
                out = self.D(torch.cat([x, fake], 1)).float()
            loss_gan = L.g_adversarial(cfg.loss, out)
            loss = loss + loss_gan
            logs["G/gan"] = loss_gan.item()
        self.update("G", loss)
        if self.D is not None:
            self.D.requires_grad_(True)
        return {"G": loss.item(), **logs}

    def train_step(self, draw, step):
        self.train(True)
        x, y = draw()
        with self.autocast():
            fake = self.G(x)
        logs = self.backward_D(x, y, fake) if self.D is not None else {}
        return {**logs, **self.backward_G(x, y, fake)}

    @torch.no_grad()
    def translate(self, x: torch.Tensor, sample_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """ŷ = G(x) in [-1, 1], BatchNorm on running statistics, dropout on unless `test_dropout: false`.
        Row i's dropout masks come from a generator seeded with sample_seeds[i] when given (reproducible,
        and the same in any batch), else from the global RNG."""
        if sample_seeds is not None and len(sample_seeds) != len(x):
            raise ValueError(f"translate: {len(sample_seeds)} sample seeds for a batch of {len(x)}")
        G = self.sampling_net("G")
        G.eval()
        gens = None if sample_seeds is None else [torch.Generator().manual_seed(int(s)) for s in sample_seeds]
        set_test_dropout(G, self.cfg.test_dropout, gens)
        try:
            return G(x.to(self.device)).float()
        finally:
            set_test_dropout(G, False)

    def receptive_fields(self):
        return {} if self.D is None else {"D": self.D.receptive_field}

    def inspect(self):
        return self.conditional_inspection(self.data.channels)

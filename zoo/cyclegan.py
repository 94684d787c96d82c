"""CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks", ICCV): two ResNet generators, two 70x70 PatchGANs, cycle + identity losses (reference code:
junyanz/pytorch-CycleGAN-and-pix2pix, `models/cycle_gan_model.py` and `models/networks.py`).

G: A→B and F: B→A share the ResNet architecture of the paper's appendix and the reference `ResnetGenerator`:
c7s1-64, d128, d256, R256×n, u128, u64, c7s1-C, tanh. Reflection padding for the 7x7 and residual convs;
instance norm without affine parameters, so every conv keeps its bias; the residual block is
conv-IN-ReLU-conv-IN + input (`ResnetBlock`), no long skips. n = 9 blocks at 256 px and 6 below (the
paper's appendix: 6 for 128 px, 9 for 256 px and up): 11,378,179 and 7,837,699 parameters for RGB.
D_A (real A vs F(b)) and D_B (real B vs G(a)) are unconditional 70x70 PatchGANs with instance norm
(2,764,737 parameters each for RGB).

Losses (reference): LSGAN without the ½ (the paper's §4, the reference's MSELoss), adversarial weight 1,
cycle λ = 10 per direction (Eq. 2-3), identity 0.5·λ in the correct form ‖G(b) − b‖₁ + ‖F(a) − a‖₁ (the
paper's §5.2; a common course version writes ‖G(a) − a‖₁ + ‖F(b) − b‖₁, which is wrong: it feeds each
generator its source domain), D loss 0.5·(real + fake). Each iteration does a G step (both generators,
D frozen) and then a D step (both discriminators, on fakes drawn through a 50-image pool each, p = 0.5;
the reference's `optimize_parameters` order, not the "simultaneous" update some course notes describe).
One Adam (2e-4, 0.5, 0.999) for the two generators, one for the two discriminators. No dropout by
default, and none at test time (the reference's cycle_gan model defaults to `--no_dropout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import nn

from zoo import losses as L
from zoo.image_pool import ImagePool
from zoo.layers import dcgan_init
from zoo.patchgan import conv_bias, norm_layer, patch_discriminator
from zoo.base import CycleTranslator, make_optimizer
from zoo.translation import Inspection, TranslationGAN


@dataclass(frozen=True)
class Config:
    resolution: int = 256
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 0  # residual blocks; 0 = by resolution: 9 at >= 256 px, 6 below (paper appendix)
    n_layers_D: Literal[0, 1, 2, 3, 4, 5] = 3
    norm: Literal["instance", "batch"] = "instance"
    dropout: float = 0.0  # inside the residual blocks (the reference's use_dropout; off for CycleGAN)
    loss: Literal["lsgan", "nonsaturating"] = "lsgan"
    lambda_cycle: float = 10.0  # per direction (lambda_A = lambda_B)
    lambda_identity: float = 0.5  # identity weight as a fraction of lambda_cycle (0.5 → 5)
    pool_size: int = 50
    pool_p: float = 0.5
    lr_G: float = 2e-4
    lr_D: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    def __post_init__(self):
        if self.resolution < 4 or self.resolution % 4:
            raise ValueError(f"the ResNet generator halves the image twice: resolution must be a multiple of 4, "
                             f"got {self.resolution}")
        if self.ngf < 1 or self.ndf < 1 or self.n_blocks < 0:
            raise ValueError("ngf and ndf must be positive and n_blocks >= 0")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.pool_p <= 1.0 or self.pool_size < 0:
            raise ValueError("dropout must lie in [0, 1), pool_p in [0, 1] and pool_size >= 0")
        if self.lambda_cycle < 0 or self.lambda_identity < 0:
            raise ValueError("lambda_cycle and lambda_identity must be >= 0")
        if self.lr_G <= 0 or self.lr_D <= 0 or not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("learning rates must be > 0 and betas in [0, 1)")

    @property
    def blocks(self) -> int:
        return self.n_blocks or (9 if self.resolution >= 256 else 6)


class ResnetBlock(nn.Module):
    """x + [reflect-pad, conv3, norm, ReLU, (dropout), reflect-pad, conv3, norm](x)."""

    def __init__(self, dim: int, norm: str = "instance", dropout: float = 0.0):
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim),
                                   nn.ReLU()]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def c7s1(c_in: int, c_out: int, norm: str | None) -> list[nn.Module]:
    """7x7 stride-1 conv on a reflection-padded input, with norm + ReLU (or bare, for the output conv)."""
    if norm is None:
        return [nn.ReflectionPad2d(3), nn.Conv2d(c_in, c_out, 7)]
    return [nn.ReflectionPad2d(3), nn.Conv2d(c_in, c_out, 7, bias=conv_bias(norm)), norm_layer(norm, c_out), nn.ReLU()]


def down(c_in: int, c_out: int, norm: str) -> list[nn.Module]:
    """d_k: 3x3 stride-2 conv, norm, ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=conv_bias(norm)), norm_layer(norm, c_out), nn.ReLU()]


def up(c_in: int, c_out: int, norm: str) -> list[nn.Module]:
    """u_k: 3x3 stride-2 transposed conv (output_padding 1: exactly doubles), norm, ReLU."""
    return [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=conv_bias(norm)),
            norm_layer(norm, c_out), nn.ReLU()]


class ResnetGenerator(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, n_blocks: int = 9, norm: str = "instance",
                 dropout: float = 0.0, n_downsampling: int = 2):
        super().__init__()
        layers = c7s1(in_ch, ngf, norm)
        for i in range(n_downsampling):
            layers += down(ngf * 2**i, ngf * 2**(i + 1), norm)
        dim = ngf * 2**n_downsampling
        layers += [ResnetBlock(dim, norm, dropout) for _ in range(n_blocks)]
        for i in range(n_downsampling, 0, -1):
            layers += up(ngf * 2**i, ngf * 2**(i - 1), norm)
        layers += [*c7s1(ngf, out_ch, None), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class CycleGAN(TranslationGAN, CycleTranslator):
    family = "cyclegan"
    task = "unpaired"
    seed_section = "Zhu et al. 2017, CycleGAN (ICCV), §3-4, §5.2, appendix; junyanz/pytorch-CycleGAN-and-pix2pix"
    summary = "CycleGAN: two ResNet G (A→B, B→A), two 70x70 PatchGANs, LSGAN + 10·cycle + 5·identity, image pools"
    Config = Config

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        c = data.channels
        self.G = ResnetGenerator(c, c, cfg.ngf, cfg.blocks, cfg.norm, cfg.dropout)  # A → B
        self.F = ResnetGenerator(c, c, cfg.ngf, cfg.blocks, cfg.norm, cfg.dropout)  # B → A
        self.D_A = patch_discriminator(c, cfg.ndf, cfg.n_layers_D, cfg.norm)  # real A vs F(b)
        self.D_B = patch_discriminator(c, cfg.ndf, cfg.n_layers_D, cfg.norm)  # real B vs G(a)
        for net in (self.G, self.F, self.D_A, self.D_B):
            dcgan_init(net)
        self.opt_G = make_optimizer([*self.G.parameters(), *self.F.parameters()], cfg, cfg.lr_G)
        self.opt_D = make_optimizer([*self.D_A.parameters(), *self.D_B.parameters()], cfg, cfg.lr_D)
        # The pools draw from their own generators, seeded from the run's noise generator on first use
        # (the runner seeds that one after building the model) and checkpointed in extra_state().
        self.pool_A = ImagePool(cfg.pool_size, cfg.pool_p, torch.Generator())
        self.pool_B = ImagePool(cfg.pool_size, cfg.pool_p, torch.Generator())
        self._pools_seeded = False

    def modules(self):
        return {"G": self.G, "F": self.F, "D_A": self.D_A, "D_B": self.D_B}

    def optimizers(self):
        return {"G": self.opt_G, "D": self.opt_D}

    def _seed_pools(self) -> None:
        if not self._pools_seeded:
            seeds = torch.randint(0, 2**62, (2,), generator=self.noise_rng).tolist()
            self.pool_A.generator.manual_seed(seeds[0])
            self.pool_B.generator.manual_seed(seeds[1])
            self._pools_seeded = True

    def extra_state(self):
        return {"pool_A": self.pool_A.state_dict(), "pool_B": self.pool_B.state_dict(),
                "pools_seeded": self._pools_seeded}

    def load_extra_state(self, state):
        self.pool_A.load_state_dict(state["pool_A"])
        self.pool_B.load_state_dict(state["pool_B"])
        self._pools_seeded = bool(state["pools_seeded"])

    def backward_G(self, a: torch.Tensor, b: torch.Tensor) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        for D in (self.D_A, self.D_B):
            D.requires_grad_(False)
        with self.autocast():
            fake_b, fake_a = self.G(a), self.F(b)
            rec_a, rec_b = self.F(fake_b), self.G(fake_a)
            adv_G = L.g_adversarial(cfg.loss, self.D_B(fake_b).float())
            adv_F = L.g_adversarial(cfg.loss, self.D_A(fake_a).float())
            cycle = L.cycle_loss(a, rec_a.float(), b, rec_b.float(), cfg.lambda_cycle, cfg.lambda_cycle)
            loss = adv_G + adv_F + cycle
            logs = {"G/adv_G": adv_G.item(), "G/adv_F": adv_F.item(), "G/cycle": cycle.item()}
            if cfg.lambda_identity:
                ident = L.identity_loss(lambda t: self.G(t).float(), lambda t: self.F(t).float(), a, b)
                loss = loss + cfg.lambda_identity * cfg.lambda_cycle * ident
                logs["G/identity"] = ident.item()
        self.update("G", loss)
        for D in (self.D_A, self.D_B):
            D.requires_grad_(True)
        return {"G": loss.item(), **logs}, fake_a.detach(), fake_b.detach()

    def backward_D(self, a: torch.Tensor, b: torch.Tensor, fake_a: torch.Tensor,
                   fake_b: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        self._seed_pools()
        fake_a, fake_b = self.pool_A.query(fake_a), self.pool_B.query(fake_b)
        with self.autocast():
            loss_A = L.d_adversarial(cfg.loss, self.D_A(a).float(), self.D_A(fake_a).float())
            loss_B = L.d_adversarial(cfg.loss, self.D_B(b).float(), self.D_B(fake_b).float())
        self.update("D", loss_A + loss_B)
        return {"D": (loss_A + loss_B).item(), "D/A": loss_A.item(), "D/B": loss_B.item()}

    def train_step(self, draw, step):
        self.train(True)
        a, b = draw()
        logs, fake_a, fake_b = self.backward_G(a, b)
        return {**logs, **self.backward_D(a, b, fake_a, fake_b)}

    def cycle(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(G(a)), G(F(b))) in eval mode: the inputs to a cycle-consistency error."""
        return self.translate_back(self.translate(a)), self.translate(self.translate_back(b))

    @torch.no_grad()
    def translate(self, a: torch.Tensor, sample_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """G(a): domain A → B, in [-1, 1]. Eval mode: no test-time noise, so `sample_seeds` is unused."""
        G = self.sampling_net("G")
        G.eval()
        return G(a.to(self.device)).float()

    @torch.no_grad()
    def translate_back(self, b: torch.Tensor, sample_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """F(b): domain B → A, in [-1, 1] (no test-time noise either)."""
        self.F.eval()
        return self.F(b.to(self.device)).float()

    def receptive_fields(self):
        return {"D_A": self.D_A.receptive_field, "D_B": self.D_B.receptive_field}

    def inspect(self):
        r, c = self.cfg.resolution, self.data.channels
        g_rows = self._trace(self.G, (1, c, r, r))
        d_rows = self._trace(self.D_A, (1, c, r, r))
        return Inspection({"G": g_rows, "F": g_rows, "D_A": d_rows, "D_B": d_rows}, self.receptive_fields())

"""pix2pixhd_sem: a "semantic network" variant of Pix2PixHD, a low-resolution → high-resolution synthesiser
with a frozen semantic network S, as a course summary of Pix2PixHD describes it. Not the Pix2PixHD paper
(Wang et al. 2018; that is `pix2pixhd`): the summary differs from the paper in its inputs (low-resolution
images, not label maps), its losses (L1 + a semantic-network loss with a log-likelihood GAN term, not
LSGAN + feature matching + VGG) and its generator (encoder→decoder skips), and this family follows the summary.

G: an encoder ("a series of convolutional layers"), a bottleneck ("a set of residual
blocks") and a decoder ("transposed convolutions and residual connections"), with skips from encoder to
decoder. Built from the pix2pixHD/CycleGAN blocks: c7s1-ngf, `n_downsample` d-blocks (3x3 stride 2,
doubling), `n_blocks` residual blocks, as many u-blocks (3x3 stride-2 transposed convs, halving), c7s1-C,
tanh; instance norm, reflection padding. Each u-block's output is *added* to the encoder features of the
same size: the summary's encoder→decoder skips taken as the residual connections it names, which adds no
parameter, so G has exactly the parameters of the ResNet generator it is built on (11,378,179 for RGB
with the defaults, CycleGAN's resnet_9blocks). Its input is the low-resolution image bicubically upsampled
to the output size (bench/data/superres.py says why); its output is the full-resolution image.
Defaults (ngf 64, 2 downsamplings, 9 blocks) are that generator's, since the summary gives no sizes
(ganbench's choice).

D ("PatchGAN plus multi-scale discriminators"): pix2pixHD's `MultiscaleDiscriminator`
(zoo/pix2pixhd.py), `num_D` 70x70 PatchGANs at 1x, 1/2x, 1/4x, conditional on concat(x, image) since
the summary's L_GAN is D(x, y) / D(x, G(x)).

Losses (as the summary writes them):
  L_GAN = E[log D(x, y)] + E[log(1 − D(x, G(x)))]   summed over the D scales; `loss: nonsaturating` (the
          summary's log form: BCE on logits, G non-saturating) by default, `lsgan` (the paper's) selectable
  L_L1  = E‖y − G(x)‖₁
  L_sem = E‖S(G(x)) − S(y)‖₁                        S frozen, S(y) a constant target
  L_G   = L_GAN + λ_L1·L_L1 + λ_sem·L_sem
The summary gives no λ: λ_L1 = 100 as pix2pix (Isola et al. 2017) and λ_sem = 10, the weight pix2pixHD
gives its VGG loss, the closest analogue of S in the paper (both ganbench's choices). `lambda_sem: 0`
removes the term (S is then never run, nor needed). D loss 0.5·(real + fake) as pix2pix. Step order as
the summary's training loop: G forward, D step on real and generated pairs, then G step with D frozen. No
feature matching: the summary never mentions it (the paper's central loss). Adam 2e-4 (0.5, 0.999), as
the official pix2pixHD options.

What L_sem compares (`sem_output`): S's per-pixel class probabilities (softmax, the default), as the mean
absolute difference over pixels and classes (so at most 2/K per pixel). Probabilities, not logits:
they are what "matches the semantic labels" means, they are bounded, and they ignore what carries no
label information (adding a constant to every logit of a pixel changes no probability, but would
change an L1 on logits, so G would be pushed to match S's arbitrary logit offsets). `logits` is kept
for comparison.

S is a `FrozenSegmenter` (bench/features/segmenter.py) handed in with `attach_segmenter`: eval mode, no
parameter gradients, not in `modules()` (not trained, checkpointed or averaged) and in no optimiser;
its sha256, held-out pixel accuracy and mIoU go into the model card.

`generator: bicubic` is the no-learning baseline every SR result is read against: G returns its input,
the bicubic upsampling of the low-resolution image; no D, nothing to train (use `train: {steps: 0}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bench.errors import BenchError
from zoo import losses as L
from zoo.cyclegan import ResnetBlock, c7s1, down, up
from zoo.layers import dcgan_init
from zoo.pix2pixhd import MultiscaleDiscriminator
from zoo.base import make_optimizer
from zoo.translation import TranslationGAN


@dataclass(frozen=True)
class Config:
    resolution: int = 256
    generator: Literal["encoder_decoder", "bicubic"] = "encoder_decoder"
    ngf: int = 64
    n_downsample: int = 2
    n_blocks: int = 9
    ndf: int = 64
    n_layers_D: int = 3
    num_D: int = 3
    d_padding: Literal[1, 2] = 2  # pix2pixHD's official padding (grids 35/19/11 on 256 px)
    norm: Literal["instance", "batch"] = "instance"
    loss: Literal["nonsaturating", "lsgan"] = "nonsaturating"  # the summary's log-likelihood L_GAN
    lambda_L1: float = 100.0  # not in the summary: pix2pix's value
    lambda_sem: float = 10.0  # not in the summary: pix2pixHD's VGG weight
    sem_output: Literal["softmax", "logits"] = "softmax"
    lr_G: float = 2e-4
    lr_D: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    def __post_init__(self):
        if self.resolution < 2**self.n_downsample or self.resolution % 2**self.n_downsample:
            raise ValueError(f"the encoder halves the image {self.n_downsample} times: resolution must be a "
                             f"multiple of {2**self.n_downsample}, got {self.resolution}")
        if min(self.ngf, self.ndf, self.n_layers_D, self.num_D) < 1 or self.n_downsample < 0 or self.n_blocks < 0:
            raise ValueError("ngf, ndf, n_layers_D and num_D must be positive, n_downsample and n_blocks >= 0")
        if self.lambda_L1 < 0 or self.lambda_sem < 0:
            raise ValueError("lambda_L1 and lambda_sem must be >= 0")
        if self.lr_G <= 0 or self.lr_D <= 0 or not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("learning rates must be > 0 and betas in [0, 1)")


class EncoderDecoderGenerator(nn.Module):
    """c7s1-ngf, d·n_down, R×n_blocks, u·n_down with each u-output + the encoder map of its size, c7s1-C, tanh."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, n_downsample: int = 2, n_blocks: int = 9,
                 norm: str = "instance"):
        super().__init__()
        self.stem = nn.Sequential(*c7s1(in_ch, ngf, norm))
        self.down = nn.ModuleList(nn.Sequential(*down(ngf * 2**i, ngf * 2**(i + 1), norm)) for i in range(n_downsample))
        self.bottleneck = nn.Sequential(*[ResnetBlock(ngf * 2**n_downsample, norm) for _ in range(n_blocks)])
        self.up = nn.ModuleList(nn.Sequential(*up(ngf * 2**i, ngf * 2**(i - 1), norm))
                                for i in range(n_downsample, 0, -1))
        self.head = nn.Sequential(*c7s1(ngf, out_ch, None), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        h = self.bottleneck(skips.pop())
        for block in self.up:
            h = block(h) + skips.pop()  # encoder → decoder skip, as a residual connection
        return self.head(h)


def semantic_loss(S: nn.Module, fake: torch.Tensor, real: torch.Tensor, output: str = "softmax") -> torch.Tensor:
    """L_sem = mean |S(G(x)) − S(y)| over pixels and classes, on probabilities (or logits); S(y) is a target."""
    def sem(logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(1) if output == "softmax" else logits.float()

    with torch.no_grad():
        target = sem(S(real))
    return (sem(S(fake)) - target).abs().mean()


class Pix2PixHDSem(TranslationGAN):
    family = "pix2pixhd_sem"
    task = "paired"
    seed_section = "Course summary of Pix2PixHD (not Wang et al. 2018): L1 + frozen semantic network S"
    summary = "004 Pix2PixHD variant: low-res → high-res enc-dec G, 3-scale PatchGAN, GAN + 100·L1 + 10·L_sem"
    Config = Config
    uses_segmenter = True  # the runner trains or loads S (bench/features/segmenter.py) for runs with this family

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        c = data.channels
        self.S: nn.Module | None = None
        if cfg.generator == "bicubic":
            self.G, self.D = nn.Identity(), None
            self.opt_G = self.opt_D = None
            return
        self.G = EncoderDecoderGenerator(c, c, cfg.ngf, cfg.n_downsample, cfg.n_blocks, cfg.norm)
        self.D = MultiscaleDiscriminator(2 * c, cfg.ndf, cfg.n_layers_D, cfg.num_D, cfg.norm, cfg.d_padding)
        dcgan_init(self.G)
        dcgan_init(self.D)
        self.opt_G = make_optimizer(self.G.parameters(), cfg, cfg.lr_G)
        self.opt_D = make_optimizer(self.D.parameters(), cfg, cfg.lr_D)

    def modules(self):
        return {"G": self.G} if self.D is None else {"G": self.G, "D": self.D}

    def optimizers(self):
        return {} if self.D is None else {"G": self.opt_G, "D": self.opt_D}

    # -- the frozen semantic network -------------------------------------------------------------
    def requires(self) -> frozenset[str]:
        return frozenset({"segmenter"}) if self.cfg.generator != "bicubic" and self.cfg.lambda_sem > 0 else frozenset()

    def attach_segmenter(self, S: nn.Module) -> None:
        """Hand in S (a FrozenSegmenter). Frozen again here, so no caller can make it trainable by accident."""
        S.requires_grad_(False)
        S.eval()
        self.S = S.to(self.device)

    def card(self) -> dict[str, Any]:
        card = super().card()
        if self.S is not None:
            card["semantic_net"] = dict(getattr(self.S, "info", {}))
        return card

    # -- training (the summary's loop) ---------------------------------------------------------------
    def backward_D(self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        with self.autocast():
            real_out = self.D(torch.cat([x, y], 1))
            fake_out = self.D(torch.cat([x, fake.detach()], 1))
        loss_real = L.multiscale_adversarial(cfg.loss, [[fs[-1].float()] for fs in real_out], 1.0)
        loss_fake = L.multiscale_adversarial(cfg.loss, [[fs[-1].float()] for fs in fake_out], 0.0)
        loss = 0.5 * (loss_real + loss_fake)
        self.update("D", loss)
        return {"D": loss.item(), "D/real": loss_real.item(), "D/fake": loss_fake.item()}

    def backward_G(self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        self.D.requires_grad_(False)  # D frozen in the G step
        with self.autocast():
            out = self.D(torch.cat([x, fake], 1))
        loss_gan = L.multiscale_adversarial(cfg.loss, [[fs[-1].float()] for fs in out], 1.0)
        loss_l1 = L.l1(fake.float(), y)
        loss = loss_gan + cfg.lambda_L1 * loss_l1
        logs = {"G/gan": loss_gan.item(), "G/L1": loss_l1.item()}
        if cfg.lambda_sem > 0:
            with self.autocast():
                loss_sem = semantic_loss(self.S, fake, y, cfg.sem_output)
            loss = loss + cfg.lambda_sem * loss_sem
            logs["G/sem"] = loss_sem.item()
        self.update("G", loss)
        self.D.requires_grad_(True)
        return {"G": loss.item(), **logs}

    def train_step(self, draw, step):
        if self.D is None:
            raise BenchError("pix2pixhd_sem with generator: bicubic has nothing to train; use train: {steps: 0}")
        if "segmenter" in self.requires() and self.S is None:
            raise RuntimeError("pix2pixhd_sem's L_sem needs the semantic network S: call attach_segmenter(S) "
                               "first, or set lambda_sem: 0")
        self.train(True)
        x, y = draw()
        with self.autocast():
            fake = self.G(x)
        logs = self.backward_D(x, y, fake)
        return {**logs, **self.backward_G(x, y, fake)}

    # -- description -------------------------------------------------------------------------------
    def receptive_fields(self):
        return {} if self.D is None else {"D": self.D.receptive_fields}

    def inspect(self):
        return self.conditional_inspection(self.data.channels)

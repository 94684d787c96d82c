"""Pix2PixHD (Wang et al. 2018, "High-Resolution Image Synthesis and Semantic Manipulation with Conditional
GANs", CVPR, §3.2): coarse-to-fine generator, multi-scale PatchGANs, feature matching (official code
NVIDIA/pix2pixHD, `models/networks.py` and `models/pix2pixHD_model.py`).

G1, the global generator: c7s1-64, d128, d256, d512, d1024, R1024×9, u512, u256, u128, u64, c7s1-C;
instance norm (no affine, convs keep bias), reflection padding, tanh. G2, the local enhancer
(`generator: local`): c7s1-32, d64, whose output is summed with G1's last feature map (before G1's final
c7s1-C) computed on the input downsampled 2x, then R64×3, u32, c7s1-C. `ngf` is G1's base width (64); a
local enhancer is ngf/2 wide (the official `--ngf` names the enhancer's width instead, 32 in the paper's
2048x1024 script, which makes the global part 64 again: the same network).

D: `num_D` identical PatchGANs (n_layers 3, instance norm) on the conditional pair concat(input, image)
at 1x, 1/2x, 1/4x, downsampled by AvgPool2d(3, stride 2, padding 1, count_include_pad=False).
`d_padding` 2 is the official ceil((4 − 1)/2) (grids 35/67/131 on 256/512/1024 px); 1 gives pix2pix's
stack (30/62/126). num_D = 3 as in the paper (the official code defaults to 2).

Losses: LSGAN (no ½) summed over the discriminators, D loss 0.5·(real + fake); feature matching
λ_feat = 10 over every D's intermediate layers but the last, weighted 4/(n_layers + 1) per layer and
1/num_D per D, real features detached; VGG19 perceptual loss λ = 10 (1/32 ... 1 over relu1_1 ... relu5_1),
which needs the VGG19 features handed in with `attach_vgg` (weights from the manifest; set `lambda_vgg: 0`
to train without). The official model computes the D(real) features once: they serve as the FM target
and, after the G step, in the D loss. G step, then D step, Adam 2e-4 (0.5, 0.999).

Label-map inputs (cityscapes): G reads the data's `input_channels`, label_nc one-hot channels + the
instance boundary map (bench/data/labelmap.py), and D the pair concat(input, image). Not here: the
instance-wise feature encoder, and the "semantic network" variant of a course summary (`pix2pixhd_sem`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from zoo import losses as L
from zoo.cyclegan import ResnetBlock, c7s1, down, up
from zoo.image_pool import ImagePool
from zoo.layers import dcgan_init
from zoo.patchgan import NLayerDiscriminator, receptive_field
from zoo.base import WarmStart, make_optimizer
from zoo.translation import TranslationGAN


@dataclass(frozen=True)
class Config:
    resolution: int = 512
    generator: Literal["global", "local"] = "global"
    ngf: int = 64  # the global generator's base width; a local enhancer has ngf / 2**n_local_enhancers
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    ndf: int = 64
    n_layers_D: int = 3
    num_D: int = 3
    d_padding: Literal[1, 2] = 2  # official pix2pixHD: 2 (35x35 on 256 px); 1 = pix2pix's stack (30x30)
    norm: Literal["instance", "batch"] = "instance"
    loss: Literal["lsgan", "nonsaturating"] = "lsgan"
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    vgg_normalize: bool = True  # map [-1, 1] to ImageNet statistics before VGG (the official code does not)
    pool_size: int = 0  # the official default: no image pool
    lr_G: float = 2e-4
    lr_D: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    # local enhancer: train only the local branches for the first N steps, the global part frozen (the official
    # `niter_fix_global`, there in epochs), typically after `train.init_from` a trained global generator
    fix_global_steps: int = 0

    def __post_init__(self):
        if self.fix_global_steps < 0 or (self.fix_global_steps and self.generator != "local"):
            raise ValueError("fix_global_steps is for generator: local (>= 0)")
        halvings = self.n_downsample_global + (self.n_local_enhancers if self.generator == "local" else 0)
        if self.resolution < 2**halvings or self.resolution % 2**halvings:
            raise ValueError(f"the {self.generator} generator halves the image {halvings} times: resolution must "
                             f"be a multiple of {2**halvings}, got {self.resolution}")
        if self.generator == "local" and (self.n_local_enhancers < 1 or self.ngf % 2**self.n_local_enhancers):
            raise ValueError("a local enhancer needs n_local_enhancers >= 1 and ngf divisible by 2**n_local_enhancers")
        if min(self.ngf, self.ndf, self.n_layers_D, self.num_D, self.n_downsample_global) < 1:
            raise ValueError("ngf, ndf, n_layers_D, num_D and n_downsample_global must be positive")
        if self.n_blocks_global < 0 or self.n_blocks_local < 0 or self.pool_size < 0:
            raise ValueError("block counts and pool_size must be >= 0")
        if self.lambda_feat < 0 or self.lambda_vgg < 0:
            raise ValueError("lambda_feat and lambda_vgg must be >= 0")
        if self.lr_G <= 0 or self.lr_D <= 0 or not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("learning rates must be > 0 and betas in [0, 1)")


def downsample() -> nn.AvgPool2d:
    """The official 2x downsampler between scales (count_include_pad=False: borders are not darkened)."""
    return nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)


def global_layers(in_ch: int, out_ch: int, ngf: int, n_down: int, n_blocks: int, norm: str) -> list[nn.Module]:
    layers = c7s1(in_ch, ngf, norm)
    for i in range(n_down):
        layers += down(ngf * 2**i, ngf * 2**(i + 1), norm)
    layers += [ResnetBlock(ngf * 2**n_down, norm) for _ in range(n_blocks)]
    for i in range(n_down, 0, -1):
        layers += up(ngf * 2**i, ngf * 2**(i - 1), norm)
    return layers + [*c7s1(ngf, out_ch, None), nn.Tanh()]


class GlobalGenerator(nn.Module):
    """G1: c7s1-ngf, d·n_down, R×n_blocks, u·n_down, c7s1-C, tanh."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, n_downsampling: int = 4, n_blocks: int = 9,
                 norm: str = "instance"):
        super().__init__()
        self.model = nn.Sequential(*global_layers(in_ch, out_ch, ngf, n_downsampling, n_blocks, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LocalEnhancer(nn.Module):
    """G2 around G1: enhancer n (1 = outermost) runs at full/2**(N−n) resolution; its front end
    (c7s1-w, d2w) is summed with the coarser network's last feature map, then R2w×n_blocks_local, uw."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, n_downsample_global: int = 4, n_blocks_global: int = 9,
                 n_local_enhancers: int = 1, n_blocks_local: int = 3, norm: str = "instance"):
        super().__init__()
        self.n_local = n_local_enhancers
        # G1 without its output layers (reflection pad, c7s1-C, tanh): it hands over its ngf-wide features.
        self.global_features = nn.Sequential(
            *global_layers(in_ch, out_ch, ngf, n_downsample_global, n_blocks_global, norm)[:-3])
        self.front, self.back = nn.ModuleList(), nn.ModuleList()
        for n in range(1, n_local_enhancers + 1):
            w = ngf // 2**n
            self.front.append(nn.Sequential(*c7s1(in_ch, w, norm), *down(w, 2 * w, norm)))
            back = [ResnetBlock(2 * w, norm) for _ in range(n_blocks_local)] + up(2 * w, w, norm)
            if n == n_local_enhancers:
                back += [*c7s1(w, out_ch, None), nn.Tanh()]
            self.back.append(nn.Sequential(*back))
        self.downsample = downsample()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [x]
        for _ in range(self.n_local):
            pyramid.append(self.downsample(pyramid[-1]))
        out = self.global_features(pyramid[-1])
        for n in range(1, self.n_local + 1):
            out = self.back[n - 1](self.front[n - 1](pyramid[self.n_local - n]) + out)
        return out


class MultiscaleDiscriminator(nn.Module):
    """num_D identical PatchGANs; D_k sees the input downsampled k times. `forward` returns, per D, the
    list of every block's output (the last one is the logit grid)."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, num_D: int = 3, norm: str = "instance",
                 padding: int = 2):
        super().__init__()
        self.n_layers = n_layers
        self.discriminators = nn.ModuleList(NLayerDiscriminator(in_ch, ndf, n_layers, norm, padding)
                                            for _ in range(num_D))
        self.downsample = downsample()

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for k, D in enumerate(self.discriminators):
            if k:
                x = self.downsample(x)
            out.append(D(x, return_features=True))
        return out

    @property
    def receptive_fields(self) -> list[int]:
        """RF of each D in full-resolution pixels: its conv stack after k (3, 2) poolings (70, 141, 283, ...)."""
        convs = self.discriminators[0].conv_layers()
        return [receptive_field([(3, 2)] * k + convs) for k in range(len(self.discriminators))]


def input_channels(data) -> int:
    """What G reads: the image's channels, or for label maps (bench/data/labelmap.py) label_nc one-hot
    channels plus the instance boundary map. D sees that input concatenated with the image."""
    return getattr(data, "input_channels", 0) or data.channels


class Pix2PixHD(TranslationGAN, WarmStart):
    family = "pix2pixhd"
    task = "paired"
    seed_section = "Wang et al. 2018, Pix2PixHD (CVPR), §3.2; NVIDIA/pix2pixHD"
    summary = "Pix2PixHD: global (+ local enhancer) ResNet G, 3-scale PatchGANs, LSGAN + 10·FM + 10·VGG"
    Config = Config

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        c, c_in = data.channels, input_channels(data)
        if cfg.generator == "global":
            self.G = GlobalGenerator(c_in, c, cfg.ngf, cfg.n_downsample_global, cfg.n_blocks_global, cfg.norm)
        else:
            self.G = LocalEnhancer(c_in, c, cfg.ngf, cfg.n_downsample_global, cfg.n_blocks_global,
                                   cfg.n_local_enhancers, cfg.n_blocks_local, cfg.norm)
        self.D = MultiscaleDiscriminator(c_in + c, cfg.ndf, cfg.n_layers_D, cfg.num_D, cfg.norm, cfg.d_padding)
        dcgan_init(self.G)
        dcgan_init(self.D)
        self.opt_G = make_optimizer(self.G.parameters(), cfg, cfg.lr_G)
        self.opt_D = make_optimizer(self.D.parameters(), cfg, cfg.lr_D)
        self.vgg: L.VGGPerceptualLoss | None = None
        self.pool = ImagePool(cfg.pool_size, 0.5, torch.Generator())
        self._pool_seeded = False

    def modules(self):
        return {"G": self.G, "D": self.D}

    def optimizers(self):
        return {"G": self.opt_G, "D": self.opt_D}

    def requires(self) -> frozenset[str]:
        return frozenset({"vgg19"}) if self.cfg.lambda_vgg > 0 else frozenset()

    def attach_vgg(self, features: nn.Module) -> None:
        """Hand in torchvision's vgg19().features with its weights already loaded (never downloaded here).
        It is frozen and not part of modules(): it is not trained or checkpointed."""
        self.vgg = L.VGGPerceptualLoss(features, normalize=self.cfg.vgg_normalize).to(self.device)

    def extra_state(self):
        return {"pool": self.pool.state_dict(), "pool_seeded": self._pool_seeded}

    def load_extra_state(self, state):
        self.pool.load_state_dict(state["pool"])
        self._pool_seeded = bool(state["pool_seeded"])

    def warm_start(self, payload, source):
        """From a pix2pixhd checkpoint: the same generator type loads G and D whole (fine-tuning); a local
        enhancer from a global generator takes G1's layers up to its output block into its global part, as the
        paper's staged training (Wang et al. 2018, §3.2: G1 first, then G2 with G1 inside)."""
        if payload.get("family") != self.family:
            raise ValueError(f"{source} is a '{payload.get('family')}' checkpoint, not pix2pixhd")
        g = payload["modules"]["G"]
        if self.cfg.generator == "local" and any(k.startswith("model.") for k in g):
            target = self.G.global_features.state_dict()
            taken = {k: g[f"model.{k}"] for k in target if f"model.{k}" in g}
            if set(taken) != set(target):
                raise ValueError(f"{source}: its global generator does not match this local enhancer's global part "
                                 "(ngf, n_downsample_global, n_blocks_global and norm must agree)")
            try:
                self.G.global_features.load_state_dict(taken)
            except RuntimeError as exc:
                raise ValueError(f"{source}: its global generator does not match this local enhancer's global part "
                                 f"({str(exc).splitlines()[-1].strip()})") from None
            return f"global generator of {source} -> this local enhancer's global part ({len(taken)} tensors)"
        try:
            self.G.load_state_dict(g)
            self.D.load_state_dict(payload["modules"]["D"])
        except RuntimeError as exc:
            raise ValueError(f"{source}: does not fit this entry ({str(exc).splitlines()[-1].strip()})") from None
        return f"G and D of {source}"

    def train_step(self, draw, step):
        cfg = self.cfg
        if cfg.fix_global_steps:  # the global part trains again from step fix_global_steps on
            self.G.global_features.requires_grad_(step >= cfg.fix_global_steps)
        if "vgg19" in self.requires() and self.vgg is None:
            raise RuntimeError("pix2pixhd's VGG loss needs VGG19 features: call attach_vgg(features) first, "
                               "or set lambda_vgg: 0")
        self.train(True)
        x, y = draw()
        with self.autocast():
            fake = self.G(x)
            real_feats = self.D(torch.cat([x, y], 1))  # FM target now (detached), D loss after the G step
        # G step: D frozen
        self.D.requires_grad_(False)
        with self.autocast():
            fake_feats = self.D(torch.cat([x, fake], 1))
        fake_feats = [[f.float() for f in fs] for fs in fake_feats]
        real_f32 = [[f.float() for f in fs] for fs in real_feats]
        loss_gan = L.multiscale_adversarial(cfg.loss, fake_feats, 1.0)
        loss_fm = L.feature_matching(real_f32, fake_feats, cfg.n_layers_D, cfg.lambda_feat)
        loss_G = loss_gan + loss_fm
        logs = {"G/gan": loss_gan.item(), "G/feat": loss_fm.item()}
        if "vgg19" in self.requires():
            with self.autocast():
                loss_vgg = cfg.lambda_vgg * self.vgg(fake, y).float()
            loss_G = loss_G + loss_vgg
            logs["G/vgg"] = loss_vgg.item()
        self.update("G", loss_G)
        self.D.requires_grad_(True)
        # D step
        if not self._pool_seeded:
            self.pool.generator.manual_seed(int(torch.randint(0, 2**62, (), generator=self.noise_rng)))
            self._pool_seeded = True
        fake_in = self.pool.query(torch.cat([x, fake.detach()], 1))
        with self.autocast():
            pool_feats = self.D(fake_in)
        loss_real = L.multiscale_adversarial(cfg.loss, [[fs[-1]] for fs in real_f32], 1.0)
        loss_fake = L.multiscale_adversarial(cfg.loss, [[fs[-1].float()] for fs in pool_feats], 0.0)
        loss_D = 0.5 * (loss_real + loss_fake)
        self.update("D", loss_D)
        return {"G": loss_G.item(), **logs, "D": loss_D.item(), "D/real": loss_real.item(), "D/fake": loss_fake.item()}

    def receptive_fields(self):
        return {"D": self.D.receptive_fields}

    def inspect(self):
        return self.conditional_inspection(input_channels(self.data))

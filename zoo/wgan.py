"""Wasserstein GANs on the DCGAN backbone: weight clipping (WGAN) and gradient penalty (WGAN-GP).

WGAN (Arjovsky, Chintala & Bottou 2017, "Wasserstein GAN", ICML, Algorithm 1): the critic is DCGAN's D
with no sigmoid (an unbounded score); it minimises E[C(G(z))] − E[C(x)] (the minimised form; some course
notes label the maximised quantity E[C(x)] − E[C(G(z))] as the critic loss, which flips the sign) and G
minimises −E[C(G(z))]. After every critic step every critic parameter is clamped to [−0.01, 0.01]; 5 critic
steps per G step, each on a fresh real batch and fresh noise (as Algorithm 1; reusing one batch for all 5,
as some course code does, is the `fresh_batches: false` switch); RMSProp 5e-5 (Algorithm 1). BatchNorm
stays in the critic, as in the paper's DCGAN critic.

WGAN-GP (Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", NeurIPS, Eq. 3 and Algorithm 1):
the same losses, no clipping, plus λ·E[(‖∇C(x̂)‖₂ − 1)²] with λ = 10 at x̂ = αx + (1 − α)G(z), α ~ U[0, 1]
per sample and the norm over all non-batch dimensions (a common course snippet's `norm(2, dim=1)` takes it
over channels only, which is a bug). No BatchNorm in the critic (the paper's §4; layer or instance norm
allowed, `d_norm`), Adam 1e-4 with betas (0, 0.9), 5 critic steps (Algorithm 1; igul222/improved_wgan_training).

The generator is DCGAN's (ganbench's choice, as in both papers' DCGAN experiments).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zoo.dcgan import DCGAN
from zoo.dcgan import Config as DCGANConfig


@dataclass(frozen=True)
class WGANConfig(DCGANConfig):
    loss: Literal["minimax", "nonsaturating", "lsgan", "hinge", "wasserstein"] = "wasserstein"
    optimizer: Literal["adam", "rmsprop"] = "rmsprop"
    lr_G: float = 5e-5
    lr_D: float = 5e-5
    n_d: int = 5
    clip_weights: float = 0.01


@dataclass(frozen=True)
class WGANGPConfig(DCGANConfig):
    loss: Literal["minimax", "nonsaturating", "lsgan", "hinge", "wasserstein"] = "wasserstein"
    lr_G: float = 1e-4
    lr_D: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.9
    n_d: int = 5
    gp_lambda: float = 10.0
    d_norm: Literal["batch", "none", "layer", "instance"] = "none"


class WGAN(DCGAN):
    family = "wgan"
    seed_section = "Arjovsky et al. 2017, Wasserstein GAN (ICML), Algorithm 1"
    summary = "WGAN: DCGAN backbone, critic without sigmoid, weights clipped to ±0.01, n_critic 5, RMSProp 5e-5"
    Config = WGANConfig


class WGANGP(DCGAN):
    family = "wgan_gp"
    seed_section = "Gulrajani et al. 2017, Improved Training of Wasserstein GANs (NeurIPS), Alg. 1"
    summary = "WGAN-GP: DCGAN backbone, critic without BN, gradient penalty λ 10, n_critic 5, Adam 1e-4 (0, 0.9)"
    Config = WGANGPConfig

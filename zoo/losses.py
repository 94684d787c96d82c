"""Small pure GAN loss functions on discriminator logits. Each one is a formula, not a framework.

Adversarial losses come in pairs (D loss, G loss), selected by name:
- `minimax`: D minimises BCE; G *minimises* E[log(1 − D(G(z)))] (the saturating form of Goodfellow et al.
  2014, Eq. 1; a common course snippet writes −mean(log(1 − D)), which has the wrong sign: it must be
  +mean(log(1 − D))).
- `nonsaturating`: D as above; G minimises −E[log D(G(z))] (Goodfellow et al. 2014, §3).
- `lsgan`: ½E[(D(x) − b)²] + ½E[(D(G(z)) − a)²] for D, ½E[(D(G(z)) − 1)²] for G (Mao et al. 2017, LSGAN).
- `hinge`: E[relu(1 − D(x))] + E[relu(1 + D(G(z)))] for D, −E[D(G(z))] for G (Lim & Ye 2017; Miyato et
  al. 2018).
- `wasserstein`: the critic minimises E[C(G(z))] − E[C(x)] (Arjovsky et al. 2017; the minimised form, where
  some course notes write the maximised one as "L_D"), G minimises −E[C(G(z))].
The BCE D loss is averaged over its real and fake halves, 0.5·(real + fake), as the course's MNIST loop.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LOSS_KINDS = ("minimax", "nonsaturating", "lsgan", "hinge", "wasserstein")


def bce_to_target(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy on logits against a constant target (0.9 = one-sided smoothing)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0,
               fake_target: float = 0.0) -> torch.Tensor:
    """Discriminator BCE, averaged over the real and the fake half as the course's MNIST loop does."""
    return 0.5 * (bce_to_target(real_logits, real_target) + bce_to_target(fake_logits, fake_target))


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[log D(G(z))]: the generator asks D to call its samples real."""
    return bce_to_target(fake_logits, 1.0)


def g_loss_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    """E[log(1 − D(G(z)))], minimised by G; log(1 − sigmoid(l)) = −softplus(l)."""
    return -F.softplus(fake_logits).mean()


def d_loss_lsgan(real_out: torch.Tensor, fake_out: torch.Tensor, real_target: float = 1.0,
                 fake_target: float = 0.0) -> torch.Tensor:
    return 0.5 * ((real_out - real_target) ** 2).mean() + 0.5 * ((fake_out - fake_target) ** 2).mean()


def g_loss_lsgan(fake_out: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake_out - 1.0) ** 2).mean()


def d_loss_hinge(real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_out).mean() + F.relu(1.0 + fake_out).mean()


def d_loss_wasserstein(real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
    return fake_out.mean() - real_out.mean()


def g_loss_critic(fake_out: torch.Tensor) -> torch.Tensor:
    """−E[D(G(z))]: the hinge and Wasserstein generator loss."""
    return -fake_out.mean()


def d_loss(kind: str, real_out: torch.Tensor, fake_out: torch.Tensor, real_target: float = 1.0,
           fake_target: float = 0.0) -> torch.Tensor:
    """The discriminator side of loss `kind`; targets apply to the BCE and LSGAN forms (label smoothing)."""
    if kind in ("minimax", "nonsaturating"):
        return d_loss_bce(real_out, fake_out, real_target, fake_target)
    if kind == "lsgan":
        return d_loss_lsgan(real_out, fake_out, real_target, fake_target)
    if kind == "hinge":
        return d_loss_hinge(real_out, fake_out)
    if kind == "wasserstein":
        return d_loss_wasserstein(real_out, fake_out)
    raise ValueError(f"unknown loss '{kind}'; valid: {', '.join(LOSS_KINDS)}")


G_LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "minimax": g_loss_minimax,
    "nonsaturating": g_loss_nonsaturating,
    "lsgan": g_loss_lsgan,
    "hinge": g_loss_critic,
    "wasserstein": g_loss_critic,
}


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: E[(‖∇C(x̂)‖₂ − 1)²] at x̂ = αx + (1 − α)G(z), one α per sample (shape (B, 1, 1, 1)).

    The norm runs over every non-batch dimension; the `norm(2, dim=1)` of a common course snippet takes it
    over channels only, which is a different (wrong) penalty on image inputs.
    """
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def r1_penalty(disc: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 = (γ/2)·E‖∇D(x_real)‖² on real data only (Mescheder et al. 2018, "Which Training Methods for GANs
    do actually Converge?"; γ = 10 as StyleGAN on FFHQ).

    One convention: γ multiplies ½·E‖∇‖², so a course snippet's `0.5 * mean(...)` times λ_r1 equals this
    with λ_r1 = γ.
    """
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(x).sum(), x, create_graph=True)
    return 0.5 * gamma * grad.pow(2).flatten(1).sum(1).mean()


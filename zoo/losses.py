"""Small pure GAN loss functions on discriminator logits. Each one is a formula, not a framework."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_to_target(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy on logits against a constant target (0.9 = one-sided smoothing)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0,
               fake_target: float = 0.0) -> torch.Tensor:
    """Discriminator BCE, averaged over the real and the fake half as the seed loop does."""
    return 0.5 * (bce_to_target(real_logits, real_target) + bce_to_target(fake_logits, fake_target))


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[log D(G(z))]: the generator asks D to call its samples real."""
    return bce_to_target(fake_logits, 1.0)

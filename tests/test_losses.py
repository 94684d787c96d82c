"""Loss variants, penalties and label smoothing against closed forms on hand-picked inputs."""

import math

import pytest
import torch
from torch import nn

from zoo import losses


def t(*v):
    return torch.tensor(v, dtype=torch.float64).view(-1, 1)


def sp(x):  # softplus
    return math.log1p(math.exp(x))


def test_bce_pair_matches_the_formula():
    real, fake = t(2.0, -1.0), t(0.5, -3.0)
    expect_real = (sp(-2.0) + sp(1.0)) / 2  # −log σ(l)
    expect_fake = (sp(0.5) + sp(-3.0)) / 2  # −log(1 − σ(l))
    assert losses.d_loss("nonsaturating", real, fake).item() == pytest.approx(0.5 * (expect_real + expect_fake))
    assert losses.d_loss("minimax", real, fake).item() == pytest.approx(0.5 * (expect_real + expect_fake))


def test_saturating_and_nonsaturating_generator_losses_have_the_right_signs():
    fake = t(-4.0, 0.0)
    # minimax: G minimises E[log(1 − D(G(z)))] = −E[softplus(l)], which falls as D(G(z)) rises
    assert losses.g_loss_minimax(fake).item() == pytest.approx(-(sp(-4.0) + sp(0.0)) / 2)
    assert losses.g_loss_minimax(t(3.0)) < losses.g_loss_minimax(t(-3.0))
    # its gradient vanishes when D confidently rejects fakes (the saturation the seeds describe)
    l = t(-8.0).requires_grad_(True)
    losses.g_loss_minimax(l).backward()
    assert abs(l.grad.item()) < 1e-3
    l2 = t(-8.0).requires_grad_(True)
    losses.g_loss_nonsaturating(l2).backward()
    assert abs(l2.grad.item()) > 0.99
    assert losses.g_loss_nonsaturating(fake).item() == pytest.approx((sp(4.0) + sp(0.0)) / 2)


def test_lsgan_hinge_wasserstein_closed_forms():
    assert losses.d_loss("lsgan", t(1.0, 1.0), t(0.0, 0.0)).item() == 0.0  # D_r = 1, D_f = 0 is perfect
    assert losses.d_loss("lsgan", t(0.0), t(1.0)).item() == pytest.approx(1.0)  # ½·1 + ½·1
    assert losses.g_loss_lsgan(t(1.0)).item() == 0.0 and losses.g_loss_lsgan(t(-1.0)).item() == pytest.approx(2.0)
    assert losses.d_loss("hinge", t(2.0), t(-2.0)).item() == 0.0  # outside the margins
    assert losses.d_loss("hinge", t(0.0), t(0.0)).item() == pytest.approx(2.0)
    assert losses.d_loss("hinge", t(0.5), t(-0.25)).item() == pytest.approx(0.5 + 0.75)
    assert losses.G_LOSSES["hinge"](t(3.0, 1.0)).item() == pytest.approx(-2.0)
    # the critic *minimises* E[C(G(z))] − E[C(x)] (Arjovsky et al. 2017, Algorithm 1)
    assert losses.d_loss("wasserstein", t(3.0, 1.0), t(-1.0, 0.0)).item() == pytest.approx(-0.5 - 2.0)
    assert losses.G_LOSSES["wasserstein"](t(-1.0, 0.0)).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.d_loss("wgan", t(0.0), t(0.0))


def test_two_sided_smoothing_really_targets_0_1_for_fakes():
    # A course snippet's `zeros * 0.1` stays 0 (two-sided smoothing that smooths nothing). Here the fake-side loss is minimised exactly at
    # D(G(z)) = 0.1: its gradient vanishes at logit(0.1) and not at very negative logits.
    at_target = torch.tensor([[math.log(0.1 / 0.9)]], requires_grad=True)
    losses.d_loss("nonsaturating", torch.zeros(1, 1), at_target, 0.9, 0.1).backward()
    assert abs(at_target.grad.item()) < 1e-7
    confident = torch.tensor([[-10.0]], requires_grad=True)
    losses.d_loss("nonsaturating", torch.zeros(1, 1), confident, 0.9, 0.1).backward()
    assert confident.grad.item() < -0.04  # pushed back up towards 0.1
    real = torch.tensor([[math.log(0.9 / 0.1)]], requires_grad=True)
    losses.d_loss("nonsaturating", real, torch.zeros(1, 1), 0.9, 0.1).backward()
    assert abs(real.grad.item()) < 1e-7


class Linear(nn.Module):
    """C(x) = <w, x> over all of (C, H, W): gradient w everywhere, so every penalty has a closed form."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True)


def _w(norm, shape=(3, 4, 4)):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return w / w.norm() * norm


@pytest.mark.parametrize("norm,expected", [(1.0, 0.0), (2.0, 1.0), (3.0, 4.0)])
def test_gradient_penalty_of_a_linear_critic_on_image_inputs(norm, expected):
    g = torch.Generator().manual_seed(1)
    real = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    fake = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    alpha = torch.rand(6, 1, 1, 1, generator=g, dtype=torch.float64)
    gp = losses.gradient_penalty(Linear(_w(norm)), real, fake, alpha)
    assert gp.item() == pytest.approx(expected, abs=1e-10)
    # the seed's norm over dim=1 (channels only) gives a different number: the test would catch it
    w = _w(norm)
    buggy = ((w.unsqueeze(0).expand(6, -1, -1, -1).norm(2, dim=1) - 1) ** 2).mean().item()
    assert abs(buggy - expected) > 0.1


def test_gradient_penalty_keeps_the_graph_for_the_critic_update():
    crit = Linear(_w(2.0))
    gp = losses.gradient_penalty(crit, torch.zeros(2, 3, 4, 4, dtype=torch.float64),
                                 torch.ones(2, 3, 4, 4, dtype=torch.float64), torch.full((2, 1, 1, 1), 0.5,
                                                                                          dtype=torch.float64))
    gp.backward()  # d/dw (‖w‖ − 1)² = 2(‖w‖ − 1)·w/‖w‖
    assert torch.allclose(crit.w.grad, 2 * (2.0 - 1) * crit.w.detach() / 2.0)


@pytest.mark.parametrize("gamma", [10.0, 1.0])
def test_r1_of_a_linear_discriminator_is_half_gamma_w_squared(gamma):
    w = _w(1.7)
    real = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    r1 = losses.r1_penalty(Linear(w), real, gamma)
    assert r1.item() == pytest.approx(gamma / 2 * 1.7 ** 2)

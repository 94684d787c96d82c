"""Every GAN loss of the zoo as a small pure function: each one is a formula, not a framework.

Unconditional families (the shared recipe, zoo/base.py):

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

Image-to-image families (pix2pix, CycleGAN, pix2pixHD; the second half of this file):
Adversarial terms follow the reference code's GANLoss (junyanz/pytorch-CycleGAN-and-pix2pix
`models/networks.py`): the D (or G) output grid is compared with an all-`target` grid, BCE on logits for
`nonsaturating` (pix2pix's "vanilla": averaged over patches, Isola et al. 2017 §3.2.2) or MSE for
`lsgan`. The LSGAN form here has no ½ (CycleGAN's, Zhu et al. 2017 §4, and the reference's MSELoss), so
the adversarial weight 1 stands in the paper's ratio to λ_cyc = 10; the unconditional `lsgan` above keeps the ½ of
Mao et al. 2017. Both conventions are the papers' own; each family uses its paper's. D losses are halved, 0.5·(real + fake).
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

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


# -- image-to-image losses ----------------------------------------------------------------------

AdvKind = Literal["nonsaturating", "lsgan"]


def adversarial(kind: str, out: torch.Tensor, target: float) -> torch.Tensor:
    """Mean over every patch of BCE-with-logits (`nonsaturating`) or squared error (`lsgan`) to `target`."""
    full = torch.full_like(out, target)
    if kind == "nonsaturating":
        return F.binary_cross_entropy_with_logits(out, full)
    if kind == "lsgan":
        return F.mse_loss(out, full)
    raise ValueError(f"unknown adversarial loss '{kind}'; valid: nonsaturating, lsgan")


def d_adversarial(kind: str, real_out: torch.Tensor, fake_out: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """D loss 0.5·(ℓ(D(real), real_target) + ℓ(D(fake), 0)); real_target 0.9 is one-sided smoothing
    (Salimans et al. 2016 §3.4)."""
    return 0.5 * (adversarial(kind, real_out, real_target) + adversarial(kind, fake_out, 0.0))


def g_adversarial(kind: str, fake_out: torch.Tensor) -> torch.Tensor:
    """G asks D to call its output real: ℓ(D(G(x)), 1) (the non-saturating form for BCE)."""
    return adversarial(kind, fake_out, 1.0)


def multiscale_adversarial(kind: str, outputs: Sequence[Sequence[torch.Tensor]], target: float) -> torch.Tensor:
    """pix2pixHD: the adversarial term summed over the discriminators, each on its last output (the logits)."""
    return sum(adversarial(kind, feats[-1], target) for feats in outputs)


def l1(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_L1 = E‖y − G(x)‖₁ as a mean over pixels (Isola et al. 2017, Eq. 3)."""
    return (fake - target).abs().mean()


def cycle_loss(a: torch.Tensor, rec_a: torch.Tensor, b: torch.Tensor, rec_b: torch.Tensor,
               lambda_a: float = 10.0, lambda_b: float = 10.0) -> torch.Tensor:
    """λ_A·E‖F(G(a)) − a‖₁ + λ_B·E‖G(F(b)) − b‖₁ (Zhu et al. 2017, Eq. 2; λ = 10 per direction)."""
    return lambda_a * l1(rec_a, a) + lambda_b * l1(rec_b, b)


def identity_loss(G: Callable[[torch.Tensor], torch.Tensor], F_: Callable[[torch.Tensor], torch.Tensor],
                  a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """E‖G(b) − b‖₁ + E‖F(a) − a‖₁ with G: A→B and F: B→A: each generator fed its *target* domain should
    leave it alone (Zhu et al. 2017 §5.2; the reference's loss_idt_A = ‖G_A(real_B) − real_B‖₁). A common
    course version writes E‖G(a) − a‖₁ + E‖F(b) − b‖₁, which is wrong: it feeds each generator its source."""
    return l1(G(b), b) + l1(F_(a), a)


def feature_matching(real_features: Sequence[Sequence[torch.Tensor]], fake_features: Sequence[Sequence[torch.Tensor]],
                     n_layers: int, lambda_feat: float = 10.0) -> torch.Tensor:
    """pix2pixHD's L_FM: per discriminator k and intermediate layer i (every layer but the logits),
    λ·(1/num_D)·(4/(n_layers + 1))·mean|D_k⁽ⁱ⁾(fake) − D_k⁽ⁱ⁾(real)|. The real features are detached, so
    the term pulls G towards D's view of real data and never moves D through the real branch."""
    num_d = len(fake_features)
    layer_w, d_w = 4.0 / (n_layers + 1), 1.0 / num_d
    loss = fake_features[0][0].new_zeros(())
    for real_k, fake_k in zip(real_features, fake_features):
        for real_i, fake_i in zip(real_k[:-1], fake_k[:-1]):
            loss = loss + d_w * layer_w * l1(fake_i, real_i.detach())
    return lambda_feat * loss


class VGGPerceptualLoss(nn.Module):
    """pix2pixHD's VGG loss: Σ_i w_i·mean|φ_i(fake) − φ_i(real)| on relu1_1, relu2_1, relu3_1, relu4_1 and
    relu5_1 of VGG19 (layer weights 1/32, 1/16, 1/8, 1/4, 1; the family multiplies by λ = 10).

    `features` is an already-built torchvision `vgg19(...).features` whose weights the caller loaded (from the
    weights manifest; nothing is downloaded here). It is frozen. Inputs are images in [-1, 1]; with
    `normalize` (default) they are mapped to the ImageNet statistics VGG was trained on. The reference
    code feeds [-1, 1] straight in; `normalize=False` reproduces that.
    """

    SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
    WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

    def __init__(self, features: nn.Module, normalize: bool = True, weights: Sequence[float] = WEIGHTS):
        super().__init__()
        layers = list(features.children())
        if len(layers) < self.SLICES[-1][1]:
            raise ValueError(f"expected torchvision's vgg19().features (>= 30 layers), got {len(layers)} layers")
        features.requires_grad_(False)
        self.slices = nn.ModuleList(nn.Sequential(*layers[a:b]) for a, b in self.SLICES).eval()
        self.weights = tuple(weights)
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # the frozen network stays in eval mode
        return super().train(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize:
            x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the real side is a target
            f_real = self._features(real)
        return sum(w * l1(a, b) for w, a, b in zip(self.weights, self._features(fake), f_real))

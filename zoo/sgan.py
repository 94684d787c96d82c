"""Semi-supervised GAN with a K+1-class discriminator (Salimans et al. 2016, "Improved Techniques for
Training GANs", NeurIPS, §5; reference code openai/improved-gan).

D sorts an image into one of K real classes or class K ("fake"); on MNIST K = 10, so 11 logits. Only
`labelled_per_class` training images per class carry labels (10 x 10 = 100 labelled digits, the
paper's MNIST setting, Table 1); every training image also serves unlabelled. With l the logits and
lse = logsumexp:
- supervised:   L_sup   = CE over the K real logits on labelled images = −log p(y | x, y < K)
- unsupervised: L_unsup = −E_data log(1 − p(K | x)) − E_G log p(K | x)
                        = E_data[lse(l) − lse(l_<K)] + E_G[lse(l) − l_K]
- D minimises L_sup + L_unsup;
- G: feature matching (the default, Salimans et al.): ‖E f(x) − E f(G(z))‖² on D's penultimate
  features (§3.1: the squared distance between batch means of one layer), or `g_loss: nonsaturating`,
  −E_G log(1 − p(K | G(z))), which asks D to put fakes in real classes.
`unsupervised: false` trains D on L_sup alone and never trains G: the plain classifier of the same
backbone on the same labels, the baseline a semi-supervised GAN is compared against (course notes quote
error 10-20% for the labels alone vs < 1% with the GAN; Salimans et al. report ≈ 0.93% with 100 labels).

The architecture is ganbench's choice, not the reference's: G is the course's MNIST generator
(zoo/mnist_gan.py); D is that model's discriminator conv stack without BatchNorm and with dropout 0.3
after each conv (BN and dropout are the usual advice against overfitting 100 labels; BN's batch coupling
across the labelled/unlabelled/fake streams is avoided), ending in K+1 logits.

Two settings come from the reference code of Salimans et al. (openai/improved-gan,
mnist_svhn_cifar10/train_mnist_feature_matching.py), not from the generic DCGAN-style recipe:
- Adam lr 0.003 for D and G (`lr = 0.003`, `mom1=0.5`), not 2e-4. With 2e-4 the unlabelled and
  generated images changed nothing within the mnist-zoo budget (1,000 steps of 64): D was no better
  than the same D on the 100 labels alone (reports/sgan-investigation.md).
- `seed_data` (the reference's `--seed_data`, default 1) alone picks the labelled images, apart from the
  training seed, so `sgan` and its labels-only baseline in one protocol train on the same 100 labels
  (before, each entry name drew its own 100, which by itself moved the baseline by about a point).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.base import Classifier, Recipe, TwoPlayerGAN, trace_shapes
from zoo.mnist_gan import Generator


@dataclass(frozen=True)
class Config(Recipe):
    latent_dim: int = 100
    labelled_per_class: int = 10  # 10 x 10 classes = 100 labelled MNIST images (Salimans et al.)
    unsupervised: bool = True  # false = supervised-only baseline on the same labels (G untrained)
    g_loss: Literal["feature_matching", "nonsaturating"] = "feature_matching"
    dropout: float = 0.3
    # Salimans et al. 2016 reference (train_mnist_feature_matching.py): Adam lr 0.003, beta1 0.5 (Recipe's beta1).
    lr_G: float = 3e-3
    lr_D: float = 3e-3
    seed_data: int = 1  # the reference's --seed_data: picks the labelled subset, independent of the training seed
    bn_momentum: float = 0.01  # the course MNIST generator's Keras-style BatchNorm
    bn_eps: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        if self.labelled_per_class < 1 or not 0 <= self.dropout < 1 or self.latent_dim < 1:
            raise ValueError("labelled_per_class >= 1, 0 <= dropout < 1 and latent_dim >= 1 are required")
        if self.loss != "nonsaturating" or self.n_d != 1 or self.gp_lambda or self.r1_gamma or self.clip_weights:
            raise ValueError("sgan has its own K+1-class losses; loss, n_d, gp_lambda, r1_gamma and "
                             "clip_weights do not apply")


class Discriminator(nn.Module):
    def __init__(self, channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 64, 5, stride=2, padding=2), nn.LeakyReLU(0.2), nn.Dropout(dropout),
            nn.Conv2d(64, 128, 5, stride=2, padding=2), nn.LeakyReLU(0.2), nn.Dropout(dropout),
            nn.Flatten(),
        )
        self.head = nn.Linear(7 * 7 * 128, num_classes + 1)  # index num_classes = "fake"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−log p(y | x, y < K): cross-entropy over the real-class logits only."""
    return F.cross_entropy(logits[:, :-1], labels)


def unsupervised_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−E_data log(1 − p(K | x)) − E_G log p(K | x), written with logsumexp for stability."""
    real_term = torch.logsumexp(real_logits, 1) - torch.logsumexp(real_logits[:, :-1], 1)
    fake_term = torch.logsumexp(fake_logits, 1) - fake_logits[:, -1]
    return real_term.mean() + fake_term.mean()


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between batch-mean features; the real side is a constant target."""
    return ((real_features.detach().mean(0) - fake_features.mean(0)) ** 2).mean()


class SGAN(TwoPlayerGAN, Classifier):
    family = "sgan"
    seed_section = "Salimans et al. 2016, Improved Techniques for Training GANs (NeurIPS), §3.1, §5"
    summary = "Semi-supervised GAN: K+1-class D (index K = fake), 100 labels, feature-matching G"
    Config = Config
    # Its own D step (supervised + unsupervised losses) does not pass through the shared augmentation and
    # replay; its networks are plain conv/linear layers.
    stabilisers = frozenset({"spectral_norm", "init"})

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        if data.num_classes < 2:
            raise ValueError("sgan needs a labelled data set (mnist or cifar10)")
        if data.resolution != 28 or data.channels != 1:
            raise ValueError(f"sgan is MNIST-sized (28 px, 1 channel), the data is {data.resolution} px, "
                             f"{data.channels} channel(s)")
        self.G = Generator(cfg)
        self.D = Discriminator(data.channels, data.num_classes, cfg.dropout)
        self.build_optimizers()

    latent_dim = property(lambda self: self.cfg.latent_dim)
    resolution = property(lambda self: 28)
    labelled_per_class = property(lambda self: self.cfg.labelled_per_class)
    labelled_seed = property(lambda self: self.cfg.seed_data)

    def train_step(self, draw, step):
        self.train(True)
        labelled, labels = draw.labelled()
        logs: dict[str, float] = {}
        with self.autocast():
            loss_sup = supervised_loss(self.D(labelled).float(), labels)
        loss = loss_sup
        logs["D/sup"] = loss_sup.item()
        if self.cfg.unsupervised:
            real = draw()
            with torch.no_grad(), self.autocast():
                fake = self.G(self.noise(real.shape[0])).float()
            with self.autocast():
                loss_unsup = unsupervised_loss(self.D(real).float(), self.D(fake).float())
            loss = loss + loss_unsup
            logs["D/unsup"] = loss_unsup.item()
        logs["D"] = loss.item()
        self.update("D", loss)
        if self.cfg.unsupervised:
            logs.update(self.backward_G_sgan(real))
        return logs

    def backward_G_sgan(self, real: torch.Tensor) -> dict[str, float]:
        self.D.requires_grad_(False)
        with self.autocast():
            fake = self.G(self.noise(real.shape[0]))
            if self.cfg.g_loss == "feature_matching":
                with torch.no_grad():
                    real_f = self.D.features(real)
                loss = feature_matching_loss(real_f.float(), self.D.features(fake).float())
            else:  # −log(1 − p(K | G(z))): fakes should land in a real class
                logits = self.D(fake).float()
                loss = (torch.logsumexp(logits, 1) - torch.logsumexp(logits[:, :-1], 1)).mean()
        self.update("G", loss)
        self.D.requires_grad_(True)
        return {"G": loss.item()}

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """K+1 logits for images in [-1, 1] (dropout off): `classifier_accuracy` reads the first K."""
        self.D.eval()
        return self.D(images.to(self.device)).float()

    def inspect(self):
        return {
            "G": trace_shapes(self.G, torch.zeros(1, self.cfg.latent_dim, device=self.device)),
            "D": trace_shapes(self.D, torch.zeros(1, self.data.channels, 28, 28, device=self.device)),
        }

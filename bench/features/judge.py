"""The judge: a small CNN classifier that ganbench trains itself on the labelled training part.

Pretrained Inception weights cannot be had offline, and Inception features of 28 px digits say
little anyway; MNIST papers score with a classifier trained on the data. The judge gives IS from its
softmax and FID/KID from its penultimate layer. It is trained with explicit seeds, cached by a hash
of its training data and recipe, and its identity (sha256 of its weights) enters the fingerprint.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from bench.data.transforms import to_float
from bench.features.cache import DiskCache, cache_key
from bench.io import sha256_tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeRecipe:
    version: int = 3
    width: int = 32
    feature_dim: int = 128
    steps: int = 500  # iterations, not epochs: small training parts still get a well-trained judge
    batch_size: int = 128
    lr: float = 2e-3


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class JudgeNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *_block(channels, w), nn.MaxPool2d(2),
            *_block(w, 2 * w), nn.MaxPool2d(2),
            *_block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(3), nn.Flatten(),
        )
        self.features = nn.Linear(4 * w * 9, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)
        # Per-dimension standardisation of the reported features, fitted on the training part after
        # training: FID/KID then live on a fixed scale (unit variance per feature on real data)
        # instead of whatever scale the classifier happened to learn.
        self.register_buffer("feat_mean", torch.zeros(feature_dim))
        self.register_buffer("feat_std", torch.ones(feature_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Penultimate features are taken before the ReLU: no dead dimensions in the covariance.
        f = self.features(self.body(x))
        return (f - self.feat_mean) / self.feat_std, self.head(torch.relu(f))

    @torch.no_grad()
    def fit_standardisation(self, images: torch.Tensor, batch_size: int = 500) -> None:
        device = self.feat_mean.device
        self.feat_mean.zero_()
        self.feat_std.fill_(1.0)
        feats = torch.cat([self(to_float(images[i:i + batch_size]).to(device))[0].double().cpu()
                           for i in range(0, len(images), batch_size)])
        self.feat_mean.copy_(feats.mean(0).float())
        self.feat_std.copy_(feats.std(0).clamp_min(1e-6).float())


def train_judge(images: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int,
                recipe: JudgeRecipe = JudgeRecipe(), device: torch.device | str = "cpu") -> JudgeNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = JudgeNet(images.shape[1], num_classes, recipe.width, recipe.feature_dim).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    # Cosine decay to zero: a stable end point, so the judge does not depend on where training stopped.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.steps)
    gen = torch.Generator().manual_seed(seed + 1)
    n = len(images)
    net.train()
    step = 0
    with tqdm(total=recipe.steps, desc="judge", leave=False, unit="step", disable=None) as bar:
        while step < recipe.steps:
            perm = torch.randperm(n, generator=gen)  # epochs of a seeded permutation
            for i in range(0, n - recipe.batch_size + 1 if n >= recipe.batch_size else 1, recipe.batch_size):
                if step == recipe.steps:
                    break
                idx = perm[i:i + recipe.batch_size]
                x = to_float(images[idx]).to(device)
                y = labels[idx].to(device)
                loss = nn.functional.cross_entropy(net(x)[1], y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    net.eval()
    net.fit_standardisation(images)
    return net


@torch.no_grad()
def accuracy(net: JudgeNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    device = next(net.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = net(to_float(images[i:i + batch_size]).to(device))[1]
        correct += (logits.argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
    return correct / len(images)


def get_judge(train_images, train_labels, eval_images, eval_labels, num_classes: int, seed: int,
              device="cpu", recipe: JudgeRecipe = JudgeRecipe()) -> tuple[JudgeNet, dict]:
    """Train or load from cache; returns the net and {sha256, accuracy, cache}."""
    cache = DiskCache("judges")
    key = cache_key(kind="judge", recipe=asdict(recipe), seed=seed, num_classes=num_classes,
                    data=sha256_tensor(train_images, train_labels))
    hit = cache.get(key)
    net = JudgeNet(train_images.shape[1], num_classes, recipe.width, recipe.feature_dim)
    if hit is not None:
        net.load_state_dict(hit["state_dict"])
        net.to(device).eval()
        status = "hit"
    else:
        log.info("training the judge classifier (cached afterwards)")
        net = train_judge(train_images, train_labels, num_classes, seed, recipe, device)
        state = {k: v.cpu() for k, v in net.state_dict().items()}
        cache.put(key, {"state_dict": state})
        status = "miss"
    state = net.state_dict()
    sha = sha256_tensor(*[state[k] for k in sorted(state)])
    acc = accuracy(net, eval_images, eval_labels)
    return net, {"sha256": sha, "heldout_accuracy": acc, "cache": status}

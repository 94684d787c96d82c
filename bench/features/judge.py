"""The judge: a small CNN classifier, shipped as a pinned weights file, that scores images like Inception.

Pretrained Inception weights cannot be had offline, and Inception features of 28 px digits say little
anyway; MNIST papers score with a classifier trained on the data. The judge gives IS from its softmax
and FID/KID from its penultimate layer.

A judge is a measuring instrument, so it is a file, not a recipe: `judge:mnist` and `judge:cifar10` are
trained once (`bench judge train DATASET`, recipe below), committed under bench/judges/ with their sha256
in the weights manifest, and loaded on every machine. Retraining from the same recipe differs in the last
bits with the CPU and the thread count, which is why the file and not the recipe is the identity.
Each file also lists a content digest of every image it was trained on, so "the judge never saw the
reference" is checked by hash for every protocol, not assumed.

`judge:local` trains a judge on the protocol's own training part on demand (for a user's data set, or
MNIST with its train split present, where the shipped judge's training pool overlaps the test split).
Its cache key includes the machine (CPU, threads, torch), and every run that uses it records that it is
local, i.e. not comparable across machines.
"""

from __future__ import annotations

import logging
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from bench.data.transforms import to_float
from bench.errors import BenchError
from bench.features.cache import DiskCache, cache_key
from bench.io import atomic_torch_save, sha256_file, sha256_tensor

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


def get_local_judge(train_images, train_labels, eval_images, eval_labels, num_classes: int, seed: int,
                    device="cpu", recipe: JudgeRecipe = JudgeRecipe()) -> tuple[JudgeNet, dict]:
    """Train on the protocol's own training part, or load from the cache; returns (net, info).

    The cache key holds everything that changes the weights, the machine included: a cached local judge
    from another CPU or thread count is never mistaken for this one.
    """
    from bench import machine

    device_type = torch.device(device).type
    cache = DiskCache("judges")
    key = cache_key(kind="local-judge", recipe=asdict(recipe), seed=seed, num_classes=num_classes,
                    data=sha256_tensor(train_images, train_labels), machine=machine.identity(device_type))
    hit = cache.get(key)
    net = JudgeNet(train_images.shape[1], num_classes, recipe.width, recipe.feature_dim)
    if hit is not None:
        net.load_state_dict(hit["state_dict"])
        net.to(device).eval()
        status = "hit"
    else:
        log.info("training a local judge classifier (cached afterwards)")
        net = train_judge(train_images, train_labels, num_classes, seed, recipe, device)
        state = {k: v.cpu() for k, v in net.state_dict().items()}
        cache.put(key, {"state_dict": state})
        status = "miss"
    state = net.state_dict()
    sha = sha256_tensor(*[state[k] for k in sorted(state)])
    acc = accuracy(net, eval_images, eval_labels)
    return net, {"sha256": sha, "heldout_accuracy": acc, "cache": status, "local": True,
                 "machine": machine.identity(device_type)}


# --- shipped judges ---------------------------------------------------------------------------------

FILE_FORMAT = "ganbench-judge-1"
JUDGE_DIR = Path(__file__).resolve().parent.parent / "judges"
# The documented recipe of each shipped judge (`bench judge train NAME` retrains it from scratch).
# Seed 0 for the weights and for the batch order; CIFAR-10 gets more steps because its train split is
# five times larger and natural images are harder (about 5 epochs of the 50,000 train images).
SHIPPED_RECIPES: dict[str, JudgeRecipe] = {
    "mnist": JudgeRecipe(),
    "cifar10": JudgeRecipe(steps=2000),
}
SHIPPED_SEED = 0


def shipped_file(name: str) -> Path:
    return JUDGE_DIR / f"judge-{name}.pt"


@dataclass
class JudgeFile:
    net: JudgeNet
    meta: dict
    train_digests: torch.Tensor  # uint8 (N, DIGEST_BYTES): every image the judge was trained on
    sha256: str


def write_pinned_file(path: Path, fmt: str, net: nn.Module, meta: dict, train_digests: torch.Tensor) -> str:
    """A shipped measuring network (a judge, a semantic network S) as a file: tensors, strings and numbers only,
    so loaded with weights_only=True it cannot run code. Returns its sha256 (the manifest pins it)."""
    payload = {"format": fmt, "meta": json.dumps(meta, sort_keys=True),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
               "train_digests": train_digests.contiguous()}
    return atomic_torch_save(payload, Path(path))


def read_pinned_file(path: Path, fmt: str, kind: str,
                     build: Callable[[dict], nn.Module]) -> tuple[nn.Module, dict, torch.Tensor]:
    """(network on the CPU in eval mode, meta, per-image digests of its training images) of a file written by
    `write_pinned_file`; `build(meta)` makes the empty network. Every problem is one BenchError naming `kind`."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BenchError(f"{path}: {kind} file not found") from None
    except Exception as exc:
        raise BenchError(f"{path}: not a readable ganbench {kind} file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise BenchError(f"{path}: not a ganbench {kind} file (format {fmt})")
    try:
        meta = json.loads(payload["meta"])
        net = build(meta)
        net.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise BenchError(f"{path}: damaged ganbench {kind} file ({type(exc).__name__}: {exc})") from None
    return net.eval(), meta, payload["train_digests"]


def write_judge_file(path: Path, net: JudgeNet, meta: dict, train_digests: torch.Tensor) -> str:
    return write_pinned_file(path, FILE_FORMAT, net, meta, train_digests)


def read_judge_file(path: Path, device="cpu") -> JudgeFile:
    net, meta, digests = read_pinned_file(path, FILE_FORMAT, "judge", lambda m: JudgeNet(
        m["channels"], m["num_classes"], m["recipe"]["width"], m["recipe"]["feature_dim"]))
    net.to(device).eval()
    return JudgeFile(net, meta, digests, sha256_file(Path(path)))


def train_shipped(name: str, out: Path, device="cpu") -> tuple[str, dict]:
    """Train judge `name` from scratch with its documented recipe and write it to `out`; (sha256, meta)."""
    from bench import machine
    from bench.data.datasets import image_digests, load_judge_data

    if name not in SHIPPED_RECIPES:
        raise BenchError(f"no shipped judge '{name}'; valid: {', '.join(sorted(SHIPPED_RECIPES))}")
    recipe = SHIPPED_RECIPES[name]
    data = load_judge_data(name, SHIPPED_SEED)
    net = train_judge(data.train_images, data.train_labels, data.spec.num_classes, SHIPPED_SEED, recipe, device)
    net.cpu()
    meta = {
        "name": f"judge:{name}", "dataset": name, "data_fingerprint": data.fingerprint,
        "train_size": len(data.train_images), "heldout_size": len(data.eval_images),
        "heldout_accuracy": accuracy(net, data.eval_images, data.eval_labels),
        "channels": data.spec.channels, "resolution": data.spec.resolution, "num_classes": data.spec.num_classes,
        "recipe": asdict(recipe), "seed": SHIPPED_SEED, "trained_by": f"bench judge train {name}",
        "trained_on_machine": machine.identity(torch.device(device).type),
    }
    sha = write_judge_file(out, net, meta, image_digests(data.train_images))
    return sha, meta

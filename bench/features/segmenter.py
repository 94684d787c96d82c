"""S, the frozen "Semantic Network" of the semantic-network Pix2PixHD variant (`pix2pixhd_sem`).

That variant comes from a course summary of Pix2PixHD, not the paper; the summary gives S a job,
"measure how well the generated image matches the semantic labels", and no architecture or weights.
Pretrained segmentation nets cannot be had offline, so, like the CIFAR-10 judge (bench/features/judge.py),
ganbench trains one itself: a small U-Net-shaped encoder-decoder that maps a
photo to per-pixel class logits, trained with cross-entropy on the data set's training photos and their
label maps (facades: the 400 `train/` photos, 12 CMP classes, bench/data/superres.py), then frozen.

- Training is seeded (initial weights and the batch/crop/flip stream), on random crops of half the image
  side (the net is fully convolutional; crops make it four times cheaper per step) with horizontal flips,
  Adam with cosine decay to zero, so the end point does not depend on where training stopped.
- **Shipped, like the judges.** Training differs in its last bits across CPUs and thread counts, and a
  segmenter trained on each machine made `seg_agreement` of one fixed model 0.525-0.543 under one fingerprint
  (1 vs 2 threads, the bicubic row of facades-sr). So the S of each role for the shipped protocol's data (facades
  at 128 px, the recipe below) ships as a file in `bench/judges/`, pinned by its sha256 in the weights manifest
  (`segmenter:facades_sr:judge`, `segmenter:facades_sr:training`); `bench judge train segmenter:facades_sr:ROLE`
  retrains it. The file records the content hash of the data it was trained on and every training image's
  digest (tests prove the held-out images are not among them).
- Other data (another resolution, another recipe) has no shipped S: it is trained here and cached under
  `<cache>/segmenters/`, keyed by a content hash of the training photos and maps, the recipe, the class count,
  the device type and the machine (CPU model, threads, torch version), written atomically: a local instrument.
- A shipped S's sha256 enters the fingerprint of every protocol that uses it. A local S does not (its key names
  the machine and thread count, and a protocol's fingerprint must be the same everywhere): seg_agreement from a
  local S compares only between runs whose results name the same S sha256. Each S is reported with
  its held-out pixel accuracy and mIoU (on images it never trained on: facades `val/`) wherever it is used:
  the run log, every result's info and the model card of `pix2pixhd_sem`.
- What it achieves with the default recipe on facades at 128 px (393,308 parameters, 600 steps, about two
  minutes on one CPU thread): held-out pixel accuracy 0.569 and mIoU 0.222 on `val/`, against 0.352 for
  always answering the majority class (facade). Longer training (1,500 steps: 0.595 / 0.266), full-image
  batches with one more pooling (0.568) or a higher rate (0.566) bought little here, so S is a weak but
  real judge of facade layout; `seg_agreement/ceiling` reports how well it reads real photos.
- Two networks, one recipe: the S a model trains against (`role="training"`, L_sem of `pix2pixhd_sem`, the
  recipe's own seed) is never the S that scores it (`role="judge"`, seg_agreement): the judge is trained the
  same way from a seed derived from the recipe's (`recipe_for`), so it is a second, independent network the
  evaluated model never saw. Its seed is in the recipe, so it has its own cache key; each S's info records
  its role and seed. A model that learned to please one network's quirks gets no credit for it from the other.
- Frozen means: no parameter requires a gradient, it always runs in eval mode (BatchNorm uses its running
  statistics, which therefore never move), it is not among a family's `modules()` (so it is neither
  trained, checkpointed, averaged across ranks nor EMA'd) and no optimiser holds it. Gradients still flow
  *through* it to its input: that is how L_sem reaches G.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from bench.data.transforms import to_float
from bench.errors import BenchError
from bench.features.cache import DiskCache, cache_key
from bench.io import derive, sha256_tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmenterRecipe:
    version: int = 1
    width: int = 16
    depth: int = 3  # 2x poolings in the encoder
    crop: float = 0.5  # training crops, as a fraction of the image side
    steps: int = 600
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0  # S is part of the measuring instrument: one fixed seed, not the protocol's


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SegNet(nn.Module):
    """Encoder w, 2w, ..., 2^depth·w (`depth` 2x max-pools), decoder back up with bilinear upsampling and the
    encoder features of each size concatenated (U-Net style: window edges need the fine features), 1x1 head
    to class logits. Any input size works: each upsampling goes to its skip's size."""

    def __init__(self, channels: int, num_classes: int, width: int = 16, depth: int = 3):
        super().__init__()
        w = [width * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList([nn.Sequential(*_conv(channels, w[0]), *_conv(w[0], w[0]))]
                                 + [nn.Sequential(*_conv(w[i - 1], w[i])) for i in range(1, depth)]
                                 + [nn.Sequential(*_conv(w[depth - 1], w[depth]), *_conv(w[depth], w[depth]))])
        self.dec = nn.ModuleList(nn.Sequential(*_conv(w[i + 1] + w[i], w[i])) for i in reversed(range(depth)))
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        skips.pop()
        for block in self.dec:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


class FrozenSegmenter(nn.Module):
    """A trained SegNet that stays frozen: eval mode whatever `.train()` is asked, no parameter gradients."""

    def __init__(self, net: nn.Module, info: Optional[dict[str, Any]] = None):
        super().__init__()
        self.net = net.requires_grad_(False)
        self.info = dict(info or {})
        self.eval()  # a new Module starts in training mode: the wrapper's own flag too

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, C, H, W) -> class logits (B, K, H, W)."""
        return self.net(x)


def _batches(n: int, recipe: SegmenterRecipe, gen: torch.Generator):
    """Seeded epochs of a permutation, `recipe.steps` batches of indices in all."""
    step = 0
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, max(1, n - recipe.batch_size + 1), recipe.batch_size):
            if step == recipe.steps:
                return
            yield perm[i:i + recipe.batch_size]
            step += 1


def train_segmenter(images: torch.Tensor, maps: torch.Tensor, num_classes: int,
                    recipe: SegmenterRecipe = SegmenterRecipe(), device: torch.device | str = "cpu") -> SegNet:
    """Cross-entropy training on seeded random crops (half the side) with flips; uint8 images (N, C, H, W),
    class-id maps (N, H, W)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = SegNet(images.shape[1], num_classes, recipe.width, recipe.depth).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.steps)
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    size = images.shape[-1]
    crop = max(8, min(size, round(size * recipe.crop)))
    net.train()
    with tqdm(total=recipe.steps, desc="segmenter S", leave=False, unit="step", disable=None) as bar:
        for idx in _batches(len(images), recipe, gen):
            offsets = torch.randint(0, size - crop + 1, (len(idx), 2), generator=gen).tolist()
            flips = (torch.rand(len(idx), generator=gen) < 0.5).tolist()
            xs, ys = [], []
            for i, (oy, ox), flip in zip(idx.tolist(), offsets, flips):
                x, y = images[i, :, oy:oy + crop, ox:ox + crop], maps[i, oy:oy + crop, ox:ox + crop]
                xs.append(x.flip(-1) if flip else x)
                ys.append(y.flip(-1) if flip else y)
            x = to_float(torch.stack(xs)).to(device)
            y = torch.stack(ys).long().to(device)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval()


def confusion(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K x K counts, rows = truth, columns = prediction (int64)."""
    k = num_classes
    flat = truth.flatten().long() * k + pred.flatten().long()
    return torch.bincount(flat, minlength=k * k).view(k, k)


def scores(conf: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy and mean IoU over the classes that occur (in truth or prediction) of a confusion matrix."""
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return {"pixel_accuracy": float(inter.sum() / conf.sum().clamp_min(1)),
            "miou": float((inter[present] / union[present]).mean()) if present.any() else 0.0}


@torch.no_grad()
def evaluate(net: nn.Module, images: torch.Tensor, maps: torch.Tensor, num_classes: int,
             batch_size: int = 32) -> dict[str, float]:
    device = next(net.parameters()).device
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for i in range(0, len(images), batch_size):
        pred = net(to_float(images[i:i + batch_size]).to(device)).argmax(1).cpu()
        conf += confusion(pred, maps[i:i + batch_size], num_classes)
    return scores(conf)


def local_key(train_images: torch.Tensor, train_maps: torch.Tensor, num_classes: int, device: torch.device,
              recipe: SegmenterRecipe) -> str:
    """The cache key of an S trained on this machine. S is trained here only when no shipped file fits the data,
    and training differs in its last bits across CPUs and thread counts: the machine is part of the key, so a
    shared cache never hands one machine's S to another."""
    from bench import machine

    return cache_key(kind="segmenter", recipe=asdict(recipe), num_classes=num_classes, device=device.type,
                     data=sha256_tensor(train_images, train_maps), machine=machine.identity(device.type))


def get_segmenter(train_images: torch.Tensor, train_maps: torch.Tensor, heldout_images: torch.Tensor,
                  heldout_maps: torch.Tensor, num_classes: int, device: torch.device | str = "cpu",
                  recipe: SegmenterRecipe = SegmenterRecipe(), role: str = "training") -> FrozenSegmenter:
    """Train or load from the cache; the frozen net's `.info` has its role and seed, sha256, held-out pixel
    accuracy and mIoU, and whether the cache was hit."""
    from bench import machine

    device = torch.device(device)
    cache = DiskCache("segmenters")
    key = local_key(train_images, train_maps, num_classes, device, recipe)
    hit = cache.get(key)
    if hit is not None:
        net = SegNet(train_images.shape[1], num_classes, recipe.width, recipe.depth)
        net.load_state_dict(hit["state_dict"])
        net.to(device)
        status = "hit"
    else:
        log.info("training the semantic network S (cached afterwards)")
        net = train_segmenter(train_images, train_maps, num_classes, recipe, device)
        cache.put(key, {"state_dict": {k: v.cpu() for k, v in net.state_dict().items()}})
        status = "miss"
    net.eval()
    state = net.state_dict()
    info: dict[str, Any] = {"role": role, "seed": recipe.seed,
                            "sha256": sha256_tensor(*[state[k] for k in sorted(state)]), "cache": status,
                            "classes": num_classes, "train_images": len(train_images),
                            "heldout_images": len(heldout_images),
                            "params": sum(p.numel() for p in net.parameters()), "local": True,
                            "machine": machine.identity(device.type), "identity": f"local:{key}"}
    info.update({f"heldout_{k}": v for k, v in evaluate(net, heldout_images, heldout_maps, num_classes).items()})
    return FrozenSegmenter(net, info)


def available(data) -> bool:
    """Whether a data set carries the label maps S is trained on (facades_sr does; plain image folders not)."""
    return bool(getattr(data, "has_label_maps", False))


RECIPE = SegmenterRecipe()  # the recipe runs use (tests swap in a tiny one)
ROLES = ("training", "judge")  # the S models train against (L_sem), the S that measures them (seg_agreement)
_LOADED: dict[tuple[str, str, str], FrozenSegmenter] = {}


def recipe_for(role: str, recipe: Optional[SegmenterRecipe] = None) -> SegmenterRecipe:
    """The recipe of one role: the training S uses the recipe as it is, the judge the same recipe with a seed
    derived from it, so the two are independent networks (other initial weights, other crops and batches)."""
    recipe = RECIPE if recipe is None else recipe
    if role == "training":
        return recipe
    if role == "judge":
        return replace(recipe, seed=derive(recipe.seed, "segmenter", "judge"))
    raise ValueError(f"unknown segmenter role '{role}'; valid: {', '.join(ROLES)}")


# --- shipped segmenters ----------------------------------------------------------------------------------

SEG_FORMAT = "ganbench-segmenter-1"
# data set -> the resolution its shipped S were trained at (protocols/facades-sr.yaml). The spec the shipped
# files are trained from: S trains on every train/ photo and is measured on every val/ photo whatever the
# protocol's train_size and eval_size, so those two do not matter here.
SHIPPED = {"facades_sr": 128}


def shipped_name(dataset: str, role: str) -> str:
    from bench.features.weights import segmenter_name  # the manifest owns the names and files

    return segmenter_name(dataset, role)


def shipped_file(dataset: str, role: str) -> Path:
    from bench.features.weights import segmenter_file

    return segmenter_file(dataset, role)


def write_segmenter_file(path: Path, net: nn.Module, meta: dict, train_digests: torch.Tensor) -> str:
    from bench.features.judge import write_pinned_file  # the judges' file format, another format tag

    return write_pinned_file(path, SEG_FORMAT, net, meta, train_digests)


def read_segmenter_file(path: Path) -> tuple[SegNet, dict, torch.Tensor]:
    """(net in eval mode on the CPU, meta, per-image digests of its training photos)."""
    from bench.features.judge import read_pinned_file

    return read_pinned_file(path, SEG_FORMAT, "segmenter", lambda m: SegNet(
        m["channels"], m["num_classes"], m["recipe"]["width"], m["recipe"]["depth"]))


def _shipped_for(data, role: str, recipe: SegmenterRecipe) -> Optional[tuple[Path, str]]:
    """(file, sha256) of the shipped S of `role` when it was trained on exactly this data with this recipe;
    None when there is none for this data (then S is trained here). A shipped file that was modified is an
    error (weights.resolve checks its sha256), never a silent retrain."""
    from bench.features import weights

    name = data.spec.name
    if name not in SHIPPED or SHIPPED[name] != data.spec.resolution:
        return None
    path, sha = weights.resolve(shipped_name(name, role), allow_download=False)
    _, meta, _ = read_segmenter_file(path)
    (train_x, train_y) = data.seg_train
    fits = (meta["data"] == sha256_tensor(train_x, train_y) and meta["recipe"] == asdict(recipe)
            and meta["num_classes"] == len(data.class_names) and meta["role"] == role)
    return (path, sha) if fits else None


def identity(data, role: str, device: torch.device | str = "cpu") -> str:
    """What enters the fingerprint for the S of `role`: `sha256:<file>` of a shipped S, else `local:<cache key>`
    (that key names the machine, so local segmenters of two machines never share a fingerprint). Computed
    without training anything (`bench run --dry-run`)."""
    recipe = recipe_for(role)
    shipped = _shipped_for(data, role, recipe)
    if shipped:
        return f"sha256:{shipped[1]}"
    (train_x, train_y) = data.seg_train
    return f"local:{local_key(train_x, train_y, len(data.class_names), torch.device(device), recipe)}"


def _load_shipped(path: Path, sha: str, data, device: torch.device, role: str) -> FrozenSegmenter:
    net, meta, _ = read_segmenter_file(path)
    net.to(device).eval()
    state = net.state_dict()
    info: dict[str, Any] = {"role": role, "seed": meta["recipe"]["seed"],
                            "sha256": sha256_tensor(*[state[k] for k in sorted(state)]), "cache": "shipped",
                            "classes": meta["num_classes"], "train_images": meta["train_images"],
                            "heldout_images": meta["heldout_images"], "params": sum(p.numel() for p in net.parameters()),
                            "local": False, "file": path.name, "file_sha256": sha, "identity": f"sha256:{sha}",
                            "heldout_pixel_accuracy": meta["heldout_pixel_accuracy"], "heldout_miou": meta["heldout_miou"]}
    return FrozenSegmenter(net, info)


def train_shipped(dataset: str, role: str, out: Path, device="cpu") -> tuple[str, dict]:
    """Train the shipped S of `role` for `dataset` from scratch with the default recipe and write it to `out`;
    (sha256, meta). Like a judge, a retrained S differs in its last bits on another CPU or thread count: the
    committed file is the instrument, this is its provenance."""
    from bench import machine
    from bench.data.base import image_digests
    from bench.data.datasets import load_dataset
    from bench.protocol.schema import DatasetSpec

    if dataset not in SHIPPED or role not in ROLES:
        raise BenchError(f"no shipped segmenter '{shipped_name(dataset, role)}'; valid: "
                         + ", ".join(shipped_name(d, r) for d in sorted(SHIPPED) for r in ROLES))
    res = SHIPPED[dataset]
    data = load_dataset(DatasetSpec(name=dataset, resolution=res, channels=3, train_size=400, eval_size=106, scale=4),
                        0)
    (train_x, train_y), (held_x, held_y) = data.seg_train, data.seg_heldout
    recipe = recipe_for(role)
    k = len(data.class_names)
    net = train_segmenter(train_x, train_y, k, recipe, device).cpu().eval()
    held = evaluate(net, held_x, held_y, k)
    meta = {"name": shipped_name(dataset, role), "dataset": dataset, "role": role, "resolution": res, "channels": 3,
            "num_classes": k, "recipe": asdict(recipe), "data": sha256_tensor(train_x, train_y),
            "train_images": len(train_x), "heldout_images": len(held_x),
            "heldout_pixel_accuracy": held["pixel_accuracy"], "heldout_miou": held["miou"],
            "trained_by": f"bench judge train {shipped_name(dataset, role)}",
            "trained_on_machine": machine.identity(torch.device(device).type)}
    return write_segmenter_file(out, net, meta, image_digests(train_x)), meta


def for_data(data, device: torch.device | str = "cpu", *, role: str) -> FrozenSegmenter:
    """The S of one role for a data set with label maps. One run asks for each several times (each entry that
    trains with L_sem, each evaluation with seg_agreement): the first call trains or loads it, later calls in
    the same process get the same frozen module."""
    if not available(data):
        raise ValueError(f"data set '{data.spec.name}' has no label maps to train a semantic network S on")
    (train_x, train_y), (held_x, held_y) = data.seg_train, data.seg_heldout
    device = torch.device(device)
    recipe = recipe_for(role)
    memo = (sha256_tensor(train_x, train_y, held_x, held_y), str(device), repr(recipe))
    if memo not in _LOADED:
        shipped = _shipped_for(data, role, recipe)
        if shipped:
            _LOADED[memo] = _load_shipped(*shipped, data, device, role)
        else:
            _LOADED[memo] = get_segmenter(train_x, train_y, held_x, held_y, len(data.class_names), device, recipe,
                                          role)
    return _LOADED[memo]


def for_run(protocol, data, trained_against: bool, device: torch.device | str = "cpu") -> dict[str, FrozenSegmenter]:
    """The run's S of each role it uses, trained or loaded once, before any entry: "training" when an entry's
    family trains against S (`trained_against`: the caller asks the zoo, which this layer does not import),
    "judge" when the protocol scores seg_agreement; empty without label maps."""
    if not available(data):
        return {}
    return {role: for_data(data, device, role=role) for role in roles_used(protocol, data, trained_against)}


def roles_used(protocol, data, trained_against: bool) -> list[str]:
    if not available(data):
        return []
    used = {"training": trained_against, "judge": "seg_agreement" in protocol.evaluation.metrics}
    return [role for role in ROLES if used[role]]


def identities(protocol, data, trained_against: bool, device: torch.device | str = "cpu") -> dict[str, str]:
    """role -> identity (`identity`) of every S the run uses."""
    return {role: identity(data, role, device) for role in roles_used(protocol, data, trained_against)}


def fingerprint_part(ids: dict[str, str]) -> dict[str, str]:
    """What of the S identities enters a fingerprint: the shipped files' sha256 only. A local S's key names the
    machine and thread count, and a fingerprint must be the same everywhere for the same protocol (a sweep worker
    with other threads, torchrun's one-thread ranks and a resume on another allocation would each get another);
    a local S is recorded in every result instead (`info.semantic_nets`: local, sha256, machine)."""
    return {role: ident for role, ident in ids.items() if ident.startswith("sha256:")}

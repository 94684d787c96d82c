"""Feature extractors: images (uint8, N x C x H x W) -> {'pool': features for FID/KID, 'logits': for IS}.

Both the real and the generated side pass through the same extractor from uint8, so preprocessing
(resizing, channel replication, scaling) is identical by construction.

Names: `judge` (the shipped judge of the protocol's data set), `judge:<name>` (a shipped judge, e.g.
`judge:cifar10` as a natural-image extractor for any RGB protocol; images are brought to its native size
and channels), `judge:local` (trained on demand on the protocol's own labelled training part; valid on
this machine only), `inception-v3-compat`, and the modern feature spaces `clip-vit-l-14` and
`dinov2-vit-l-14` (bench/features/pretrained.py). See bench/features/judge.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.data.transforms import resize_float, to_channels, to_float
from bench.errors import BenchError

INCEPTION = "inception-v3-compat"
# Pretrained networks resolved through the weights manifest (bench/features/pretrained.py for the last two).
PRETRAINED = (INCEPTION, "clip-vit-l-14", "dinov2-vit-l-14")
# Bumped whenever the pixels an extractor sees could change, so cached real features are invalidated.
PREPROCESSING_VERSION = "uint8-v1"


@dataclass
class Extractor:
    name: str
    sha256: str  # identity of the weights: part of the protocol fingerprint and of cache keys
    fn: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError("extractors take uint8 images")
        return self.fn(images)


LOCAL_JUDGE = "judge:local"


def _judge_dataset(name: str, dataset: str) -> str | None:
    """The data set a judge extractor is trained on ('judge' -> the protocol's own), None if not a judge."""
    if name == "judge":
        return dataset
    if name.startswith("judge:") and name != LOCAL_JUDGE:
        return name.split(":", 1)[1]
    return None


def _valid_names() -> str:
    from bench.features.judge import SHIPPED_RECIPES

    return ", ".join(["judge", *(f"judge:{n}" for n in sorted(SHIPPED_RECIPES)), LOCAL_JUDGE, *PRETRAINED])


def check_extractor_name(name: str, dataset: str, channels: int | None = None) -> None:
    """Names only (no data read): `judge` (the shipped judge of the protocol's data set), `judge:<shipped
    judge>`, `judge:local` (trained on the protocol's labelled training part, this machine only), and
    inception-v3-compat. With `channels` (the protocol's), also rejects a judge that cannot read those
    images: a judge trained on grayscale data has no way to see colour. Grayscale into an RGB judge is
    replicated."""
    if name in PRETRAINED:
        return
    from bench.data.datasets import JUDGE_SOURCES
    from bench.features.judge import SHIPPED_RECIPES

    if name == LOCAL_JUDGE:
        if dataset not in JUDGE_SOURCES:
            raise BenchError(f"extractor '{name}': data set '{dataset}' has no class labels to train a judge on; "
                             f"valid: {_valid_names()}")
        return
    other = _judge_dataset(name, dataset)
    if other is None:
        raise BenchError(f"unknown extractor '{name}'; valid: {_valid_names()}")
    if other not in SHIPPED_RECIPES:
        if name == "judge":
            raise BenchError(f"extractor 'judge': no judge is shipped for data set '{dataset}'; use one of "
                             f"{_valid_names()}")
        raise BenchError(f"extractor '{name}': no shipped judge '{other}'; valid: {_valid_names()}")
    if channels == 3 and JUDGE_SOURCES[other].channels == 1:
        raise BenchError(f"extractor '{name}': that judge reads 1-channel images but these images are RGB "
                         f"(channels: 3); use an RGB judge such as judge:cifar10")


def preflight_extractor(name: str, weights=None, dataset: str | None = None, channels: int | None = None,
                        data=None) -> None:
    """Resolve and verify what the extractor needs before anything is written (one-line error if missing):
    pretrained or shipped weights, and (given the loaded `data`) that a shipped judge never trained on one
    of the protocol's reference images."""
    if name in PRETRAINED:
        from bench.features.weights import resolve

        resolve(name, weights.path if weights else None, weights.sha256 if weights else None)
        return
    check_extractor_name(name, dataset or "", channels)
    other = _judge_dataset(name, dataset or "")
    if other:
        judge = _load_shipped(other)
        if data is not None:
            check_no_overlap(judge, data, f"judge:{other}")


def check_no_overlap(judge, data, name: str) -> None:
    """Refuse a judge that was trained on any of the protocol's reference images (by content digest)."""
    seen = {bytes(row) for row in judge.train_digests.numpy()}
    ref = data.reference_digests().numpy()
    hits = sum(bytes(row) in seen for row in ref)
    if hits:
        raise BenchError(f"extractor {name} was trained on {hits} of this protocol's {len(ref)} reference images "
                         f"(content digests): it would measure against images it has seen; use {LOCAL_JUDGE} "
                         "(trained on the protocol's own training part) or inception-v3-compat")


def make_extractor(name: str, data, seed: int, device: torch.device, weights=None, *, recipe=None) -> Extractor:
    """`recipe` overrides a local judge's JudgeRecipe (tests use a short one); shipped judges are files."""
    check_extractor_name(name, data.spec.name, data.spec.channels)
    if name == INCEPTION:
        return _inception(device, weights)
    if name in PRETRAINED:
        return _pretrained(name, device, weights)
    if name == LOCAL_JUDGE:
        return _local_judge(data, seed, device, recipe)
    return _shipped_judge(_judge_dataset(name, data.spec.name), data, device)


_SHIPPED_CACHE: dict = {}


def _load_shipped(dataset: str):
    """The shipped judge file, resolved through the weights manifest (sha256 checked), read once a process."""
    from bench.features.judge import read_judge_file
    from bench.features.weights import resolve

    path, sha = resolve(f"judge:{dataset}", allow_download=False)
    key = (str(path), sha)
    if key not in _SHIPPED_CACHE:
        judge = read_judge_file(path)
        if judge.sha256 != sha:  # the file changed between the two reads
            raise BenchError(f"{path}: changed while being read")
        _SHIPPED_CACHE[key] = judge
    return _SHIPPED_CACHE[key]


# How a whole non-square frame (label maps read with dataset.aspect > 1: cityscapes 1024x512) reaches an
# extractor's square input: resized to it whole, its aspect ratio not kept, real and generated frames alike.
# That is what torch-fidelity's and pytorch-fid's Inception do with any input (both interpolate it to 299x299),
# so it is how FIDs of 2:1 cityscapes outputs computed with them were measured, and it keeps one feature
# vector per frame. Scoring the square halves instead would
# count each frame twice with two strongly dependent vectors, overstating the sample size behind FID/KID and
# their intervals. Within bench both sides go through the same squash, so the comparison is like for like.
FRAMES_TO_SQUARE = "resized whole to the extractor's square input (aspect not kept), real and generated alike"


def _judge_run(net, device, size: int, channels: int):
    """The protocol's images (real and generated alike) brought to the judge's input: grayscale replicated
    to RGB, uint8 -> float [-1, 1], and a bilinear, antialiased resize when the size differs. A whole non-square
    frame (label maps at dataset.aspect > 1) is resized to the square input, aspect not kept, as every extractor
    here does (FRAMES_TO_SQUARE)."""

    def run(images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = resize_float(to_float(to_channels(images, channels)), size)
        feats, logits = net(x.to(device))
        return {"pool": feats.float().cpu(), "logits": logits.float().cpu()}

    return run


def _shipped_judge(dataset: str, data, device) -> Extractor:
    import copy

    judge = _load_shipped(dataset)
    check_no_overlap(judge, data, f"judge:{dataset}")
    net = copy.deepcopy(judge.net).to(device).eval()
    m = judge.meta
    info = {"sha256": judge.sha256, "heldout_accuracy": m["heldout_accuracy"], "cache": "shipped",
            "trained_on": dataset, "judge_data": m["data_fingerprint"], "judge_input":
            f"{m['channels']}x{m['resolution']}x{m['resolution']}", "judge_train_size": m["train_size"],
            "judge_eval_size": m["heldout_size"], "local": False}
    return Extractor(f"judge:{dataset}", judge.sha256, _judge_run(net, device, m["resolution"], m["channels"]), info)


def _local_judge(data, seed: int, device, recipe) -> Extractor:
    from bench.features.judge import JudgeRecipe, get_local_judge

    net, info = get_local_judge(data.train_images, data.train_labels, data.eval_images, data.eval_labels,
                                data.spec.num_classes, seed, device, recipe or JudgeRecipe())
    info = {**info, "trained_on": data.spec.name, "judge_train_size": len(data.train_images),
            "judge_eval_size": len(data.eval_images)}
    return Extractor(LOCAL_JUDGE, info["sha256"], _judge_run(net, device, data.spec.resolution, data.spec.channels),
                     info)


def _inception(device, weights) -> Extractor:
    from bench.features.weights import resolve

    path, sha = resolve(INCEPTION, weights.path if weights else None, weights.sha256 if weights else None)
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:
        net = FeatureExtractorInceptionV3(INCEPTION, ["2048", "logits_unbiased"],
                                          feature_extractor_weights_path=str(path)).to(device)
    except Exception as exc:
        raise BenchError(f"{path}: not an {INCEPTION} state dict ({type(exc).__name__})") from None

    def run(images: torch.Tensor) -> dict[str, torch.Tensor]:
        # Inception reads RGB; grayscale is replicated to 3 channels, and it resizes to 299x299 itself (a whole
        # 2:1 frame too: FRAMES_TO_SQUARE).
        pool, logits = net(to_channels(images, 3).to(device))
        return {"pool": pool.float().cpu(), "logits": logits.float().cpu()}

    return Extractor(INCEPTION, sha, run, {"sha256": sha, "weights": str(path)})


def _pretrained(name: str, device, weights) -> Extractor:
    from bench.features.pretrained import features_fn
    from bench.features.weights import resolve

    path, sha = resolve(name, weights.path if weights else None, weights.sha256 if weights else None)
    return Extractor(name, sha, features_fn(name, path, device), {"sha256": sha, "weights": str(path)})

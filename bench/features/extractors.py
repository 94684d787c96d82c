"""Feature extractors: images (uint8, N x C x H x W) -> {'pool': features for FID/KID, 'logits': for IS}.

Both the real and the generated side pass through the same extractor from uint8, so preprocessing
(resizing, channel replication, scaling) is identical by construction.

Names: `judge` (a classifier ganbench trains on the protocol's own training part), `judge:<data set>`
(one trained on any labelled data set, e.g. `judge:cifar10` as a natural-image extractor for any
protocol; images are brought to its native size and channels) and `inception-v3-compat`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.data.transforms import resize_float, to_channels, to_float
from bench.errors import BenchError

INCEPTION = "inception-v3-compat"
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


def _judge_dataset(name: str, dataset: str) -> str | None:
    """The data set a judge extractor is trained on ('judge' -> the protocol's own), None if not a judge."""
    if name == "judge":
        return dataset
    if name.startswith("judge:"):
        return name.split(":", 1)[1]
    return None


def check_extractor_name(name: str, dataset: str, channels: int | None = None) -> None:
    """Names only (no data read): `judge`, `judge:<any data set with labels>`, inception-v3-compat.

    With `channels` (the protocol's), also rejects a judge that cannot read those images: a judge
    trained on grayscale data has no way to see colour. Grayscale into an RGB judge is replicated.
    """
    if name == INCEPTION:
        return
    from bench.data.datasets import JUDGE_SOURCES

    judges = ", ".join(f"judge:{n}" for n in sorted(JUDGE_SOURCES))
    other = _judge_dataset(name, dataset)
    if other is None:
        raise BenchError(f"unknown extractor '{name}'; valid: judge, {judges}, {INCEPTION}")
    if other == dataset:
        if dataset not in JUDGE_SOURCES:
            raise BenchError(f"extractor '{name}': data set '{dataset}' has no class labels to train a judge on; "
                             f"use an RGB judge of another data set ({judges}) or {INCEPTION}")
        return  # the protocol's own data: trained on the images as the protocol loads them
    if other not in JUDGE_SOURCES:
        raise BenchError(f"extractor '{name}': no labelled data set '{other}' to train a judge on; valid: {judges}")
    if channels == 3 and JUDGE_SOURCES[other].channels == 1:
        raise BenchError(f"extractor '{name}': that judge reads 1-channel images but the protocol's are RGB "
                         f"(channels: 3); use an RGB judge such as judge:cifar10, or 'judge'")


def preflight_extractor(name: str, weights=None, dataset: str | None = None, channels: int | None = None) -> None:
    """Resolve and verify what the extractor needs before anything is written (one-line error if missing):
    pretrained weights, or the data set a `judge:<name>` of another data set is trained on."""
    if name == INCEPTION:
        from bench.features.weights import resolve

        resolve(INCEPTION, weights.path if weights else None, weights.sha256 if weights else None)
        return
    other = _judge_dataset(name, dataset or "")
    if other and other != dataset:
        from bench.data.datasets import locate_judge_data

        check_extractor_name(name, dataset or "", channels)  # unknown data sets fail here, by name
        locate_judge_data(other)


def make_extractor(name: str, data, seed: int, device: torch.device, weights=None, *, recipe=None) -> Extractor:
    """`recipe` overrides the judge's JudgeRecipe (tests use a short one); protocols always get the default."""
    check_extractor_name(name, data.spec.name, data.spec.channels)
    if name == INCEPTION:
        return _inception(device, weights)
    from bench.features.judge import JudgeRecipe

    recipe = recipe or JudgeRecipe()
    other = _judge_dataset(name, data.spec.name)
    if other == data.spec.name:
        return _judge(data, seed, device, recipe)
    return _foreign_judge(other, seed, device, recipe)


def _judge(data, seed: int, device, recipe) -> Extractor:
    from bench.features.judge import get_judge

    net, info = get_judge(data.train_images, data.train_labels, data.eval_images, data.eval_labels,
                          data.spec.num_classes, seed, device, recipe)

    def run(images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats, logits = net(to_float(images).to(device))
        return {"pool": feats.float().cpu(), "logits": logits.float().cpu()}

    info = {**info, "trained_on": data.spec.name, "judge_train_size": len(data.train_images),
            "judge_eval_size": len(data.eval_images)}
    return Extractor(f"judge:{data.spec.name}", info["sha256"], run, info)


def _foreign_judge(dataset: str, seed: int, device, recipe) -> Extractor:
    """A judge trained on another labelled data set, at that set's native size (e.g. CIFAR-10 for RGB protocols).

    Its data is split the fixed way `load_judge_data` documents, with a seed derived from the protocol's.
    The protocol's images (real and generated alike) are brought to the judge's input: grayscale is
    replicated to RGB, then uint8 -> float [-1, 1] and a bilinear, antialiased resize to the native size.
    """
    from bench.data.datasets import load_judge_data
    from bench.features.judge import get_judge
    from bench.runner.seeding import derive

    jd = load_judge_data(dataset, derive(seed, "judge-data", dataset))
    net, info = get_judge(jd.train_images, jd.train_labels, jd.eval_images, jd.eval_labels,
                          jd.spec.num_classes, seed, device, recipe)
    size, judge_channels = jd.spec.resolution, jd.spec.channels  # channels were checked by make_extractor

    def run(images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = resize_float(to_float(to_channels(images, judge_channels)), size)
        feats, logits = net(x.to(device))
        return {"pool": feats.float().cpu(), "logits": logits.float().cpu()}

    info = {**info, "trained_on": dataset, "judge_data": jd.fingerprint, "judge_source": jd.source,
            "judge_input": f"{judge_channels}x{size}x{size}", "judge_train_size": len(jd.train_images),
            "judge_eval_size": len(jd.eval_images)}
    return Extractor(f"judge:{dataset}", info["sha256"], run, info)


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
        # Inception reads RGB; grayscale is replicated to 3 channels, and it resizes to 299 itself.
        pool, logits = net(to_channels(images, 3).to(device))
        return {"pool": pool.float().cpu(), "logits": logits.float().cpu()}

    return Extractor(INCEPTION, sha, run, {"sha256": sha, "weights": str(path)})

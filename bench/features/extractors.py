"""Feature extractors: images (uint8, N x C x H x W) -> {'pool': features for FID/KID, 'logits': for IS}.

Both the real and the generated side pass through the same extractor from uint8, so preprocessing
(resizing, channel replication, scaling) is identical by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.data.transforms import to_channels, to_float
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


def check_extractor_name(name: str, dataset: str) -> None:
    if name == INCEPTION or name == "judge":
        return
    if name.startswith("judge:"):
        if name.split(":", 1)[1] != dataset:
            raise BenchError(f"extractor '{name}': a judge is trained on the protocol's own data; "
                             f"use 'judge' or 'judge:{dataset}'")
        return
    raise BenchError(f"unknown extractor '{name}'; valid: judge, judge:{dataset}, {INCEPTION}")


def preflight_extractor(name: str, weights=None) -> None:
    """Resolve and verify pretrained weights before anything is written (one-line error if missing)."""
    if name == INCEPTION:
        from bench.features.weights import resolve

        resolve(INCEPTION, weights.path if weights else None, weights.sha256 if weights else None)


def make_extractor(name: str, data, seed: int, device: torch.device, weights=None) -> Extractor:
    check_extractor_name(name, data.spec.name)
    if name == INCEPTION:
        return _inception(device, weights)
    return _judge(data, seed, device)


def _judge(data, seed: int, device) -> Extractor:
    from bench.features.judge import get_judge

    net, info = get_judge(data.train_images, data.train_labels, data.eval_images, data.eval_labels,
                          data.spec.num_classes, seed, device)

    def run(images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats, logits = net(to_float(images).to(device))
        return {"pool": feats.float().cpu(), "logits": logits.float().cpu()}

    return Extractor(f"judge:{data.spec.name}", info["sha256"], run, info)


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

"""The metric contract: a named object that turns one evaluation's features into scores."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch

Needs = Literal["fake", "real+fake", "paired", "cycle"]


@dataclass
class MetricContext:
    fake: dict[str, torch.Tensor]  # 'pool' (N, d) and 'logits' (N, K) of the generated images
    real: dict[str, torch.Tensor]  # the same for the held-out real images
    fake_stats: dict[str, np.ndarray]  # streaming float64 mean ('mu') and covariance ('sigma')
    real_stats: dict[str, np.ndarray]
    seed: int  # the evaluation seed; subset draws derive their own seeds from it
    settings: Any  # the protocol's EvaluationSpec


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    needs: Needs
    compute: Callable[[MetricContext], dict[str, float]]
    description: str


def derive_seed(seed: int, purpose: str) -> int:
    """An independent, reproducible seed for one purpose (KID subsets, IS split shuffle, ...)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:4], "little")

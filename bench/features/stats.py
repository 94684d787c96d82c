"""Streaming mean and covariance in float64: features arrive batch by batch, images are never all held."""

from __future__ import annotations

import numpy as np
import torch


class RunningStats:
    def __init__(self, dim: int):
        self.n = 0
        self.sum = np.zeros(dim, dtype=np.float64)
        self.outer = np.zeros((dim, dim), dtype=np.float64)

    def update(self, feats: torch.Tensor | np.ndarray) -> None:
        x = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats, np.float64)
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)
        self.outer += x.T @ x

    @property
    def mean(self) -> np.ndarray:
        return self.sum / self.n

    @property
    def cov(self) -> np.ndarray:
        """Unbiased (N-1) covariance, as numpy.cov and the reference FID code use."""
        if self.n < 2:
            raise ValueError("covariance needs at least 2 samples")
        mu = self.mean
        return (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)

    def as_fid_stats(self) -> dict[str, np.ndarray]:
        return {"mu": self.mean, "sigma": self.cov}

"""Fréchet distance between Gaussians fitted to real and generated features (Heusel et al. 2017).

The statistics are accumulated in float64 while features stream in; torch-fidelity computes the
headline value (a trace of the eigenvalue square roots of Σ_r Σ_g, valid for the non-symmetric
product, unlike the SVD shortcut of a common course snippet, which is valid only for a symmetric PSD
matrix).

Uncertainty, both seeded from the evaluation seed:
- `fid/ci95_low`, `fid/ci95_high`: a 95% interval for FID at this protocol's sample sizes, from a
  delete-a-group jackknife over both sides with its second-order bias removed (`fid_interval_groups`
  groups; bench/metrics/intervals.py says why and how, and `bench perf coverage` checks its coverage by
  simulation). It is centred on the
  estimate, so it always contains it.
- `fid_inf`: FID extrapolated to infinitely many samples (Chong & Forsyth 2020): FID is nearly linear in
  1/N, so FID is measured on `fid_inf_points` random subsets of sizes evenly spaced from N/4 to N, a line
  is fitted in 1/N, and its intercept is reported. FID is biased upward at small N, never downward.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

from bench.metrics.base import Key, Metric, MetricContext, derive_seed
from bench.metrics.intervals import fid_interval


def frechet(stats_real: dict, stats_fake: dict) -> float:
    return float(fid_statistics_to_metric(stats_real, stats_fake, verbose=False)[KEY_METRIC_FID])


def _sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _fid_sym(mu_r, sigma_r, sqrt_r, tr_r, feats: np.ndarray) -> float:
    n, d = feats.shape
    mu = feats.mean(0)
    centred = feats - mu
    if n <= d:
        # With fewer samples than dimensions, S_r Σ_g S_r = YᵀY/(n-1) with Y = X_c S_r has the same
        # non-zero eigenvalues as the n x n matrix YYᵀ/(n-1): exact, and far cheaper at d = 2048.
        y = centred @ sqrt_r
        eig = np.linalg.eigvalsh(y @ y.T / (n - 1))
        tr_sigma = float((centred * centred).sum() / (n - 1))
    else:
        sigma = centred.T @ centred / (n - 1)
        m = sqrt_r @ sigma @ sqrt_r
        eig = np.linalg.eigvalsh((m + m.T) / 2)
        tr_sigma = float(np.trace(sigma))
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu_r - mu
    return float(diff @ diff + tr_r + tr_sigma - 2 * tr_covmean)


def fid_infinity(real_stats: dict, fake: torch.Tensor, points: int, seed: int) -> float:
    feats = fake.double().numpy()
    n = len(feats)
    sizes = np.unique(np.linspace(max(n // 4, 2), n, points).astype(int))
    rng = np.random.default_rng(derive_seed(seed, "fid-inf"))
    mu_r, sigma_r = real_stats["mu"], real_stats["sigma"]
    sqrt_r, tr_r = _sqrtm_psd(sigma_r), float(np.trace(sigma_r))
    values = [_fid_sym(mu_r, sigma_r, sqrt_r, tr_r, feats[rng.permutation(n)[:k]]) for k in sizes]
    slope, intercept = np.polyfit(1.0 / sizes, values, 1)
    return float(intercept)


def compute(ctx: MetricContext) -> dict[str, float]:
    out = {"fid": frechet(ctx.real_stats, ctx.fake_stats)}
    s = ctx.settings
    groups = s.fid_interval_groups
    if groups:
        out["fid/ci95_low"], out["fid/ci95_high"] = fid_interval(out["fid"], ctx.real["pool"], ctx.fake["pool"],
                                                                 groups, derive_seed(ctx.seed, "fid-jackknife"))
    points = getattr(s, "fid_inf_points", 0)
    if points and len(ctx.fake["pool"]) >= 8:
        out["fid_inf"] = fid_infinity(ctx.real_stats, ctx.fake["pool"], points, ctx.seed)
    return out


FID = Metric("fid", keys=(Key("fid", False, "FID", table=True, features=True), Key("fid_inf", False, features=True)), needs="real+fake", compute=compute,
             description="Fréchet distance of pool features; 0 = identical Gaussians; jackknife 95% interval and FID_inf")

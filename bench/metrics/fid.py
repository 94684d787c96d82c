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
from bench.metrics.intervals import _Side, as_side, fid_jackknife, fid_value, gram_form, interval_from


def frechet(stats_real: dict, stats_fake: dict) -> float:
    return float(fid_statistics_to_metric(stats_real, stats_fake, verbose=False)[KEY_METRIC_FID])


def headline_fid(stats_real: dict, stats_fake: dict, real, fake) -> float:
    """The FID every table shows. torch-fidelity's formula on the statistics (a `sqrtm` of Σ_r Σ_g), except when
    the generated side has no more points than dimensions (Inception, CLIP or DINOv2 features of a few hundred
    images): then Σ_r Σ_g has rank below N and its non-zero eigenvalues are those of an N x N matrix, the
    jackknife's own replicate formula (bench/metrics/intervals.py `gram_form`: the cross-Gram matrix when the
    real side is as small, the generated rows' projection of the real scatter when it is larger), which gives
    the same FID without a d x d matrix function. At d = 2,048 that `sqrtm` took 5-7 s here whatever N was;
    the N x N forms take milliseconds to a second, and agree with it to ~1e-7 relative (the `sqrtm` of a
    singular product is the less accurate of the two; tests/test_stats_and_metrics.py). `real`, `fake`: the
    feature pools (tensors, or the `_Side`s an evaluation already made)."""
    if real is not None and len(fake) <= (fake.d if isinstance(fake, _Side) else fake.shape[1]):
        real_side, fake_side = as_side(real), as_side(fake)
        none = np.array([], dtype=int)
        return fid_value(real_side, fake_side, none, none, None, gram_form(real_side, fake_side))
    return frechet(stats_real, stats_fake)


def fid_inf_sizes(n: int, points: int) -> np.ndarray:
    """The generated subset sizes FID_inf fits (`points` evenly spaced from N/4 to N, duplicates dropped)."""
    return np.unique(np.linspace(max(n // 4, 2), n, points).astype(int))


def fid_infinity(real: torch.Tensor, fake: torch.Tensor, points: int, seed: int) -> float:
    """FID_inf from FIDs on random subsets of the generated features, each against all real features. The FIDs
    come from the interval code's exact replicate formula (bench/metrics/intervals.py `fid_value`): its
    cross-Gram form when neither side has more points than dimensions, so Inception's 2,048 dimensions at a
    few hundred images need no d x d eigendecomposition."""
    n = len(fake)
    sizes = fid_inf_sizes(n, points)
    rng = np.random.default_rng(derive_seed(seed, "fid-inf"))
    real_side, fake_side = as_side(real), as_side(fake)
    cross = gram_form(real_side, fake_side)
    none = np.array([], dtype=int)
    values = [fid_value(real_side, fake_side, none, rng.permutation(n)[k:], None, cross) for k in sizes]
    slope, intercept = np.polyfit(1.0 / sizes, values, 1)
    return float(intercept)


def fid_and_interval(stats_real: dict, stats_fake: dict, real, fake, groups: int, seed: int,
                     share: bool = False) -> tuple[dict[str, float], object, object]:
    """The headline FID and, with `groups`, its jackknife interval seeded by `seed`: ({key: value}, real, fake).

    One float64 centred copy of each side serves both (at N = 20,000 a second pair was most of the FID phase's
    peak memory; with few generated points in many dimensions they also share one projection of the real
    scatter), and the returned sides let FID_inf reuse them too (`share`: make them even without an interval).
    The jackknife runs first: it groups the sides, and the headline then reuses the grouped projection. The
    numbers are those of separate copies."""
    if real is not None and (groups or share or len(fake) <= fake.shape[1]):
        real, fake = as_side(real), as_side(fake)
    jk = fid_jackknife(real, fake, groups, seed) if groups else None
    out = {"fid": headline_fid(stats_real, stats_fake, real, fake)}
    if jk is not None:
        out["fid/ci95_low"], out["fid/ci95_high"] = interval_from(out["fid"], jk)
    return out, real, fake


def compute(ctx: MetricContext) -> dict[str, float]:
    s = ctx.settings
    points = getattr(s, "fid_inf_points", 0)
    out, real, fake = fid_and_interval(ctx.real_stats, ctx.fake_stats, ctx.real.get("pool"), ctx.fake["pool"],
                                       s.fid_interval_groups, derive_seed(ctx.seed, "fid-jackknife"),
                                       share=bool(points))
    if points and len(fake) >= 8:
        out["fid_inf"] = fid_infinity(real, fake, points, ctx.seed)
    return out


FID = Metric("fid", keys=(Key("fid", False, "FID", table=True, features=True), Key("fid_inf", False, features=True)), needs="real+fake", compute=compute,
             description="Fréchet distance of pool features; 0 = identical Gaussians; jackknife 95% interval and FID_inf")

"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel.

Subsets are drawn from a seed derived from the evaluation seed, never from a global RNG. The subset
size is the protocol's `kid_subset_size` (default 1000), shrunk to the smaller of the two sample
counts when fewer images exist; the size used is reported as `kid/subset_size`. `kid/std` is the spread
of the per-subset values (which subsets were drawn, not the sampling error of the estimate).
`kid/ci95_low` and `kid/ci95_high` are a 95% interval for the population MMD²: the variance of the
unbiased MMD² on all the data (from its Hoeffding decomposition, estimated from all pairs of points) plus
the subset-drawing noise (bench/metrics/intervals.py; coverage checked by `bench perf coverage`).
"""

from __future__ import annotations

import numpy as np
from torch_fidelity.metric_kid import kernel_mmd

from bench.metrics.base import Key, Metric, MetricContext, derive_seed
from bench.metrics.intervals import kid_interval


def subset_size(requested: int, n_fake: int, n_real: int) -> int:
    return min(requested, n_fake, n_real)


def subset_mmds(real, fake, subsets: int, size: int, seed: int) -> np.ndarray:
    """torch-fidelity's per-subset estimator with the same draw order (real subset, then fake subset)."""
    r, f = real.cpu().numpy(), fake.cpu().numpy()
    rng = np.random.RandomState(seed)
    out = np.zeros(subsets)
    for i in range(subsets):
        a = r[rng.choice(len(r), size, replace=False)]
        b = f[rng.choice(len(f), size, replace=False)]
        out[i] = kernel_mmd(a, b, kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                            kid_kernel_poly_coef0=1)
    return out


def compute(ctx: MetricContext) -> dict[str, float]:
    fake, real = ctx.fake["pool"], ctx.real["pool"]
    s = ctx.settings
    size = subset_size(s.kid_subset_size, len(fake), len(real))
    mmds = subset_mmds(real, fake, s.kid_subsets, size, derive_seed(ctx.seed, "kid"))
    out = {"kid/mean": float(mmds.mean()), "kid/std": float(mmds.std()), "kid/subset_size": float(size)}
    if s.kid_interval:
        out["kid/ci95_low"], out["kid/ci95_high"], _ = kid_interval(
            out["kid/mean"], mmds, real.cpu().numpy(), fake.cpu().numpy(),
            derive_seed(ctx.seed, "kid-variance"))
    return out


KID = Metric("kid", keys=(Key("kid/mean", False, "KID", table=True, features=True),), needs="real+fake", compute=compute,
             description="unbiased MMD² (cubic polynomial kernel) over seeded subsets; mean, std and a 95% interval")

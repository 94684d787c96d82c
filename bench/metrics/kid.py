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
import torch

from bench.metrics import real_side
from bench.metrics.base import Key, Metric, MetricContext, derive_seed
from bench.metrics.intervals import kid_interval, mmd2_from_sums, variance_uses_all_points
from bench.metrics.kernel_sums import (KernelSums, as_float64, direct_subset_sums, fused_is_cheaper, kernel_sums,
                                       shared_pass_is_cheaper)
from bench.metrics.real_side import index_hash


def subset_size(requested: int, n_fake: int, n_real: int) -> int:
    return min(requested, n_fake, n_real)


def subset_indices(n_real: int, n_fake: int, subsets: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """torch-fidelity's subset draws in its order (each subset: real rows, then fake rows) from a RandomState."""
    rng = np.random.RandomState(seed)
    idx_r, idx_f = np.zeros((subsets, size), dtype=np.int64), np.zeros((subsets, size), dtype=np.int64)
    for i in range(subsets):
        idx_r[i] = rng.choice(n_real, size, replace=False)
        idx_f[i] = rng.choice(n_fake, size, replace=False)
    return idx_r, idx_f


def kid_subsets(real, fake, subsets: int, size: int, seed: int, all_pairs: bool = False,
                cache_real: torch.Tensor | None = None):
    """Each subset's unbiased MMD² (torch-fidelity's estimator and subset draws, float64), and, with `all_pairs`,
    the three kernel sums over all points for KID's variance when the fused pass made them (else None).

    The subsets' sums come from one blockwise pass over the full kernel matrices when that costs fewer flops
    than S separate m x m matrices (bench/metrics/kernel_sums.py), which is also the pass the variance needs.
    `cache_real` (the real features as the evaluation holds them): the real-real sums come from the real-side
    cache (bench/metrics/real_side.py), keyed by those features and the subsets' row numbers."""
    x, y = as_float64(real), as_float64(fake)
    idx_r, idx_f = subset_indices(len(x), len(y), subsets, size, seed)
    n_r, n_f, d = len(x), len(y), x.shape[1]
    shared = all_pairs and variance_uses_all_points(n_r, n_f) and shared_pass_is_cheaper(n_r, n_f, subsets, size, d)

    def matrix(a, b, same, index_a, index_b) -> KernelSums:
        """One matrix's sums: all-points sums too in the shared pass, else the subsets' by the cheaper path (the
        variance, if asked, makes its own pass)."""
        if shared or fused_is_cheaper(len(a), len(b), subsets, size, d):
            sums = kernel_sums(a, b, same, index_a, index_b)
            return sums if shared else KernelSums(None, None, 0.0, sums.subsets)
        return KernelSums(None, None, 0.0, direct_subset_sums(a, b, same, index_a, index_b))

    if cache_real is None:
        xx = matrix(x, x, True, idx_r, idx_r)
    else:
        xx = KernelSums.from_dict(real_side.cached(cache_real, "kid-subset-sums",
                                                   lambda: matrix(x, x, True, idx_r, idx_r).as_dict(),
                                                   rows=index_hash(idx_r), shared=shared))
    yy, xy = matrix(y, y, True, idx_f, idx_f), matrix(x, y, False, idx_r, idx_f)
    values = np.array([mmd2_from_sums(a, b, c, size, size) for a, b, c in zip(xx.subsets, yy.subsets, xy.subsets)])
    return values, ((xx, yy, xy) if shared else None)


def subset_mmds(real, fake, subsets: int, size: int, seed: int) -> np.ndarray:
    """Each subset's unbiased MMD² with torch-fidelity's draws (`kid_subsets`)."""
    return kid_subsets(real, fake, subsets, size, seed)[0]


def kid_summary(real, fake, subsets: int, size: int, seed: int, interval_seed: int | None,
                cached: bool = False) -> dict[str, float]:
    """KID's keys for one evaluation: mean and spread of the subset values, and the 95% interval when asked.
    `cached`: take the real-real kernel sums from the real-side cache (`real` must then be a tensor)."""
    values, parts = kid_subsets(real, fake, subsets, size, seed, all_pairs=interval_seed is not None,
                                cache_real=real if cached else None)
    out = {"kid/mean": float(values.mean()), "kid/std": float(values.std()), "kid/subset_size": float(size)}
    if interval_seed is not None:
        def real_sums(rows: np.ndarray) -> KernelSums:  # the variance's real-real sums, from the real-side cache
            def compute() -> dict:
                x = as_float64(real)[torch.as_tensor(rows)]
                return kernel_sums(x, x, True).as_dict()

            return KernelSums.from_dict(real_side.cached(real, "kid-variance-sums", compute, rows=index_hash(rows)))

        out["kid/ci95_low"], out["kid/ci95_high"], _ = kid_interval(
            out["kid/mean"], values, np.asarray(real), np.asarray(fake), interval_seed, sums=parts,
            real_sums=real_sums if cached else None)
    return out


def compute(ctx: MetricContext) -> dict[str, float]:
    fake, real = ctx.fake["pool"].cpu(), ctx.real["pool"].cpu()
    s = ctx.settings
    size = subset_size(s.kid_subset_size, len(fake), len(real))
    return kid_summary(real, fake, s.kid_subsets, size, derive_seed(ctx.seed, "kid"),
                       derive_seed(ctx.seed, "kid-variance") if s.kid_interval else None, cached=True)


KID = Metric("kid", keys=(Key("kid/mean", False, "KID", table=True, features=True),), needs="real+fake", compute=compute,
             description="unbiased MMD² (cubic polynomial kernel) over seeded subsets; mean, std and a 95% interval")

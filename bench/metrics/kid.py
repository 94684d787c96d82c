"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel.

Subsets are drawn from a seed derived from the evaluation seed, never from a global RNG. The subset
size is the protocol's `kid_subset_size` (default 1000), shrunk to the smaller of the two sample
counts when fewer images exist; the size used is reported as `kid/subset_size`.
"""

from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

from bench.metrics.base import Metric, MetricContext, derive_seed


def subset_size(requested: int, n_fake: int, n_real: int) -> int:
    return min(requested, n_fake, n_real)


def compute(ctx: MetricContext) -> dict[str, float]:
    fake, real = ctx.fake["pool"], ctx.real["pool"]
    size = subset_size(ctx.settings.kid_subset_size, len(fake), len(real))
    out = kid_features_to_metric(real, fake, kid_subsets=ctx.settings.kid_subsets, kid_subset_size=size,
                                 rng_seed=derive_seed(ctx.seed, "kid"), verbose=False)
    return {"kid/mean": out[KEY_METRIC_KID_MEAN], "kid/std": out[KEY_METRIC_KID_STD],
            "kid/subset_size": float(size)}


KID = Metric("kid", higher_is_better=False, needs="real+fake", compute=compute,
             description="unbiased MMD² (cubic polynomial kernel) over seeded subsets; mean and std over subsets")

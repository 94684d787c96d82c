"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), over `is_splits` splits.

With the judge extractor p(y|x) is the judge's softmax over the data set's classes, so IS ranges from
1 to the number of classes (10 for MNIST). The split shuffle is seeded from the evaluation seed.
"""

from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable, derive_seed


def compute(ctx: MetricContext) -> dict[str, float]:
    if "logits" not in ctx.fake:  # an embedding without a classifier head (CLIP, DINOv2)
        raise MetricUnavailable("IS needs class logits, which this extractor's embedding does not have")
    logits = ctx.fake["logits"]
    splits = min(ctx.settings.is_splits, len(logits))
    out = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=derive_seed(ctx.seed, "is"))
    return {"is": out[KEY_METRIC_ISC_MEAN], "is/split_std": out[KEY_METRIC_ISC_STD], "is/splits": float(splits)}


INCEPTION_SCORE = Metric("is", keys=(Key("is", True, "IS", table=True, features=True),), needs="fake", compute=compute,
                         description="exp of the mean KL between per-image and marginal class distributions")

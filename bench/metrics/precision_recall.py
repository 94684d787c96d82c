"""Improved precision and recall (Kynkäänniemi et al. 2019), k = 3 nearest neighbours.

Precision: the share of generated samples inside the real manifold (the union of k-NN balls around
real features); recall: the share of real samples inside the generated manifold. Computed by
torch-fidelity on the same feature pass as FID/KID.
"""

from torch_fidelity.metric_prc import prc_features_to_metric

from bench.metrics.base import Metric, MetricContext


def compute(ctx: MetricContext) -> dict[str, float]:
    k = getattr(ctx.settings, "prc_neighborhood", 3)
    # torch-fidelity's convention: features_1 = generated, features_2 = real.
    out = prc_features_to_metric(ctx.fake["pool"], ctx.real["pool"], prc_neighborhood=k, verbose=False)
    return {"precision": float(out["precision"]), "recall": float(out["recall"])}


PRECISION_RECALL = Metric("precision_recall", higher_is_better=True, needs="real+fake", compute=compute,
                          description="improved precision and recall with k-NN manifolds (k = 3)")

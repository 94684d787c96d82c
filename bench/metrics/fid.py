"""Fréchet distance between Gaussians fitted to real and generated features (Heusel et al. 2017).

The statistics are accumulated in float64 while features stream in; torch-fidelity does the
Fréchet distance (a trace of the eigenvalue square roots of Σ_r Σ_g, valid for the non-symmetric
product, unlike the SVD shortcut flagged in SEEDS.md §4.2).
"""

from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

from bench.metrics.base import Metric, MetricContext


def compute(ctx: MetricContext) -> dict[str, float]:
    return {"fid": fid_statistics_to_metric(ctx.real_stats, ctx.fake_stats, verbose=False)[KEY_METRIC_FID]}


FID = Metric("fid", higher_is_better=False, needs="real+fake", compute=compute,
             description="Fréchet distance of pool features; 0 = identical Gaussians")

"""Density and coverage (Naeem, Oh, Uh, Choi and Yoo, "Reliable Fidelity and Diversity Metrics for
Generative Models", ICML 2020), the outlier-robust successors of precision and recall.

Both use k-NN balls around the *real* features only (radius = distance to the k-th nearest other real
sample), so a few generated outliers cannot inflate a manifold the way they inflate recall:
- density: how many real balls each generated sample falls into, averaged over generated samples and
  divided by k. It is 1 in expectation when the two distributions are equal, and it is not bounded by 1 (a
  generator that piles its samples where reals are dense scores above 1).
- coverage: the share of real samples whose ball contains at least one generated sample. For equal
  distributions with M = N samples it approaches 1 - 2^-k (0.969 for the paper's k = 5).
Membership is strict (distance < radius), as in the paper's reference code (clovaai/generative-evaluation-prdc);
the paper recommends k = 5, the default here. Distances come in bounded blocks (the k-NN code of
precision/recall), so memory stays flat in N.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable, setting
from bench.metrics.precision_recall import _dist_block, _sq_dist_block, block_rows


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dc_neighborhood: int = Field(5, gt=0, description="k of the real k-NN balls for density and coverage "
                                                      "(Naeem et al. 2020 recommend 5)")


def density_coverage(fake: torch.Tensor, real: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """(density, coverage) of generated features `fake` against real features `real`."""
    fake, real = fake.double(), real.double()
    if len(real) <= k:
        raise MetricUnavailable(f"density/coverage need more than k = {k} real samples (have {len(real)})")
    # Radii and memberships come from the same real rows against each side (real block @ real.T, real block @
    # fake.T), so a generated sample identical to a real one gets that real's distances by the same arithmetic:
    # its k-th neighbour sits on the boundary (outside) rather than on either side of it by rounding.
    r_sq, f_sq = (real * real).sum(1), (fake * fake).sum(1)
    inside_total = torch.zeros((), dtype=torch.float64)
    covered = []
    # Block-sized buffers reused by every block (bench/metrics/precision_recall.py says why).
    rows = min(len(real), block_rows(max(len(real), len(fake))))
    to_real = tuple(torch.empty(rows, len(real), dtype=real.dtype) for _ in range(2))
    to_fake = tuple(torch.empty(rows, len(fake), dtype=real.dtype) for _ in range(2))
    for blk in real.split(rows):
        radii = _sq_dist_block(blk, real, r_sq, to_real).topk(k + 1, dim=1, largest=False).values[:, -1].sqrt_()  # k-th other real
        inside = _dist_block(blk, fake, f_sq, to_fake) < radii[:, None]  # (block of reals, fakes)
        inside_total += inside.sum()
        covered.append(inside.any(1))
    covered = torch.cat(covered)
    density = float(inside_total) / (k * len(fake))
    return density, float(covered.double().mean())


def compute(ctx: MetricContext) -> dict[str, float]:
    k = setting(ctx, DENSITY_COVERAGE, "dc_neighborhood")
    density, cov = density_coverage(ctx.fake["pool"], ctx.real["pool"], k)
    return {"density": density, "coverage": cov}


DENSITY_COVERAGE = Metric(
    "density_coverage",
    keys=(Key("density", True, "Density", features=True), Key("coverage", True, "Coverage", features=True)),
    needs="real+fake", compute=compute, settings=Settings,
    description="density and coverage (Naeem et al. 2020): fidelity and diversity from real k-NN balls (k = 5)")

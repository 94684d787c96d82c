"""FID as a function of the truncation ψ (StyleGAN's truncation trick, Karras et al. 2019 §3 / appendix B).

Sampling w' = w_avg + ψ (w − w_avg) trades variety for per-image quality: ψ < 1 pulls every sample towards
the average face. The curve FID(ψ) makes that trade visible; the protocol's `truncation_psis` (default
0.5, 0.7, 1.0) are scored against the same held-out reference, with this seed's latents, so the points of
one seed differ only in ψ. ψ = 1 is the untruncated FID the leaderboard ranks by (the papers report FID
without truncation). Keys: `fid_trunc/psi_<ψ>`. Models without a tracked w_avg have no truncation: the
metric is unavailable for them rather than a copy of their FID.
"""

from __future__ import annotations

from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable
from bench.metrics.fid import headline_fid

DEFAULT_PSIS = (0.5, 0.7, 1.0)


def key(psi: float) -> str:
    return f"fid_trunc/psi_{psi:g}"


def compute(ctx: MetricContext) -> dict[str, float]:
    if ctx.truncated is None:
        raise MetricUnavailable("fid_truncation needs a generator with truncation (a tracked w_avg: StyleGAN)")
    if not ctx.real_stats:
        raise MetricUnavailable("fid_truncation needs the real reference statistics")
    psis = getattr(ctx.settings, "truncation_psis", None) or DEFAULT_PSIS
    out = {}
    for psi in psis:  # each point by the headline's formula, so ψ = 1 is exactly the ranked FID
        pool, stats = ctx.truncated(float(psi))
        out[key(psi)] = headline_fid(ctx.real_stats, stats, ctx.real.get("pool"), pool)
    return out


FID_TRUNCATION = Metric("fid_truncation", keys=(Key("fid_trunc", False, features=True),),
                        key_patterns=((r"fid_trunc/psi_[0-9.]+", False, True),), needs="style", compute=compute,
                        description="FID at each truncation psi in evaluation.truncation_psis (StyleGAN): the "
                                    "variety-vs-quality curve")

"""Cycle-consistency and identity errors of an unpaired translation model (CycleGAN), on held-out images.

G maps A→B and F maps B→A. Both metrics are the mean absolute error per pixel value (every channel
of every pixel of every held-out image weighs the same, as in the L1 losses they mirror), measured
in the models' own [-1, 1] units, so 0 is perfect and 2 is the worst possible. The sums are
accumulated in float64 over the whole split, never as a mean of per-batch means, so a short last
batch does not count more than its pixels.

- `cycle_error/a` = mean|F(G(a)) − a| (A→B→A), `cycle_error/b` = mean|G(F(b)) − b| (B→A→B),
  `cycle_error` = their mean (the "cycle-consistency error on test images" of CycleGAN evaluations).
- `identity_error/b` = mean|G(b) − b|, `identity_error/a` = mean|F(a) − a|, `identity_error` = their mean.
  The identity term feeds each generator an image of its *target* domain (G gets b; Zhu et al. 2017
  §5.2), not of its source domain as a common course formula writes.
"""

from __future__ import annotations

from typing import Iterable

import torch

from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable

# key suffix -> (model output, the real image it should reproduce)
CYCLE_TERMS = {"a": ("F(G(a))", "a"), "b": ("G(F(b))", "b")}
IDENTITY_TERMS = {"a": ("F(a)", "a"), "b": ("G(b)", "b")}


def mean_abs_errors(batches: Iterable[dict[str, torch.Tensor]], terms: dict[str, tuple[str, str]],
                    metric: str) -> dict[str, float]:
    """Per-pixel mean |output − reference| of each term over every batch."""
    sums = {k: 0.0 for k in terms}
    counts = {k: 0 for k in terms}
    for batch in batches:
        for k, (out_key, ref_key) in terms.items():
            if out_key not in batch or ref_key not in batch:
                raise MetricUnavailable(f"{metric}: the cycle stream has no '{out_key}' or '{ref_key}'")
            out, ref = batch[out_key], batch[ref_key]
            if out.shape != ref.shape:
                raise ValueError(f"{metric}: {out_key} has shape {tuple(out.shape)}, {ref_key} {tuple(ref.shape)}")
            sums[k] += float((out.detach().double() - ref.detach().double()).abs().sum())
            counts[k] += out.numel()
    if not all(counts.values()):
        raise MetricUnavailable(f"{metric}: the cycle stream yielded no images")
    return {k: sums[k] / counts[k] for k in terms}


def _report(ctx: MetricContext, metric: str, terms: dict[str, tuple[str, str]]) -> dict[str, float]:
    if ctx.cycle is None:
        raise MetricUnavailable(f"{metric} needs an unpaired two-generator (cycle) model")
    err = mean_abs_errors(ctx.cycle(), terms, metric)
    return {metric: (err["a"] + err["b"]) / 2, f"{metric}/a": err["a"], f"{metric}/b": err["b"]}


def compute_cycle(ctx: MetricContext) -> dict[str, float]:
    return _report(ctx, "cycle_error", CYCLE_TERMS)


def compute_identity(ctx: MetricContext) -> dict[str, float]:
    return _report(ctx, "identity_error", IDENTITY_TERMS)


CYCLE_ERROR = Metric("cycle_error", keys=(Key("cycle_error", False, "Cycle", table=True), Key("cycle_error/a", False),
                                              Key("cycle_error/b", False)), needs="cycle", compute=compute_cycle,
                     description="mean L1 of F(G(a)) − a and G(F(b)) − b on held-out images ([-1,1] units)")
IDENTITY_ERROR = Metric("identity_error", keys=(Key("identity_error", False), Key("identity_error/a", False),
                                                    Key("identity_error/b", False)), needs="cycle", compute=compute_identity,
                        description="mean L1 of G(b) − b and F(a) − a on held-out images ([-1,1] units)")

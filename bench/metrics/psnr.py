"""Peak signal-to-noise ratio, in dB, between a translation model's outputs and their targets.

Per image: PSNR = 10·log10(R² / MSE) with the data range R = 1 on images mapped from [-1, 1] to
[0, 1] (clipped there), the MSE taken over all pixels and channels, in float64.

An output identical to its target has MSE 0 and PSNR = +inf, and +inf is what is reported: it is
the correct value, and any finite stand-in (100 dB, a capped MSE) would be an invented number.
The headline `psnr` is the mean of the per-image values, so one identical image makes the mean
+inf too; `psnr/inf_fraction` says how many images were identical, so an infinite mean is never
mistaken for a bug.
"""

from __future__ import annotations

import math

import torch

from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable

DATA_RANGE = 1.0


def psnr_batch(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (float64, dB) of (B, C, H, W) batches in [-1, 1]; +inf where output == target."""
    if output.shape != target.shape:
        raise ValueError(f"PSNR of batches with different shapes {tuple(output.shape)} and {tuple(target.shape)}")
    x = ((output.detach().double().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
    y = ((target.detach().double().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(DATA_RANGE ** 2 / mse)  # float division by 0 gives +inf, log10(+inf) = +inf


def mean_psnr(values: torch.Tensor) -> float:
    """Mean over images; +inf as soon as one image is identical to its target (PSNR is never -inf here)."""
    if bool(torch.isinf(values).any()):
        return math.inf
    return float(values.mean())


def compute(ctx: MetricContext) -> dict[str, float]:
    if ctx.pairs is None:
        raise MetricUnavailable("psnr needs a paired translation model (no (output, target) pairs here)")
    batches = [psnr_batch(out, tgt) for out, tgt in ctx.pairs()]
    if not batches:
        raise MetricUnavailable("psnr: the paired stream yielded no images")
    values = torch.cat(batches)
    return {"psnr": mean_psnr(values), "psnr/inf_fraction": float(torch.isinf(values).double().mean())}


PSNR = Metric("psnr", keys=(Key("psnr", True, "PSNR", table=True),), needs="paired", compute=compute,
              description="peak signal-to-noise ratio (dB, data range 1 on [0,1]); +inf = identical images")

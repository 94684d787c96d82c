"""Structural similarity (Wang et al. 2004) between a translation model's outputs and their targets.

Settings, as in the paper and stated explicitly rather than left to scikit-image defaults:
- an 11×11 circular-symmetric Gaussian window with σ = 1.5 (`gaussian_weights=True, sigma=1.5`;
  scikit-image truncates the Gaussian at 3.5σ, which gives exactly 11 taps);
- population (not sample) covariances (`use_sample_covariance=False`);
- K1 = 0.01, K2 = 0.03;
- images mapped from [-1, 1] to [0, 1] (clipped there) with `data_range=1.0`;
- RGB images are compared per channel and the channel SSIMs averaged (`channel_axis`); grayscale as 2-D.

Per-image SSIM is averaged over every held-out pair: `ssim` is that mean, `ssim/std` the spread
across images. Images with a side under 11 pixels raise `MetricUnavailable`: a smaller window
would be a different metric, whose scores must not sit next to Wang-setting scores.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity

from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable

WANG_2004 = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, K1=0.01, K2=0.03, data_range=1.0)
WINDOW = 2 * int(3.5 * 1.5 + 0.5) + 1  # the 11-tap window scikit-image derives from σ = 1.5


def to_unit_range(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] tensor -> float64 array in [0, 1]; clipping keeps data_range = 1 truthful."""
    return ((x.detach().double().cpu() + 1.0) / 2.0).clamp(0.0, 1.0).numpy()


def ssim_image(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two (C, H, W) images in [0, 1]."""
    if x.shape != y.shape:
        raise ValueError(f"SSIM of images with different shapes {x.shape} and {y.shape}")
    h, w = x.shape[-2:]
    if min(h, w) < WINDOW:
        raise MetricUnavailable(f"ssim needs images of at least {WINDOW}x{WINDOW} (Wang 2004 Gaussian window); "
                                f"got {h}x{w}")
    if x.shape[0] == 1:
        return float(structural_similarity(x[0], y[0], **WANG_2004))
    return float(structural_similarity(x, y, channel_axis=0, **WANG_2004))


def ssim_batch(output: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per-image SSIM of (B, C, H, W) batches in [-1, 1]."""
    if len(output) != len(target):  # zip() would score the shorter batch's pairs and drop the rest unseen
        raise ValueError(f"SSIM of batches with different lengths {len(output)} and {len(target)}")
    x, y = to_unit_range(output), to_unit_range(target)
    return np.array([ssim_image(a, b) for a, b in zip(x, y)], dtype=np.float64)


def compute(ctx: MetricContext) -> dict[str, float]:
    if ctx.pairs is None:
        raise MetricUnavailable("ssim needs a paired translation model (no (output, target) pairs here)")
    values = np.concatenate([ssim_batch(out, tgt) for out, tgt in ctx.pairs()] or [np.empty(0)])
    if len(values) == 0:
        raise MetricUnavailable("ssim: the paired stream yielded no images")
    return {"ssim": float(values.mean()), "ssim/std": float(values.std())}


SSIM = Metric("ssim", keys=(Key("ssim", True, "SSIM", table=True),), needs="paired", compute=compute,
              description="structural similarity of output vs target (Wang 2004: 11x11 Gaussian σ=1.5); 1 = identical")

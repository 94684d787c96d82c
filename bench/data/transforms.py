"""Pixel conversions shared by data loading, training and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], i.e. (x - 127.5) / 127.5 as in the seed case study."""
    return x.float().sub(127.5).div(127.5)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, rounding to the nearest level; the inverse of `to_float` on the grid."""
    return x.detach().float().mul(127.5).add(127.5).round().clamp(0, 255).to(torch.uint8)


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grayscale is replicated to 3 channels when an RGB consumer asks (documented in docs/data.md)."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"cannot convert {x.shape[1]} channels to {channels}")


def resize_float(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear with antialiasing, so downscaling does not alias."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return resize_float(x.float(), size).round().clamp(0, 255).to(torch.uint8)


def fit_float(x: torch.Tensor, size: int, mode: str = "resize") -> torch.Tensor:
    """Bring images in [-1, 1] to `size`: bilinear resize, or (mode 'pad') a black border / centre crop.

    Padding keeps MNIST strokes crisp when a 32 px model trains on 28 px digits (the usual MNIST
    DCGAN set-up); resizing twice (28 -> 32 for training, 32 -> 28 for scoring) blurs them, and the
    judge's features notice blur.
    """
    if mode == "resize":
        return resize_float(x, size)
    diff = size - x.shape[-1]
    if diff == 0:
        return x
    if diff % 2:
        raise ValueError(f"pad mode needs an even size difference, got {x.shape[-1]} -> {size}")
    if diff > 0:
        p = diff // 2
        return F.pad(x, (p, p, p, p), value=-1.0)
    c = -diff // 2
    return x[..., c:c + size, c:c + size]

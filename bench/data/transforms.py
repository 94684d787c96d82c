"""Pixel conversions shared by data loading, training and evaluation."""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F

from bench.data import resample


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


# An image size: one int is a square side; (height, width) a non-square frame (label maps read with
# dataset.aspect > 1, bench/data/labelmap.py).
Size = Union[int, tuple[int, int]]


def hw(size: Size) -> tuple[int, int]:
    """(height, width) of a size given as a square side or as (height, width)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_float(x: torch.Tensor, size: Size) -> torch.Tensor:
    """Bilinear with antialiasing, so downscaling does not alias."""
    h, w = hw(size)
    if x.shape[-2] == h and x.shape[-1] == w:
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


def resize_uint8(x: torch.Tensor, size: Size) -> torch.Tensor:
    """8-bit images -> 8-bit images at `size`: bilinear with antialiasing, rounded to the nearest level. The
    arithmetic is bench/data/resample.py's, the same bits on every CPU (torch's own kernel rounds differently
    on CPUs without AVX2, and rounding to 8 bits turns that into other pixels)."""
    h, w = hw(size)
    if x.shape[-2] == h and x.shape[-1] == w:
        return x
    return resample.resize(x, (h, w), "bilinear", to_uint8=True)


def fit_float(x: torch.Tensor, size: Size, mode: str = "resize") -> torch.Tensor:
    """Bring images in [-1, 1] to `size` (a side, or (height, width)): bilinear resize, or (mode 'pad') a black
    border / centre crop on each side.

    Padding keeps MNIST strokes crisp when a 32 px model trains on 28 px digits (the usual MNIST
    DCGAN set-up); resizing twice (28 -> 32 for training, 32 -> 28 for scoring) blurs them, and the
    judge's features notice blur.
    """
    if mode == "resize":
        return resize_float(x, size)
    (h, w), (dy, dx) = hw(size), (hw(size)[0] - x.shape[-2], hw(size)[1] - x.shape[-1])
    if dy == dx == 0:
        return x
    if dy % 2 or dx % 2 or dy * dx < 0:
        raise ValueError(f"pad mode needs an even size difference of one sign, got "
                         f"{x.shape[-2]}x{x.shape[-1]} -> {h}x{w}")
    if dy >= 0 and dx >= 0:
        return F.pad(x, (dx // 2, dx // 2, dy // 2, dy // 2), value=-1.0)
    top, left = -dy // 2, -dx // 2
    return x[..., top:top + h, left:left + w]

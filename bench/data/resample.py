"""Antialiased resizing of 8-bit images that gives the same bits on every CPU.

Why it exists: torch's `F.interpolate(..., antialias=True)` on float32 is one C++ loop compiled once per CPU
instruction set, and the builds round differently. The default build (an x86 CPU without AVX2, where
`ATEN_CPU_CAPABILITY=default` also sends it) adds every rounded product in order; the AVX2 and AVX-512 builds
let the compiler vectorise the loop over a pixel's taps four at a time (rounded products added in order) and
fuse the leftover taps into fused multiply-adds (one rounding instead of two). The sums then differ in their
last bit, `round()` to 8 bits turns a few of those into one grey level, and the same image files decoded to
other pixels on another CPU (measured: 1e-6 to 6e-5 of the pixels of 9 of the 14 shipped protocols). Every
committed result was decoded by the AVX2 arithmetic, so this module is that arithmetic, step for step, in
numpy, whose float32 multiply and add and float64 -> float32 conversion are IEEE-rounded on every machine.
A fused multiply-add is computed exactly in float64 with an error-free sum and rounded once to float32.

Checked bit for bit against torch's AVX2 and AVX-512 kernels, and shown to differ from its default build, in
tests/test_resample.py. The weights are torch's separable antialias filters (as in Pillow): a triangle for
bilinear, Keys' cubic with a = -0.5 for bicubic, each widened by the scale when shrinking and normalised to
sum to 1, computed with the same float32/float64 roundings as torch (its `_compute_indices_min_size_weights_aa`
in aten/src/ATen/native/cpu/UpSampleKernel.cpp). The width is resized first, then the height, as torch does.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

f32, f64 = np.float32, np.float64

# In the decoded-data cache key: tensors that torch's own kernel resized on a CPU without AVX2 (before this
# module) hold other pixels and must not be read back.
VERSION = "avx2-exact-1"

# Taps after a pixel's first that the AVX2/AVX-512 builds add as rounded products, in groups of this many;
# the rest are fused multiply-adds.
_VECTOR_TAPS = 4
# Images resized per block: bounds the float64 temporaries of the fused steps.
_BLOCK = 64


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Correctly rounded float32 a·b + c. The product of two float32 values is exact in float64; a TwoSum
    gives s + e == a·b + c exactly; s rounded to float32 is the answer unless s lies exactly halfway between
    two float32 values while e says the exact sum lies to one side (then that side)."""
    p = a.astype(f64) * b.astype(f64)
    cc = np.asarray(c, f64)
    s = p + cc
    bb = s - p
    e = (p - (s - bb)) + (cc - bb)
    r = s.astype(f32)
    rd = r.astype(f64)
    toward_s = np.nextafter(r, np.where(s > rd, f32(np.inf), f32(-np.inf)).astype(f32))
    tie = (s != rd) & (s == (rd + toward_s.astype(f64)) * 0.5) & (e != 0)
    # At a tie round-half-even chose r or toward_s; the exact sum's side (e) decides instead.
    take_other = tie & ((e > 0) == (toward_s.astype(f64) > rd))
    return np.where(take_other, toward_s, r)


def _fma_scalar(a, b, c) -> np.float32:
    return fma32(np.array([a], f32), np.array([b], f32), np.array([c], f32))[0]


def _triangle(x: np.float32) -> np.float32:
    x = abs(x)
    return f32(1.0 - f64(x)) if x < 1.0 else f32(0.0)


def _keys_cubic(x: np.float32) -> np.float32:
    """Keys' cubic convolution with a = -0.5 as the AVX2 build evaluates it: float32, with the compiler's
    multiply-add contractions (a fused multiply-add wherever a product feeds an addition)."""
    x = abs(x)
    if x < 1.0:  # ((a + 2)x - (a + 3))x² + 1
        t = _fma_scalar(f32(1.5), x, f32(-2.5))
        return _fma_scalar(f32(t * x), x, f32(1.0))
    if x < 2.0:  # ((a·x - 5a)x + 8a)x - 4a
        t = _fma_scalar(f32(-0.5), x, f32(2.5))
        t = _fma_scalar(t, x, f32(-4.0))
        return _fma_scalar(t, x, f32(2.0))
    return f32(0.0)


_FILTERS = {"bilinear": (_triangle, 2), "bicubic": (_keys_cubic, 4)}


@lru_cache(maxsize=64)
def _taps(in_size: int, out_size: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first input index, tap count, float32 weights padded with zeros) per output pixel."""
    filt, interp_size = _FILTERS[mode]
    scale = f32(f32(in_size) / f32(out_size))
    support = f32(interp_size * 0.5 * f64(scale)) if scale >= 1.0 else f32(interp_size * 0.5)
    max_taps = int(np.ceil(f64(support))) * 2 + 1
    invscale = f32(1.0 / f64(scale)) if scale >= 1.0 else f32(1.0)
    first = np.zeros(out_size, np.int64)
    count = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, max_taps), f32)
    for i in range(out_size):
        center = f32(f64(scale) * (i + 0.5))
        xmin = max(int(f64(f32(center - support)) + 0.5), 0)
        xsize = min(int(f64(f32(center + support)) + 0.5), in_size) - xmin
        xsize = min(max(xsize, 0), max_taps)
        if xsize < 1:
            raise ValueError(f"no input pixel under output pixel {i} resizing {in_size} -> {out_size}")
        w = [filt(f32((f64(f32(f32(j + xmin) - center)) + 0.5) * f64(invscale))) for j in range(xsize)]
        total = f32(0.0)
        for v in w:
            total = f32(total + v)
        if total != 0:
            w = [f32(v / total) for v in w]
        first[i], count[i], weights[i, :xsize] = xmin, xsize, w
    return first, count, weights


def _resize_last_axis(a: np.ndarray, out_size: int, mode: str) -> np.ndarray:
    """float32 (..., n) -> (..., out_size) along the last axis, the AVX2 build's arithmetic."""
    first, count, weights = _taps(a.shape[-1], out_size, mode)
    acc = a[..., first] * weights[:, 0]
    # Taps 1 .. count-1 of each output: the first `vectorised` of them as rounded products added in order,
    # the rest as fused multiply-adds.
    vectorised = (count - 1) // _VECTOR_TAPS * _VECTOR_TAPS
    for j in range(1, int(count.max())):
        plain = np.flatnonzero(j <= vectorised)
        fused = np.flatnonzero((j > vectorised) & (j < count))
        if plain.size:
            acc[..., plain] = acc[..., plain] + a[..., first[plain] + j] * weights[plain, j]
        if fused.size:
            acc[..., fused] = fma32(a[..., first[fused] + j], weights[fused, j], acc[..., fused])
    return acc


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear", to_uint8: bool = False) -> torch.Tensor:
    """(N, C, H, W) pixel values (uint8, or float32 holding 8-bit levels) -> float32 (N, C, h, w), unrounded:
    bit for bit `F.interpolate(x.float(), size, mode=mode, align_corners=False, antialias=True)` as torch's AVX2
    build computes it, on any CPU. `to_uint8` rounds to the nearest level (half to even, as torch's round) and
    clamps, block by block: memory then grows with the uint8 output, not with float copies of the whole set."""
    if mode not in _FILTERS:
        raise ValueError(f"unknown resize mode {mode!r}; one of {', '.join(_FILTERS)}")
    h, w = int(size[0]), int(size[1])
    src = x.detach().cpu().numpy()
    n, c, height, width = src.shape
    if min(height, width, h, w) < 2 and (height, width) != (h, w):
        # torch's own kernel mishandles a 1-pixel-wide input; no image data is that small.
        raise ValueError(f"cannot resize {height}x{width} images to {h}x{w}: sides must be at least 2 pixels")
    out = np.empty((n, c, h, w), np.uint8 if to_uint8 else f32)
    for i in range(0, n, _BLOCK):
        y = src[i:i + _BLOCK].astype(f32)
        if width != w:
            y = _resize_last_axis(y, w, mode)
        if height != h:
            y = np.swapaxes(_resize_last_axis(np.ascontiguousarray(np.swapaxes(y, -1, -2)), h, mode), -1, -2)
        out[i:i + _BLOCK] = np.clip(np.rint(y), 0, 255) if to_uint8 else y
    return torch.from_numpy(out)

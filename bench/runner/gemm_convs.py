"""`train.gemm_convs`: weight-bound convolutions computed as one matrix product on unfolded patches.

A U-Net at batch 1 (pix2pix's unet_256) ends its encoder and starts its decoder with 4x4 convolutions of
512-1,024 channels applied at 1-64 positions: 4-8 M weights against a few thousand activations. oneDNN's
direct convolution is built for the opposite case and ran these layers several times slower per flop than
the wide ones; the same layer written as im2col + GEMM (`F.unfold` then a matrix product; for a transposed
convolution the product then `F.fold`) is faster on them (measurements: docs/metrics.md, "Training speed").
On wide layers and on batched inputs (DCGAN at batch 64) it is not, so a call takes the GEMM path only when
it is weight-bound: at most `MAX_COLUMNS` output positions over the whole batch (the product's columns;
input positions for a transposed convolution) and at least `MIN_WEIGHTS` weights.

It is the same linear map, summed in another order: outputs and gradients agree to float32 rounding
(~1e-6 relative, tests/test_train_speed.py), not bit for bit, so it is a protocol option that enters the
fingerprint. Under autocast (bf16/fp16) every call keeps the module's own kernel: `F.fold` would add the
overlapping patches in the low precision, another recipe, and the speed-up was measured in float32 only.
The swap lasts for the training loop, which includes the in-training FID monitor and sample grids; the
weights, their names and checkpoints are those of the plain modules, and the final evaluation runs the
plain modules, as a re-evaluation from a checkpoint would. The GEMM output is NCHW: with
`train.channels_last` the next convolution reorders it (the two were not measured together).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

MAX_COLUMNS = 64  # output positions x batch (input positions for a transposed convolution)
# pix2pix's qualifying layers hold 4.2-8.4 M weights. DCGAN's largest (2.1 M at 64 px) pass this rule but
# not the columns one at batch 64 (1,024 columns).
MIN_WEIGHTS = 1 << 20


def _plain(m: nn.Module) -> bool:
    """Only what the GEMM path computes as the same map: one group, no dilation, zero numeric padding, no
    output padding. Exact classes only: a parametrised or otherwise specialised subclass keeps its own forward."""
    if type(m) not in (nn.Conv2d, nn.ConvTranspose2d):
        return False
    return (m.groups == 1 and m.dilation == (1, 1) and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            and (type(m) is nn.Conv2d or tuple(m.output_padding) == (0, 0)))


def _gemm_call(x: torch.Tensor, columns: int, weight: torch.Tensor) -> bool:
    """A weight-bound float call on a batched 4-d input, outside autocast (module doc)."""
    return (x.dim() == 4 and x.shape[0] > 0 and not torch.is_autocast_enabled(x.device.type)
            and columns <= MAX_COLUMNS and weight.numel() >= MIN_WEIGHTS)


class GemmConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x)
        n, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if not _gemm_call(x, n * oh * ow, self.weight):
            return super().forward(x)
        cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # n, c_in*kh*kw, oh*ow
        weight = self.weight.reshape(self.out_channels, -1)
        if n == 1:
            out = weight @ cols[0]
        else:  # one product over the whole batch (a batched matmul of n thin products is slower)
            out = (weight @ cols.transpose(0, 1).reshape(cols.shape[1], -1)).reshape(-1, n, oh * ow).transpose(0, 1)
        if self.bias is not None:
            out = out + self.bias.view(-1, 1)
        return out.reshape(n, self.out_channels, oh, ow)


class GemmConvTranspose2d(nn.ConvTranspose2d):
    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None or x.dim() != 4 or not _gemm_call(x, x.shape[0] * x.shape[2] * x.shape[3],
                                                                     self.weight):
            return super().forward(x, output_size)
        n, c_in, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
        weight = self.weight.reshape(c_in, -1).t()  # c_out*kh*kw, c_in
        if n == 1:
            cols = (weight @ x.reshape(c_in, h * w)).unsqueeze(0)
        else:
            cols = (weight @ x.reshape(n, c_in, h * w).transpose(0, 1).reshape(c_in, -1))
            cols = cols.reshape(-1, n, h * w).transpose(0, 1)
        # fold sums each patch back into place: the adjoint of unfold, i.e. the transposed convolution
        out = F.fold(cols, (oh, ow), (kh, kw), padding=(ph, pw), stride=(sh, sw))
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


_GEMM = {nn.Conv2d: GemmConv2d, nn.ConvTranspose2d: GemmConvTranspose2d}


@contextlib.contextmanager
def gemm_convs(nets: Iterable[nn.Module], on: bool = True) -> Iterator[int]:
    """Within the block, every plain Conv2d / ConvTranspose2d of `nets` takes the GEMM path when a call is
    weight-bound (module doc); yields how many modules were switched. Switching the class keeps the module
    object, its parameters, buffers, hooks and state_dict keys; the original classes come back on exit."""
    switched = []
    if on:
        for net in nets:
            for m in net.modules():
                if _plain(m):
                    switched.append((m, type(m)))
                    m.__class__ = _GEMM[type(m)]
    try:
        yield len(switched)
    finally:
        for m, cls in switched:
            m.__class__ = cls

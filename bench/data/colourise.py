"""Colourisation pairs from any RGB set (`dataset.colourise: true`): grey -> RGB translation for pix2pix.

The target y is the set's RGB image, unchanged; the input x is its luma, ITU-R BT.601
Y = 0.299 R + 0.587 G + 0.114 B (the weights of PIL's `convert("L")` and of the colourisation literature's
L channel proxy), rounded to 8 bits as a stored grey photo would be and repeated on all three channels, so
a translator built for RGB inputs (pix2pix's U-Net, the identity baseline) takes it unchanged and the
identity map -- the grey photo offered as the colour one -- is the natural floor (bench/runner/reference.py).

Any loader's output is converted after it ran: the splits, the held-out part and the data fingerprint are the
source set's own (the grey inputs are a function of the targets, so they add no content), and the protocol
fingerprint records `colourise`. Labels are dropped: a colouriser is not class-conditional.
"""

from __future__ import annotations

import dataclasses

import torch

from bench.data.base import RealData
from bench.errors import BenchError

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def grey(images: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """uint8 (N, 3, H, W) RGB -> uint8 (N, 3, H, W): the rounded BT.601 luma on every channel."""
    w = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.empty_like(images)
    for i in range(0, len(images), batch):
        y = (images[i:i + batch].float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        out[i:i + batch] = y.expand(-1, 3, -1, -1)
    return out


def colourisation(data: RealData) -> RealData:
    """The set's images as targets, their grey versions as the aligned inputs (task 'paired')."""
    if data.spec.channels != 3 or data.train_images.shape[1] != 3:
        raise BenchError(f"{data.spec.name}: colourise needs RGB images (dataset.channels: 3)")
    if data.task == "unpaired":
        raise BenchError(f"{data.spec.name}: colourise makes pairs from one set of RGB images; this set is two "
                         "unpaired domains")
    return dataclasses.replace(data, train_labels=None, eval_labels=None, train_inputs=grey(data.train_images),
                               eval_inputs=grey(data.eval_images), task="paired")

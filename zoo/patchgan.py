"""PatchGAN discriminators and their receptive fields (Isola et al. 2017, pix2pix, §3.2.2 and §4.4).

`NLayerDiscriminator` is the official pix2pix/CycleGAN stack: a stride-2 k4 conv without norm, then
`n_layers − 1` stride-2 convs with norm, one stride-1 conv with norm, and a stride-1 conv to one channel
(logits: no sigmoid, the losses take logits). Widths are ndf·min(2**n, 8); LeakyReLU 0.2 everywhere.
A conv followed by BatchNorm has no bias (the norm's shift replaces it); with instance norm (affine=False,
no shift) the convs keep theirs, as in the reference code.

n_layers selects the patch size the pix2pix paper compares: 0 = PixelGAN (1x1 convs, RF 1),
1 → 16x16, 3 → 70x70 (the default), 5 → 286x286 (an "ImageGAN" at 256 px). With padding 1 a 256 px
input gives 256/126/30/6 output grids. pix2pixHD's copy of the stack pads by 2 (ceil((4 − 1)/2)), which
changes the grids (35 on 256) but neither the receptive field nor the parameter count.

`receptive_field` is the back-recursion R ← S·(R − 1) + K of the pix2pix authors' phillipi/pix2pix
`scripts/receptive_field_sizes.m`; `empirical_receptive_field`
measures it by backpropagating one central output element to the input.
"""

from __future__ import annotations

import copy
from typing import Callable, Literal, Sequence

import torch
from torch import nn

Norm = Literal["batch", "instance", "none"]


def norm_layer(kind: str, channels: int) -> nn.Module | None:
    """The reference code's norms: BatchNorm (affine), or InstanceNorm without affine or running stats."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm '{kind}'; valid: batch, instance, none")


def conv_bias(norm: str) -> bool:
    """Bias only where no norm with a learned shift follows (BatchNorm's beta makes a bias redundant)."""
    return norm != "batch"


class _Blocks(nn.Module):
    """A chain of blocks whose outputs are the discriminator's intermediate features."""

    blocks: nn.ModuleList

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features if return_features else x

    def conv_layers(self) -> list[tuple[int, int]]:
        """(kernel, stride) of every conv, input to output."""
        return [(m.kernel_size[0], m.stride[0]) for m in self.modules() if isinstance(m, nn.Conv2d)]

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.conv_layers())


class NLayerDiscriminator(_Blocks):
    """The official PatchGAN; `forward(x, return_features=True)` gives every block's output (the last
    is the logit grid), which pix2pixHD's feature matching reads."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, norm: Norm = "batch", padding: int = 1):
        super().__init__()
        if n_layers < 1:
            raise ValueError("NLayerDiscriminator needs n_layers >= 1 (n_layers 0 is PixelDiscriminator)")
        bias = conv_bias(norm)

        def block(c_in: int, c_out: int, stride: int, with_norm: bool, act: bool = True) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, stride=stride, padding=padding,
                                                 bias=bias or not with_norm)]
            n = norm_layer(norm, c_out) if with_norm else None
            layers += [n] if n is not None else []
            layers += [nn.LeakyReLU(0.2)] if act else []
            return nn.Sequential(*layers)

        blocks = [block(in_ch, ndf, 2, with_norm=False)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            blocks.append(block(ndf * prev, ndf * mult, 2, with_norm=True))
        prev, mult = mult, min(2**n_layers, 8)
        blocks.append(block(ndf * prev, ndf * mult, 1, with_norm=True))
        # The output conv has no norm after it, so it keeps its bias whatever the norm.
        blocks.append(nn.Sequential(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=padding)))
        self.blocks = nn.ModuleList(blocks)


class PixelDiscriminator(_Blocks):
    """PixelGAN: 1x1 convs, so every output judges one pixel (RF 1); the output grid equals the input."""

    def __init__(self, in_ch: int, ndf: int = 64, norm: Norm = "batch"):
        super().__init__()
        bias = conv_bias(norm)
        n = norm_layer(norm, ndf * 2)
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_ch, ndf, 1), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.Conv2d(ndf, ndf * 2, 1, bias=bias), *([n] if n is not None else []), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.Conv2d(ndf * 2, 1, 1, bias=bias)),  # reference: bias follows the norm rule here too
        ])


def patch_discriminator(in_ch: int, ndf: int = 64, n_layers: int = 3, norm: Norm = "batch",
                        padding: int = 1) -> _Blocks:
    """n_layers 0 → PixelGAN (RF 1); 1, 3, 5 → RF 16, 70, 286 (2 and 4 → 34 and 142)."""
    if n_layers == 0:
        return PixelDiscriminator(in_ch, ndf, norm)
    return NLayerDiscriminator(in_ch, ndf, n_layers, norm, padding)


def receptive_field(layers: Sequence[tuple[int, int]]) -> int:
    """RF in input pixels of one output element of a conv stack [(kernel, stride), ...] (input first):
    back from R = 1 at the output, R ← S·(R − 1) + K per layer (4 → 7 → 16 → 34 → 70 for the 70x70 PatchGAN)."""
    r = 1
    for k, s in reversed(list(layers)):
        r = s * (r - 1) + k
    return r


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def _strip_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, _NORMS):
            setattr(module, name, nn.Identity())
        else:
            _strip_norms(child)


def empirical_receptive_field(net: nn.Module, size: int, channels: int | None = None,
                              select: Callable[[object], torch.Tensor] | None = None) -> int:
    """Side of the input region one central output element depends on, by gradient probing.

    A copy of `net` gets every conv weight set to a positive constant and biases to 0, on an all-ones
    input, so every path carries a positive gradient and none can cancel. Norm layers are removed first:
    instance (and batch) statistics couple every pixel to every output, which would report the whole
    image; the receptive field is a property of the conv stack. `size` must leave the central element's
    field inside the image, else the measured side is clipped. `select` picks the probed map from the
    output (e.g. one scale of a multi-scale D); by default the output itself.
    """
    probe = copy.deepcopy(net).float().cpu().eval()
    _strip_norms(probe)
    convs = [m for m in probe.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        for m in convs:
            m.weight.fill_(1.0 / m.weight[0].numel())
            if m.bias is not None:
                m.bias.zero_()
    channels = channels or convs[0].in_channels
    x = torch.ones(1, channels, size, size, requires_grad=True)
    out = probe(x)
    out = select(out) if select is not None else out
    h, w = out.shape[-2:]
    out[..., h // 2, w // 2].sum().backward()
    touched = x.grad[0].abs().sum(0) > 0
    rows = touched.any(1).nonzero().flatten()
    cols = touched.any(0).nonzero().flatten()
    side_h, side_w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    if side_h != side_w:
        raise ValueError(f"non-square receptive field {side_h}x{side_w}: is `size` large enough?")
    return side_h

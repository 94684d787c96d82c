"""Building blocks shared by several zoo families."""

from __future__ import annotations

from torch import nn


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv/linear weights N(0, 0.02), BN scale N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def up_conv(c_in: int, c_out: int, kernel: int, bias: bool = True) -> nn.ConvTranspose2d:
    """A stride-2 transposed conv that exactly doubles H and W for kernel 4 (p1) or 5 (p2, output_padding 1)."""
    if kernel == 4:
        return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=bias)
    return nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1, bias=bias)


def down_conv(c_in: int, c_out: int, kernel: int, bias: bool = True) -> nn.Conv2d:
    """A stride-2 conv that exactly halves H and W for kernel 4 (p1) or 5 (p2)."""
    return nn.Conv2d(c_in, c_out, kernel, stride=2, padding=1 if kernel == 4 else 2, bias=bias)

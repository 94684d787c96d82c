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
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:  # (a conditional BN has no own affine)
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def up_conv(c_in: int, c_out: int, kernel: int, bias: bool = True, upsample: str = "transposed") -> nn.Module:
    """A stride-2 upsampling conv that exactly doubles H and W.

    `transposed` (DCGAN): a transposed conv, kernel 3 (p1, output_padding 1), 4 (p1) or 5 (p2, output_padding 1).
    `nearest`: nearest-neighbour upsampling then a same-size conv (Odena et al. 2016, "Deconvolution and
    Checkerboard Artifacts", Distill), which avoids the transposed conv's uneven kernel overlap.
    `pixelshuffle`: a same-size conv to 4x the channels, then sub-pixel shuffling (Shi et al. 2016, ESPCN)."""
    if kernel not in (3, 4, 5):
        raise ValueError(f"kernel must be 3, 4 or 5, got {kernel}")
    if upsample == "transposed":
        if kernel == 4:
            return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=bias)
        return nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=kernel // 2, output_padding=1, bias=bias)
    # same-size convs: an even kernel cannot be centred, so kernel 4 pads asymmetrically (left/top 1, right/bottom 2)
    same = (nn.Conv2d(c_in, c_out * (4 if upsample == "pixelshuffle" else 1), kernel, padding=kernel // 2, bias=bias)
            if kernel % 2 else nn.Sequential(nn.ZeroPad2d((1, 2, 1, 2)),
                                             nn.Conv2d(c_in, c_out * (4 if upsample == "pixelshuffle" else 1), kernel, bias=bias)))
    if upsample == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), same)
    if upsample == "pixelshuffle":
        return nn.Sequential(same, nn.PixelShuffle(2))
    raise ValueError(f"upsample must be transposed, nearest or pixelshuffle, got {upsample!r}")


def down_conv(c_in: int, c_out: int, kernel: int, bias: bool = True) -> nn.Conv2d:
    """A stride-2 conv that exactly halves H and W for kernel 3 (p1), 4 (p1) or 5 (p2)."""
    if kernel not in (3, 4, 5):
        raise ValueError(f"kernel must be 3, 4 or 5, got {kernel}")
    return nn.Conv2d(c_in, c_out, kernel, stride=2, padding=1 if kernel in (3, 4) else 2, bias=bias)

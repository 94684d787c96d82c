"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras, Aila, Laine and Lehtinen, "Progressive
Growing of GANs", ICLR 2018, §5 and Appendix D), ProGAN's multi-scale statistical similarity metric.

Each image (real and generated, in [0, 255]) is split into a Laplacian pyramid from its own resolution down to
16 px; at every level, 7x7 neighbourhoods at random positions (128 per image) are the descriptors. Each side's
descriptors are normalised per colour channel by that side's own mean and standard deviation (as the reference
code does, so a global brightness or contrast change of a whole set is invisible to it), and the distance at a
level is the sliced Wasserstein-1 distance: the mean over 4 x 128 random unit directions of the 1-D
Wasserstein-1 distance between the two sides' projections (sorted projections, paired by rank). Numbers are
reported x 10³, one per level (`swd/<res>px`, finest first: fine detail) and their mean (`swd`), lower is
better. The settings (neighbourhood size and count, repeats x directions, 16 px coarsest level, 5x5 binomial
filter with mirrored borders) are those of the reference implementation, tkarras/progressive_growing_of_gans
`metrics/sliced_wasserstein.py`; the paper computes it on 16,384 images, here `swd_images` per side (default
1,024) bound the memory (descriptors are kept per level: images x 128 x 49·C float32 values per side).

Random positions and directions derive from the evaluation seed, so a score is reproducible; the pyramid and
projections are float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from bench.metrics.base import Batches, Key, Metric, MetricContext, MetricUnavailable, derive_seed, setting

COARSEST = 16  # px: the pyramid stops at the last level of at least 16 px (reference code)
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64) / 16.0


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    swd_images: int = Field(1024, gt=1, description="images per side whose descriptors enter SWD (the first ones "
                                                    "of each stream; ProGAN used 16,384)")
    swd_patches_per_image: int = Field(128, gt=0, description="7x7 neighbourhoods per image and level")
    swd_repeats: int = Field(4, gt=0, description="repeats of the random directions")
    swd_directions: int = Field(128, gt=0, description="random unit directions per repeat")


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """5x5 binomial filter per channel, borders mirrored (scipy's 'mirror' = torch's 'reflect')."""
    c = x.shape[1]
    k = (torch.outer(_BINOMIAL, _BINOMIAL) * gain).to(x.dtype).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    up = torch.zeros(b, c, 2 * h, 2 * w, dtype=x.dtype)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)  # 4x: three of four samples are the inserted zeros


def levels_of(resolution: int) -> list[int]:
    out = []
    while resolution >= COARSEST:
        out.append(resolution)
        if resolution % 2:
            break
        resolution //= 2
    return out


def laplacian_pyramid(x: torch.Tensor, n_levels: int) -> list[torch.Tensor]:
    """Band-pass levels, finest first; the last is the low-pass residual. Exactly invertible: upsampling and
    adding the levels back (`reconstruct`) gives x."""
    pyramid = [x]
    for _ in range(1, n_levels):
        low = pyr_down(pyramid[-1])
        pyramid[-1] = pyramid[-1] - pyr_up(low)
        pyramid.append(low)
    return pyramid


def reconstruct(pyramid: list[torch.Tensor]) -> torch.Tensor:
    x = pyramid[-1]
    for level in pyramid[-2::-1]:
        x = pyr_up(x) + level
    return x


def neighbourhoods(level: torch.Tensor, per_image: int, generator: torch.Generator, size: int = 7) -> torch.Tensor:
    """`per_image` size x size patches per image at uniform random positions, flattened: (B·per_image, C·size²)."""
    b, c, h, w = level.shape
    half = size // 2
    ys = torch.randint(half, h - half, (b, per_image), generator=generator)
    xs = torch.randint(half, w - half, (b, per_image), generator=generator)
    offsets = torch.arange(-half, half + 1)
    rows = (ys[..., None, None] + offsets[:, None])  # (b, p, size, 1)
    cols = (xs[..., None, None] + offsets[None, :])  # (b, p, 1, size)
    img = torch.arange(b)[:, None, None, None]
    patches = level.permute(0, 2, 3, 1)[img, rows, cols]  # (b, p, size, size, c)
    return patches.permute(0, 1, 4, 2, 3).reshape(b * per_image, c * size * size)


def raw_descriptors(images: Batches, max_images: int, per_image: int, seed: int) -> tuple[list[torch.Tensor], int, int]:
    """Per level, the descriptors of the first `max_images` images of the stream in image order (one pass over
    it), with the number of images used and their resolution."""
    gen = torch.Generator().manual_seed(seed)
    per_level: list[list[torch.Tensor]] = []
    seen, resolution = 0, 0
    for batch in images():
        batch = batch[:max_images - seen].to("cpu", torch.float64)
        if not len(batch):
            break
        if not per_level:
            # the short side sets the pyramid's depth: whole label-map frames (dataset.aspect) are wider than tall
            resolution = min(batch.shape[-2:])
            if min(batch.shape[-2:]) < COARSEST:
                raise MetricUnavailable(f"swd needs images of at least {COARSEST} px (have {tuple(batch.shape[-2:])})")
            per_level = [[] for _ in levels_of(resolution)]
        for i, level in enumerate(laplacian_pyramid((batch + 1.0) * 127.5, len(per_level))):
            per_level[i].append(neighbourhoods(level, per_image, gen).float())
        seen += len(batch)
        if seen >= max_images:
            break
    return [torch.cat(parts) for parts in per_level], seen, resolution


def normalised(d: torch.Tensor, size: int = 7) -> torch.Tensor:
    """Each colour channel of one side's descriptors to zero mean and unit standard deviation over all of them
    (numpy's population std, as the reference)."""
    per_channel = d.double().view(len(d), -1, size * size)
    mean = per_channel.mean(dim=(0, 2), keepdim=True)
    std = per_channel.std(dim=(0, 2), keepdim=True, unbiased=False)
    return ((per_channel - mean) / std).view(len(d), -1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, repeats: int, directions: int,
                       generator: torch.Generator) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between the projections of a and b
    (equal counts: sorted projections paired by rank)."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal descriptor counts, got {tuple(a.shape)} vs {tuple(b.shape)}")
    results = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=generator, dtype=torch.float64)
        dirs /= dirs.norm(dim=0, keepdim=True)
        pa = torch.sort(a.double() @ dirs, dim=0).values
        pb = torch.sort(b.double() @ dirs, dim=0).values
        results.append(float((pa - pb).abs().mean()))
    return sum(results) / len(results)


def compute(ctx: MetricContext) -> dict[str, float]:
    if ctx.fake_images is None or ctx.real_images is None:
        raise MetricUnavailable("swd needs generated and real image streams")
    get = lambda name: setting(ctx, SWD, name)  # noqa: E731
    per_image = get("swd_patches_per_image")
    fake, n_fake, resolution = raw_descriptors(ctx.fake_images, get("swd_images"), per_image,
                                               derive_seed(ctx.seed, "swd-fake"))
    real, n_real, _ = raw_descriptors(ctx.real_images, get("swd_images"), per_image, derive_seed(ctx.seed, "swd-real"))
    n = min(n_fake, n_real)  # equal counts: the first n images of each side
    gen = torch.Generator().manual_seed(derive_seed(ctx.seed, "swd-directions"))
    out = {}
    for res, a, b in zip(levels_of(resolution), real, fake):
        a, b = normalised(a[:n * per_image]), normalised(b[:n * per_image])
        out[f"swd/{res}px"] = 1e3 * sliced_wasserstein(a, b, get("swd_repeats"), get("swd_directions"), gen)
    out["swd"] = sum(out.values()) / len(out)
    out["swd/images"] = float(n)
    return out


SWD = Metric(
    "swd",
    keys=(Key("swd", False, "SWD×10³", table=True),),
    key_patterns=((r"swd/\d+px", False, False),),
    needs="real+fake", compute=compute, settings=Settings,
    description="sliced Wasserstein distance x10³ on Laplacian-pyramid 7x7 patches (ProGAN): per level and mean")

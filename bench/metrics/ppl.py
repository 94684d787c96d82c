"""Perceptual path length (Karras et al. 2019, StyleGAN §4.1): how smoothly images change along latent walks.

For pairs of latents (z₀, z₁) and t ~ U(0, 1), PPL is the mean of d(G(ℓ(t)), G(ℓ(t + ε))) / ε², where ℓ is
the interpolation path and d the LPIPS distance on VGG-16 features, ε = 1e-4 (the paper's values).
- `ppl_z`: ℓ is a spherical walk between z₀ and z₁ (the paper's slerp in Z). Directions are slerped on the
  unit sphere and the norm is interpolated linearly, so a generator that reads raw Gaussian z (DCGAN) stays
  on its latent shell; for the style families, whose first layer normalises z, this equals the paper's
  slerp of normalised latents.
- `ppl_w` (models with a mapping network, i.e. StyleGAN): ℓ is a straight line between w₀ = f(z₀) and
  w₁ = f(z₁), as the paper's lerp in W.
Both images of a pair share their noise maps: only the latent moves. Each pair i draws its z₀, z₁, t and
noise maps from its own generator, seeded by (evaluation seed, space, i), so the pairs and so the score do
not depend on the evaluation batch size they are scored in. Images larger than 256 px are
downsampled to 256 first, and the distances outside the 1st..99th percentile are dropped before the mean
(the official StyleGAN/StyleGAN2 evaluation and torch-fidelity's defaults), which removes the few
pathological jumps that would otherwise dominate a squared-ε average.

Why not torch-fidelity's `calculate_ppl`: it interpolates only in the generator's input space (no W walk
with shared noise) and fetches its own LPIPS-VGG16 file from the network; here LPIPS comes from the
`lpips` package with the VGG-16 backbone resolved, sha256-checked, through the weights manifest. Missing
weights make the metric unavailable with the manifest's reason; no number is invented.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.metrics import lpips as lpips_metric
from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable, derive_seed
from bench.runner.seeding import derive
from zoo.base import StyleSampler, task_of

PPL_EPSILON = 1e-4
PPL_MAX_SIDE = 256


def slerp_any(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the directions of a and b (B, D), with the norm interpolated linearly."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na, b / nb
    t = t.view(-1, 1)
    omega = torch.acos((ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    # Nearly parallel directions: the slerp weights tend to the lerp ones; avoid 0/0.
    safe = so.abs() > 1e-7
    wa = torch.where(safe, torch.sin((1 - t) * omega) / torch.where(safe, so, torch.ones_like(so)), 1 - t)
    wb = torch.where(safe, torch.sin(t * omega) / torch.where(safe, so, torch.ones_like(so)), t)
    direction = wa * ua + wb * ub
    direction = direction / direction.norm(dim=-1, keepdim=True)
    return direction * torch.lerp(na, nb, t)


def _shrink(x: torch.Tensor) -> torch.Tensor:
    if max(x.shape[-2:]) <= PPL_MAX_SIDE:
        return x
    return F.interpolate(x, size=(PPL_MAX_SIDE, PPL_MAX_SIDE), mode="area")


def pair_draws(model, seed: int, start: int, stop: int, styled: bool):
    """(z₀, z₁, t, noise maps) of pairs [start, stop): pair i draws all four, in that order, from a generator
    of its own seeded with derive(seed, 'pair', i), never from one shared by a batch."""
    z0, z1, t, noise = [], [], [], []
    for i in range(start, stop):
        g = torch.Generator().manual_seed(derive(seed, "pair", i))
        z0.append(model.sample_latent(1, g))
        z1.append(model.sample_latent(1, g))
        t.append(torch.rand(1, generator=g, dtype=torch.float64))
        noise.append(model.noise_maps(1, g) if styled else None)
    maps = None if noise[0] is None else [torch.cat(layer) for layer in zip(*noise)]
    return torch.cat(z0), torch.cat(z1), torch.cat(t), maps


def path_lengths(model, net, n: int, batch_size: int, space: str, seed: int, epsilon: float = PPL_EPSILON,
                 device: torch.device | None = None) -> np.ndarray:
    """n per-pair distances d(G(ℓ(t)), G(ℓ(t+ε))) / ε² (float64), every pair's draws seeded from `seed`
    and its index (batch-size independent)."""
    device = device or model.device
    styled = isinstance(model, StyleSampler)
    if space == "w" and not styled:
        raise MetricUnavailable("ppl_w needs a model with a mapping network (StyleGAN)")
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        z0, z1, t, noise = pair_draws(model, seed, i, i + b, styled)
        flat0, flat1 = z0.reshape(b, -1).double(), z1.reshape(b, -1).double()
        if space == "z":
            lat = [slerp_any(flat0, flat1, tt).float().view_as(z0) for tt in (t, t + epsilon)]
            if styled:
                images = [model.synthesize(model.mapping(z), noise) for z in lat]
            else:
                images = [model.generate(z) for z in lat]
        else:
            w0, w1 = model.mapping(z0).double(), model.mapping(z1).double()
            tt = [x.view(-1, 1).to(w0.device) for x in (t, t + epsilon)]
            images = [model.synthesize(torch.lerp(w0, w1, x).float(), noise) for x in tt]
        a, c = (_shrink(im.float()) for im in images)
        if not (torch.isfinite(a).all() and torch.isfinite(c).all()):
            raise MetricUnavailable(f"ppl_{space}: generated images contain NaN/inf")
        out.append(lpips_metric.distances(net, a, c, device, f"ppl_{space}") / (epsilon ** 2))
    return np.concatenate(out)


def filtered_mean(d: np.ndarray, low: float = 1.0, high: float = 99.0) -> float:
    """Mean of the distances within the [low, high] percentiles (inclusive), in float64."""
    lo, hi = np.percentile(d, low, method="lower"), np.percentile(d, high, method="higher")
    kept = d[(d >= lo) & (d <= hi)]
    return float(kept.mean(dtype=np.float64))


def compute(ctx: MetricContext) -> dict[str, float]:
    model = ctx.generator
    if model is None or task_of(model) != "unconditional":
        raise MetricUnavailable("ppl needs an unconditional generator (latent walks)")
    net = lpips_metric.lpips_network(ctx, "ppl", net="vgg")  # the paper's LPIPS uses VGG-16 features
    n = int(getattr(ctx.settings, "ppl_samples", 1000))
    bs = int(getattr(ctx.settings, "batch_size", 100))
    out = {}
    spaces = ["z", "w"] if isinstance(model, StyleSampler) else ["z"]
    for space in spaces:
        d = path_lengths(model, net, n, bs, space, derive_seed(ctx.seed, f"ppl-{space}"), device=ctx.device)
        out[f"ppl_{space}"] = filtered_mean(d)
    return out


PPL = Metric("ppl", keys=(Key("ppl_z", False), Key("ppl_w", False)), needs="generator", compute=compute,
             description="perceptual path length (LPIPS-VGG16 / eps^2 along latent walks): ppl_z (slerp in Z), "
                         "ppl_w (lerp in W, StyleGAN); lower = smoother latent space")

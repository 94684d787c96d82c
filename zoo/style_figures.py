"""StyleGAN's sampling figures (Karras et al. 2019, Figures 3, 4, 8 and the W-space interpolations), as tensors
and PNG artifacts.

- `truncation_sweep`: one row per latent, one column per ψ (w' = w_avg + ψ·(w − w_avg) on the first
  `cutoff` layers); ψ = 0 is the average face, negative ψ the "anti-face".
- `style_mixing_grid`: rows = coarse source, columns = fine source. The top row holds the column sources'
  own images, the left column the row sources'; cell (i, j) takes the styles of layers < `coarse_layers`
  from row i and the rest from column j (4 layers = the 4-8 px styles: pose, face shape; 8 = up to 32 px).
- `noise_resampling`: one w, several noise draws (stochastic variation) and the per-pixel standard
  deviation over the draws (Figure 4c).
- `latent_interpolation`: linear in W (smoother than Z: shorter perceptual paths, Karras et al. 2019 §4.1)
  or spherical in Z.

Every figure draws its noise from a generator seeded by `seed` and reuses the same maps across the
images it compares, so only the quantity on the figure's axis changes. `write_figures` writes all four.
Images are in [-1, 1]; `save_figure` maps them to [0, 1] for torchvision's `save_image`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import torch
from torchvision.utils import save_image

from bench.io import atomic_write_bytes
from zoo.base import StyleSampler

PSIS = (1.0, 0.7, 0.5, 0.0, -0.5, -1.0)


def save_figure(images: torch.Tensor, path: str | Path, nrow: int) -> Path:
    """A PNG grid (nrow images per row) of images in [-1, 1], written atomically."""
    buf = io.BytesIO()
    save_image(images.detach().float().cpu().add(1).div(2).clamp(0, 1), buf, format="png", nrow=nrow, padding=2,
               pad_value=1.0)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _shared_noise(model, seed: int, n: int = 1):
    """One set of noise maps (batch 1, broadcast over the figure) from a seeded generator."""
    return model.noise_maps(n, torch.Generator().manual_seed(seed))


def _expand(noise, n: int):
    return None if noise is None else [m.expand(n, -1, -1, -1) for m in noise]


def truncation_sweep(model, z: torch.Tensor, psis: Sequence[float] = PSIS, cutoff: int | None = None,
                     seed: int = 0, path: str | Path | None = None) -> torch.Tensor:
    """(len(z)·len(psis), C, R, R): row i = latent i at each ψ (cutoff None = the model's truncation_cutoff)."""
    cutoff = model.cfg.truncation_cutoff if cutoff is None else cutoff
    w = model.mapping(z)
    noise = _shared_noise(model, seed)
    rows = []
    for i in range(len(w)):  # one ψ per image of the row, the same noise for all of them
        rows += [model.synthesize(w[i:i + 1], noise, psi=p, cutoff=cutoff) for p in psis]
    out = torch.cat(rows)
    if path is not None:
        save_figure(out, path, nrow=len(psis))
    return out


def mix_styles(model, w_coarse: torch.Tensor, w_fine: torch.Tensor, coarse_layers: int) -> torch.Tensor:
    """Per-layer styles (B, num_layers, w_dim): layers < coarse_layers from w_coarse, the rest from w_fine."""
    G = model.sampling_net("G")
    return G.mix(G.broadcast(w_coarse.to(model.device)), G.broadcast(w_fine.to(model.device)), coarse_layers)


def style_mixing_grid(model, z_coarse: torch.Tensor, z_fine: torch.Tensor, coarse_layers: int = 4,
                      psi: float = 1.0, seed: int = 0, path: str | Path | None = None) -> torch.Tensor:
    """((R + 1)·(C + 1), ch, res, res), row-major: a blank corner, the fine sources along the top, the coarse
    sources down the left, and cell (i, j) = coarse styles of row source i + fine styles of column source j."""
    w_c, w_f = model.mapping(z_coarse), model.mapping(z_fine)
    noise = _shared_noise(model, seed)
    cutoff = model.cfg.truncation_cutoff

    def draw(ws):
        return model.synthesize(ws, _expand(noise, len(ws)), psi=psi, cutoff=cutoff)

    top, left = draw(w_f), draw(w_c)
    blank = torch.ones_like(top[:1])
    rows = [torch.cat([blank, top])]
    for i in range(len(w_c)):
        cells = draw(mix_styles(model, w_c[i:i + 1].expand(len(w_f), -1), w_f, coarse_layers))
        rows.append(torch.cat([left[i:i + 1], cells]))
    out = torch.cat(rows)
    if path is not None:
        save_figure(out, path, nrow=len(w_f) + 1)
    return out


def noise_resampling(model, z: torch.Tensor, n: int = 8, psi: float = 1.0, seed: int = 0,
                     path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """One latent (z of shape (1, latent_dim) or (latent_dim,)) under `n` noise draws: {"images": (n, C, R, R),
    "std": (1, C, R, R) the per-pixel std over the draws, averaged over channels and scaled to [-1, 1]}."""
    z = z.reshape(1, -1)
    w = model.mapping(z).expand(n, -1)
    noise = model.noise_maps(n, torch.Generator().manual_seed(seed))
    images = model.synthesize(w, noise, psi=psi, cutoff=model.cfg.truncation_cutoff)
    std = images.std(dim=0, unbiased=False).mean(dim=0, keepdim=True)
    std = (std / std.max().clamp_min(1e-12)) * 2 - 1
    std = std.expand(images.shape[1], -1, -1).unsqueeze(0)
    if path is not None:
        save_figure(torch.cat([images, std]), path, nrow=n + 1)
    return {"images": images, "std": std}


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of (normalised) Gaussian latents, as the PPL paper does in Z."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    if float(so.abs().min()) < 1e-6:
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def latent_interpolation(model, z0: torch.Tensor, z1: torch.Tensor, steps: int = 8, space: str = "w",
                         seed: int = 0, path: str | Path | None = None) -> torch.Tensor:
    """(steps, C, R, R) from z0 to z1: linear in W (`space="w"`, StyleGAN) or spherical in Z (`space="z"`; the
    only choice for a model without a mapping network, which is sampled with `generate`)."""
    if space not in ("w", "z"):
        raise ValueError(f"space must be 'w' or 'z', got {space!r}")
    t = torch.linspace(0, 1, steps).view(-1, 1)
    z0, z1 = z0.reshape(1, -1).float().cpu(), z1.reshape(1, -1).float().cpu()
    if not isinstance(model, StyleSampler):
        if space == "w":
            raise ValueError(f"{model.family} has no W space: use space='z'")
        out = model.generate(slerp(z0, z1, t))
    else:
        noise = _expand(_shared_noise(model, seed), steps)
        if space == "w":
            w0, w1 = model.mapping(z0).cpu(), model.mapping(z1).cpu()
            ws = torch.lerp(w0, w1, t)
        else:
            ws = model.mapping(slerp(z0, z1, t)).cpu()
        out = model.synthesize(ws, noise, psi=1.0)
    if path is not None:
        save_figure(out, path, nrow=steps)
    return out


def write_figures(model, out_dir: str | Path, seed: int = 0, n: int = 4,
                  psis: Sequence[float] = PSIS) -> dict[str, Path]:
    """All four figures as PNGs in out_dir (latents from `seed`): the artifacts to attach to a run."""
    out_dir = Path(out_dir)
    z = model.sample_latent(3 * n + 2, torch.Generator().manual_seed(seed))
    paths = {name: out_dir / f"{name}.png" for name in ("truncation", "style_mixing", "noise", "interpolation")}
    truncation_sweep(model, z[:n], psis, seed=seed, path=paths["truncation"])
    style_mixing_grid(model, z[n:2 * n], z[2 * n:3 * n], seed=seed, path=paths["style_mixing"])
    noise_resampling(model, z[3 * n], seed=seed, path=paths["noise"])
    latent_interpolation(model, z[3 * n], z[3 * n + 1], seed=seed, path=paths["interpolation"])
    return paths

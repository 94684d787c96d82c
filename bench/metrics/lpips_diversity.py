"""Diversity of generated images: the mean LPIPS distance between random pairs of them.

Near 0 means the generator keeps producing the same image (mode collapse); higher is more diverse.
Uses the same network, weights resolution and refusals as the `lpips` metric (see lpips.py):
missing backbone weights raise `MetricUnavailable`.

Sampling, all seeded from the evaluation seed:
- `settings.diversity_pairs` pairs (default 100) are drawn with a torch.Generator seeded by
  `derive_seed(seed, "lpips_diversity")`, each as two distinct indices, uniformly, with replacement
  across pairs;
- the pool they are drawn from is the first 2·pairs generated images of the seed's stream (or all of
  them if fewer). Generated images are already i.i.d. draws, so the first ones are as good as any,
  and 2·pairs gives each image about one pair on average while holding only that many images in
  memory instead of all N (the harness streams).

Keys: `lpips_diversity` (mean), `lpips_diversity/std` (across pairs), `lpips_diversity/pairs`.
Grayscale images are replicated to 3 channels.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable, derive_seed
from bench.metrics.lpips import distances, lpips_network


def collect(batches: Iterable[torch.Tensor], limit: int) -> torch.Tensor:
    """The first `limit` images of a stream, on the CPU; stops pulling batches once it has them."""
    kept, n = [], 0
    for batch in batches:
        take = batch[: limit - n].detach().cpu()
        kept.append(take)
        n += len(take)
        if n >= limit:
            break
    if not kept:
        return torch.empty(0)
    return torch.cat(kept)


def draw_pairs(n: int, pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`pairs` index pairs (i, j), i != j, uniform over the n·(n−1) ordered pairs."""
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (pairs,), generator=g)
    j = torch.randint(0, n - 1, (pairs,), generator=g)
    j = j + (j >= i).long()  # skip over i: uniform over the other n − 1 indices
    return i, j


def compute(ctx: MetricContext) -> dict[str, float]:
    if ctx.fake_images is None:
        raise MetricUnavailable("lpips_diversity needs a generative model's images (no fake image stream here)")
    pairs = int(getattr(ctx.settings, "diversity_pairs", 100))
    if pairs < 1:
        raise MetricUnavailable("lpips_diversity: diversity_pairs must be at least 1")
    # Resolve the weights before generating anything: a missing file should cost no sampling.
    model = lpips_network(ctx, "lpips_diversity")
    images = collect(ctx.fake_images(), 2 * pairs)
    if len(images) < 2:
        raise MetricUnavailable(f"lpips_diversity needs at least 2 generated images; got {len(images)}")
    i, j = draw_pairs(len(images), pairs, derive_seed(ctx.seed, "lpips_diversity"))
    batch = int(getattr(ctx.settings, "batch_size", 100))
    d = np.concatenate([distances(model, images[i[s:s + batch]], images[j[s:s + batch]], ctx.device,
                                  "lpips_diversity") for s in range(0, pairs, batch)])
    return {"lpips_diversity": float(d.mean()), "lpips_diversity/std": float(d.std()),
            "lpips_diversity/pairs": float(pairs)}


LPIPS_DIVERSITY = Metric("lpips_diversity", keys=(Key("lpips_diversity", True),), needs="fake", compute=compute,
                         description="mean LPIPS between seeded random pairs of generated images; ~0 = mode collapse")

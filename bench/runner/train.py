"""One training loop for every zoo family: batches in, `train_step`, logging, grids, checkpoints.

Real batches are drawn with replacement from the training part by a seeded generator (iterations,
not epochs, are the unit, as in the seed case study), so the data-sampler position is just that
generator's state, which the checkpoint stores.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torchvision.utils import save_image
from tqdm import tqdm

from bench.data.transforms import fit_float, to_float
from bench.io import atomic_write_bytes
from bench.protocol.schema import TrainSpec
from bench.runner import checkpoint
from bench.runner.seeding import derive

logger = logging.getLogger("bench")


class EntryFailed(Exception):
    """Training or sampling of one entry went numerically wrong; the protocol goes on without it."""


@dataclass
class TrainOutcome:
    steps: int
    resumed_from: int
    checkpoint: Path
    checkpoint_sha256: str
    grid: Path


GRID = 64  # images in the fixed-noise grid (8 x 8)


def save_grid(model, z: torch.Tensor, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        imgs = model.generate(z).float().cpu()
    buf = io.BytesIO()
    save_image(imgs.add(1).div(2).clamp(0, 1), buf, format="png", nrow=int(math.sqrt(len(z))))
    atomic_write_bytes(path, buf.getvalue())
    return path


def train_entry(model, train_images: torch.Tensor, spec: TrainSpec, run_dir: Path, seed: int,
                fingerprint: str, entry: str, log: Callable[[dict[str, float], int], None],
                resume: bool = False, fit: str = "resize") -> TrainOutcome:
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = run_dir / "latest.pt"
    data_rng = torch.Generator().manual_seed(derive(seed, "data"))
    model.noise_rng.manual_seed(derive(seed, "noise"))
    generators = {"data": data_rng, "noise": model.noise_rng}
    fixed_z = model.sample_latent(GRID, torch.Generator().manual_seed(derive(seed, "fixed-noise")))
    torch.manual_seed(derive(seed, "global"))

    start = 0
    if resume and latest.is_file():
        payload = checkpoint.read(latest)
        if payload["fingerprint"] == fingerprint and payload["entry"] == entry:
            checkpoint.load_into(payload, model, latest)
            start = checkpoint.restore_training_state(payload, generators)
        else:
            logger.warning("%s: %s belongs to another protocol fingerprint; training from scratch", entry, latest)
    sha = ""
    n = len(train_images)
    with tqdm(total=spec.steps, initial=start, desc=f"train {entry}", unit="step", leave=False, disable=None,
              dynamic_ncols=True) as bar:
        for step in range(start, spec.steps):
            idx = torch.randint(0, n, (spec.batch_size,), generator=data_rng)
            real = fit_float(to_float(train_images[idx]), model.resolution, fit).to(model.device)
            losses = model.train_step(real, step)
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            if bad:
                raise EntryFailed(f"non-finite loss {bad[0]}={losses[bad[0]]} at step {step + 1}")
            done = step + 1
            bar.update(1)
            if done % spec.log_every == 0 or done == spec.steps:
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
                log(losses, done)
            if spec.sample_every and done % spec.sample_every == 0:
                save_grid(model, fixed_z, run_dir / "samples" / f"step-{done:07d}.png")
            if done % spec.checkpoint_every == 0 or done == spec.steps:
                sha = checkpoint.save(latest, model, done, generators, fingerprint, entry)
    if not latest.is_file() or not sha:
        # Nothing trained in this call (steps 0, or already finished): still leave a complete checkpoint.
        sha = checkpoint.save(latest, model, max(start, spec.steps), generators, fingerprint, entry)
    grid = save_grid(model, fixed_z, run_dir / "samples.png")
    return TrainOutcome(spec.steps, start, latest, sha, grid)

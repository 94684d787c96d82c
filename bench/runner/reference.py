"""The real-data row (`evaluation.reference`, on by default): what a perfect model scores, found by scoring
real images through the same evaluation every entry goes through.

A table is framed by two rows that no training produced: the untrained entries (what nothing scores) and
this one. It costs no training, only one more evaluation, and it is logged like an entry: its own MLflow
child run (tagged BASELINE, bench/tracking/layout.py) and results.jsonl row (`info.baseline`).

- Unconditional data: `real_data`, a stand-in generator whose samples are *training* images. Its
  "latent" for an evaluation seed is a list of training-image indices: a random permutation of the
  training part drawn from the seed (drawn up front, as latents are, so the images depend neither on the
  evaluation batch size nor on the data-parallel shard), cut to n_samples. That is n images without
  replacement; when n_samples exceeds the training part, further permutations follow, so every image is
  drawn ⌊n/N⌋ or ⌈n/N⌉ times. The held-out reference is never drawn from: a row made of reference images
  would score the reference against itself (FID near 0) and say nothing about a generator's floor.
  Real images have no latent space and no discriminator, so the metrics that need a generator (ppl,
  fid_truncation) or class logits (classifier_accuracy) are reported unavailable with that reason.
- Translation data: `identity`, the identity map, each input returned as its own output (what a model
  that does nothing scores on SSIM/PSNR/LPIPS/FID; for CycleGAN also G = F = identity, so its cycle and
  identity errors are 0 by construction). For super-resolution the input is the low-resolution image
  upsampled bicubically, so the identity row is the bicubic baseline. Label-map inputs (cityscapes: one
  one-hot plane per class) are not an image of the output's kind: there is no identity row, and the run
  says so. Colouring the map would score a palette, not a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from bench.data.transforms import to_float
from bench.protocol.schema import REFERENCE_ROW_NAMES
from zoo.base import CycleTranslator

REAL_DATA, IDENTITY = REFERENCE_ROW_NAMES  # entry names a protocol may not use while evaluation.reference is on

DESCRIPTIONS = {
    REAL_DATA: "real training images drawn as samples (what a perfect generator scores)",
    IDENTITY: "the identity map, each input returned as its output (what doing nothing scores)",
}

GRID_CAPTIONS = {  # its samples.png, as bench report captions it
    REAL_DATA: "8×8 grid of training images drawn as the real-data row draws its samples",
    IDENTITY: "each row: input | output (the input itself) | target, from fixed inputs (unpaired data: a | a | a)",
}


class NoReferenceRow(Exception):
    """This data has no meaningful real-data row (the reason is the message)."""


class RealDataSamples:
    """Training images behind the generator interface the evaluation reads (`sample_latent`, `generate`)."""

    task = "unconditional"

    def __init__(self, train_images: torch.Tensor, device: torch.device | str = "cpu"):
        if len(train_images) == 0:
            raise NoReferenceRow("the training part is empty")
        self.images = train_images  # uint8 (N, C, H, W): the training part, never the held-out reference
        self.device = torch.device(device)

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of the n training images that are this draw's samples: permutations of the training part
        from `generator`, concatenated and cut to n (without replacement while n <= N)."""
        size = len(self.images)
        return torch.cat([torch.randperm(size, generator=generator) for _ in range(-(-n // size))])[:n]

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return to_float(self.images[z.long().cpu()]).to(self.device)


class IdentityMap(CycleTranslator):
    """The identity map behind the translation interface (`translate`, `translate_back`)."""

    def __init__(self, task: str, device: torch.device | str = "cpu"):
        self.task = task  # "paired" or "unpaired", as the data's
        self.device = torch.device(device)

    def translate(self, x: torch.Tensor, sample_seeds=None) -> torch.Tensor:
        return x

    def translate_back(self, x: torch.Tensor, sample_seeds=None) -> torch.Tensor:
        return x


@dataclass(frozen=True)
class ReferenceRow:
    name: str  # the row's entry name in results.jsonl and MLflow (and its `baseline` flag)
    source: Union[RealDataSamples, IdentityMap]  # what the evaluation scores in place of a model

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.name]

    def unavailable(self, metrics: list[str]) -> dict[str, str]:
        """Metrics this row cannot have, with the reason: those that need a generator's latent space or a
        discriminator's class logits (the metric's declared `needs`)."""
        from bench.metrics import METRICS

        what = {"generator": "a latent space (there is no generator to walk or truncate)",
                "style": "a mapping network (there is no generator to truncate)",
                "labels": "class logits (there is no discriminator to classify with)"}
        return {name: f"{name} needs {what[METRICS.get(name).needs]}; the {self.name} row is {self.description}"
                for name in metrics if METRICS.get(name).needs in what}


def reference_row(data, device: torch.device | str = "cpu") -> ReferenceRow:
    """The row for this data: real training images for unconditional data, the identity map for translation.
    Raises NoReferenceRow when the data's inputs cannot stand in for outputs (label maps)."""
    if data.task == "unconditional":
        return ReferenceRow(REAL_DATA, RealDataSamples(data.train_images, device))
    in_ch, out_ch = data.eval_inputs.shape[1], data.eval_images.shape[1]
    if in_ch != out_ch:
        raise NoReferenceRow(f"the {in_ch}-channel inputs of '{data.spec.name}' (label maps) cannot be shown as "
                             f"{out_ch}-channel outputs, so there is no identity map to score")
    return ReferenceRow(IDENTITY, IdentityMap(data.task, device))

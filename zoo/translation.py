"""What the image-to-image families (pix2pix, CycleGAN, pix2pixHD) share on top of the family contract.

They translate images instead of sampling latents: `latent_dim` is 0, `generate` refuses, and
`translate(x)` (and, unpaired, `translate_back(b)`) maps images in [-1, 1] to images in [-1, 1]. Both take
`sample_seeds`, one integer per row of the batch: a family with test-time noise (pix2pix's dropout) draws
row i's noise from a generator seeded with sample_seeds[i] and from nothing else, so an evaluation output
does not depend on the batch it is translated in; families without test-time noise accept and ignore
them. Without seeds the noise comes from the global RNG (training-time sample grids). For
`task = "paired"`, `draw()` returns (x, y): input and target with the same augmentation applied; for
`task = "unpaired"` it returns (a, b), one batch from each domain. State beyond modules and optimisers
(image pools) is exposed through `extra_state()` / `load_extra_state()` for the checkpoint.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from zoo.base import GANModel, Translator, frame_of, trace_shapes


class Inspection(dict):
    """`inspect()`'s result: network name -> layer rows (as every family returns), plus the receptive field
    of each discriminator in input pixels as `.receptive_field` (kept off the dict so code iterating over
    network names keeps working)."""

    def __init__(self, rows: dict, receptive_field: dict[str, Any]):
        super().__init__(rows)
        self.receptive_field = receptive_field


def meta_copy(module: nn.Module) -> nn.Module:
    """A shape-only copy for tracing layer shapes of large networks: parameters and buffers are replaced by
    meta tensors during the copy, so no weight is duplicated and no forward computes anything."""
    memo: dict[int, Any] = {id(p): nn.Parameter(p.detach().to("meta"), p.requires_grad) for p in module.parameters()}
    memo.update({id(b): b.detach().to("meta") for b in module.buffers()})
    return copy.deepcopy(module, memo)


class TranslationGAN(GANModel, Translator):
    task = "paired"
    default_channels = 3

    latent_dim = property(lambda self: 0)
    resolution = property(lambda self: self.cfg.resolution)

    def generate(self, z):
        raise NotImplementedError(f"{self.family} translates images: use translate(x)")

    @torch.no_grad()
    def translate(self, x: torch.Tensor, sample_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """G(x) in [-1, 1] from the sampling network (the EMA when on), in eval mode: instance norm and
        no dropout, as the families without test-time noise are scored (so `sample_seeds` is unused)."""
        G = self.sampling_net("G")
        G.eval()
        return G(x.to(self.device)).float()

    # -- description ------------------------------------------------------------------------
    def receptive_fields(self) -> dict[str, Any]:
        """Each discriminator's receptive field in input pixels."""
        return {}

    def card(self) -> dict[str, Any]:
        return {**super().card(), "receptive_field": self.receptive_fields()}

    def conditional_inspection(self, in_channels: int) -> Inspection:
        """Shapes of G on an `in_channels` input and of a conditional D (if any) on (input, output) pairs."""
        (h, w), c = frame_of(self), self.data.channels  # a FrameTranslator on whole frames: h x (aspect·h)
        rows = {"G": self._trace(self.G, (1, in_channels, h, w))}
        if getattr(self, "D", None) is not None:
            rows["D"] = self._trace(self.D, (1, in_channels + c, h, w))
        return Inspection(rows, self.receptive_fields())

    def _trace(self, net: nn.Module, *shapes: tuple[int, ...]) -> list:
        """Layer shapes traced on the meta device: instant even for 180M-parameter generators at 1024 px."""
        return trace_shapes(meta_copy(net), *(torch.zeros(s, device="meta") for s in shapes))

"""The metric contract: a named object that turns one evaluation's inputs into scores.

A metric declares what it `needs`:
- "fake": features of generated images (IS);
- "real+fake": features of both sides (FID, KID, precision/recall);
- "paired": (output, target) image pairs of a translation model (SSIM, PSNR, LPIPS);
- "cycle": the two generators of an unpaired model applied to held-out images (cycle/identity error);
- "labels": class logits of a classifier-style discriminator on held-out labelled images;
- "generator": the unconditional model itself, for latent-space metrics (PPL);
- "style": a style-based generator with a mapping network and truncation (the truncation curve).
What a model provides follows from the capabilities its family declares (`inputs_of`), so preflight can
refuse a metric that no entry of a protocol can feed before anything trains.
The context carries whatever the evaluation could provide; a metric whose inputs or pretrained
weights are missing raises `MetricUnavailable` with the reason, and the run reports it as such
instead of a number.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Optional

import numpy as np
import torch

Needs = Literal["fake", "real+fake", "paired", "cycle", "labels", "generator", "style"]

# What each kind of input is, for one-line refusals ("'ssim' needs <this>").
NEEDS_TEXT = {
    "fake": "generated images",
    "real+fake": "generated and real images",
    "paired": "(output, target) pairs of a paired image-to-image model",
    "cycle": "an unpaired translator with its inverse map (CycleGAN)",
    "labels": "class logits from a classifier-style discriminator (sgan) on labelled held-out images",
    "generator": "an unconditional generator's latent space",
    "style": "a style-based generator with a mapping network and truncation (StyleGAN)",
}


def inputs_of(model: Any, data: Any = None) -> frozenset[str]:
    """The metric inputs an evaluation of `model` (a built model or a family class) can provide, from the
    capabilities its family declares (zoo/base.py), and from the data where the input comes from it
    (held-out labels; without data they are assumed present)."""
    from zoo.base import Classifier, CycleTranslator, StyleSampler, Translator

    cls = model if isinstance(model, type) else type(model)
    task = model.task if issubclass(cls, Translator) else "unconditional"
    out = {"fake", "real+fake"}
    if task == "unconditional":
        out.add("generator")
    if issubclass(cls, StyleSampler):
        out.add("style")
    if task == "paired":
        out.add("paired")
    if issubclass(cls, CycleTranslator):
        out.add("cycle")
    if issubclass(cls, Classifier) and (data is None or getattr(data, "eval_labels", None) is not None):
        out.add("labels")
    return frozenset(out)


def check_applicable(metrics: list[str], provided: dict[str, frozenset[str]], registry: Any, where: str = "") -> None:
    """Refuse, before anything trains, a metric that no entry can feed (`ssim` in a protocol of DCGANs). A
    metric that fits some entries only (classifier_accuracy beside sgan) is reported unavailable for the rest."""
    from bench.errors import BenchError

    for name in metrics:
        needs = registry.get(name).needs
        if provided and not any(needs in given for given in provided.values()):
            raise BenchError(f"{where + ': ' if where else ''}evaluation.metrics: '{name}' needs {NEEDS_TEXT[needs]}, which no entry provides "
                             f"({', '.join(provided)}); remove it from the protocol")

# Image batches are float tensors in [-1, 1], shape (B, C, H, W), streamed one batch at a time.
Batches = Callable[[], Iterator[torch.Tensor]]
PairBatches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


class MetricUnavailable(Exception):
    """The metric cannot be computed here (missing pretrained weights, wrong kind of model)."""


@dataclass
class MetricContext:
    seed: int  # the evaluation seed; subset draws and pairings derive their own seeds from it
    settings: Any  # the protocol's EvaluationSpec (or any object with the same attributes)
    fake: dict[str, torch.Tensor] = field(default_factory=dict)  # 'pool' (N, d), 'logits' (N, K)
    real: dict[str, torch.Tensor] = field(default_factory=dict)
    fake_stats: dict[str, np.ndarray] = field(default_factory=dict)  # float64 'mu' and 'sigma'
    real_stats: dict[str, np.ndarray] = field(default_factory=dict)
    # Streams for image-space metrics; each call starts a fresh pass.
    fake_images: Optional[Batches] = None  # generated images of this seed (diversity metrics, SWD)
    real_images: Optional[Batches] = None  # the held-out real images (SWD), float [-1, 1] at the protocol's resolution
    pairs: Optional[PairBatches] = None  # (output, target) for paired translation
    cycle: Optional[Callable[[], Iterator[dict[str, torch.Tensor]]]] = None
    # ^ dicts with 'a', 'b' (real held-out batches) and 'G(a)', 'F(b)', 'F(G(a))', 'G(F(b))', 'G(b)', 'F(a)'
    classify: Optional[Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]] = None
    # ^ (class logits, labels) on held-out labelled images, for classifier-style discriminators
    device: torch.device = torch.device("cpu")
    generator: Any = None  # the unconditional model (sample_latent/generate, StyleGAN: mapping/synthesize)
    # (pool features (N, d), float64 FID stats 'mu', 'sigma') of this seed's n samples drawn with truncation ψ
    # (models with w_avg); the features let each ψ's FID be the headline's formula (bench/metrics/fid.py)
    truncated: Optional[Callable[[float], tuple[torch.Tensor, dict[str, np.ndarray]]]] = None
    # Super-resolution with label maps (bench/data/superres.py): the judge semantic network S (images in
    # [-1, 1] -> class logits; never the S a model trains against) and the true class-id maps (N, H, W) of the
    # held-out targets, in `pairs` order.
    segmenter: Optional[torch.nn.Module] = None
    label_maps: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class Key:
    """One number a metric reports: its result key, which direction is better, the column label tables
    and reports give it, and whether the compact comparison table (bench/reporting/table.py) shows it."""

    name: str
    higher_is_better: bool
    label: str = ""  # "" = the key itself
    table: bool = False
    # True: the number is computed in the extractor's feature space (IS, FID, KID, precision/recall), so it
    # means what published numbers mean only with Inception; tables then name the feature space.
    features: bool = False

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Metric:
    """A metric declares everything the rest of ganbench needs to know about it here, once: what it reports
    (`keys`: direction, label), what it needs, and how to compute it. Directions, labels and table columns
    are derived from the registry (bench/metrics/__init__.py), never restated elsewhere."""

    name: str
    keys: tuple[Key, ...]
    needs: Needs
    compute: Callable[[MetricContext], dict[str, float]]
    description: str
    # keys whose names follow a pattern (one per protocol setting, e.g. fid_trunc/psi_<ψ>):
    # (regex, higher is better, in the extractor's feature space)
    key_patterns: tuple[tuple[str, bool, bool], ...] = ()
    # Protocol settings of this metric: a pydantic model whose fields (with defaults) are flat `evaluation.<key>`
    # keys of the YAML. Read them with `setting(ctx, metric, name)`. (The metrics that predate this declare
    # theirs in EvaluationSpec, which keeps their fingerprints.)
    settings: Optional[type] = None


def setting(ctx: "MetricContext", metric: "Metric", name: str) -> Any:
    """A declared setting's value for this evaluation: the protocol's, else the metric's default."""
    given = getattr(ctx.settings, "metric_settings", None) or {}
    if name in given:
        return given[name]
    return metric.settings.model_fields[name].default


def derive_seed(seed: int, purpose: str) -> int:
    """An independent, reproducible seed for one purpose (KID subsets, IS split shuffle, ...)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:4], "little")

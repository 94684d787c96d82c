"""Every metric by name. Adding one = its file, its test, and one line here."""

import re
from collections.abc import Iterator, Mapping, Sequence

from bench.metrics.base import Key, Metric, MetricContext
from bench.metrics.classifier_accuracy import CLASSIFIER_ACCURACY
from bench.metrics.cycle_error import CYCLE_ERROR, IDENTITY_ERROR
from bench.metrics.density_coverage import DENSITY_COVERAGE
from bench.metrics.fid import FID
from bench.metrics.fid_truncation import FID_TRUNCATION
from bench.metrics.inception_score import INCEPTION_SCORE
from bench.metrics.kid import KID
from bench.metrics.lpips import LPIPS
from bench.metrics.lpips_diversity import LPIPS_DIVERSITY
from bench.metrics.ppl import PPL
from bench.metrics.precision_recall import PRECISION_RECALL
from bench.metrics.psnr import PSNR
from bench.metrics.seg_agreement import SEG_AGREEMENT
from bench.metrics.ssim import SSIM
from bench.metrics.swd import SWD
from bench.registry import Registry

# Registry order is the order of the comparison table's columns (the keys declared `table=True`).
METRICS: Registry[Metric] = Registry("metric", {m.name: m for m in (
    INCEPTION_SCORE, FID, KID, CLASSIFIER_ACCURACY, PRECISION_RECALL, DENSITY_COVERAGE,
    SSIM, PSNR, LPIPS, CYCLE_ERROR, IDENTITY_ERROR, LPIPS_DIVERSITY,
    PPL, FID_TRUNCATION, SEG_AGREEMENT, SWD,
)})

def _declared() -> tuple[dict[str, Key], list[tuple[re.Pattern, bool, bool]]]:
    """Every declared key and key pattern of the registry as it is now, so a metric registered after
    import (a plugin, a test) is sorted, labelled and shown like the built-in ones."""
    keys = {k.name: k for m in METRICS.values() for k in m.keys}
    patterns = [(re.compile(rx), up, feats) for m in METRICS.values() for rx, up, feats in m.key_patterns]
    return keys, patterns


class _Directions(Mapping):
    """Key -> higher is better, from what each metric declares; keys following a declared pattern (the
    truncation curve's fid_trunc/psi_<ψ>, one per protocol ψ) are looked up by it."""

    def __getitem__(self, key: str) -> bool:
        keys, patterns = _declared()
        if key in keys:
            return keys[key].higher_is_better
        for rx, up, _ in patterns:
            if rx.fullmatch(str(key)):
                return up
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_declared()[0])

    def __len__(self) -> int:
        return len(_declared()[0])


class _Labels(Mapping):
    """Key -> column label (a key without a declared label is shown as itself)."""

    def __getitem__(self, key: str) -> str:
        return _declared()[0][key].title

    def __iter__(self) -> Iterator[str]:
        return iter(_declared()[0])

    def __len__(self) -> int:
        return len(_declared()[0])


class _TableKeys(Sequence):
    """The comparison table's columns: keys declared `table=True`, in registry order."""

    def _now(self) -> tuple[str, ...]:
        return tuple(name for name, k in _declared()[0].items() if k.table)

    def __getitem__(self, i):
        return self._now()[i]

    def __len__(self) -> int:
        return len(self._now())


# Which direction is better for each reported key (for sorting and regression checks).
KEY_DIRECTION = _Directions()
LABELS = _Labels()
TABLE_KEYS = _TableKeys()

# The feature space published IS/FID/KID numbers are computed in (torch-fidelity's port of the TF Inception).
INCEPTION = "inception-v3-compat"


def in_feature_space(key: str) -> bool:
    """Whether `key` is computed from the extractor's features (and so depends on which extractor)."""
    keys, patterns = _declared()
    if key in keys:
        return keys[key].features
    return any(feats for rx, _, feats in patterns if rx.fullmatch(str(key)))


def label(key: str, extractor: str = "") -> str:
    """A key's column label. A feature-space score from any extractor but Inception names it, e.g.
    "FID (judge:cifar10)": such numbers are not comparable with published (Inception) ones."""
    text = LABELS.get(key, key)
    if extractor and extractor != INCEPTION and in_feature_space(key):
        return f"{text} ({extractor})"
    return text


__all__ = ["METRICS", "Metric", "MetricContext", "KEY_DIRECTION", "LABELS", "TABLE_KEYS", "INCEPTION", "label"]

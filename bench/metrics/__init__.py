"""Every metric by name. Adding one = its file, its test, and one line here."""

import re

from bench.metrics.base import Metric, MetricContext
from bench.metrics.classifier_accuracy import CLASSIFIER_ACCURACY
from bench.metrics.cycle_error import CYCLE_ERROR, IDENTITY_ERROR
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
from bench.registry import Registry

# Registry order is the order of the comparison table's columns (the keys declared `table=True`).
METRICS: Registry[Metric] = Registry("metric", {m.name: m for m in (
    INCEPTION_SCORE, FID, KID, CLASSIFIER_ACCURACY, PRECISION_RECALL,
    SSIM, PSNR, LPIPS, CYCLE_ERROR, IDENTITY_ERROR, LPIPS_DIVERSITY,
    PPL, FID_TRUNCATION, SEG_AGREEMENT,
)})

_KEYS = {k.name: k for m in METRICS.values() for k in m.keys}
_PATTERNS = [(re.compile(rx), up, feats) for m in METRICS.values() for rx, up, feats in m.key_patterns]


class _Directions(dict):
    """Key -> higher is better, from what each metric declares; keys following a declared pattern (the
    truncation curve's fid_trunc/psi_<ψ>, one per protocol ψ) are looked up by it."""

    def __missing__(self, key: str) -> bool:
        for rx, up, _ in _PATTERNS:
            if rx.fullmatch(str(key)):
                return up
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or any(rx.fullmatch(str(key)) for rx, _, _ in _PATTERNS)


# Which direction is better for each reported key (for sorting and regression checks).
KEY_DIRECTION = _Directions({name: k.higher_is_better for name, k in _KEYS.items()})
# Column labels of tables and reports (a key without a declared label is shown as itself).
LABELS = {name: k.title for name, k in _KEYS.items()}
# The comparison table's columns, in registry order.
TABLE_KEYS = tuple(name for name, k in _KEYS.items() if k.table)

# The feature space published IS/FID/KID numbers are computed in (torch-fidelity's port of the TF Inception).
INCEPTION = "inception-v3-compat"


def in_feature_space(key: str) -> bool:
    """Whether `key` is computed from the extractor's features (and so depends on which extractor)."""
    if key in _KEYS:
        return _KEYS[key].features
    return any(feats for rx, _, feats in _PATTERNS if rx.fullmatch(str(key)))


def label(key: str, extractor: str = "") -> str:
    """A key's column label. A feature-space score from any extractor but Inception names it, e.g.
    "FID (judge:cifar10)": such numbers are not comparable with published (Inception) ones."""
    text = LABELS.get(key, key)
    if extractor and extractor != INCEPTION and in_feature_space(key):
        return f"{text} ({extractor})"
    return text

__all__ = ["METRICS", "Metric", "MetricContext", "KEY_DIRECTION", "LABELS", "TABLE_KEYS", "INCEPTION", "label"]

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

METRICS: Registry[Metric] = Registry("metric", {m.name: m for m in (
    INCEPTION_SCORE, FID, KID, PRECISION_RECALL,
    SSIM, PSNR, LPIPS, CYCLE_ERROR, IDENTITY_ERROR, LPIPS_DIVERSITY, CLASSIFIER_ACCURACY,
    PPL, FID_TRUNCATION, SEG_AGREEMENT,
)})

_TRUNC = re.compile(r"fid_trunc/psi_[0-9.]+")


class _Directions(dict):
    """Key -> higher is better; the truncation curve's keys depend on the protocol's ψ list."""

    def __missing__(self, key: str) -> bool:
        if _TRUNC.fullmatch(str(key)) or key == "fid_trunc":  # fid_trunc/psi_<ψ>, and the curve as a whole
            return False
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or bool(_TRUNC.fullmatch(str(key)))  # the curve's points


# Which direction is better for each reported key (for sorting and regression checks).
KEY_DIRECTION = _Directions({
    "is": True, "fid": False, "fid_inf": False, "kid/mean": False, "precision": True, "recall": True,
    "ssim": True, "psnr": True, "lpips": False,
    "cycle_error": False, "cycle_error/a": False, "cycle_error/b": False,
    "identity_error": False, "identity_error/a": False, "identity_error/b": False,
    "lpips_diversity": True, "classifier_accuracy": True,
    "ppl_z": False, "ppl_w": False,
    "seg_agreement": True, "seg_agreement/label": True, "seg_agreement/label_miou": True,
    "seg_agreement/ceiling": True,
})

__all__ = ["METRICS", "Metric", "MetricContext", "KEY_DIRECTION"]

"""Every metric by name. Adding one = its file, its test, and one line here."""

from bench.metrics.base import Metric, MetricContext
from bench.metrics.classifier_accuracy import CLASSIFIER_ACCURACY
from bench.metrics.cycle_error import CYCLE_ERROR, IDENTITY_ERROR
from bench.metrics.fid import FID
from bench.metrics.inception_score import INCEPTION_SCORE
from bench.metrics.kid import KID
from bench.metrics.lpips import LPIPS
from bench.metrics.lpips_diversity import LPIPS_DIVERSITY
from bench.metrics.precision_recall import PRECISION_RECALL
from bench.metrics.psnr import PSNR
from bench.metrics.ssim import SSIM
from bench.registry import Registry

METRICS: Registry[Metric] = Registry("metric", {m.name: m for m in (
    INCEPTION_SCORE, FID, KID, PRECISION_RECALL,
    SSIM, PSNR, LPIPS, CYCLE_ERROR, IDENTITY_ERROR, LPIPS_DIVERSITY, CLASSIFIER_ACCURACY,
)})

# Which direction is better for each reported key (for sorting and regression checks).
KEY_DIRECTION = {
    "is": True, "fid": False, "fid_inf": False, "kid/mean": False, "precision": True, "recall": True,
    "ssim": True, "psnr": True, "lpips": False,
    "cycle_error": False, "cycle_error/a": False, "cycle_error/b": False,
    "identity_error": False, "identity_error/a": False, "identity_error/b": False,
    "lpips_diversity": True, "classifier_accuracy": True,
}

__all__ = ["METRICS", "Metric", "MetricContext", "KEY_DIRECTION"]

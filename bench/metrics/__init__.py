"""Every metric by name. Adding one = its file, its test, and one line here."""

from bench.metrics.base import Metric, MetricContext
from bench.metrics.fid import FID
from bench.metrics.inception_score import INCEPTION_SCORE
from bench.metrics.kid import KID
from bench.registry import Registry

METRICS: Registry[Metric] = Registry("metric", {m.name: m for m in (INCEPTION_SCORE, FID, KID)})

# Which direction is better for each reported key (for sorting and regression checks).
KEY_DIRECTION = {"is": True, "fid": False, "kid/mean": False}

__all__ = ["METRICS", "Metric", "MetricContext", "KEY_DIRECTION"]

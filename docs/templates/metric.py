"""<metric>: what it measures, its direction, and the paper that defines it.

Copy to bench/metrics/<metric>.py and add its constant to the METRICS tuple in bench/metrics/__init__.py
(the tuple's order is the comparison table's column order). Its keys' directions, labels and table column
come from `keys`; preflight refuses it for a protocol whose entries cannot feed what it `needs`.
"""

from __future__ import annotations

import torch

from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable


def compute(ctx: MetricContext) -> dict[str, float]:
    if ctx.fake_images is None:
        raise MetricUnavailable("template_brightness needs generated images")
    total, count = torch.zeros((), dtype=torch.float64), 0
    for batch in ctx.fake_images():  # float [-1, 1], one batch at a time: accumulate, never hold all images
        total += batch.double().sum()
        count += batch.numel()
    return {"brightness": float(total / count)}


TEMPLATE_BRIGHTNESS = Metric(
    "template_brightness", keys=(Key("brightness", True, "Bright", table=True),), needs="fake", compute=compute,
    description="mean pixel value of the generated images in [-1, 1] (a template, not a quality measure)")

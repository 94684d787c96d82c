"""<metric>: what it measures, its direction, and the paper that defines it.

Copy to bench/metrics/<metric>.py and add its constant to the METRICS tuple in bench/metrics/__init__.py
(the tuple's order is the comparison table's column order). Its keys' directions, labels and table column
come from `keys`; preflight refuses it for a protocol whose entries cannot feed what it `needs`.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable, setting


class Settings(BaseModel):
    """This metric's protocol settings: flat `evaluation.<key>` keys, checked when the protocol loads and in
    the fingerprint only when set away from their defaults."""

    model_config = ConfigDict(extra="forbid")
    brightness_scale: float = Field(1.0, gt=0, description="multiply the mean pixel value by this")


def compute(ctx: MetricContext) -> dict[str, float]:
    if ctx.fake_images is None:
        raise MetricUnavailable("template_brightness needs generated images")
    total, count = torch.zeros((), dtype=torch.float64), 0
    for batch in ctx.fake_images():  # float [-1, 1], one batch at a time: accumulate, never hold all images
        total += batch.double().sum()
        count += batch.numel()
    return {"brightness": float(total / count) * setting(ctx, TEMPLATE_BRIGHTNESS, "brightness_scale")}


TEMPLATE_BRIGHTNESS = Metric(
    "template_brightness", keys=(Key("brightness", True, "Bright", table=True),), needs="fake", compute=compute,
    description="mean pixel value of the generated images in [-1, 1] (a template, not a quality measure)",
    settings=Settings)

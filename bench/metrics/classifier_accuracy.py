"""Classification accuracy of a classifier-style discriminator on held-out labelled real images.

For the semi-supervised GAN (Salimans et al. 2016, §5) D has K+1 outputs: classes 0..K−1 are the real
categories and index K is "fake". The metric reads `ctx.classify`, a stream of (logits, labels)
batches on held-out labelled *real* images, and counts a hit when the argmax over the first K
logits equals the label. The fake logit is left out on purpose: the question is "which digit is
it", not "is it real"; real-vs-fake confusion is what the image metrics measure.

K is `settings.num_classes` when set. Otherwise the stream is taken to follow the K+1 convention
above, so K = number of logits − 1. A plain K-way classifier (no fake column) must set num_classes = K.
A label ≥ K is an error rather than a silent miss, which also catches a K-way classifier run without
num_classes whenever its last class appears among the labels.

`needs` is "labels": the value comes only from `ctx.classify`, and without that stream the metric is
unavailable.

Keys: `classifier_accuracy` in [0, 1] (higher is better) and `classifier_accuracy/n` (images scored).
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch

from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable


def correct_count(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> int:
    """How many argmax-over-the-first-`num_classes`-logits predictions equal the labels."""
    if logits.ndim != 2 or logits.shape[1] < num_classes:
        raise ValueError(f"classifier_accuracy: logits of shape {tuple(logits.shape)} for {num_classes} classes")
    labels = labels.reshape(-1).long().cpu()
    if len(labels) != len(logits):
        raise ValueError(f"classifier_accuracy: {len(logits)} logits rows for {len(labels)} labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"classifier_accuracy: labels must lie in [0, {num_classes}); got "
                         f"[{int(labels.min())}, {int(labels.max())}] (set num_classes for a plain K-way classifier)")
    return int((logits[:, :num_classes].detach().cpu().argmax(1) == labels).sum())


def accuracy(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: Optional[int] = None) -> tuple[float, int]:
    """(accuracy, images) over a stream of (logits, labels); num_classes None = logits columns − 1 (K+1 convention)."""
    hits, n = 0, 0
    for logits, labels in batches:
        k = num_classes if num_classes is not None else logits.shape[1] - 1
        if k < 1:
            raise ValueError(f"classifier_accuracy: {logits.shape[1]} logits leave no real class")
        hits += correct_count(logits, labels, k)
        n += len(logits)
    if n == 0:
        raise MetricUnavailable("classifier_accuracy: the classify stream yielded no images")
    return hits / n, n


def compute(ctx: MetricContext) -> dict[str, float]:
    if ctx.classify is None:
        raise MetricUnavailable("classifier_accuracy needs a classifier-style discriminator with labelled "
                                "held-out images (no classify stream here)")
    acc, n = accuracy(ctx.classify(), getattr(ctx.settings, "num_classes", None))
    return {"classifier_accuracy": acc, "classifier_accuracy/n": float(n)}


CLASSIFIER_ACCURACY = Metric("classifier_accuracy", keys=(Key("classifier_accuracy", True, "Acc", table=True),), needs="labels", compute=compute,
                             description="accuracy of a K+1-class discriminator on held-out labelled real images "
                                         "(argmax over the K real classes)")

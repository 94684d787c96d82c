"""Label agreement of the frozen semantic network S on a super-resolution model's outputs (`pix2pixhd_sem`).

The semantic loss of that Pix2PixHD variant (a course summary's, not the paper's) asks that S see in
G(x) what it sees in y. This metric scores exactly that on the held-out pairs, per pixel, with S's most
likely class (argmax of its logits) at the protocol resolution:

- `seg_agreement`: fraction of pixels where S(G(x)) and S(y) name the same class: 1 = S cannot tell the
  output from the target. This is the headline: it measures G, whatever S's own errors.
- `seg_agreement/label`: pixel accuracy of S(G(x)) against the true label map (pix2pix's "FCN score"
  idea with our S), and `seg_agreement/label_miou` its mean IoU over the classes that occur.
- `seg_agreement/ceiling`: pixel accuracy of S(y) against the true label map, i.e. S on the real
  photos: what `/label` would be for a perfect G, so `/label` is read against it, not against 1.

S here is the judge (bench/features/segmenter.py, role "judge"): a second network of S's recipe with a seed
of its own, never the S that `pix2pixhd_sem`'s L_sem trains against, so a G is not scored by the network whose
quirks it was optimised to please.

Counts are pooled over all held-out pixels (not averaged per image), as segmentation scores are. The
outputs are the quantised images every paired metric sees (bench/evaluation.py `pairs`). Without S (a data
set without label maps) the metric is unavailable, never a number.
"""

from __future__ import annotations

import torch

from bench.features.segmenter import confusion, scores
from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable


@torch.no_grad()
def compute(ctx: MetricContext) -> dict[str, float]:
    if ctx.pairs is None:
        raise MetricUnavailable("seg_agreement needs a paired translation model (no (output, target) pairs here)")
    S, maps = ctx.segmenter, ctx.label_maps
    if S is None or maps is None:
        raise MetricUnavailable("seg_agreement needs a semantic network S, which is trained on a data set's label "
                                "maps; this data set has none (facades_sr has)")
    device = next(S.parameters()).device
    agree = total = seen = 0
    conf_fake = conf_real = 0
    for out, tgt in ctx.pairs():
        if out.shape != tgt.shape:
            raise ValueError(f"seg_agreement of batches with different shapes {tuple(out.shape)} and "
                             f"{tuple(tgt.shape)}")
        logits_fake = S(out.to(device))
        k = logits_fake.shape[1]
        s_fake, s_real = logits_fake.argmax(1).cpu(), S(tgt.to(device)).argmax(1).cpu()
        truth = maps[seen:seen + len(out)]
        if truth.shape != s_fake.shape:
            raise ValueError(f"label maps {tuple(truth.shape)} do not match the outputs {tuple(s_fake.shape)}")
        seen += len(out)
        agree += int((s_fake == s_real).sum())
        total += s_fake.numel()
        conf_fake = conf_fake + confusion(s_fake, truth, k)
        conf_real = conf_real + confusion(s_real, truth, k)
    if total == 0:
        raise MetricUnavailable("seg_agreement: the paired stream yielded no images")
    fake, real = scores(conf_fake), scores(conf_real)
    return {"seg_agreement": agree / total, "seg_agreement/label": fake["pixel_accuracy"],
            "seg_agreement/label_miou": fake["miou"], "seg_agreement/ceiling": real["pixel_accuracy"]}


SEG_AGREEMENT = Metric("seg_agreement", keys=(Key("seg_agreement", True), Key("seg_agreement/label", True),
                                                  Key("seg_agreement/label_miou", True),
                                                  Key("seg_agreement/ceiling", True)), needs="paired", compute=compute,
                       description="pixel agreement of the judge segmenter S (not the S that L_sem trains against) "
                                   "on output vs target (argmax); /label: S(output) vs the true label map, "
                                   "/ceiling: S(target) vs it")

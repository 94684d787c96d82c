"""What `evaluate` records about its evaluation seeds besides the scores.

- `facts["eval_outputs"]`: whether every seed generated bit-identical features. A deterministic translator on the
  fixed held-out inputs does; its seeds are then not replicates for the leaderboard's test, even where a metric's
  own draws (KID's subsets) still give each seed another number (tests/test_leaderboard.py).
- A metric that becomes unavailable at a later seed loses its earlier seeds' values too, so no metric is averaged
  over fewer seeds than the others and the per-seed histories logged side by side keep every seed.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from bench.evaluation import evaluate
from bench.metrics import METRICS
from bench.metrics.base import MetricUnavailable
from bench.runner.sampling import real_batches, stream_features
from tests.test_batch_invariance import (CIFAR, FACADES, PIX_SEED, SMALL, build, settings, tiny_extractor,
                                         translation_data, unconditional_data)

METRICS_HERE = ["fid", "kid"]


def _evaluate(model, spec, data, seeds, metrics=METRICS_HERE):
    ev = settings(4, metrics).model_copy(update={"seeds": seeds})
    protocol = SimpleNamespace(evaluation=ev, dataset=SimpleNamespace(resolution=spec.resolution,
                                                                      channels=spec.channels,
                                                                      frame=(spec.resolution, spec.resolution)))
    extractor = tiny_extractor(spec.channels)
    real, stats = stream_features(real_batches(data.eval_images, 4), extractor, "real", len(data.eval_images))
    facts: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    out = evaluate(model, extractor, real, stats.as_fid_stats(), protocol, "resize", unavailable, data, None, facts)
    return out, facts, unavailable


def test_a_deterministic_translator_records_identical_outputs_and_a_noisy_one_varying():
    data = translation_data(FACADES, "paired")
    bicubic = build("pix2pixhd_sem", FACADES, resolution=64, generator="bicubic")
    _, facts, _ = _evaluate(bicubic, FACADES, data, [0, 1, 2])
    assert facts == {"eval_outputs": "identical"}
    pix2pix = build("pix2pix", FACADES, **PIX_SEED)  # test-time dropout, seeded per evaluation seed and image
    _, facts, _ = _evaluate(pix2pix, FACADES, data, [0, 1, 2])
    assert facts == {"eval_outputs": "varying"}
    _, facts, _ = _evaluate(bicubic, FACADES, data, [0])  # one seed: nothing to compare
    assert facts == {}


def test_an_unconditional_generator_varies_with_its_latent_draws():
    dcgan = build("dcgan", CIFAR, **SMALL)
    _, facts, _ = _evaluate(dcgan, CIFAR, unconditional_data(CIFAR), [0, 1])
    assert facts == {"eval_outputs": "varying"}


def test_a_metric_unavailable_from_a_later_seed_keeps_none_of_its_values(monkeypatch):
    kid = METRICS.get("kid")
    calls = []

    def flaky(ctx):
        calls.append(ctx.seed)
        if len(calls) > 1:
            raise MetricUnavailable("gone after the first seed")
        return kid.compute(ctx)

    monkeypatch.setitem(METRICS._items, "kid", dataclasses.replace(kid, compute=flaky))
    dcgan = build("dcgan", CIFAR, **SMALL)
    out, _, unavailable = _evaluate(dcgan, CIFAR, unconditional_data(CIFAR), [0, 1, 2])
    assert calls == [0, 1] and unavailable == {"kid": "gone after the first seed"}
    assert not [k for k in out if k.startswith("kid")], sorted(out)  # seed 0's KID went with the rest
    assert len(out["fid"]["per_seed"]) == 3

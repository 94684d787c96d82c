"""Scoring one model: the held-out reals' features (cached), each evaluation seed's generated features
(sharded over data-parallel ranks), every metric of the protocol per seed, and the in-training FID monitor."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from bench.data.transforms import fit_float, to_float
from bench.features import segmenter as semantic
from bench.features.cache import DiskCache, cache_key
from bench.features.extractors import PREPROCESSING_VERSION
from bench.features.stats import RunningStats
from bench.io import sha256_tensor
from bench.metrics import METRICS, MetricContext
from bench.metrics.base import MetricUnavailable
from bench.metrics.fid import frechet
from bench.reporting.significance import sample_std
from bench.runner import distributed as dist
from bench.runner.sampling import cycle_batches, fake_batches, real_batches, stream_features, translated_batches
from bench.runner.train import EntryFailed
from zoo.base import Classifier, StyleSampler, task_of

log = logging.getLogger("bench")


def real_features(extractor, data, batch_size: int, device_type: str = "cpu") -> tuple[dict, dict, str]:
    """Features and float64 statistics of the held-out real images, from a content-addressed cache."""
    cache = DiskCache("features")
    key = cache_key(kind="real-features", images=sha256_tensor(data.eval_images), extractor=extractor.name,
                    weights=extractor.sha256, preprocessing=PREPROCESSING_VERSION, device=device_type)
    hit = cache.get(key)
    if hit is not None:
        return hit["features"], hit["stats"], "hit"
    feats, stats = stream_features(real_batches(data.eval_images, batch_size), extractor, "real features",
                                   len(data.eval_images))
    fid_stats = stats.as_fid_stats()
    cache.put(key, {"features": feats, "stats": fid_stats})
    return feats, fid_stats, "miss"

def shard_bounds(n: int, world: dist.World) -> tuple[int, int]:
    """This rank's contiguous share [lo, hi) of n images (ceil-sized shares, rank order)."""
    per = -(-n // world.size)
    return min(n, world.rank * per), min(n, (world.rank + 1) * per)

def seed_features(model, extractor, protocol, seed: int, fit: str, world: dist.World):
    """Features of one evaluation seed's generated images, sharded over the data-parallel ranks.

    Every rank draws the seed's n latents and generates and featurises its own contiguous share; rank 0
    gathers the shares in rank order, so it holds exactly the features one process would have computed
    (FID/KID equal to the single-process ones up to float summation order; tested). A rank whose
    share went numerically wrong reports it, and every rank learns the verdict, so nobody waits on a
    peer that gave up. Returns (features, float64 stats) on rank 0 and (None, None) elsewhere.
    """
    ev = protocol.evaluation
    res, ch, n = protocol.dataset.resolution, protocol.dataset.channels, ev.n_samples
    if not world.active or n < world.size:
        if not world.is_main:
            return None, None
        return stream_features(fake_batches(model, n, seed, ev.batch_size, res, ch, fit), extractor,
                               f"eval seed {seed}", n)
    lo, hi = shard_bounds(n, world)
    try:
        share, _ = stream_features(fake_batches(model, n, seed, ev.batch_size, res, ch, fit, lo, hi), extractor,
                                   f"eval seed {seed} [{lo}:{hi}]", hi - lo)
    except EntryFailed as exc:
        share = {"error": str(exc)}
    parts = dist.gather_to_main(share, world)
    verdict = None
    if world.is_main:
        verdict = next((p["error"] for p in parts if "error" in p), None)
    verdict = dist.broadcast_object(verdict, world)
    if verdict:
        raise EntryFailed(verdict)
    if not world.is_main:
        return None, None
    feats = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    stats = RunningStats(feats["pool"].shape[1])
    stats.update(feats["pool"])
    return feats, stats

def evaluate(model, extractor, real_feats, real_stats, protocol, fit: str = "resize",
             unavailable: dict[str, str] | None = None, data=None,
             world: dist.World | None = None, facts: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Every metric for every eval seed, then mean ± std over seeds.

    A metric that cannot be computed here (missing pretrained weights, a stream this kind of model
    does not have) is recorded in `unavailable` with its reason and skipped; it never becomes a number.
    With two or more evaluation seeds, `facts["eval_outputs"]` says whether the seeds' generated features were
    bit-identical ("identical": a deterministic translator on the fixed held-out inputs) or not ("varying").
    When they are identical, whatever still varies between seeds (KID's subsets, fid_inf's subsamples, SWD's
    directions) is the metric's own randomness, not evidence about the model, so the leaderboard does not use
    those seeds as replicates (bench/reporting/leaderboard.py `two_sample`).
    """

    ev = protocol.evaluation
    per_seed: dict[str, list[float]] = {}
    unavailable = {} if unavailable is None else unavailable
    classify = None
    if isinstance(model, Classifier) and data is not None and data.eval_labels is not None:
        def classify():  # the K+1 logits of a classifier-style D on the held-out labelled images
            for i in range(0, len(data.eval_images), ev.batch_size):
                x = fit_float(to_float(data.eval_images[i:i + ev.batch_size]), model.resolution, fit)
                yield model.classify(x), data.eval_labels[i:i + ev.batch_size]
    translation = task_of(model) != "unconditional"
    # An image-to-image model translates the first n held-out inputs once per eval seed (the seed and
    # each image's index drive its test-time dropout); an unconditional one draws n latents per seed.
    n = min(ev.n_samples, len(data.eval_inputs)) if translation else ev.n_samples
    # The protocol's image size, (height, width): square, or whole label-map frames (dataset.aspect) that only a
    # translator can produce. SSIM, PSNR and LPIPS compare whole frames with their photos; a feature extractor
    # (FID/KID/IS, precision/recall) brings each frame to its own square input (bench/features/extractors.py).
    res = protocol.dataset.frame if translation else protocol.dataset.resolution
    ch = protocol.dataset.channels
    world = world or dist.SINGLE
    # seg_agreement: the judge S of a data set with label maps (facades_sr), and those maps. Never the S a
    # model trains against (`role="training"`): a second network of the same recipe, seeded apart.
    S = semantic.for_data(data, model.device, role="judge") if (translation and "seg_agreement" in ev.metrics
                                                                 and semantic.available(data)) else None
    digests: list[str | None] = []
    produced: dict[str, set[str]] = {}  # metric -> the keys it has reported so far
    for seed in ev.seeds:
        if translation:
            batches = translated_batches(model, data.eval_inputs, n, seed, ev.batch_size, res, ch, fit)
            fake, stats = stream_features(batches, extractor, f"eval seed {seed}", n)
        else:
            fake, stats = seed_features(model, extractor, protocol, seed, fit, world)
        digests.append(None if fake is None else sha256_tensor(*(fake[k] for k in sorted(fake))))

        def fake_images(seed=seed):  # float [-1, 1] at the protocol's resolution, for image-space metrics
            source = (translated_batches(model, data.eval_inputs, n, seed, ev.batch_size, res, ch, fit)
                      if translation else fake_batches(model, n, seed, ev.batch_size, res, ch, fit))
            for b in source:
                yield to_float(b)

        def real_images():  # the held-out real images (targets of a translation), float [-1, 1]
            for i in range(0, len(data.eval_images), ev.batch_size):
                yield to_float(data.eval_images[i:i + ev.batch_size])

        pairs = cycle = None
        if translation and data.task == "paired":
            def pairs(seed=seed):  # (output i, target i) for i < n, at the protocol's resolution, quantised as scored
                seen = 0  # targets are cut where the outputs were, so a short last batch (n < eval_size) stays paired
                for out in fake_images(seed):
                    yield out, to_float(data.eval_images[seen:seen + len(out)])
                    seen += len(out)
        elif translation:
            def cycle(seed=seed):  # a, b and every G/F output, test-time noise seeded per image
                return cycle_batches(model, data.eval_inputs, data.eval_images, min(n, len(data.eval_images)),
                                     seed, ev.batch_size)

        truncated = None
        if not translation and isinstance(model, StyleSampler):
            def truncated(psi: float, seed=seed):  # the same n latents as `fake`, drawn with ψ
                batches = fake_batches(model, n, seed, ev.batch_size, res, ch, fit, psi=psi)
                feats, psi_stats = stream_features(batches, extractor, f"eval seed {seed} psi {psi:g}", n)
                return feats["pool"], psi_stats.as_fid_stats()

        ctx = MetricContext(seed, ev, fake, real_feats, stats.as_fid_stats(), real_stats,
                            fake_images=fake_images, real_images=real_images if data is not None else None,
                            device=model.device, classify=classify, pairs=pairs,
                            cycle=cycle, generator=None if translation else model,
                            truncated=truncated, segmenter=S,
                            label_maps=data.eval_label_maps if S is not None else None)
        for name in ev.metrics:
            if name in unavailable:
                continue
            try:
                values = METRICS.get(name).compute(ctx)
            except MetricUnavailable as exc:
                unavailable[name] = str(exc)
                log.warning("metric %s unavailable: %s", name, exc)
                # Unavailable from this seed on: the values of earlier seeds go too. A metric with fewer
                # per-seed values than the others would be averaged over other seeds and would cut every
                # metric's per-seed history to its length when they are logged side by side.
                for key in produced.pop(name, ()):
                    per_seed.pop(key, None)
                continue
            produced.setdefault(name, set()).update(values)
            for k, v in values.items():
                per_seed.setdefault(k, []).append(float(v))
    if facts is not None and len(digests) > 1 and None not in digests:
        facts["eval_outputs"] = "identical" if len(set(digests)) == 1 else "varying"
    # Sample std (n - 1): the seeds are a sample of the seeds one could have used. Undefined (None, JSON
    # null) with a single evaluation seed, never a made-up 0.
    out = {}
    for k, v in per_seed.items():
        std = sample_std(v)
        out[k] = {"mean": float(np.mean(v)), "std": std if math.isfinite(std) else None, "per_seed": v}
    return out

def fid_monitor(extractor, real_stats, protocol, fit: str, n: int, seed: int):
    """FID of n samples from one fixed latent draw: the in-training curve and the best-checkpoint
    criterion (`train.eval_every`). Cheaper than the full evaluation and never mixed with its scores."""
    ev = protocol.evaluation

    def score(model) -> float:
        batches = fake_batches(model, n, seed, ev.batch_size, protocol.dataset.resolution,
                               protocol.dataset.channels, fit)
        _, stats = stream_features(batches, extractor, "in-training FID", n)
        return frechet(real_stats, stats.as_fid_stats())

    return score

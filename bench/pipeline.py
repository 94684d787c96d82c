"""`bench run`: protocol -> data -> extractor -> (train | load) each entry -> seeded samples -> metrics
-> results.jsonl + MLflow. One direction, no back edges (DESIGN.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data import load_dataset
from bench.errors import BenchError
from bench.features.cache import DiskCache, cache_key
from bench.features.extractors import PREPROCESSING_VERSION, make_extractor, preflight_extractor
from bench.features import segmenter as semantic
from bench.io import atomic_write_bytes, sha256_file, sha256_tensor
from bench.data.transforms import fit_float, to_float
from bench.metrics import METRICS, MetricContext
from bench.metrics.base import NEEDS_TEXT, MetricUnavailable, inputs_of
from bench.metrics.fid import frechet
from bench.runner.precision import Precision
from bench.protocol import LoadedProtocol
from bench.protocol.load import fingerprint as protocol_fingerprint
from bench.reporting import table
from bench.reporting.significance import sample_std
from bench.runner import checkpoint
from bench.runner import distributed as dist
from bench.runner import reference
from bench.features.stats import RunningStats
from bench.runner.sampling import cycle_batches, fake_batches, real_batches, stream_features, translated_batches
from bench.runner.seeding import derive, entry_seed, pick_device
from bench.runner.train import GRID, EntryFailed, save_grid, train_entry
from bench.tracking import layout
from bench.tracking import results as results_mod
from bench.tracking.mlflow_tracker import Tracker, resolve_uri
from zoo import ZOO
from zoo.base import Classifier, StyleSampler, task_of

log = logging.getLogger("bench")


def say(msg: str) -> None:
    """Phase lines on stderr: progress bars only show on a terminal, these show in CI logs too."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class RunSummary:
    fingerprint: str
    parent_run_id: str
    results: list[dict[str, Any]]
    real_cache: str  # "hit" or "miss": whether the real side's features came from the cache
    table: str


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
             world: dist.World | None = None) -> dict[str, dict[str, Any]]:
    """Every metric for every eval seed, then mean ± std over seeds.

    A metric that cannot be computed here (missing pretrained weights, a stream this kind of model
    does not have) is recorded in `unavailable` with its reason and skipped; it never becomes a number.
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
    res, ch = protocol.dataset.resolution, protocol.dataset.channels
    world = world or dist.SINGLE
    # seg_agreement: the judge S of a data set with label maps (facades_sr), and those maps. Never the S a
    # model trains against (`role="training"`): a second network of the same recipe, seeded apart.
    S = semantic.for_data(data, model.device, role="judge") if (translation and "seg_agreement" in ev.metrics
                                                                 and semantic.available(data)) else None
    for seed in ev.seeds:
        if translation:
            batches = translated_batches(model, data.eval_inputs, n, seed, ev.batch_size, res, ch, fit)
            fake, stats = stream_features(batches, extractor, f"eval seed {seed}", n)
        else:
            fake, stats = seed_features(model, extractor, protocol, seed, fit, world)

        def fake_images(seed=seed):  # float [-1, 1] at the protocol's resolution, for image-space metrics
            source = (translated_batches(model, data.eval_inputs, n, seed, ev.batch_size, res, ch, fit)
                      if translation else fake_batches(model, n, seed, ev.batch_size, res, ch, fit))
            for b in source:
                yield to_float(b)

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

        truncated_stats = None
        if not translation and isinstance(model, StyleSampler):
            def truncated_stats(psi: float, seed=seed):  # the same n latents as `fake`, drawn with ψ
                batches = fake_batches(model, n, seed, ev.batch_size, res, ch, fit, psi=psi)
                return stream_features(batches, extractor, f"eval seed {seed} psi {psi:g}", n)[1].as_fid_stats()

        ctx = MetricContext(seed, ev, fake, real_feats, stats.as_fid_stats(), real_stats,
                            fake_images=fake_images, device=model.device, classify=classify, pairs=pairs,
                            cycle=cycle, generator=None if translation else model,
                            truncated_stats=truncated_stats, segmenter=S,
                            label_maps=data.eval_label_maps if S is not None else None)
        for name in ev.metrics:
            if name in unavailable:
                continue
            try:
                values = METRICS.get(name).compute(ctx)
            except MetricUnavailable as exc:
                unavailable[name] = str(exc)
                log.warning("metric %s unavailable: %s", name, exc)
                continue
            for k, v in values.items():
                per_seed.setdefault(k, []).append(float(v))
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


def resolve_checkpoint(path: str, protocol_path: Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists():
        p = protocol_path.parent / p
    return p


def preflight(loaded: LoadedProtocol, workdir: Path | None = None) -> tuple[torch.device, Any, dict[str, str]]:
    """Cheap checks of everything the user supplied (data, weights, checkpoints, fit modes).

    They run before the store is opened and before any expensive work, so a bad input writes
    nothing anywhere. Returns the device, the data and the sha256 of every checkpoint entries load.
    """
    protocol = loaded.protocol
    device = pick_device(protocol.device)
    if device.type == "cuda" and dist.current().active:
        device = torch.device("cuda", dist.current().local_rank)  # one GPU per torchrun process
    data = load_dataset(protocol.dataset, protocol.seed)
    preflight_extractor(protocol.evaluation.extractor, protocol.evaluation.weights, protocol.dataset.name,
                        protocol.dataset.channels, data=data)
    loaded_ckpts = {}
    ckpt_bytes: list[int] = []
    provided: dict[str, frozenset[str]] = {}  # entry -> the metric inputs its model can give (declared)
    for entry in protocol.entries:
        # Every entry is built once here (on the CPU, cheap), so a config that cannot work with this
        # data fails now, not after the judge and earlier entries have trained.
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # shapes only: nothing allocated
            built = ZOO.get(entry.zoo).build(entry.config, data.spec, "meta", where=f"entries[{entry.name}].config")
        res, task = built.resolution, task_of(built)
        provided[f"{entry.name} ({entry.zoo})"] = inputs_of(built, data)
        if task != data.task and not (task == "unconditional" and data.task == "unconditional"):
            raise BenchError(f"entries[{entry.name}]: zoo entry '{entry.zoo}' is a {task} model but data set "
                             f"'{protocol.dataset.name}' is {data.task} data")
        if task != "unconditional" and res != protocol.dataset.resolution:
            raise BenchError(f"entries[{entry.name}].config.resolution is {res} but dataset.resolution is "
                             f"{protocol.dataset.resolution}; an image-to-image model translates at the data's size")
        in_ch = getattr(data.spec, "input_channels", 0)
        if task == "paired" and in_ch:
            try:  # label maps (bench/data/labelmap.py): a family that reads only images fails now, not mid-run
                built.translate(torch.zeros(1, in_ch, res, res, device="meta"))
            except RuntimeError:
                raise BenchError(f"entries[{entry.name}]: zoo entry '{entry.zoo}' cannot read the {in_ch}-channel "
                                 f"label-map inputs of '{protocol.dataset.name}' (pix2pixhd reads label maps)") from None
        if "segmenter" in built.requires() and not semantic.available(data):
            raise BenchError(f"entries[{entry.name}]: L_sem needs the semantic network S, which is trained on label "
                             f"maps that data set '{protocol.dataset.name}' does not have (facades_sr has them); "
                             "set lambda_sem: 0")
        if entry.train and entry.train.steps and not built.optimizers():  # e.g. pix2pixhd_sem's bicubic baseline
            raise BenchError(f"entries[{entry.name}]: zoo entry '{entry.zoo}' has nothing to train with this config; "
                             "use train: {steps: 0}")
        if "vgg19" in built.requires():
            from bench.features import weights
            from bench.io import offline

            weights.resolve("vgg19", allow_download=not offline())
        if entry.train:
            ckpt_bytes.append(_checkpoint_bytes(built, entry.train) * len(protocol.train_seeds_of(entry)))
            try:
                Precision(entry.train.precision, device.type)
            except ValueError as exc:
                raise BenchError(f"entries[{entry.name}].train.precision: {exc}") from None
            world = dist.current()
            if entry.train.batch_size % world.size:
                raise BenchError(f"entries[{entry.name}].train.batch_size {entry.train.batch_size} does not "
                                 f"split evenly over {world.size} torchrun processes")
        if entry.fit == "pad":
            diff = res - protocol.dataset.resolution
            if diff < 0 or diff % 2:
                raise BenchError(f"entries[{entry.name}].fit: pad needs a model at least as large as the data "
                                 f"and an even size difference, got data {protocol.dataset.resolution} px vs "
                                 f"model {res} px")
        if entry.checkpoint:
            path = resolve_checkpoint(entry.checkpoint, loaded.path)
            if not path.is_file():
                raise BenchError(f"entries[{entry.name}].checkpoint: {path} not found")
            try:
                loaded_ckpts[entry.name] = sha256_file(path)
            except OSError as exc:
                raise BenchError(f"entries[{entry.name}].checkpoint: cannot read {path} ({exc.strerror})") from None
            # Read and fit it now (into the shape-only model): a damaged, foreign or mismatched checkpoint
            # is refused before the store is opened, not after other entries have trained.
            payload = checkpoint.read(path)
            checkpoint.check_config(payload, built, path)
            with torch.device("meta"):
                checkpoint.load_into(payload, built, path, weights_only=True)
    _check_metrics(protocol.evaluation.metrics, provided)
    if workdir is not None:
        _check_writable(workdir)
        # Every entry's checkpoints stay on disk, and the largest is briefly written twice (temp + rename).
        _check_space(workdir, sum(ckpt_bytes) + max(ckpt_bytes, default=0))
    return device, data, loaded_ckpts


def _check_metrics(metrics: list[str], provided: dict[str, frozenset[str]]) -> None:
    """Refuse, before anything trains, a metric that no entry can feed (`ssim` in a protocol of DCGANs). A
    metric that fits some entries only (classifier_accuracy beside sgan) is reported unavailable for the rest."""
    for name in metrics:
        needs = METRICS.get(name).needs
        if provided and not any(needs in given for given in provided.values()):
            raise BenchError(f"evaluation.metrics: '{name}' needs {NEEDS_TEXT[needs]}, which no entry provides "
                             f"({', '.join(provided)}); remove it from the protocol")


def _checkpoint_bytes(model, train) -> int:
    """About what one trained entry's checkpoints take: weights plus two Adam moments per parameter (an
    upper bound for SGD/RMSprop), the EMA copy of G, times latest.pt + kept snapshots + best.pt."""
    nets = model.modules()
    size = lambda m: sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))  # noqa: E731
    per = 3 * sum(size(m) for m in nets.values()) + (size(nets["G"]) if train.ema and "G" in nets else 0)
    copies = 1 + (train.keep_last if train.keep_last > 1 else 0) + (1 if train.eval_every else 0)
    return per * copies


def _check_space(folder: Path, need: int) -> None:
    import shutil

    free = shutil.disk_usage(folder).free
    if free < need:
        raise BenchError(f"work folder {folder} has {free / 2**20:.1f} MiB free but this protocol's checkpoints "
                         f"need about {need / 2**20:.1f} MiB; free space or pass --workdir on a larger disk")


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".bench-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"work folder {folder} is not writable ({exc.strerror or exc})") from None


def dry_run(loaded: LoadedProtocol) -> str:
    """The fingerprint `run_protocol` would score under, after the same preflight (data, weights,
    checkpoints) and the same extractor, without training, scoring or opening the store."""
    protocol = loaded.protocol
    device, data, loaded_ckpts = preflight(loaded)
    extractor = make_extractor(protocol.evaluation.extractor, data, derive(protocol.seed, "judge"), device,
                               protocol.evaluation.weights)
    return protocol_fingerprint(protocol, data.fingerprint, extractor.sha256, loaded_ckpts, device.type)


def run_protocol(loaded: LoadedProtocol, workdir: Path, resume: bool = False) -> RunSummary:
    protocol = loaded.protocol
    world = dist.init_from_env(pick_device(protocol.device).type)
    if not world.is_main:
        return _follow(loaded, workdir, resume, world)
    device, data, loaded_ckpts = preflight(loaded, workdir)
    # The store is opened next (an unreachable MLflow fails here), before the expensive work.
    tracker = Tracker(resolve_uri(protocol.tracking.uri), protocol.tracking.experiment or protocol.name)
    say(f"{protocol.name}: {len(data.train_images)} training / {len(data.eval_images)} held-out images from "
        f"{data.source}")
    t0 = time.perf_counter()
    extractor = make_extractor(protocol.evaluation.extractor, data, derive(protocol.seed, "judge"), device,
                               protocol.evaluation.weights)
    t_extractor = time.perf_counter() - t0
    acc = extractor.info.get("heldout_accuracy")
    say(f"extractor {extractor.name} ready" + (f" (held-out accuracy {acc:.4f}, cache {extractor.info['cache']})"
                                                if acc is not None else ""))
    segmenters = semantic.for_run(protocol, data, device)  # role -> S; empty unless label maps and a user of S
    for role, S in segmenters.items():
        say(f"semantic network S ({role}) ready (held-out pixel accuracy {S.info['heldout_pixel_accuracy']:.4f}, "
            f"mIoU {S.info['heldout_miou']:.4f}, cache {S.info['cache']})")
    fp = protocol_fingerprint(protocol, data.fingerprint, extractor.sha256, loaded_ckpts, device.type)
    dist.broadcast_object((fp, list(results_mod.finished_rows(workdir / "results.jsonl", fp) if resume else [])),
                          world)  # the other ranks train under the same fingerprint and skip the same runs
    env = results_mod.environment(device)
    env["world_size"] = world.size
    run_root = workdir / f"{protocol.name}-{fp[:12]}"
    results_path = workdir / "results.jsonl"
    # A run killed inside an atomic write of the comparison table leaves its temp file; nothing reads it,
    # and this run rewrites the table, so clear it (only rank 0 writes here).
    for stale_tmp in run_root.glob(".comparison.*.tmp") if run_root.is_dir() else []:
        stale_tmp.unlink(missing_ok=True)

    stale = tracker.close_stale(fp)
    if stale:
        say(f"marked {len(stale)} MLflow run(s) of a killed earlier attempt KILLED")
    done_before = results_mod.finished_rows(results_path, fp) if resume else {}
    parent = tracker.start_run(protocol.name, layout.parent_tags(protocol.name, fp, env, extractor.name,
                                                                 extractor.sha256))
    summary_results: list[dict[str, Any]] = []
    status = "FAILED"
    try:
        tracker.log_text(parent, loaded.text, "protocol.yaml")
        tracker.log_params(parent, {"seed": protocol.seed, "eval.n_samples": protocol.evaluation.n_samples,
                                    "eval.seeds": protocol.evaluation.seeds, "dataset": protocol.dataset.name,
                                    "dataset.train_size": protocol.dataset.train_size,
                                    "dataset.eval_size": protocol.dataset.eval_size})
        info = {k: v for k, v in extractor.info.items() if isinstance(v, (int, float))}
        if info:
            tracker.log_metrics(parent, {f"extractor/{k}": v for k, v in info.items()})
        t0 = time.perf_counter()
        real_feats, real_stats, real_cache = real_features(extractor, data, protocol.evaluation.batch_size,
                                                           device.type)
        t_real = time.perf_counter() - t0

        def record(result) -> dict[str, Any]:
            """Add the run-wide facts to a finished or failed row and append it to results.jsonl."""
            result.timings.update({"extractor_s": t_extractor, "real_features_s": t_real})
            result.info.update({"real_cache": real_cache, "extractor": extractor.name,
                                "extractor_sha256": extractor.sha256, **extractor.info,
                                "data_source": data.source})
            if segmenters:
                result.info["semantic_nets"] = {role: S.info for role, S in segmenters.items()}
            results_mod.append(results_path, result)
            return dataclasses.asdict(result)

        for entry, train_seed in _runs(protocol):
            label = entry.name if train_seed is None else f"{entry.name} (training seed {train_seed})"
            if (entry.name, train_seed) in done_before:  # --resume: finished and recorded under this fingerprint
                say(f"entry {label}: finished earlier (results.jsonl), not redone")
                summary_results.append(done_before[(entry.name, train_seed)])
                continue
            say(f"entry {label} ({entry.zoo}): " + (f"training {entry.train.steps} steps" if entry.train
                                                    else f"loading {entry.checkpoint}"))
            summary_results.append(record(_run_entry(entry, protocol, loaded.path, data, extractor, real_feats,
                                                     real_stats, fp, run_root, tracker, parent, device, resume, env,
                                                     train_seed)))
        # The real-data row comes last (nothing to train; a kill before it loses no training) and heads the table.
        ref = _reference_row(protocol, data, device)
        if ref is not None and (ref.name, None) in done_before:
            say(f"{ref.name}: finished earlier (results.jsonl), not redone")
            summary_results.insert(0, done_before[(ref.name, None)])
        elif ref is not None:
            say(f"{ref.name}: scoring {ref.description} (evaluation.reference)")
            summary_results.insert(0, record(_run_reference(ref, protocol, data, extractor, real_feats, real_stats, fp,
                                                            run_root, tracker, parent, env)))
        md = table.markdown(summary_results, f"{protocol.name} ({fp[:12]})")
        csv_text = table.to_csv(summary_results)
        tracker.log_text(parent, md, "comparison.md")
        tracker.log_text(parent, csv_text, "comparison.csv")
        # Also beside the checkpoints, so the latest table of this fingerprint is readable without MLflow.
        atomic_write_bytes(run_root / "comparison.md", md.encode())
        atomic_write_bytes(run_root / "comparison.csv", csv_text.encode())
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _end_quietly(tracker, parent, status)
    return RunSummary(fp, parent, summary_results, real_cache, table.terminal(summary_results))


def _follow(loaded: LoadedProtocol, workdir: Path, resume: bool, world: dist.World) -> RunSummary:
    """A torchrun rank other than 0: train every entry in step with rank 0 (gradients are averaged at
    every optimiser step) and generate and featurise its share of every evaluation seed; rank 0 alone
    computes the metrics, logs and writes results."""
    protocol = loaded.protocol
    device, data, _ = preflight(loaded, None)
    fp, skip = dist.broadcast_object(None, world)
    # rank 0 built (and cached) the extractor before it sent the fingerprint: this is a cache hit
    extractor = make_extractor(protocol.evaluation.extractor, data, derive(protocol.seed, "judge"), device,
                               protocol.evaluation.weights)
    run_root = workdir / f"{protocol.name}-{fp[:12]}"
    for entry, train_seed in _runs(protocol):
        if (entry.name, train_seed) in skip:
            continue
        model, seed = _build_entry(entry, protocol, data, device, train_seed)
        try:
            if entry.train:
                with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                    train_entry(model, data.train_images, entry.train, entry_dir(run_root, entry.name, train_seed),
                                seed, fp, entry.name,
                                lambda losses, step: None, resume, entry.fit, data.train_labels, None, world, data)
            else:
                path = resolve_checkpoint(entry.checkpoint, loaded.path)
                checkpoint.load_into(checkpoint.read(path), model, path, weights_only=True)
            if task_of(model) == "unconditional":
                for eval_seed in protocol.evaluation.seeds:
                    seed_features(model, extractor, protocol, eval_seed, entry.fit, world)
        except EntryFailed:
            continue  # every rank agrees on a failure (bench/runner/train.py, seed_features); rank 0 reports it
    return RunSummary(fp, "", [], "", "")


def _runs(protocol) -> list[tuple[Any, Any]]:
    """(entry, training seed) in run order: each entry once per training seed (None = its single default run)."""
    return [(entry, t) for entry in protocol.entries for t in protocol.train_seeds_of(entry)]


def entry_dir(run_root: Path, entry: str, train_seed: int | None) -> Path:
    """Where one training run keeps its checkpoints: `<entry>/` as always, `<entry>/seed-<t>/` per training seed."""
    return run_root / entry if train_seed is None else run_root / entry / f"seed-{train_seed}"


def _build_entry(entry, protocol, data, device, train_seed: int | None = None):
    family = ZOO.get(entry.zoo)
    seed = entry_seed(protocol.seed, entry.name, train_seed)
    # Initial weights come from a seed of their own, without touching the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive(seed, "init"))
        model = family.build(entry.config, data.spec, device, where=f"entries[{entry.name}].config")
    if "vgg19" in model.requires():
        model.attach_vgg(vgg19_features())
    if "segmenter" in model.requires():
        model.attach_segmenter(semantic.for_data(data, device, role="training"))
    return model, seed


def vgg19_features() -> torch.nn.Module:
    """torchvision's VGG19 conv stack with the manifest's ImageNet weights (resolved, sha256-checked,
    never downloaded by torchvision itself), for perceptual losses."""
    from torchvision.models import vgg19

    from bench.features import weights
    from bench.io import offline

    path, _ = weights.resolve("vgg19", allow_download=not offline())
    net = vgg19()
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise BenchError(f"{path}: not a VGG19 state dict ({type(exc).__name__})") from None
    return net.features


def _run_entry(entry, protocol, protocol_path, data, extractor, real_feats, real_stats, fp, run_root, tracker,
               parent, device, resume, env, train_seed: int | None = None) -> results_mod.EvalResult:
    model, seed = _build_entry(entry, protocol, data, device, train_seed)
    card = model.card()
    # the training seed is tagged when there are several: the leaderboard's unit is (entry, training seed)
    child = tracker.start_run(layout.child_name(entry.name, train_seed),
                              layout.child_tags(protocol.name, fp, entry.name, entry.zoo, train_seed), parent=parent)
    result = results_mod.EvalResult(protocol.name, fp, entry.name, entry.zoo, "FAILED", env=env,
                                    train_seed=train_seed)
    run_dir = entry_dir(run_root, entry.name, train_seed)
    params = {f"config.{k}": v for k, v in card["config"].items()}
    params.update({f"params.{k}": v for k, v in card["params"].items()})
    if entry.train:
        params.update({f"train.{k}": v for k, v in entry.train.model_dump().items()})
    else:
        params["checkpoint"] = entry.checkpoint
    with _child_run(tracker, child, result, f"entry {entry.name}"):
        tracker.log_params(child, params)
        t0 = time.perf_counter()
        if entry.train:
            # Training seeds the global RNG (dropout and friends use it); keep that inside this entry.
            with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                monitor = fid_monitor(extractor, real_stats, protocol, entry.fit, entry.train.eval_n,
                                      derive(seed, "monitor")) if entry.train.eval_every else None
                outcome = train_entry(model, data.train_images, entry.train, run_dir, seed, fp,
                                      entry.name, lambda losses, step: tracker.log_metrics(
                                          child, {k if k.startswith("train/") else f"loss/{k}": v
                                                  for k, v in losses.items()}, step), resume,
                                      entry.fit, data.train_labels, monitor, dist.current(), data)
            result.checkpoint, result.checkpoint_sha256 = str(outcome.checkpoint), outcome.checkpoint_sha256
            tracker.log_artifact(child, outcome.grid)
            result.info["resumed_from_step"] = outcome.resumed_from
            if outcome.best:
                result.info["best"] = outcome.best
        else:
            path = resolve_checkpoint(entry.checkpoint, protocol_path)
            payload = checkpoint.read(path)
            checkpoint.check_config(payload, model, path)
            checkpoint.load_into(payload, model, path, weights_only=True)
            result.checkpoint, result.checkpoint_sha256 = str(path), sha256_file(path)
            grid = run_dir / "samples.png"
            fixed_z = model.sample_latent(GRID, torch.Generator().manual_seed(derive(seed, "fixed-noise")))
            tracker.log_artifact(child, save_grid(model, fixed_z, grid, data))
        result.timings["train_s"] = time.perf_counter() - t0
        # The family's sampling figures (StyleGAN: truncation, mixing, noise, interpolation) from the
        # final weights, seeded per entry, attached to the run beside the sample grid.
        figures = model.figures(run_dir / "figures", derive(seed, "figures"))
        if figures:
            for path in figures.values():
                tracker.log_artifact(child, path, "figures")
            result.info["figures"] = {k: str(v) for k, v in figures.items()}
        _score(result, tracker, child, model, extractor, real_feats, real_stats, protocol, entry.fit, data,
               dist.current())
        tracker.set_tags(child, {layout.CHECKPOINT: result.checkpoint,
                                 layout.CHECKPOINT_SHA256: result.checkpoint_sha256})
    return result


def _score(result, tracker, child, model, extractor, real_feats, real_stats, protocol, fit, data, world,
           unavailable: dict[str, str] | None = None) -> None:
    """Evaluate `model` into `result` (metrics, eval time, unavailable metrics) and log the scores to the child run."""
    t0 = time.perf_counter()
    unavailable = {} if unavailable is None else unavailable
    result.metrics = evaluate(model, extractor, real_feats, real_stats, protocol, fit, unavailable, data, world)
    if unavailable:
        result.info["unavailable"] = unavailable
        tracker.set_tags(child, layout.unavailable_tags(unavailable))
    result.timings["eval_s"] = time.perf_counter() - t0
    flat = {}
    for k, v in result.metrics.items():
        flat[k] = v["mean"]
        if v["std"] is not None:  # undefined with one evaluation seed
            flat[f"{k}/seed_std"] = v["std"]
    tracker.log_metrics(child, flat)
    # Per-seed values as a history (step i = the i-th evaluation seed), for significance tests.
    for i, seed_value in enumerate(zip(*(v["per_seed"] for v in result.metrics.values()))):
        tracker.log_metrics(child, {f"per_seed/{k}": x for k, x in zip(result.metrics, seed_value)}, step=i)


def _reference_row(protocol, data, device) -> reference.ReferenceRow | None:
    """The real-data row of this run (evaluation.reference), or None when it is off or the data has none."""
    if not protocol.evaluation.reference:
        return None
    try:
        return reference.reference_row(data, device)
    except reference.NoReferenceRow as exc:
        say(f"no real-data row: {exc}")
        return None


def _run_reference(ref: reference.ReferenceRow, protocol, data, extractor, real_feats, real_stats, fp, run_root,
                   tracker, parent, env) -> results_mod.EvalResult:
    """Score the real-data row like an entry, with nothing to train or load (bench/runner/reference.py). It is
    evaluated on this process alone: the other torchrun ranks have finished their entries and do not join."""
    child = tracker.start_run(ref.name, layout.child_tags(protocol.name, fp, ref.name, ref.name, baseline=ref.name),
                              parent=parent)
    result = results_mod.EvalResult(protocol.name, fp, ref.name, ref.name, "FAILED", env=env)
    result.info["baseline"] = ref.name
    with _child_run(tracker, child, result, f"real-data row {ref.name}"):
        tracker.log_params(child, {"baseline": ref.name, "baseline.source": ref.description})
        result.timings["train_s"] = 0.0  # nothing to train or load
        fixed = None  # a translation grid shows fixed held-out inputs
        if data.task == "unconditional":
            grid_seed = derive(protocol.seed, ref.name, "grid")
            fixed = ref.source.sample_latent(GRID, torch.Generator().manual_seed(grid_seed))
        tracker.log_artifact(child, save_grid(ref.source, fixed, run_root / ref.name / "samples.png", data))
        _score(result, tracker, child, ref.source, extractor, real_feats, real_stats, protocol, "resize", data,
               dist.SINGLE, ref.unavailable(protocol.evaluation.metrics))
    return result


@contextlib.contextmanager
def _child_run(tracker, child: str, result: results_mod.EvalResult, label: str):
    """One child run's outcome, the same for an entry and for the real-data row: FINISHED when the body
    returns; FAILED with the reason when it raises EntryFailed (the protocol goes on); KILLED or FAILED,
    re-raised, on anything else."""
    try:
        yield
        result.status = "FINISHED"
        tracker.end(child, "FINISHED")
    except EntryFailed as exc:
        result.reason = str(exc)
        tracker.set_tags(child, {layout.FAILURE: result.reason})
        tracker.end(child, "FAILED")
        log.warning("%s failed: %s", label, exc)
    except KeyboardInterrupt:
        _end_quietly(tracker, child, "KILLED")
        raise
    except BaseException:
        _end_quietly(tracker, child, "FAILED")
        raise


def _end_quietly(tracker, run_id: str, status: str) -> None:
    """End an MLflow run without letting a tracking error hide the error that got us here."""
    try:
        tracker.end(run_id, status)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, exc)

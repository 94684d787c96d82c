"""`bench run`: protocol -> preflight -> data -> extractor -> (train | load) each entry -> seeded samples ->
metrics -> results.jsonl + MLflow. One direction, no back edges (DESIGN.md): preflight (bench/preflight.py),
scoring (bench/evaluation.py) and one row's train-score-log (bench/entries.py) live in their own modules;
this one orchestrates a run, on rank 0 and on the other torchrun ranks."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.data.base import pixel_digest
from bench.errors import BenchError
from bench.entries import (build_entry, end_quietly, entry_dir, reference_row_of, run_entry, run_reference,
                           runs_of)
from bench.evaluation import real_features, seed_features
from bench.features import segmenter as semantic
from bench.features.extractors import make_extractor
from bench.io import atomic_write_bytes, say
from bench.preflight import preflight, resolve_checkpoint
from bench.protocol.load import LoadedProtocol
from bench.protocol.load import fingerprint as protocol_fingerprint
from bench.reporting import table
from bench.runner import checkpoint
from bench.runner import distributed as dist
from bench.runner.seeding import derive, pick_device
from bench.runner.train import EntryFailed, train_entry
from bench.tracking import layout
from bench.tracking import results as results_mod
from bench.tracking.mlflow_tracker import Tracker, resolve_uri
from zoo import ZOO
from zoo.base import task_of


@dataclass
class RunSummary:
    fingerprint: str
    parent_run_id: str
    results: list[dict[str, Any]]
    real_cache: str  # "hit" or "miss": whether the real side's features came from the cache
    table: str

def dry_run(loaded: LoadedProtocol, world_size: int = 1) -> tuple[str, str]:
    """(the fingerprint `run_protocol` would score under, the sha256 of the pixels its data decode to), after the
    same preflight (data, weights, checkpoints) and the same extractor, without training, scoring or opening the
    store."""
    protocol = loaded.protocol
    device, data, loaded_ckpts = preflight(loaded)
    extractor = make_extractor(protocol.evaluation.extractor, data, derive(protocol.seed, "judge"), device,
                               protocol.evaluation.weights)
    return run_fingerprint(protocol, data, extractor, loaded_ckpts, device, world_size), pixel_digest(data)


def run_fingerprint(protocol, data, extractor, loaded_ckpts, device: torch.device, world_size: int = 1) -> str:
    """The fingerprint a run of `protocol` scores under, without training or loading its semantic networks (their
    identities are known from the shipped files or the local cache key): `--dry-run` and `bench export-samples`,
    which must find the run's folder. `open_session` gives the same value from the networks it loaded."""
    segmenters = semantic.fingerprint_part(semantic.identities(protocol, data, _trained_against_s(protocol), device))
    return protocol_fingerprint(protocol, data.fingerprint, extractor.sha256, loaded_ckpts, device.type,
                                segmenters, world_size)


def _trained_against_s(protocol) -> bool:
    return any(ZOO.get(e.zoo).uses_segmenter for e in protocol.entries)  # declared by the family

@dataclass
class Session:
    """What every row of one protocol run shares: the checked inputs, the store, the pinned extractor and
    segmenters, the fingerprint, and (after `load_real`) the real side's features. `bench run` builds one;
    with `--jobs`/`--executor` every unit's worker builds its own from the same protocol, and the caches
    make that a set of hits (bench/sweep.py)."""
    loaded: LoadedProtocol
    device: torch.device
    data: Any
    tracker: Tracker
    extractor: Any
    segmenters: dict[str, Any]
    fingerprint: str
    env: dict[str, Any]
    run_root: Path
    results_path: Path
    t_extractor: float
    real_feats: Any = None
    real_stats: Any = None
    real_cache: str = ""
    t_real: float = 0.0

    @property
    def protocol(self):
        return self.loaded.protocol

    def load_real(self) -> None:
        t0 = time.perf_counter()
        self.real_feats, self.real_stats, self.real_cache = real_features(
            self.extractor, self.data, self.protocol.evaluation.batch_size, self.device.type)
        self.t_real = time.perf_counter() - t0

    def record(self, result) -> dict[str, Any]:
        """Add the run-wide facts to a finished or failed row and append it to results.jsonl."""
        result.timings.update({"extractor_s": self.t_extractor, "real_features_s": self.t_real})
        result.info.update({"real_cache": self.real_cache, "extractor": self.extractor.name,
                            "extractor_sha256": self.extractor.sha256, **self.extractor.info,
                            "data_source": self.data.source})
        if self.segmenters:
            result.info["semantic_nets"] = {role: S.info for role, S in self.segmenters.items()}
        results_mod.append(self.results_path, result)
        return dataclasses.asdict(result)

    def run_entry(self, entry, train_seed, parent: str, resume: bool) -> dict[str, Any]:
        """Train (or load), score, log and record one (entry, training seed)."""
        return self.record(run_entry(entry, self.protocol, self.loaded.path, self.data, self.extractor,
                                     self.real_feats, self.real_stats, self.fingerprint, self.run_root,
                                     self.tracker, parent, self.device, resume, self.env, train_seed))

def open_session(loaded: LoadedProtocol, workdir: Path, world_size: int = 1) -> Session:
    """Preflight, the store, the extractor and segmenters (cached), and the fingerprint they give."""
    protocol = loaded.protocol
    device, data, loaded_ckpts = preflight(loaded, workdir)
    # The store is opened next (an unreachable MLflow fails here), before the expensive work.
    tracker = Tracker(resolve_uri(protocol.tracking.uri), protocol.tracking.experiment or protocol.name)
    if data.train_source:
        say(f"{protocol.name}: {len(data.train_images)} training images from {data.train_source}, "
            f"{len(data.eval_images)} held-out images from {data.source}")
    else:
        say(f"{protocol.name}: {len(data.train_images)} training / {len(data.eval_images)} held-out images from "
            f"{data.source}")
    t0 = time.perf_counter()
    extractor = make_extractor(protocol.evaluation.extractor, data, derive(protocol.seed, "judge"), device,
                               protocol.evaluation.weights)
    t_extractor = time.perf_counter() - t0
    acc = extractor.info.get("heldout_accuracy")
    say(f"extractor {extractor.name} ready" + (f" (held-out accuracy {acc:.4f}, cache {extractor.info['cache']})"
                                                if acc is not None else ""))
    segmenters = semantic.for_run(protocol, data, _trained_against_s(protocol), device)  # role -> S; {} unless maps
    for role, S in segmenters.items():
        say(f"semantic network S ({role}) ready (held-out pixel accuracy {S.info['heldout_pixel_accuracy']:.4f}, "
            f"mIoU {S.info['heldout_miou']:.4f}, {'shipped' if not S.info['local'] else 'cache ' + S.info['cache']})")
    fp = protocol_fingerprint(protocol, data.fingerprint, extractor.sha256, loaded_ckpts, device.type,
                              semantic.fingerprint_part({role: S.info["identity"] for role, S in segmenters.items()}),
                              world_size)
    env = results_mod.environment(device)
    env["world_size"] = world_size
    # The decoded pixels: the fingerprint hashes the files, and another decoder may turn them into other pixels.
    env["data_pixels"] = pixel_digest(data)
    return Session(loaded, device, data, tracker, extractor, segmenters, fp, env,
                   workdir / f"{protocol.name}-{fp[:12]}", workdir / "results.jsonl", t_extractor)

def _check_resume_checkpoints(protocol, run_root: Path, done_before: dict) -> None:
    """Every checkpoint `--resume` will continue from, read before anything is logged: a damaged one is one line
    and exit 2 with no MLflow run opened (it was found only when its unit started, after the parent run, and a
    sweep then advised running the same command again, which cannot mend a file)."""
    for entry, train_seed in runs_of(protocol):
        if entry.train is None or (entry.name, train_seed) in done_before:
            continue
        latest = entry_dir(run_root, entry.name, train_seed) / "latest.pt"
        if latest.is_file():
            checkpoint.read(latest)


def run_protocol(loaded: LoadedProtocol, workdir: Path, resume: bool = False, sweep=None) -> RunSummary:
    """Run a protocol: its (entry, training seed) units one after another in this process (and its torchrun
    peers), or, with `sweep` (a bench.sweep.Sweep), as independent jobs. A sweep always resumes: its units
    are idempotent, so a re-run skips finished units and continues interrupted ones from their checkpoints."""
    protocol = loaded.protocol
    world = dist.init_from_env(pick_device(protocol.device).type)
    if not world.is_main:
        return _follow(loaded, workdir, resume, world)
    resume = resume or sweep is not None
    s = open_session(loaded, workdir, world.size)
    fp, run_root, results_path, tracker = s.fingerprint, s.run_root, s.results_path, s.tracker
    pixels = s.env["data_pixels"]
    dist.broadcast_object((fp, list(results_mod.finished_rows(results_path, fp, pixels) if resume else [])),
                          world)  # the other ranks train under the same fingerprint and skip the same runs
    _same_pixels_on_every_rank(pixels, world)
    # A run killed inside an atomic write of the comparison table leaves its temp file; nothing reads it,
    # and this run rewrites the table, so clear it (only rank 0 writes here).
    for stale_tmp in run_root.glob(".comparison.*.tmp") if run_root.is_dir() else []:
        stale_tmp.unlink(missing_ok=True)

    stale = tracker.close_stale(fp)
    if stale:
        say(f"marked {len(stale)} MLflow run(s) of a killed earlier attempt KILLED")
    done_before = results_mod.finished_rows(results_path, fp, pixels) if resume else {}
    if resume and not world.active:  # under torchrun every rank reads the checkpoint and fails together later
        _check_resume_checkpoints(protocol, run_root, done_before)
    parent = tracker.start_run(protocol.name, layout.parent_tags(protocol.name, fp, s.env, s.extractor.name,
                                                                 s.extractor.sha256))
    summary_results: list[dict[str, Any]] = []
    status = "FAILED"
    try:
        tracker.log_text(parent, loaded.text, "protocol.yaml")
        tracker.log_params(parent, {"seed": protocol.seed, "eval.n_samples": protocol.evaluation.n_samples,
                                    "eval.seeds": protocol.evaluation.seeds, "dataset": protocol.dataset.name,
                                    "dataset.train_size": protocol.dataset.train_size,
                                    "dataset.eval_size": protocol.dataset.eval_size})
        info = {k: v for k, v in s.extractor.info.items() if isinstance(v, (int, float))}
        if info:
            tracker.log_metrics(parent, {f"extractor/{k}": v for k, v in info.items()})
        # Before any unit: with a sweep, every worker then finds the real side in the cache.
        s.load_real()
        if sweep is not None:
            summary_results = sweep.run(s, parent, done_before)
        else:
            for entry, train_seed in runs_of(protocol):
                label = entry.name if train_seed is None else f"{entry.name} (training seed {train_seed})"
                if (entry.name, train_seed) in done_before:  # --resume: finished and recorded under this fingerprint
                    say(f"entry {label}: finished earlier (results.jsonl), not redone")
                    summary_results.append(done_before[(entry.name, train_seed)])
                    continue
                say(f"entry {label} ({entry.zoo}): " + (f"training {entry.train.steps} steps" if entry.train
                                                        else f"loading {entry.checkpoint}"))
                summary_results.append(s.run_entry(entry, train_seed, parent, resume))
        # The real-data row comes last (nothing to train; a kill before it loses no training) and heads the table.
        ref = reference_row_of(protocol, s.data, s.device)
        if ref is not None and (ref.name, None) in done_before:
            say(f"{ref.name}: finished earlier (results.jsonl), not redone")
            summary_results.insert(0, done_before[(ref.name, None)])
        elif ref is not None:
            say(f"{ref.name}: scoring {ref.description} (evaluation.reference)")
            summary_results.insert(0, s.record(run_reference(ref, protocol, s.data, s.extractor, s.real_feats,
                                                              s.real_stats, fp, run_root, tracker, parent, s.env)))
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
        end_quietly(tracker, parent, status)
    return RunSummary(fp, parent, summary_results, s.real_cache, table.terminal(summary_results))

def _same_pixels_on_every_rank(pixels: str, world: dist.World) -> None:
    """Every torchrun rank decodes the data itself; on nodes whose Pillow, libjpeg-turbo or CPU differ the same files
    can give other pixels (docs/results.md, "Decoded pixels"), so the ranks would train on different data and could
    even disagree on resuming a checkpoint (a hang). All ranks compare, and all refuse together."""
    seen = dist.gather_objects(pixels, world)
    if len(set(seen)) > 1:
        raise BenchError("torchrun ranks decode the data to different pixels (sha256 "
                         + ", ".join(f"rank {r}: {p[:12]}" for r, p in enumerate(seen))
                         + "): their Pillow, libjpeg-turbo or CPU differ; run on nodes that decode alike")


def _follow(loaded: LoadedProtocol, workdir: Path, resume: bool, world: dist.World) -> RunSummary:
    """A torchrun rank other than 0: train every entry in step with rank 0 (gradients are averaged at
    every optimiser step) and generate and featurise its share of every evaluation seed; rank 0 alone
    computes the metrics, logs and writes results."""
    protocol = loaded.protocol
    device, data, _ = preflight(loaded, None)
    fp, skip = dist.broadcast_object(None, world)
    pixels = pixel_digest(data)
    _same_pixels_on_every_rank(pixels, world)
    # rank 0 built (and cached) the extractor before it sent the fingerprint: this is a cache hit
    extractor = make_extractor(protocol.evaluation.extractor, data, derive(protocol.seed, "judge"), device,
                               protocol.evaluation.weights)
    run_root = workdir / f"{protocol.name}-{fp[:12]}"
    for entry, train_seed in runs_of(protocol):
        if (entry.name, train_seed) in skip:
            continue
        model, seed = build_entry(entry, protocol, data, device, train_seed)
        try:
            if entry.train:
                with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                    train_entry(model, data.train_images, entry.train, entry_dir(run_root, entry.name, train_seed),
                                seed, fp, entry.name,
                                lambda losses, step: None, resume, entry.fit, data.train_labels, None, world, data,
                                pixels)
            else:
                path = resolve_checkpoint(entry.checkpoint, loaded.path)
                checkpoint.load_into(checkpoint.read(path), model, path, weights_only=True)
            if task_of(model) == "unconditional":
                for eval_seed in protocol.evaluation.seeds:
                    seed_features(model, extractor, protocol, eval_seed, entry.fit, world)
        except EntryFailed:
            continue  # every rank agrees on a failure (bench/runner/train.py, seed_features); rank 0 reports it
    return RunSummary(fp, "", [], "", "")

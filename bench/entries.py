"""One scored row of a protocol run: build an entry (seeded initial weights, auxiliary networks it
requires), train or load it, score it, and log it as an MLflow child run and a results.jsonl row; and the
real-data row, scored the same way with nothing to train."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import torch

from bench.data.labelmap import instance_ids_of
from bench.data.transforms import to_float
from bench.errors import BenchError, out_of_memory
from bench.evaluation import evaluate, fid_monitor
from bench.features import segmenter as semantic
from bench.io import say, sha256_file
from bench.preflight import resolve_checkpoint
from bench.protocol.load import resolved_config
from bench.runner import checkpoint
from bench.runner import distributed as dist
from bench.runner import reference
from bench.runner.seeding import derive, entry_seed
from bench.runner.train import GRID, EntryFailed, save_grid, train_entry
from bench.tracking import layout
from bench.tracking import results as results_mod
from zoo import ZOO
from zoo.base import ExternalWeights, reads_instances

log = logging.getLogger("bench")



def runs_of(protocol) -> list[tuple[Any, Any]]:
    """(entry, training seed) in run order: each entry once per training seed (None = its single default run)."""
    return [(entry, t) for entry in protocol.entries for t in protocol.train_seeds_of(entry)]

def entry_dir(run_root: Path, entry: str, train_seed: int | None) -> Path:
    """Where one training run keeps its checkpoints: `<entry>/` as always, `<entry>/seed-<t>/` per training seed."""
    return run_root / entry if train_seed is None else run_root / entry / f"seed-{train_seed}"

def build_entry(entry, protocol, data, device, train_seed: int | None = None):
    family = ZOO.get(entry.zoo)
    seed = entry_seed(protocol.seed, entry.name, train_seed)
    # Initial weights come from a seed of their own, without touching the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive(seed, "init"))
        where = f"entries[{entry.name}].config"
        model = family.build(resolved_config(entry, where), data.spec, device, where=where)
    if "vgg19" in model.requires():
        model.attach_vgg(vgg19_features())
    if "segmenter" in model.requires():
        model.attach_segmenter(semantic.for_data(data, device, role="training"))
    if reads_instances(model):  # pix2pixHD's multimodal figure: outputs for the first held-out label map
        model.attach_figure_input(to_float(data.eval_inputs[:1]), instance_ids_of(data.eval_inputs, slice(0, 1)))
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

def run_entry(entry, protocol, protocol_path, data, extractor, real_feats, real_stats, fp, run_root, tracker,
               parent, device, resume, env, train_seed: int | None = None) -> results_mod.EvalResult:
    model, seed = build_entry(entry, protocol, data, device, train_seed)
    card = model.card()
    # Scored at its random initialisation: the table's floor (layout.UNTRAINED). A warm start is not untrained,
    # and neither is a steps-0 model with nothing to train (a fixed method such as bicubic upsampling).
    untrained = bool(entry.train and entry.train.steps == 0 and not entry.train.init_from and model.optimizers())
    # the training seed is tagged when there are several: the leaderboard's unit is (entry, training seed)
    child = tracker.start_run(layout.child_name(entry.name, train_seed),
                              layout.child_tags(protocol.name, fp, entry.name, entry.zoo, train_seed,
                                                untrained=untrained), parent=parent)
    result = results_mod.EvalResult(protocol.name, fp, entry.name, entry.zoo, "FAILED", env=env,
                                    train_seed=train_seed)
    run_dir = entry_dir(run_root, entry.name, train_seed)
    params = {f"config.{k}": v for k, v in card["config"].items()}
    params.update({f"params.{k}": v for k, v in card["params"].items()})
    if entry.train:
        params.update({f"train.{k}": v for k, v in entry.train.model_dump().items()})
    else:
        params["checkpoint"] = entry.checkpoint
    with child_run(tracker, child, result, f"entry {entry.name}"):
        tracker.log_params(child, params)
        t0 = time.perf_counter()
        if entry.train and entry.train.init_from:
            # Staged training: start from the earlier entry's final weights of the same training seed. A resumed
            # run then overwrites them with its own latest checkpoint.
            source = entry_dir(run_root, entry.train.init_from, train_seed) / "latest.pt"
            if not source.is_file():
                raise EntryFailed(f"train.init_from: entry '{entry.train.init_from}' left no checkpoint "
                                  f"({source}); it must finish first")
            try:
                took = model.warm_start(checkpoint.read(source), f"entry '{entry.train.init_from}'")
            except ValueError as exc:
                raise EntryFailed(f"train.init_from: {exc}") from None
            result.info["init_from"] = took
        if entry.train:
            # Training seeds the global RNG (dropout and friends use it); keep that inside this entry.
            with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                monitor = fid_monitor(extractor, real_stats, protocol, entry.fit, entry.train.eval_n,
                                      derive(seed, "monitor")) if entry.train.eval_every else None
                outcome = train_entry(model, data.train_images, entry.train, run_dir, seed, fp,
                                      entry.name, lambda losses, step: tracker.log_metrics(
                                          child, {k if k.startswith("train/") else f"loss/{k}": v
                                                  for k, v in losses.items()}, step), resume,
                                      entry.fit, data.train_labels, monitor, dist.current(), data,
                                      env.get("data_pixels"))
            result.checkpoint, result.checkpoint_sha256 = str(outcome.checkpoint), outcome.checkpoint_sha256
            tracker.log_artifact(child, outcome.grid)
            result.info["resumed_from_step"] = outcome.resumed_from
            if outcome.best:
                result.info["best"] = outcome.best
        else:
            path = resolve_checkpoint(entry.checkpoint, protocol_path)
            if isinstance(model, ExternalWeights):  # a generator you bring (TorchScript or state dict)
                model.load_weights(path)
            else:
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
        score_into(result, tracker, child, model, extractor, real_feats, real_stats, protocol, entry.fit, data,
               dist.current())
        tracker.set_tags(child, {layout.CHECKPOINT: result.checkpoint,
                                 layout.CHECKPOINT_SHA256: result.checkpoint_sha256})
    return result

def score_into(result, tracker, child, model, extractor, real_feats, real_stats, protocol, fit, data, world,
           unavailable: dict[str, str] | None = None) -> None:
    """Evaluate `model` into `result` (metrics, eval time, unavailable metrics) and log the scores to the child run."""
    t0 = time.perf_counter()
    unavailable = {} if unavailable is None else unavailable
    facts: dict[str, str] = {}
    result.metrics = evaluate(model, extractor, real_feats, real_stats, protocol, fit, unavailable, data, world,
                              facts)
    if unavailable:
        result.info["unavailable"] = unavailable
        tracker.set_tags(child, layout.unavailable_tags(unavailable))
    if "eval_outputs" in facts:
        result.info["eval_outputs"] = facts["eval_outputs"]
        tracker.set_tags(child, {layout.EVAL_OUTPUTS: facts["eval_outputs"]})
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

def reference_row_of(protocol, data, device) -> reference.ReferenceRow | None:
    """The real-data row of this run (evaluation.reference), or None when it is off or the data has none."""
    if not protocol.evaluation.reference:
        return None
    try:
        return reference.reference_row(data, device)
    except reference.NoReferenceRow as exc:
        say(f"no real-data row: {exc}")
        return None

def run_reference(ref: reference.ReferenceRow, protocol, data, extractor, real_feats, real_stats, fp, run_root,
                   tracker, parent, env) -> results_mod.EvalResult:
    """Score the real-data row like an entry, with nothing to train or load (bench/runner/reference.py). It is
    evaluated on this process alone: the other torchrun ranks have finished their entries and do not join."""
    child = tracker.start_run(ref.name, layout.child_tags(protocol.name, fp, ref.name, ref.name, baseline=ref.name),
                              parent=parent)
    result = results_mod.EvalResult(protocol.name, fp, ref.name, ref.name, "FAILED", env=env)
    result.info["baseline"] = ref.name
    with child_run(tracker, child, result, f"real-data row {ref.name}"):
        tracker.log_params(child, {"baseline": ref.name, "baseline.source": ref.description})
        result.timings["train_s"] = 0.0  # nothing to train or load
        fixed = None  # a translation grid shows fixed held-out inputs
        if data.task == "unconditional":
            grid_seed = derive(protocol.seed, ref.name, "grid")
            fixed = ref.source.sample_latent(GRID, torch.Generator().manual_seed(grid_seed))
        tracker.log_artifact(child, save_grid(ref.source, fixed, run_root / ref.name / "samples.png", data))
        score_into(result, tracker, child, ref.source, extractor, real_feats, real_stats, protocol, "resize", data,
               dist.SINGLE, ref.unavailable(protocol.evaluation.metrics))
    return result

@contextlib.contextmanager
def child_run(tracker, child: str, result: results_mod.EvalResult, label: str):
    """One child run's outcome, the same for an entry and for the real-data row: FINISHED when the body
    returns; FAILED with the reason when it raises EntryFailed (the protocol goes on); KILLED or FAILED,
    re-raised, on anything else."""
    try:
        yield
        result.status = "FINISHED"
        tracker.end(child, "FINISHED")
    except EntryFailed as exc:
        _failed(tracker, child, result, label, str(exc))
    except KeyboardInterrupt:
        end_quietly(tracker, child, "KILLED")
        raise
    except BaseException as exc:
        # Out of memory is the machine refusing a size the user chose (a batch, n_samples): this run fails
        # with that one line and the protocol goes on. Not under torchrun: one rank leaving would hang its
        # peers in their next collective, so there the error stops every process.
        oom = None if dist.current().active else out_of_memory(exc)
        if oom is None:
            end_quietly(tracker, child, "FAILED")
            raise
        if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
            torch.cuda.empty_cache()  # the failed entry's cached blocks would crowd out the next entry
        _failed(tracker, child, result, label, oom)

def _failed(tracker, child: str, result: results_mod.EvalResult, label: str, reason: str) -> None:
    result.reason = reason
    tracker.set_tags(child, {layout.FAILURE: reason})
    tracker.end(child, "FAILED")
    log.warning("%s failed: %s", label, reason)

def end_quietly(tracker, run_id: str, status: str) -> None:
    """End an MLflow run without letting a tracking error hide the error that got us here."""
    try:
        tracker.end(run_id, status)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, exc)

"""`bench score A B`: two image folders (or a folder against reference statistics in pytorch-fid's `.npz`
layout) scored through the same extractors, float64 statistics and metric code as a protocol run.

A is the generated side, B the reference, as `fidelity --input1 A --input2 B`: FID is symmetric, KID draws
its subsets from A first with torch-fidelity's default subset seed (2020), so both agree with a
torch-fidelity call on the same weights file (tests/test_score.py). IS is computed on A alone. The FID
interval is the protocol runs' jackknife (bench/metrics/intervals.py), given with KID's when both sides have at least 20
images; with an `.npz` reference there are no
reference vectors, so FID (and IS, on A alone) are the only metrics and FID has no interval.
Precision/recall and density/coverage use their registered metric on the same features.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import torch

from bench.data.base import DataSpec, decode_image, images_under
from bench.errors import BenchError
from bench.features.stats import load_reference_stats, save_reference_stats
from bench.metrics.fid import fid_and_interval
from bench.metrics.kid import kid_summary, subset_size
from bench.runner.sampling import stream_features

TORCH_FIDELITY_SEED = 2020  # torch-fidelity's default rng_seed: KID subsets (and IS splits) draw from it
# fid and kid are computed here in torch-fidelity's order (A's subsets first); the rest through their registered
# metric with this call's features, exactly as in a protocol run.
METRICS = ("fid", "kid", "is", "precision_recall", "density_coverage")


def read_folder(path: str | Path) -> torch.Tensor:
    """Every image under a folder as uint8 (N, 3, H, W); all must share one size (extractors resize, but
    batches stack), and the folder must hold at least two."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise BenchError(f"{root}: not a folder of images")
    files = images_under(root)
    if len(files) < 2:
        raise BenchError(f"{root}: {len(files)} image(s) found; scoring needs at least 2 (.jpg, .jpeg, .png, ...)")
    arrays = [decode_image(p, "RGB") for p in files]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        first, other = sorted(sizes)[:2]
        raise BenchError(f"{root}: images differ in size ({first[2]}x{first[1]} and {other[2]}x{other[1]}); "
                         "resize them to one size first")
    return torch.from_numpy(np.stack(arrays))


def _extractor(name: str, weights: Optional[str], weights_sha256: Optional[str], resolution: int, device,
               reference: Optional[torch.Tensor] = None):
    """`reference`: the images scores will be measured against (folder B, or the folder whose statistics are
    saved). A shipped judge refuses them if it was trained on any (bench/features/extractors.py
    `check_no_overlap`); reference statistics from an .npz carry no images, so there is nothing to check."""
    from bench.data.base import DIGEST_BYTES, image_digests
    from bench.features.extractors import make_extractor
    from bench.protocol.schema import WeightsSpec

    spec = WeightsSpec(path=weights, sha256=weights_sha256) if weights else None
    digests = (lambda: image_digests(reference)) if reference is not None else (
        lambda: torch.zeros(0, DIGEST_BYTES, dtype=torch.uint8))
    data = SimpleNamespace(spec=DataSpec("folder", resolution, 3), reference_digests=digests)
    return make_extractor(name, data, 0, device, spec)


def _features(images: torch.Tensor, extractor, batch_size: int, label: str):
    batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    return stream_features(batches, extractor, label, len(images))


def score(a: str | Path, b: str | Path, metrics: tuple[str, ...] = ("fid", "kid"), extractor: str = "inception-v3-compat",
          weights: Optional[str] = None, weights_sha256: Optional[str] = None, batch_size: int = 50,
          kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = TORCH_FIDELITY_SEED,
          device: str = "cpu") -> dict[str, Any]:
    if not metrics:  # `--metrics ",,,"` scored nothing and logged an empty run
        raise BenchError(f"--metrics names no metric; choose from {', '.join(METRICS)}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise BenchError(f"--metrics: '{unknown[0]}' cannot score two folders; choose from {', '.join(METRICS)}")
    npz = str(b).endswith(".npz")
    if npz and set(metrics) - {"fid", "is"}:
        raise BenchError(f"{b}: reference statistics (mu, sigma) give FID (and IS of A) only; use --metrics fid,is or a folder")
    fake_images = read_folder(a)
    real_images = None if npz else read_folder(b)
    ext = _extractor(extractor, weights, weights_sha256, fake_images.shape[-1], torch.device(device), real_images)
    from bench.io import sha256_file, sha256_tensor

    hashes = {"a": sha256_tensor(fake_images)}
    fake, fake_stats = _features(fake_images, ext, batch_size, "A features")
    out: dict[str, Any] = {"a": str(a), "b": str(b), "n_a": len(fake_images), "extractor": ext.name,
                           "extractor_sha256": ext.sha256, "metrics": {}}
    if npz:
        real_stats, real = load_reference_stats(b), None
        hashes["b"] = sha256_file(Path(b))
        if real_stats["mu"].shape[0] != fake["pool"].shape[1]:
            raise BenchError(f"{b}: statistics of dimension {real_stats['mu'].shape[0]}, but {ext.name} features "
                             f"have {fake['pool'].shape[1]}")
    else:
        hashes["b"] = sha256_tensor(real_images)
        real, stats = _features(real_images, ext, batch_size, "B features")
        real_stats = stats.as_fid_stats()
        out["n_b"] = len(real_images)
    m = out["metrics"]
    if "fid" in metrics:
        # as a protocol scores it (bench/metrics/fid.py); too few points give no usable interval
        groups = 10 if real is not None and min(len(real["pool"]), len(fake["pool"])) >= 20 else 0
        values, _, _ = fid_and_interval(real_stats, fake_stats.as_fid_stats(),
                                        None if real is None else real["pool"], fake["pool"], groups, seed)
        m.update(values)
    if "kid" in metrics:
        size = subset_size(kid_subset_size, len(fake["pool"]), len(real["pool"]))
        # A first, as torch-fidelity; as FID's, too few points give no usable interval
        enough = min(len(real["pool"]), len(fake["pool"])) >= 20
        m.update(kid_summary(fake["pool"], real["pool"], kid_subsets, size, seed, seed if enough else None))
        m["kid/subset_size"] = size
    rest = [name for name in METRICS if name in metrics and name not in ("fid", "kid")]
    if rest:
        from bench.metrics import METRICS as REGISTRY
        from bench.metrics.base import MetricContext
        from bench.protocol.schema import EvaluationSpec

        from pydantic import ValidationError

        try:
            settings = EvaluationSpec(n_samples=len(fake_images), seeds=[seed], metrics=rest)
        except ValidationError as exc:  # e.g. precision_recall needs more images than its k neighbours
            raise BenchError(f"--metrics {','.join(rest)} on {len(fake_images)} images of {a}: "
                             f"{exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        from bench.metrics.base import MetricUnavailable

        for name in rest:
            try:
                m.update(REGISTRY.get(name).compute(MetricContext(seed, settings, fake=fake, real=real or {})))
            except MetricUnavailable as exc:  # e.g. IS in an embedding without class logits
                raise BenchError(f"--metrics {name}: {exc} ({ext.name})") from None
    out["fingerprint"] = fingerprint_of(out, hashes["a"], hashes["b"],
                                        {"metrics": sorted(metrics), "kid_subsets": kid_subsets,
                                         "kid_subset_size": kid_subset_size, "seed": seed},
                                        torch.device(device).type)
    return out


def save_stats(source: str | Path, out: str | Path, extractor: str = "inception-v3-compat",
               weights: Optional[str] = None, weights_sha256: Optional[str] = None, batch_size: int = 50,
               device: str = "cpu") -> dict[str, Any]:
    """Reference statistics of a folder (float64 mu, sigma of the extractor's pool features) in pytorch-fid's
    `.npz` layout, for scoring against it later without the images."""
    images = read_folder(source)
    ext = _extractor(extractor, weights, weights_sha256, images.shape[-1], torch.device(device), images)
    _, stats = _features(images, ext, batch_size, "features")
    sha = save_reference_stats(stats.as_fid_stats(), out)
    return {"source": str(source), "out": str(out), "n": len(images), "extractor": ext.name, "sha256": sha}


SCORE_PROTOCOL = "score"  # the protocol name (and default MLflow experiment) of `bench score` results


def fingerprint_of(result: dict[str, Any], a_hash: str, b_hash: str, settings: dict[str, Any],
                   device_type: str = "cpu") -> str:
    """What a folder score depends on: both sides' content, the extractor's weights, the metric settings, the
    interval method and the device type (so two scores share a fingerprint only when they are comparable)."""
    import hashlib
    import json

    from bench.metrics.intervals import METHOD

    blob = {"a": a_hash, "b": b_hash, "extractor": result["extractor_sha256"], "settings": settings,
            "intervals": METHOD, "kind": "folders/1"}
    if device_type != "cpu":
        # CPU and CUDA kernels differ numerically, as in a protocol's fingerprint; a CPU score keeps the
        # fingerprint it had before the device entered.
        blob["device"] = device_type
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def record(result: dict[str, Any], fingerprint: str, workdir: Path, uri: str, experiment: str = SCORE_PROTOCOL) -> str:
    """Append the score to workdir/results.jsonl and mirror it to MLflow as a protocol run with one row (the
    A folder), in the layout the leaderboard reads; returns the MLflow run id."""
    from bench.tracking import layout
    from bench.tracking import results as results_mod
    from bench.tracking.mlflow_tracker import Tracker

    results_path = Path(workdir) / "results.jsonl"
    # Checked before MLflow hears of the score: a workdir that cannot hold results.jsonl left FINISHED MLflow runs
    # with no row in the file that is the source of truth.
    if Path(workdir).exists() and not Path(workdir).is_dir():
        raise BenchError(f"--workdir {workdir} is a file; give a folder for results.jsonl")
    try:  # made now, not at the append: a parent that is a file failed only after the MLflow runs were logged
        Path(workdir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"--workdir {workdir}: cannot create it ({exc.strerror or exc})") from None
    if results_path.is_dir():
        raise BenchError(f"{results_path} is a folder; results.jsonl must be a file")
    entry = Path(result["a"]).name or "a"
    metrics = {k: {"mean": float(v), "std": None, "per_seed": [float(v)]} for k, v in result["metrics"].items()}
    env = results_mod.environment(torch.device("cpu"))
    row = results_mod.EvalResult(SCORE_PROTOCOL, fingerprint, entry, "folder", "FINISHED", metrics=metrics,
                                 info={"a": result["a"], "b": result["b"], "extractor": result["extractor"],
                                       "extractor_sha256": result["extractor_sha256"]}, env=env)
    tracker = Tracker(uri, experiment)
    parent = tracker.start_run(SCORE_PROTOCOL, layout.parent_tags(SCORE_PROTOCOL, fingerprint, env, result["extractor"],
                                                                  result["extractor_sha256"]))
    child = tracker.start_run(entry, layout.child_tags(SCORE_PROTOCOL, fingerprint, entry, "folder"), parent=parent)
    tracker.log_params(child, {"a": result["a"], "b": result["b"]})
    tracker.log_metrics(child, {k: float(v) for k, v in result["metrics"].items()})
    tracker.log_metrics(child, {f"per_seed/{k}": float(v) for k, v in result["metrics"].items()}, step=0)
    tracker.end(child, "FINISHED")
    tracker.end(parent, "FINISHED")
    results_mod.append(results_path, row)
    return parent

"""`bench perf metrics`: how much the metric suite costs on top of feature extraction, how much the
real-side cache saves against a fresh torch-fidelity call, and whether memory stays flat in N.

Printed ratios, not timed tests (timings on a shared 2-core machine are noisy):
  P1 = time(generate + extract + all metrics on N fakes, real side cached) / time(generate + extract)
       (both from the same evaluation: its generate-and-extract stream is timed on its own)
       (cached: the real features, their statistics and the metrics' real-only terms, as a second run
       finds them on disk; bench/metrics/real_side.py)
       (the metrics: METRIC_NAMES, each with its interval and FID_inf, as a protocol computes them)
  P2 = time(fresh torch-fidelity calculate_metrics on the same fakes and reals, same extractor)
       / time(bench's evaluation with cached real statistics)
  P4 = peak RSS of an evaluation at the large N / at the small N (each in a fresh process)
The generator is a seeded, untrained mnist_gan: its speed, not its quality, matters here. Without
the pretrained Inception file, Inception is timed with same-architecture stand-in weights.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.data.transforms import to_channels
from bench.errors import BenchError
from bench.features.cache import ALLOWED
from bench.features.extractors import INCEPTION, make_extractor
from bench.io import atomic_torch_save, safe_torch_load
from bench.metrics import METRICS, MetricContext, real_side
from bench.perf_floor import floor_seconds, ops_for
from bench.protocol.schema import DatasetSpec, EvaluationSpec, WeightsSpec
from bench.runner.sampling import fake_batches, stream_features

METRIC_NAMES = ["is", "fid", "kid", "precision_recall"]


def _setup(extractor_name: str, weights: str | None, sha256: str | None = None):
    from bench.data import load_dataset
    from zoo import ZOO

    data = load_dataset(DatasetSpec(name="mnist", resolution=28, channels=1, train_size=8000, eval_size=2000), 0)
    spec = WeightsSpec(path=weights, sha256=sha256) if weights else None
    if extractor_name == INCEPTION and weights is None:
        from bench.features.standin import build_test_inception_weights
        from bench.io import cache_dir

        path, sha = build_test_inception_weights(cache_dir() / "perf" / "inception-standin.pth")
        spec = WeightsSpec(path=path, sha256=sha)
    extractor = make_extractor(extractor_name, data, 0, torch.device("cpu"), spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ZOO.get("mnist_gan").build({}, data.spec)
    return data, extractor, model, spec


def _eval_spec(n: int) -> EvaluationSpec:
    return EvaluationSpec(n_samples=n, seeds=[0], batch_size=100, metrics=METRIC_NAMES)


def _reals(data) -> torch.Tensor:
    """The real side the benchmark caches: all 10,000 MNIST test images (held-out split first). Only timings
    come out of this command, so the split does not matter, and N = 10,000 fakes meet 10,000 cached reals."""
    return torch.cat([data.eval_images, data.train_images])


def _real(extractor, data, n_real: int):
    reals = _reals(data)
    feats, stats = stream_features((reals[i:i + 100] for i in range(0, n_real, 100)), extractor, "real", n_real)
    return feats, stats.as_fid_stats()


def _full_eval(model, extractor, real_feats, real_stats, n: int) -> float:
    """One evaluation of n fakes, as a protocol runs it; returns how long its generation and extraction took
    (P1's denominator, timed inside the same run as its numerator)."""
    ev = _eval_spec(n)
    t0 = time.perf_counter()
    fake, stats = stream_features(fake_batches(model, n, 0, ev.batch_size, 28, 1), extractor, "fake", n)
    extraction = time.perf_counter() - t0
    ctx = MetricContext(0, ev, fake, real_feats, stats.as_fid_stats(), real_stats)
    for name in METRIC_NAMES:
        METRICS.get(name).compute(ctx)
    return extraction


def _fidelity_time(extractor, model, data, n: int, n_real: int, spec) -> float:
    import torch_fidelity
    from torch.utils.data import Dataset

    class Images(Dataset):
        def __init__(self, x, channels):
            self.x, self.c = x, channels

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return to_channels(self.x[i:i + 1], self.c)[0]

    # Generating the fakes is inside the timed region, as it is in bench's evaluation (which generates, extracts
    # and scores): P2 compares the same work.
    t0 = time.perf_counter()
    fakes = torch.cat(list(fake_batches(model, n, 0, 100, 28, 1)))
    kwargs = dict(isc=True, fid=True, kid=True, prc=True, cuda=False, cache=False, verbose=False,
                  batch_size=100, kid_subset_size=min(1000, n, n_real), save_cpu_ram=True, prc_batch_size=250)
    if extractor.name == INCEPTION:
        channels = 3
        kwargs.update(feature_extractor=INCEPTION, feature_extractor_weights_path=spec.path)
    else:
        channels = 1
        _register_judge(extractor)
        kwargs.update(feature_extractor="bench-judge")
    torch_fidelity.calculate_metrics(input1=Images(fakes, channels), input2=Images(_reals(data)[:n_real], channels),
                                     **kwargs)
    return time.perf_counter() - t0


def _register_judge(extractor) -> None:
    """Expose the judge to torch-fidelity so P2 compares the same features both ways."""
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    class JudgeFE(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)

        def forward(self, x):
            out = extractor(x)
            return tuple(out[k] for k in self.features_list)

        @staticmethod
        def get_provided_features_list():
            return "pool", "logits"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "logits" if metric == "isc" else "pool"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

    if "bench-judge" not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor("bench-judge", JudgeFE)
    else:
        FEATURE_EXTRACTORS_REGISTRY["bench-judge"] = JudgeFE


def _peak_rss_children(extractor_name: str, spec, sizes: list[int], reals: dict[int, Path]) -> list[int]:
    """One evaluation at each N in `sizes`, each in a fresh process with one thread; their peak RSS in KiB.
    `reals[N]`: a file with the real side's features and statistics for N, as the feature cache serves them.

    Peak RSS is a property of one process, not of the machine's load, so up to one process per core runs at a
    time, largest N first (this took the P4 part from about 3 to about 1.5 minutes on two cores)."""
    code = ("import json,sys; from bench.perf import _child; a = [None if x == '-' else x for x in sys.argv[2:4]]; "
            "print(json.dumps(_child(sys.argv[1], a[0], a[1], int(sys.argv[4]), sys.argv[5])))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    running: dict[int, subprocess.Popen] = {}
    peaks: dict[int, int] = {}

    def finish(i: int) -> None:
        out, err = running.pop(i).communicate()
        if not out.strip():
            raise BenchError(f"peak-RSS child at N={sizes[i]} failed: {(err.strip().splitlines() or ['no output'])[-1]}")
        peaks[i] = json.loads(out.strip().splitlines()[-1])["max_rss_kib"]

    for i in order:
        while len(running) >= max(1, os.cpu_count() or 1):
            done = next((j for j, p in running.items() if p.poll() is not None), None)
            if done is None:
                time.sleep(0.2)
                continue
            finish(done)
        running[i] = subprocess.Popen([sys.executable, "-c", code, extractor_name, spec.path if spec else "-",
                                       (spec.sha256 or "-") if spec else "-", str(sizes[i]), str(reals[sizes[i]])],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for i in list(running):
        finish(i)
    return [peaks[i] for i in range(len(sizes))]


def _child(extractor_name: str, weights: str | None, sha256: str | None, n: int, reals: str) -> dict:
    data, extractor, model, _ = _setup(extractor_name, weights, sha256)
    # The peak of the evaluation, not of the set-up before it (loading the data and building the extractor
    # peaked higher than a whole evaluation at N = 20,000 with one thread, which hid any growth in N): Linux
    # resets a process's high-water mark when "5" is written to clear_refs. Elsewhere the lifetime peak is used.
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    real = safe_torch_load(Path(reals), allow=ALLOWED)  # the real side as a second run loads it from the cache
    with tempfile.TemporaryDirectory() as cold:  # the real-side metric terms are computed, as in a first run
        real_side.ROOT = Path(cold)
        _full_eval(model, extractor, real["features"], real["stats"], n)
    if reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"max_rss_kib": int(line.split()[1])}
    return {"max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def perf_metrics(extractor_name: str, sizes: list[int], n_small: int | None, n_large: int | None,
                 weights: str | None = None,
                 repeats: int = 3, progress=None) -> dict:
    """P1 and P2 at each N in `sizes` (each timing repeated `repeats` times, in turn, so drift in the machine's
    load hits every quantity alike) and, when `n_small` is given, P4 from fresh processes at `n_small` and
    `n_large`. Ratios are of medians."""
    data, extractor, model, spec = _setup(extractor_name, weights)
    rows = []
    for n in sizes:
        n_real = min(n, len(_reals(data)))
        # The real side of a second run: features and statistics (held here as the feature cache returns them),
        # and the real-only terms of the metrics (k-NN radii, KID's real-real sums; bench/metrics/real_side.py),
        # which an untimed first evaluation writes to the real-side cache. Each timed evaluation reads them from
        # disk, as a new process would, not from this process's memory.
        if progress:
            progress(f"{extractor.name} N={n}: the real side ({n_real} images) and a first, untimed evaluation")
        real_feats, real_stats = _real(extractor, data, n_real)
        _full_eval(model, extractor, real_feats, real_stats, n)  # also the warm-up (allocators, BLAS, threads)
        times = {"bare": [], "full": [], "fidelity": []}
        for rep in range(repeats):
            real_side.forget_memory()
            t0 = time.perf_counter()
            times["bare"].append(_full_eval(model, extractor, real_feats, real_stats, n))
            times["full"].append(time.perf_counter() - t0)
            times["fidelity"].append(_fidelity_time(extractor, model, data, n, n_real, spec))
            if progress:
                progress(f"{extractor.name} N={n} repeat {rep + 1}/{repeats}: bare {times['bare'][-1]:.2f}s, "
                         f"all metrics {times['full'][-1]:.2f}s, torch-fidelity {times['fidelity'][-1]:.2f}s")
        med = {k: statistics.median(v) for k, v in times.items()}
        if progress:
            progress(f"{extractor.name} N={n}: the arithmetic floor (the metrics' dense products and factorisations alone)")
        floor = floor_seconds(ops_for(n, n_real, real_feats["pool"].shape[1], _eval_spec(n)))
        rows.append({"n": n, "n_real": n_real, "repeats": repeats, **{f"{k}_s": _spread(v) for k, v in times.items()},
                     "P1": med["full"] / med["bare"], "P2": med["fidelity"] / med["full"],
                     "floor_s": floor, "P1_floor": (med["bare"] + floor["total"]) / med["bare"]})
    # Peak RSS of one evaluation differed between identical fresh processes by up to ~490 MiB here (glibc kept
    # churned distance blocks; docs/metrics.md): each size is measured `repeats` times, medians. All 2 x repeats
    # processes run at once (one thread each; a peak RSS does not depend on the load, and ~1.2 GB each fits).
    out = {"extractor": extractor.name, "threads": torch.get_num_threads(), "sizes": rows}
    if not n_small:
        return out
    if progress:
        progress(f"{extractor.name} peak RSS: {repeats} fresh processes at N={n_small} and {repeats} at N={n_large}")
    with tempfile.TemporaryDirectory() as tmp:
        reals = {}
        for n in (n_small, n_large):
            feats, stats = _real(extractor, data, min(n, len(_reals(data))))
            reals[n] = Path(tmp) / f"real-{n}.pt"
            atomic_torch_save({"features": feats, "stats": stats}, reals[n])
        peaks = _peak_rss_children(extractor_name, spec, [n_small, n_large] * repeats, reals)
    small, large = peaks[0::2], peaks[1::2]
    if progress:
        for rep in range(repeats):
            progress(f"{extractor.name} peak RSS repeat {rep + 1}/{repeats}: N={n_small} {small[rep] / 1024:.0f} MiB, "
                     f"N={n_large} {large[rep] / 1024:.0f} MiB")
    rss_small, rss_large = statistics.median(small), statistics.median(large)
    return {**out, "n_small": n_small, "n_large": n_large, "rss_small_mib": rss_small / 1024,
            "rss_large_mib": rss_large / 1024, "P4": rss_large / rss_small,
            "rss_small_range_mib": [min(small) / 1024, max(small) / 1024],
            "rss_large_range_mib": [min(large) / 1024, max(large) / 1024]}


def _floor_parts(floor: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {v:.3f}s" for k, v in floor.items() if k != "total")
    return f"{floor['total']:.3f}s ({parts})"


def format_report(r: dict) -> str:
    def cell(t: dict) -> str:
        return f"{t['median']:.2f}s [{t['min']:.2f}, {t['max']:.2f}]"

    lines = [f"{r['extractor']} ({r['threads']} thread(s)); times: median [min, max] over repeats"]
    for row in r["sizes"]:
        lines += [f"  N={row['n']} fakes vs {row['n_real']} cached reals, {row['repeats']} repeats",
                  f"    P1 all metrics / bare extraction = {cell(row['full_s'])} / {cell(row['bare_s'])} = "
                  f"{row['P1']:.2f}  (target <= 1.10)",
                  f"    P1 floor (bench/perf_floor.py: the dense products and factorisations these metric definitions need, "
                  f"alone) = {_floor_parts(row['floor_s'])}: (bare + {row['floor_s']['total']:.2f}s) / bare = "
                  f"{row['P1_floor']:.2f}",
                  f"    P2 fresh torch-fidelity / bench with cached reals = {cell(row['fidelity_s'])} / "
                  f"{cell(row['full_s'])} = {row['P2']:.2f}x  (target >= 1.8)"]
    if "P4" not in r:
        return "\n".join(lines + ["  P4 not measured (pass the sizes to measure it: --rss-n / --inception-rss-n)"])
    lo_s, hi_s = r["rss_small_range_mib"]
    lo_l, hi_l = r["rss_large_range_mib"]
    lines.append(f"  P4 peak RSS N={r['n_large']} / N={r['n_small']} = {r['rss_large_mib']:.0f} MiB [{lo_l:.0f}, "
                 f"{hi_l:.0f}] / {r['rss_small_mib']:.0f} MiB [{lo_s:.0f}, {hi_s:.0f}] = {r['P4']:.3f}  (target <= 1.10; "
                 f"medians of fresh processes, real side min(N, 10,000))")
    return "\n".join(lines)


SCALE_PROTOCOL = """name: perf-scale
seed: 0
dataset: {{name: mnist, resolution: 28, channels: 1, train_size: 4000, eval_size: 1000}}
entries:
  - {{name: mlp, zoo: mlp_gan, train: {{steps: {steps}, batch_size: 64, log_every: 50}}}}
  - {{name: conv, zoo: mnist_gan, train: {{steps: {steps}, batch_size: 64, log_every: 50}}}}
evaluation: {{n_samples: {n}, seeds: [0], batch_size: 250, metrics: [is, fid]}}
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


def _timed_protocol(given: str | None, built_in: Path, template: str, **fields):
    """(path, Protocol) of the protocol a throughput benchmark times: the user's, or the built-in template
    written to `built_in` with its store beside it."""
    from bench.protocol.load import load_protocol

    path = Path(given) if given else built_in
    if not given:
        path.write_text(template.format(store=built_in.parent.as_posix(), **fields))
    return path, load_protocol(path).protocol


def perf_scale(nprocs: list[int], steps: int = 300, n: int = 4000, protocol: str | None = None) -> str:
    """Throughput of `bench run --nproc N` for each N: training steps/s and evaluation images/s, from the
    timings each run records in results.jsonl (the judge is warmed first, so no run pays for it)."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path, p = _timed_protocol(protocol, tmp / "perf-scale.yaml", SCALE_PROTOCOL, steps=steps, n=n)
        base = None
        for i, nproc in enumerate([nprocs[0], *nprocs]):  # the first run only warms the caches
            work = tmp / f"w{i}"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--workdir", str(work),
                            "--nproc", str(nproc)], check=True, capture_output=True, env=os.environ.copy())
            wall = time.perf_counter() - t0
            if i == 0:
                continue
            rows = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
            train_s = sum(r["timings"]["train_s"] for r in rows)
            eval_s = sum(r["timings"]["eval_s"] for r in rows)
            steps_done = sum(e.train.steps for e in p.entries if e.train)
            images = p.evaluation.n_samples * len(p.evaluation.seeds) * len(rows)
            rate = (steps_done / train_s, images / eval_s)
            base = base or rate
            lines.append(f"  nproc {nproc}: train {rate[0]:.1f} steps/s ({rate[0] / base[0]:.2f}x), "
                         f"eval {rate[1]:.0f} images/s ({rate[1] / base[1]:.2f}x), wall {wall:.0f}s")
    return f"{p.name}: global batch fixed, steps and samples split over processes\n" + "\n".join(lines)


SWEEP_PROTOCOL = """name: perf-sweep
seed: 0
train_seeds: [0, 1]
dataset: {{name: mnist, resolution: 28, channels: 1, train_size: 4000, eval_size: 1000}}
entries:
  - {{name: mlp, zoo: mlp_gan, train: {{steps: {steps}, batch_size: 64, log_every: 50}}}}
  - {{name: conv, zoo: mnist_gan, train: {{steps: {steps}, batch_size: 64, log_every: 50}}}}
evaluation: {{n_samples: {n}, seeds: [0, 1], batch_size: 250, metrics: [is, fid, kid], reference: false}}
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


def perf_sweep(jobs: list[int], cores: int, steps: int = 300, n: int = 2000, protocol: str | None = None,
               executor: str = "local") -> str:
    """Units per hour of `bench run --jobs J` for each J, on `cores` cores: J jobs of cores // J torch threads
    each, the whole command timed (worker start-up included: a user waits for it too). A warm-up run first
    builds the judge and the real features, so every timed run finds them cached."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from bench.sweep import units_of

        path, proto = _timed_protocol(protocol, tmp / "perf-sweep.yaml", SWEEP_PROTOCOL, steps=steps, n=n)
        units = len(units_of(proto))
        # Warm-up: the same data and extractor with one training step per entry builds the judge and the real
        # side's features (their cache keys do not depend on the entries), so no timed run pays for them.
        warm = [a for e in proto.entries if e.train for a in ("--set", f"entries.{e.name}.train.steps=1")]
        subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--workdir", str(tmp / "warm"), *warm],
                       check=True, capture_output=True, env=os.environ.copy())
        base = None
        for i, j in enumerate(jobs):
            threads = max(1, cores // j)
            cmd = [sys.executable, "-m", "bench", "run", str(path), "--workdir", str(tmp / f"w{i}"),
                   "--jobs", str(j), "--threads", str(threads), "--executor", executor]
            print(f"[perf] {units} units, {j} job(s) x {threads} thread(s) ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            wall = time.perf_counter() - t0
            if done.returncode != 0:
                raise BenchError(f"bench run --jobs {j} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            rate = units / wall * 3600
            base = base or rate
            lines.append(f"  {j} job(s) x {threads} thread(s): wall {wall:.0f} s, {rate:.1f} units/hour "
                         f"({rate / base:.2f}x)")
    return (f"{units} units ({executor} executor, {cores} cores), the whole `bench run` timed\n" + "\n".join(lines))

"""Shared test setup: real data from ../shared/data, a per-session cache, nothing online."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.progress import stat_fields

REPO = Path(__file__).resolve().parent.parent


def _data_root() -> Path | None:
    env = os.environ.get("BENCH_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    shared = REPO.parent / "shared" / "data"
    return shared if shared.is_dir() else None


DATA = _data_root()

# torch-fidelity evaluates KID's kernel on float32 features and sums it in float32; bench sums in float64
# (bench/metrics/kernel_sums.py). The two agree to torch-fidelity's float32 rounding of the kernel sums, not to
# 1e-6 (measured: up to ~2e-6 relative on these tests' values). tests/test_kernel_sums.py checks the exact
# agreement with torch-fidelity's estimator run on float64 features.
KID_VS_FIDELITY = 1e-5
needs_data = pytest.mark.skipif(DATA is None, reason="real data folder ../shared/data (or $BENCH_DATA) not found")


# `make test` runs the files on two processes (pytest-xdist, --dist loadfile). A scope runs whole on one process:
# each file is its own scope, so module fixtures are built once, except the files that share the runs of
# tests/report_runs.py, which are one scope so those runs are made once (the scheduler below). Scopes start slowest
# first (measured with --durations, slowest file first; --no-loadscope-reorder keeps this order), so the long ones
# overlap instead of one of them ending the suite alone.
SHARED_RUNS = ("test_report", "test_leaderboard", "test_regression", "test_report_browser", "test_mlflow_server",
               "test_reference_row")
SLOWEST_FIRST = ("test_crash_safety", "shared-runs", "test_sweep", "test_end_to_end", "test_train_seeds",
                 "test_portable_scores", "test_score", "test_export", "test_style_eval", "test_modern_features",
                 "test_inception", "test_interval_coverage", "test_translation_data", "test_concurrency",
                 "test_cifar10")


def _threads_per_worker() -> None:
    """Under xdist with no thread count chosen, each worker takes its share of the cores rather than torch's
    default of all of them (2 workers x 2 threads on 2 cores ran the suite 1.7x slower than 2 x 1). An explicit
    OMP_NUM_THREADS (the suite must pass with 1 and with 2) is left as it is; subprocesses inherit the choice."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    share = max(1, len(os.sched_getaffinity(0)) // workers)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(share)
    import torch

    torch.set_num_threads(share)


_threads_per_worker()


def _scope(nodeid: str) -> str:
    stem = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return "shared-runs" if stem in SHARED_RUNS else stem


try:
    from xdist.scheduler import LoadFileScheduling
except ImportError:  # plain `pytest` without the test extra: one process, and no xdist hook to define
    LoadFileScheduling = None

if LoadFileScheduling is not None:
    class SharedRunsScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    def pytest_xdist_make_scheduler(config, log):
        # pytest 9 keeps a node id where xdist 3.8's loadgroup cannot add its group suffix (Node.nodeid reads
        # _id), so grouping by xdist_group marks silently does nothing; a file scheduler with our scopes does it.
        return SharedRunsScheduling(config, log) if config.getvalue("dist") == "loadfile" else None


def pytest_collection_modifyitems(config, items):
    rank = {g: i for i, g in enumerate(SLOWEST_FIRST)}
    # a stable sort: within a scope, and among the scopes not listed, collection order is kept
    items.sort(key=lambda item: rank.get(_scope(item.nodeid), len(rank)))


@pytest.fixture(scope="session", autouse=True)
def _offline_session(tmp_path_factory):
    """Tests never touch the network and never write outside their temp folders."""
    cache = tmp_path_factory.mktemp("bench-cache")
    saved = {k: os.environ.get(k) for k in ("BENCH_CACHE_DIR", "BENCH_OFFLINE", "BENCH_DATA", "TORCH_HOME",
                                             "BENCH_WEIGHTS_DIR", "MLFLOW_TRACKING_URI")}
    os.environ["BENCH_CACHE_DIR"] = str(cache)
    os.environ["BENCH_OFFLINE"] = "1"
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch-home"))
    os.environ.pop("BENCH_WEIGHTS_DIR", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if DATA is not None:
        os.environ["BENCH_DATA"] = str(DATA)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def write_protocol(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TINY = """
name: {name}
seed: {seed}
dataset: {{name: mnist, resolution: 28, channels: 1, train_size: 2000, eval_size: 500}}
entries:
{entries}
evaluation:
  n_samples: {n_samples}
  seeds: [0, 1]
  batch_size: {batch_size}
  extractor: {extractor}
  metrics: [is, fid, kid]
  kid_subset_size: 200
  kid_subsets: 20
  reference: {reference}
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


def tiny_protocol(tmp: Path, name: str = "tiny", seed: int = 0, entries: str | None = None, n_samples: int = 500,
                  batch_size: int = 100, extractor: str = "judge", store: Path | None = None,
                  reference: bool = False) -> Path:
    """A small MNIST protocol. The real-data row (evaluation.reference, on in real protocols) is off unless asked
    for: it is one more evaluation per run, and these tests count their rows and runs (tests/test_reference_row.py
    is about it; `reference` does not enter the fingerprint either way)."""
    entries = entries or """  - name: mnist_gan
    zoo: mnist_gan
    train: {steps: 300, batch_size: 32, checkpoint_every: 100, log_every: 50}
"""
    store = store or tmp
    return write_protocol(tmp / f"{name}.yaml", TINY.format(name=name, seed=seed, entries=entries,
                                                            n_samples=n_samples, batch_size=batch_size,
                                                            extractor=extractor, store=store.as_posix(),
                                                            reference=str(reference).lower()))


@pytest.fixture(scope="session")
def inception_standin(tmp_path_factory):
    """(path, sha256) of calibrated random-init Inception weights (never a pretrained number): a cheap
    RGB extractor for protocol tests, instead of training a judge:cifar10 in every session."""
    from bench.features.standin import build_test_inception_weights

    return build_test_inception_weights(tmp_path_factory.mktemp("inception") / "inception-standin.pth", seed=0)


def processes_naming(path) -> list[int]:
    """pids of live (not zombie) processes whose command line names `path`, a file unique to the calling test:
    how the signal tests find workers and torchrun ranks, which run in sessions of their own (Linux /proc)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        fields = stat_fields(int(d))
        if fields is not None and str(path).encode() in cmd and fields[0] != "Z" and int(d) != os.getpid():
            pids.append(int(d))
    return pids

"""`bench run` end to end on real MNIST: determinism, the real-feature cache, training beats no
training, and what lands in MLflow."""

import json
import os
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from tests.conftest import needs_data, tiny_protocol

pytestmark = needs_data

ENTRIES = """  - name: trained
    zoo: mnist_gan
    train: {steps: 300, batch_size: 32, checkpoint_every: 100, log_every: 50}
  - name: untrained
    zoo: mnist_gan
    train: {steps: 0}
"""


def _results(workdir):
    return {r["entry"]: r for r in map(json.loads, (workdir / "results.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    # Cold real-feature cache (the first run must miss); the judge cache is shared with the session.
    shutil.rmtree(Path(os.environ["BENCH_CACHE_DIR"]) / "features", ignore_errors=True)
    out = []
    for run in ("a", "b"):
        store = tmp / f"store-{run}"
        store.mkdir()
        proto = tiny_protocol(store, entries=ENTRIES)
        assert main(["run", str(proto), "--workdir", str(tmp / f"work-{run}")]) == 0
        out.append((store, _results(tmp / f"work-{run}")))
    return out


def test_same_protocol_twice_gives_identical_numbers(two_runs):
    (_, a), (_, b) = two_runs
    assert set(a) == set(b) == {"trained", "untrained"}
    for entry in a:
        assert a[entry]["status"] == "FINISHED"
        assert a[entry]["metrics"] == b[entry]["metrics"]
        assert a[entry]["checkpoint_sha256"] and a[entry]["fingerprint"] == b[entry]["fingerprint"]
    assert {"is", "fid", "kid/mean", "kid/std"} <= set(a["trained"]["metrics"])
    assert len(a["trained"]["metrics"]["fid"]["per_seed"]) == 2


def test_second_run_reuses_cached_real_features(two_runs):
    (_, a), (_, b) = two_runs
    assert a["trained"]["info"]["real_cache"] == "miss"
    assert b["trained"]["info"]["real_cache"] == "hit"
    assert a["trained"]["info"]["cache"] == b["trained"]["info"]["cache"] == "shipped"  # the pinned judge, never trained


def test_training_more_than_halves_judge_fid(two_runs):
    (_, a), _ = two_runs
    trained, untrained = a["trained"]["metrics"], a["untrained"]["metrics"]
    assert trained["fid"]["mean"] < 0.5 * untrained["fid"]["mean"], (trained["fid"], untrained["fid"])
    assert trained["is"]["mean"] > untrained["is"]["mean"]
    assert a["trained"]["info"]["heldout_accuracy"] > 0.95  # the judge is a real classifier


def test_mlflow_store_holds_parent_children_metrics_and_grid(two_runs):
    from mlflow.tracking import MlflowClient

    (store, results), _ = two_runs
    client = MlflowClient(tracking_uri=f"sqlite:///{store.as_posix()}/mlflow.db")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    fp = results["trained"]["fingerprint"]
    assert parents[0].data.tags["bench.fingerprint"] == fp
    assert parents[0].data.tags["bench.version.torch"]
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"comparison.md", "comparison.csv",
                                                                                "protocol.yaml"}
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"is", "fid", "kid/mean"} <= set(child.data.metrics)
        assert child.data.params["config.real_target"] == "0.9"
        assert "samples.png" in {a.path for a in client.list_artifacts(child.info.run_id)}
        assert abs(child.data.metrics["fid"] - results[child.data.tags["bench.entry"]]["metrics"]["fid"]["mean"]) < 1e-9
    trained = next(c for c in children if c.data.tags["bench.entry"] == "trained")
    history = client.get_metric_history(trained.info.run_id, "loss/G")
    assert [m.step for m in history] == [50, 100, 150, 200, 250, 300]


def test_without_a_terminal_training_reports_progress_at_each_tenth_of_its_steps(tmp_path, capsys):
    """A sweep unit's log or a CI job has no progress bar; the runner says how far it got at step counts
    (not timings), so a user watching a long run sees it move, and two runs print the same lines."""
    entries = """  - name: m
    zoo: mnist_gan
    train: {steps: 25, batch_size: 8, log_every: 5}
"""
    proto = tiny_protocol(tmp_path, entries=entries, n_samples=100)
    assert main(["run", str(proto), "--workdir", str(tmp_path / "w")]) == 0
    steps = [line.split("step ")[1].split()[0] for line in capsys.readouterr().err.splitlines()
             if line.startswith("[bench] train m: step ")]
    assert steps == [f"{k}/25" for k in (3, 6, 9, 12, 15, 18, 21, 24, 25)]

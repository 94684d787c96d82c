"""Four `bench run` processes on one SQLite MLflow store at once (two protocols, one of them three times):
all finish, every run and metric is in the store, no lock errors, and the shared caches stay sound."""

import json
import os
import subprocess
import sys

import pytest

from tests import progress
from tests.conftest import needs_data, tiny_protocol

pytestmark = needs_data

ENTRY = """  - name: e
    zoo: mlp_gan
    train: {steps: 10, batch_size: 16, log_every: 1}
"""


def test_four_concurrent_runs_on_one_sqlite_store(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    a = tiny_protocol(tmp_path, name="conc-a", entries=ENTRY, n_samples=100, store=store)
    b = tiny_protocol(tmp_path, name="conc-b", entries=ENTRY.replace("steps: 10", "steps: 12"), n_samples=100,
                      store=store)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # torch reads MKL_NUM_THREADS last
    # warm the judge cache once (both protocols share it), so the four runs race on the store
    progress.run([sys.executable, "-m", "bench", "run", str(a), "--workdir", str(tmp_path / "warm")], "warm-up run",
                 env=env, check=True)
    procs = [subprocess.Popen([sys.executable, "-m", "bench", "run", str(p), "--workdir", str(tmp_path / f"w{i}")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, p in enumerate((a, a, b, a))]
    children = [progress.Child(p) for p in procs]  # every pipe read from the start: none blocks the others
    outs = [c.wait(f"concurrent run {i}") for i, c in enumerate(children)]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert "locked" not in err.lower()
    for i in range(4):
        rows = [json.loads(line) for line in (tmp_path / f"w{i}" / "results.jsonl").read_text().splitlines()]
        assert [r["status"] for r in rows] == ["FINISHED"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store.as_posix()}/mlflow.db")
    for name, expected_parents in (("conc-a", 4), ("conc-b", 1)):  # incl. the warm-up run
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=100)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == expected_parents and len(children) == expected_parents
        assert all(r.info.status == "FINISHED" for r in runs)
        assert all({"fid", "is"} <= set(r.data.metrics) for r in children)
        steps = 10 if name == "conc-a" else 12
        assert all(len(client.get_metric_history(r.info.run_id, "loss/D")) == steps for r in children)
    # identical protocol, identical numbers, whichever process got the store first
    fids = {json.loads((tmp_path / f"w{i}" / "results.jsonl").read_text())["metrics"]["fid"]["mean"] for i in (0, 1, 3)}
    assert len(fids) == 1


def test_a_new_sqlite_store_appears_complete_or_not_at_all(tmp_path):
    """The schema is built in a temp file and linked into place: a creator killed mid-migration leaves only
    its temp file (removed by the next creator), never a half-migrated store that later runs refuse."""
    from bench.tracking.mlflow_tracker import Tracker

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    dead = db.parent / ".mlflow.db.999999999.init"  # what a SIGKILLed creator leaves behind
    dead.write_bytes(b"half a schema")
    t = Tracker(f"sqlite:///{db}", "e")
    run = t.start_run("r", {})
    t.end(run)
    assert sorted(p.name for p in db.parent.iterdir() if p.name != "mlruns") == ["mlflow.db"]
    again = Tracker(f"sqlite:///{db}", "e")  # an existing store is opened, not rebuilt
    assert again.experiment_id == t.experiment_id and again.client.get_run(run).info.status == "FINISHED"

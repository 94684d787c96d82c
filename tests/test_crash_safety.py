"""Crash safety: `bench run` killed with SIGKILL at 10 seeded moments (training, checkpoint writes,
evaluation, MLflow logging all fall inside the window), then `bench run --resume`, ends with weights and
metrics identical to an uninterrupted run; no MLflow run is left RUNNING; finished entries are not redone."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import needs_data, tiny_protocol

pytestmark = needs_data

ENTRIES = """  - name: a
    zoo: mlp_gan
    train: {steps: 60, batch_size: 16, checkpoint_every: 5, log_every: 5, lr_schedule: {kind: linear}, ema: 0.9}
  - name: b
    zoo: mnist_gan
    train: {steps: 30, batch_size: 16, checkpoint_every: 5, log_every: 5}
"""
KILLS = 10


def _cmd(proto, workdir, resume):
    return [sys.executable, "-m", "bench", "run", str(proto), "--workdir", str(workdir)] + (["--resume"] if resume else [])


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _final(workdir):
    rows = {}
    for line in (workdir / "results.jsonl").read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r["status"] == "FINISHED":
            rows[r["entry"]] = r
    ckpts = {e: torch.load(next(workdir.glob(f"*/{e}/latest.pt")), weights_only=False) for e in rows}
    return rows, ckpts


def _statuses(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store.as_posix()}/mlflow.db")
    exp = client.get_experiment_by_name("crash")
    return [r.info.status for r in client.search_runs([exp.experiment_id], max_results=1000)] if exp else []


def test_sigkill_at_ten_moments_then_resume_matches_an_uninterrupted_run(tmp_path):
    ref_store = tmp_path / "ref"
    ref_store.mkdir()
    proto = tiny_protocol(ref_store, name="crash", entries=ENTRIES, n_samples=200)
    # A first run warms the judge and feature caches; the second, timed one is the reference.
    subprocess.run(_cmd(proto, tmp_path / "warm", False), env=_env(), check=True, capture_output=True)
    t0 = time.monotonic()
    subprocess.run(_cmd(proto, tmp_path / "ref-work", False), env=_env(), check=True, capture_output=True)
    duration = time.monotonic() - t0
    ref_rows, ref_ckpts = _final(tmp_path / "ref-work")
    assert set(ref_rows) == {"a", "b"}

    rng = random.Random(1234)
    for i in range(KILLS):
        store = tmp_path / f"s{i}"
        store.mkdir()
        proto_i = tiny_protocol(store, name="crash", entries=ENTRIES, n_samples=200)
        work = tmp_path / f"w{i}"
        moment = rng.uniform(0.15, 0.9) * duration
        proc = subprocess.Popen(_cmd(proto_i, work, False), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(moment)
        assert proc.poll() is None, f"kill {i} at {moment:.1f}s came after the run had ended"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = subprocess.run(_cmd(proto_i, work, True), env=_env(), capture_output=True, text=True)
        assert done.returncode == 0, (i, moment, done.stderr[-1500:])
        rows, ckpts = _final(work)
        for e in ("a", "b"):
            assert rows[e]["metrics"] == ref_rows[e]["metrics"], (i, moment, e)
            for net, state in ref_ckpts[e]["modules"].items():
                for k, v in state.items():
                    assert torch.equal(v, ckpts[e]["modules"][net][k]), (i, moment, e, net, k)
        assert "RUNNING" not in _statuses(store), (i, moment)
        assert not list(work.rglob("*.tmp")), "no half-written file may remain"


def test_resume_does_not_redo_finished_entries(tmp_path):
    proto = tiny_protocol(tmp_path, name="crash", entries=ENTRIES, n_samples=200)
    work = tmp_path / "w"
    subprocess.run(_cmd(proto, work, False), env=_env(), check=True, capture_output=True)
    again = subprocess.run(_cmd(proto, work, True), env=_env(), capture_output=True, text=True, check=True)
    assert again.stderr.count("finished earlier (results.jsonl), not redone") == 2
    assert len((work / "results.jsonl").read_text().splitlines()) == 2  # nothing appended

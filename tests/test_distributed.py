"""Data-parallel training under torchrun (gloo on CPU) matches one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from bench.cli import main
from tests.conftest import needs_data, processes_naming, tiny_protocol
from tests import progress
from tests.progress import FileChanges, wait_for

ENTRY = """  - name: mlp
    zoo: mlp_gan
    config: {r1_gamma: 1.0}
    train: {steps: 6, batch_size: 32, checkpoint_every: 3, ema: 0.9, lr_schedule: {kind: linear}}
  - name: frozen
    zoo: mnist_gan
    train: {steps: 0}
"""


@needs_data
def test_two_gloo_processes_reach_the_weights_of_one_process(tmp_path):
    p = tiny_protocol(tmp_path, name="ddp", entries=ENTRY, n_samples=100)
    assert main(["run", str(p), "--workdir", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # torch reads MKL_NUM_THREADS last
    proc = progress.run([sys.executable, "-m", "bench", "run", str(p), "--workdir", str(tmp_path / "two"),
                         "--nproc", "2"], "bench run --nproc 2", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = torch.load(next((tmp_path / "one").glob("ddp-*/mlp/latest.pt")), weights_only=False)
    two = torch.load(next((tmp_path / "two").glob("ddp-*/mlp/latest.pt")), weights_only=False)
    assert one["step"] == two["step"] == 6
    assert len(two["global_rng_ranks"]) == 2  # every rank's RNG state is in the checkpoint
    for net in ("G", "D"):
        for k, a in one["modules"][net].items():
            b = two["modules"][net][k]
            # Float noise only: the two gradient sums run in another order, and Adam's normalised step turns
            # noise in a near-zero gradient into a visible step; measured up to 1.5e-6 here. Ranks that did not
            # average gradients would each follow their own half batch, with Adam steps of ~lr = 2e-4 apart.
            assert torch.allclose(a, b, rtol=1e-5, atol=2e-5), (net, k, (a - b).abs().max())
    # training really stepped (Adam moments are non-zero), so the agreement is not that of two inits
    assert all(s["exp_avg"].abs().sum() > 0 for s in two["optimizers"]["G"]["state"].values())
    rows = [json.loads(line) for line in (tmp_path / "two" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["env"]["world_size"] == 2  # rank 0 alone writes results
    # Per-rank BatchNorm statistics make two processes another algorithm (as another batch size would be):
    # their runs never share a fingerprint with one process's.
    assert len({r["fingerprint"] for r in rows}) == 1
    assert rows[0]["fingerprint"] != json.loads((tmp_path / "one" / "results.jsonl").read_text().splitlines()[0])[
        "fingerprint"]
    # Evaluation sharded over the two ranks (each generates and featurises half) and gathered once gives
    # the single-process scores; `frozen` has identical weights in both runs, so only sharding differs.
    single = {r["entry"]: r for r in map(json.loads, (tmp_path / "one" / "results.jsonl").read_text().splitlines())}
    double = {r["entry"]: r for r in rows}
    for key in ("fid", "kid/mean", "is"):
        a, b = single["frozen"]["metrics"][key]["mean"], double["frozen"]["metrics"][key]["mean"]
        assert abs(a - b) <= 1e-6 * abs(a), (key, a, b)
        a, b = single["mlp"]["metrics"][key]["mean"], double["mlp"]["metrics"][key]["mean"]
        assert abs(a - b) <= 1e-3 * abs(a), (key, a, b)  # trained weights agree to float tolerance


def test_nproc_needs_a_valid_protocol_first(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnope: 1\n")
    assert main(["run", str(bad), "--nproc", "2"]) == 2  # no process group is started for a bad file
    assert "unknown key 'nope'" in capsys.readouterr().err


@needs_data
@pytest.mark.skipif(sys.platform != "linux", reason="finds the ranks through /proc")
def test_sigterm_to_bench_run_nproc_stops_every_rank_and_marks_the_runs_killed(tmp_path):
    """`bench run --nproc 2` launches torchrun; a SIGTERM to it used to SIGKILL torchrun, orphaning the ranks
    (they trained on, their MLflow runs RUNNING). Now torchrun gets the SIGTERM, passes it to the ranks, and
    rank 0 marks the parent and the entry's runs KILLED before every process ends. Sent when the first
    checkpoint is on disk (a progress marker, not a timer)."""
    import signal
    import time

    from mlflow.tracking import MlflowClient

    entry = "  - {name: long, zoo: mnist_gan, train: {steps: 100000, batch_size: 16, checkpoint_every: 10}}\n"
    p = tiny_protocol(tmp_path, name="ddpterm", entries=entry, n_samples=100)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(p), "--workdir", str(tmp_path / "w"),
                                 "--nproc", "2"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        while not list((tmp_path / "w").glob("ddpterm-*/long/latest.pt.sha256")):
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.05)
        ranks, checkpoint = processes_naming(p), FileChanges(tmp_path / "w", "ddpterm-*/long/latest.pt.sha256")
        proc.send_signal(signal.SIGTERM)
        # waited for while torchrun and the ranks make progress (tests/progress.py), however slow the machine;
        # ranks that train on (a checkpoint every 10 steps) fail the test at their fourth new checkpoint
        wait_for(lambda: proc.poll() is not None, lambda: [proc.pid, *ranks], "bench run --nproc did not stop",
                 describe=lambda: log.read_text()[-2000:],
                 wrong=lambda: "the ranks trained on after SIGTERM" if checkpoint.most() > 3 else None)
        assert processes_naming(p) == [], "ranks outlived the command"  # torchrun starts them in sessions of their own
    finally:
        for pid in processes_naming(p) + ([proc.pid] if proc.poll() is None else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    assert proc.returncode == -signal.SIGTERM, log.read_text()[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.as_posix()}/mlflow.db")
    exp = client.get_experiment_by_name("ddpterm")
    statuses = sorted(r.info.status for r in client.search_runs([exp.experiment_id]))
    assert statuses == ["KILLED", "KILLED"], statuses  # not RUNNING: every rank ended, rank 0 closed its runs

"""Sweeps (`bench run --jobs N`, `--executor ray`): a protocol's (entry, training seed) units as independent
jobs. A 4-unit protocol is run sequentially, then as a sweep whose worker for one unit is SIGKILLed mid-training
(when its first checkpoint is in place: a progress marker, not a time), then as the same sweep again: the re-run
skips the three finished units, resumes the killed one from its checkpoint, and the rows, metrics and weights
equal the sequential run's, with no unit finished twice and no MLflow run left RUNNING."""

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.errors import BenchError
from bench.sweep import Sweep, Unit, UnitsUnfinished, _schedule, same_bench_argv, units_of
from tests import progress
from tests.conftest import needs_data, processes_naming, tiny_protocol
from tests.progress import FileChanges, wait_for

ENTRIES = """  - name: a
    zoo: mlp_gan
    train_seeds: [0, 1]
    train: {steps: 40, batch_size: 16, checkpoint_every: 5, log_every: 5}
  - name: b
    zoo: mnist_gan
    train_seeds: [0, 1]
    train: {steps: 30, batch_size: 16, checkpoint_every: 5, log_every: 5}
"""
UNITS = {("a", 0), ("a", 1), ("b", 0), ("b", 1)}
VICTIM = ("a", 1)  # the unit whose worker is killed


def _env():
    # One torch thread per process, sequential and sweep alike: training is bit-exact per thread count.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # torch reads MKL_NUM_THREADS last


def _cmd(proto, work, *extra):
    return [sys.executable, "-m", "bench", "run", str(proto), "--workdir", str(work), *extra]


def _rows(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines() if line.strip()]


def _weights(work: Path, entry: str, seed: int) -> dict:
    return torch.load(next(work.glob(f"*/{entry}/seed-{seed}/latest.pt")), weights_only=False)["modules"]


def _runs(store: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store.as_posix()}/mlflow.db")
    exp = client.get_experiment_by_name("sweep")
    return client.search_runs([exp.experiment_id], max_results=1000)


def _statuses(store: Path) -> list[str]:
    return [r.info.status for r in _runs(store)]


def _kill_victim_when_checkpointed(proc: subprocess.Popen, work: Path) -> None:
    """SIGKILL the victim unit's worker once its first checkpoint is in place (latest.pt is only ever replaced
    atomically, so the resumed run starts from step >= 5) and while it is still training."""
    entry, seed = VICTIM
    while True:
        assert proc.poll() is None, "the sweep ended before the victim unit checkpointed"
        marker = next(work.glob(f"*/units/{entry}-seed-{seed}.json"), None)
        latest = next(work.glob(f"*/{entry}/seed-{seed}/latest.pt"), None)
        if marker is not None and latest is not None:
            try:
                pid = json.loads(marker.read_text())["pid"]
            except (OSError, ValueError):
                continue  # (atomically replaced: a failed read is a race with nothing, retry)
            break
        time.sleep(0.005)
    rows = {(r["entry"], r["train_seed"]) for r in _rows(work)} if (work / "results.jsonl").is_file() else set()
    assert VICTIM not in rows, "the victim finished before the kill: the marker must precede its end"
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep-seq")
    proto = tiny_protocol(tmp, name="sweep", entries=ENTRIES, n_samples=200)
    subprocess.run(_cmd(proto, tmp / "work"), env=_env(), check=True, capture_output=True)
    rows = {(r["entry"], r["train_seed"]): r for r in _rows(tmp / "work")}
    assert set(rows) == UNITS
    return rows, {k: _weights(tmp / "work", *k) for k in UNITS}, proto, tmp / "work"


@needs_data
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_sweep_killed_worker_resumes_and_equals_the_sequential_run(tmp_path, sequential, executor):
    if executor == "ray":
        pytest.importorskip("ray")
    seq_rows, seq_weights, _, _ = sequential
    store = tmp_path / "store"
    store.mkdir()
    proto = tiny_protocol(store, name="sweep", entries=ENTRIES, n_samples=200)
    work = tmp_path / "work"
    args = ["--jobs", "2", "--executor", executor]
    proc = subprocess.Popen(_cmd(proto, work, *args), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _kill_victim_when_checkpointed(proc, work)
        _, err = progress.Child(proc).wait("the sweep after its worker was killed")
    finally:
        if proc.poll() is None:
            proc.kill()
    # The other units went on; the command names the unfinished one and asks for a re-run.
    assert proc.returncode == 1, err[-2000:]
    assert "1 unit(s) did not finish" in err and "a (training seed 1)" in err, err[-2000:]
    first = _rows(work)
    assert {(r["entry"], r["train_seed"]) for r in first} == UNITS - {VICTIM}

    again = subprocess.run(_cmd(proto, work, *args), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("finished earlier (results.jsonl), not redone") == 3
    rows = _rows(work)
    # No unit finished twice: one row per unit over both commands, the victim's from the re-run.
    assert sorted((r["entry"], r["train_seed"]) for r in rows) == sorted(UNITS)
    assert all(r["status"] == "FINISHED" for r in rows)
    by_unit = {(r["entry"], r["train_seed"]): r for r in rows}
    assert by_unit[VICTIM]["info"]["resumed_from_step"] >= 5  # continued from its checkpoint, not redone
    for key in UNITS:
        assert by_unit[key]["metrics"] == seq_rows[key]["metrics"], key
        assert by_unit[key]["fingerprint"] == seq_rows[key]["fingerprint"]
        assert by_unit[key]["info"]["real_cache"] == "hit"  # the coordinator computed the real side once
        assert by_unit[key]["env"]["torch_threads"] == 1
        for net, state in seq_weights[key].items():
            mine = _weights(work, *key)[net]
            assert all(torch.equal(v, mine[k]) for k, v in state.items()), (key, net)
    statuses = _statuses(store)
    assert "RUNNING" not in statuses  # the killed worker's child run was closed as KILLED on the re-run
    assert statuses.count("KILLED") == 1
    # Every unit's finished child run hangs under a parent run of this protocol (the sweep's, not the worker's own).
    from bench.tracking import layout

    runs = _runs(store)
    parents = {r.info.run_id for r in runs if layout.PARENT not in r.data.tags}
    children = [r for r in runs if r.info.status == "FINISHED" and layout.PARENT in r.data.tags]
    assert len(children) == len(UNITS) and all(r.data.tags[layout.PARENT] in parents for r in children)
    assert len(parents) == 2  # one per command: the interrupted sweep and its re-run
    if executor == "local":
        # The re-run's report covers every unit: the three it skipped come from the interrupted sweep's runs.
        import csv

        from bench.reporting.report import write_report

        rep = write_report(str(proto), out=tmp_path / "report", uri=f"sqlite:///{store / 'mlflow.db'}")
        table = {r["entry"]: r for r in csv.DictReader(open(tmp_path / "report" / "leaderboard.csv"))}
        assert {e: table[e]["n_train"] for e in ("a", "b")} == {"a": "2", "b": "2"}
        assert any(n.startswith("3 unit(s) finished under earlier run(s)") for n in rep.notes), rep.notes
        # The regression gate reads the same units: `bench check` after a resume must not call them MISSING.
        from bench import regression

        c, _, parent = regression.find_parent(str(proto), f"sqlite:///{store / 'mlflow.db'}", None)
        gated = regression.scores(c, "", parent).entries
        assert {e for e in gated if not e.startswith("real")} == {"a", "b"}, sorted(gated)
        assert all(v["status"] == "FINISHED" and v["metrics"] for v in gated.values())
        for e in ("a", "b"):  # both training runs, as the report's row counts them
            assert gated[e]["metrics"]["fid"]["n"] == int(table[e]["n_train"]) * int(table[e]["n_eval"]), e
            assert gated[e]["metrics"]["fid"]["mean"] == pytest.approx(float(table[e]["fid/mean"]), rel=1e-12)


class _FakeBackend:
    """Runs nothing: records submission order and lets the test end jobs in any order."""

    def __init__(self, slots: int, fail: set = frozenset()):
        self.slots, self.fail, self.submitted, self.futures = slots, fail, [], {}

    def submit(self, spec: dict) -> cf.Future:
        fut = cf.Future()
        key = (spec["entry"], spec["train_seed"])
        self.submitted.append(key)
        self.futures[key] = fut
        # End it at once: a failure for the ones asked to fail, an outcome otherwise.
        if key in self.fail:
            fut.set_exception(RuntimeError("worker killed by SIGKILL"))
        else:
            fut.set_result({"status": "FINISHED"})
        return fut


def test_schedule_waits_for_the_init_from_source_and_reports_dead_jobs(tmp_path):
    units = [Unit("g", 0), Unit("g", 1), Unit("l", 0, ("g", 0)), Unit("l", 1, ("g", 1))]
    backend = _FakeBackend(slots=4, fail={("g", 1)})
    unfinished = _schedule(units, backend, {}, tmp_path)
    # Four free slots, but a staged unit starts only after its source has ended.
    assert backend.submitted[:2] == [("g", 0), ("g", 1)]
    assert set(backend.submitted) == {u.key for u in units}
    assert list(unfinished) == ["g (training seed 1)"] and "SIGKILL" in unfinished["g (training seed 1)"]
    one = _FakeBackend(slots=1)
    _schedule(units, one, {}, tmp_path)
    assert one.submitted == [u.key for u in units]  # one slot: run order


def test_units_of_follows_run_order_and_init_from():
    from bench.protocol.load import load_protocol

    path = Path(__file__).resolve().parent.parent / "protocols" / "paper" / "cityscapes-pix2pixhd.yaml"
    protocol = load_protocol(path).protocol
    units = units_of(protocol)
    staged = [e for e in protocol.entries if e.train and e.train.init_from]
    assert staged, "this protocol trains pix2pixHD in stages (train.init_from)"
    for e in staged:
        mine = [u for u in units if u.entry == e.name]
        assert mine and all(u.after == (e.train.init_from, u.train_seed) for u in mine)
        first_source = min(i for i, u in enumerate(units) if u.entry == e.train.init_from)
        assert first_source < min(i for i, u in enumerate(units) if u.entry == e.name)


def test_unfinished_units_message_names_them():
    exc = UnitsUnfinished({"a (training seed 1)": "worker killed by SIGKILL"})
    assert "1 unit(s) did not finish" in str(exc) and "Run the same command again" in str(exc)


@pytest.mark.parametrize("kwargs, message", [
    ({"jobs": 0}, "--jobs must be at least 1"),
    ({"executor": "mpi"}, "--executor must be one of"),
    ({"address": "head:6379"}, "needs --executor ray"),
    ({"slurm": {"partition": "gpu"}}, "needs --executor slurm"),
    ({"threads": 0}, "--threads must be at least 1"),
])
def test_bad_sweep_options_are_one_clear_error(kwargs, message):
    with pytest.raises(BenchError, match=message):
        Sweep(**kwargs)


@needs_data
def test_cli_refuses_jobs_with_nproc_and_bad_slurm_items(tmp_path):
    proto = tiny_protocol(tmp_path, name="sweep", entries=ENTRIES, n_samples=200)
    for extra, message in ((["--jobs", "2", "--nproc", "2"], "use one or the other"),
                           (["--executor", "slurm", "--slurm", "partition"], "expected KEY=VALUE")):
        out = subprocess.run(_cmd(proto, tmp_path / "w", *extra), env=_env(), capture_output=True, text=True)
        assert out.returncode == 2, out.stderr
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert not (tmp_path / "w").exists()  # nothing written


@needs_data
def test_a_worker_that_computes_another_fingerprint_refuses(tmp_path):
    from bench.sweep import run_unit

    proto = tiny_protocol(tmp_path, name="sweep", entries=ENTRIES, n_samples=200)
    spec = {"protocol": str(proto), "overrides": [], "workdir": str(tmp_path / "w"), "parent": "x",
            "fingerprint": "0" * 64, "threads": torch.get_num_threads(), "env": {}, "entry": "a", "train_seed": 0}
    with pytest.raises(BenchError, match="computes fingerprint .* but the sweep runs 000000000000"):
        run_unit(spec)
    assert not (tmp_path / "w" / "results.jsonl").exists()


@needs_data
def test_a_worker_that_decodes_other_pixels_refuses(tmp_path):
    """A node with another Pillow, libjpeg-turbo or CPU computes the same fingerprint from the same files but may
    decode them to other pixels (docs/results.md, "Decoded pixels"): its unit would measure other images."""
    from bench.pipeline import dry_run
    from bench.protocol.load import load_protocol
    from bench.sweep import run_unit

    proto = tiny_protocol(tmp_path, name="sweep", entries=ENTRIES, n_samples=200)
    fingerprint, _ = dry_run(load_protocol(str(proto)))
    spec = {"protocol": str(proto), "overrides": [], "workdir": str(tmp_path / "w"), "parent": "x",
            "fingerprint": fingerprint, "data_pixels": "0" * 64, "threads": torch.get_num_threads(), "env": {},
            "entry": "a", "train_seed": 0}
    with pytest.raises(BenchError, match=r"decodes the data to other pixels \(sha256 [0-9a-f]{12}\) than the sweep's "
                                         r"\(000000000000\)"):
        run_unit(spec)
    assert not (tmp_path / "w" / "results.jsonl").exists()


@needs_data
def test_submitit_runs_a_unit_in_a_process_of_its_own(tmp_path, sequential):
    """The Slurm path (`--executor slurm`) minus the cluster: submitit's local executor pickles run_unit and its
    spec into a fresh process, which rebuilds the session, checks the fingerprint and, the unit being finished
    in the sequential run's results.jsonl, skips it."""
    pytest.importorskip("submitit")
    from bench.sweep import SHARED_ENV, _Submitit, unit_files

    rows, _, proto, work = sequential
    fp = rows[("a", 0)]["fingerprint"]
    backend = _Submitit(1, 1, 1, "local", {}, tmp_path / "submitit", 0.0)
    spec = {"protocol": str(proto), "overrides": [], "workdir": str(work), "parent": "unused", "fingerprint": fp,
            "threads": 1, "env": {k: os.environ[k] for k in SHARED_ENV if k in os.environ}, "entry": "a",
            "train_seed": 0, "log": str(tmp_path / "a-seed-0.log")}
    try:
        job = backend.submit(spec)
        # the job is a process of this test's: waited for while it (or anything it starts) runs
        wait_for(job.done, lambda: progress.descendants(os.getpid()), "submitit's local job")
        assert job.result() == {"status": "SKIPPED"}
    finally:
        backend.close()
    marker = json.loads(unit_files(next(work.glob(f"sweep-{fp[:12]}")), Unit("a", 0))[1].read_text())
    assert marker["pid"] != os.getpid()
    assert "finished earlier" in (tmp_path / "a-seed-0.log").read_text()


def test_a_worker_started_inside_another_checkout_runs_the_coordinators_bench(tmp_path):
    """A local worker inherits the coordinator's working directory; a `bench` package there (another checkout)
    must not replace the code the coordinator runs."""
    decoy = tmp_path / "bench"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('decoy bench imported')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as an installed `bench` would run
    # the control: `python -m` in that folder picks up the decoy
    naive = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert "decoy bench imported" in naive.stderr
    fixed = subprocess.run(same_bench_argv("bench", "--help"), cwd=tmp_path, env=env, capture_output=True,
                           text=True)
    assert fixed.returncode == 0 and "decoy" not in fixed.stderr, fixed.stderr[-1000:]
    assert fixed.stdout.startswith("usage: bench")


@needs_data
@pytest.mark.skipif(sys.platform != "linux", reason="finds the workers through /proc")
def test_sigterm_to_a_local_sweep_stops_its_workers_without_waiting_for_their_units(tmp_path):
    """SIGTERM reached only the coordinator, which then waited for every unit in flight to finish (hours, for a
    real protocol) with its workers training on. Now it passes the SIGTERM on: each worker marks its run KILLED
    and the coordinator marks the parent run KILLED and dies of the signal. Sent once both units have a
    checkpoint (progress markers, not a timer)."""
    entries = """  - name: long
    zoo: mnist_gan
    train_seeds: [0, 1]
    train: {steps: 100000, batch_size: 16, checkpoint_every: 10}
"""
    proto = tiny_protocol(tmp_path, name="sweep", entries=entries, n_samples=100)
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(_cmd(proto, tmp_path / "w", "--jobs", "2", "--threads", "1"), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        while len(list((tmp_path / "w").glob("sweep-*/long/seed-*/latest.pt.sha256"))) < 2:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.05)
        workers = processes_naming(proto)
        checkpoints = FileChanges(tmp_path / "w", "sweep-*/long/seed-*/latest.pt.sha256")
        proc.send_signal(signal.SIGTERM)
        # not the 100,000 steps: each worker closes its run and dies, then the coordinator. Waited for while they
        # make progress (tests/progress.py), however slow the machine; a worker that trains on (a checkpoint every
        # 10 steps) fails the test at its fourth new checkpoint (one in flight and one on the signal are fine).
        wait_for(lambda: proc.poll() is not None, lambda: [proc.pid, *workers], "the sweep did not stop",
                 describe=lambda: log.read_text()[-2000:],
                 wrong=lambda: "a unit trained on after SIGTERM" if checkpoints.most() > 3 else None)
        wait_for(lambda: not processes_naming(proto), lambda: processes_naming(proto), "workers did not exit",
                 wrong=lambda: "a unit trained on after the sweep ended" if checkpoints.most() > 3 else None)
        assert processes_naming(proto) == [], "workers outlived the sweep"
    finally:
        for pid in processes_naming(proto) + ([proc.pid] if proc.poll() is None else []):
            os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGTERM, log.read_text()[-2000:]
    assert sorted(_statuses(tmp_path)) == ["KILLED"] * 3  # the parent run and both units' runs

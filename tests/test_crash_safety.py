"""Crash safety: `bench run` killed with SIGKILL at 10 seeded moments (training, checkpoint writes,
evaluation, MLflow logging), then `bench run --resume`, ends with weights and metrics identical to an
uninterrupted run; no MLflow run is left RUNNING; finished entries are not redone.

Each kill waits for a progress marker of the running process (a `[bench]` phase line on its stderr, a
checkpoint sidecar listing its k-th digest, a file or MLflow artifact appearing, a results.jsonl row) and
kills the moment it is seen, so where a kill lands does not depend on how fast this machine is. Every
marker is followed by more work of the run (MLflow logging at the least), so the process is still
running when it is seen."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
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
CHECKPOINTS = {"a": 60 // 5, "b": 30 // 5}  # latest.pt writes per entry (checkpoint_every 5)
KILLS = 10


def _cmd(proto, workdir, resume):
    return [sys.executable, "-m", "bench", "run", str(proto), "--workdir", str(workdir)] + (["--resume"] if resume else [])


def _env():
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


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


class Progress:
    """What a running `bench run` has done so far: its stderr lines (read continuously by a thread, so
    the child never blocks on a full pipe) and the files it has written in its work folder and store."""

    def __init__(self, proc: subprocess.Popen, work: Path, store: Path):
        self.proc, self.work, self.store = proc, work, store
        self.lines: list[str] = []
        self.new_line = threading.Event()
        self.digests = {e: [] for e in CHECKPOINTS}  # each entry's sidecar digests, in the order first seen
        self.replaced = {e: 0 for e in CHECKPOINTS}  # times latest.pt was seen replaced
        self.finalised = {e: False for e in CHECKPOINTS}  # sidecar rewritten after the newest latest.pt
        self._latest_sig: dict[str, tuple] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self.new_line.set()

    def close(self) -> None:
        self._reader.join(timeout=30)
        self.proc.stderr.close()

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def entry_file(self, entry: str, name: str) -> Path | None:
        return next(self.work.glob(f"*/{entry}/{name}"), None)

    def rows(self) -> int:
        try:
            return (self.work / "results.jsonl").read_text().count("\n")
        except FileNotFoundError:
            return 0

    def artifact(self, name: str) -> bool:
        return next((self.store / "mlruns").glob(f"*/artifacts/{name}"), None) is not None

    def update(self) -> None:
        """Take in what changed since the last look (the checkpoint itself is never read while written:
        its sidecar names the digest of each write as it starts, latest.pt is replaced atomically)."""
        for e, seen in self.digests.items():
            side = self.entry_file(e, "latest.pt.sha256")
            try:
                first = side.read_text().split()[0] if side else None  # sidecars are replaced atomically
            except (OSError, IndexError):
                first = None
            if first and (not seen or seen[-1] != first):
                seen.append(first)
            latest = self.entry_file(e, "latest.pt")
            try:
                st = latest.stat() if latest else None
            except OSError:
                st = None
            if st is not None and self._latest_sig.get(e) != (st.st_ino, st.st_mtime_ns):
                self._latest_sig[e] = (st.st_ino, st.st_mtime_ns)
                self.replaced[e] += 1
            try:  # the sidecar is written before latest.pt's temp file and rewritten after its rename
                self.finalised[e] = st is not None and side is not None and side.stat().st_mtime_ns > st.st_mtime_ns
            except OSError:
                self.finalised[e] = False


def _moments(rng: random.Random) -> list[tuple[str, object]]:
    """KILLS (description, marker) pairs, one per phase of the run in order; the seed picks the marker
    inside each phase. A marker is a predicate of a Progress."""
    ka, kb = rng.randint(1, CHECKPOINTS["a"] - 1), rng.randint(1, CHECKPOINTS["b"] - 1)
    ra, rb = rng.randint(1, CHECKPOINTS["a"] - 1), rng.randint(1, CHECKPOINTS["b"] - 1)
    phases = [
        [("data loaded, store open: judge loading", lambda p: p.said("[bench] crash: ")),
         ("judge ready: MLflow parent run starting", lambda p: p.said("[bench] extractor "))],
        [("MLflow parent run logging params after protocol.yaml", lambda p: p.artifact("protocol.yaml")),
         ("entry a: MLflow child run starting, params", lambda p: p.said("[bench] entry a ("))],
        [(f"entry a: writing checkpoint {ka} of {CHECKPOINTS['a']}", lambda p: len(p.digests["a"]) >= ka)],
        [(f"entry a: training steps after checkpoint {ra}",
          lambda p: p.replaced["a"] >= ra and p.finalised["a"])],
        [("entry a: MLflow grid artifact, evaluation", lambda p: p.entry_file("a", "samples.png") is not None)],
        [("entry a recorded in results.jsonl: MLflow child run b starting", lambda p: p.rows() >= 1),
         ("entry b: MLflow child run starting, params", lambda p: p.said("[bench] entry b ("))],
        [(f"entry b: writing checkpoint {kb} of {CHECKPOINTS['b']}", lambda p: len(p.digests["b"]) >= kb)],
        [(f"entry b: checkpoint {rb} renamed into place, its sidecar being rewritten",
          lambda p: p.replaced["b"] >= rb),
         (f"entry b: training steps after checkpoint {rb}", lambda p: p.replaced["b"] >= rb and p.finalised["b"])],
        [("entry b: MLflow grid artifact, evaluation", lambda p: p.entry_file("b", "samples.png") is not None)],
        [("both entries recorded: MLflow logging of the comparison, parent run ending", lambda p: p.rows() >= 2)],
    ]
    assert len(phases) == KILLS
    return [rng.choice(options) for options in phases]


def _kill_at(proc: subprocess.Popen, progress: Progress, marker, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to `proc` as soon as `marker` holds; fail if the run ended without reaching it."""
    while True:
        ended = proc.poll() is not None
        progress.update()
        if marker(progress):
            break
        assert not ended, "the run ended before the marker: a marker must precede the end of every run"
        progress.new_line.wait(0.005)  # wakes at once for a stderr line; files are looked at every 5 ms
        progress.new_line.clear()
    assert proc.poll() is None, "the marker was seen only after the run had ended"
    proc.send_signal(sig)
    proc.wait()


def test_sigkill_at_ten_moments_then_resume_matches_an_uninterrupted_run(tmp_path):
    ref_store = tmp_path / "ref"
    ref_store.mkdir()
    proto = tiny_protocol(ref_store, name="crash", entries=ENTRIES, n_samples=200)
    # The uninterrupted reference (it also warms the judge and feature caches the killed runs use).
    subprocess.run(_cmd(proto, tmp_path / "ref-work", False), env=_env(), check=True, capture_output=True)
    ref_rows, ref_ckpts = _final(tmp_path / "ref-work")
    assert set(ref_rows) == {"a", "b"}

    for i, (moment, marker) in enumerate(_moments(random.Random(1234))):
        store = tmp_path / f"s{i}"
        store.mkdir()
        proto_i = tiny_protocol(store, name="crash", entries=ENTRIES, n_samples=200)
        work = tmp_path / f"w{i}"
        proc = subprocess.Popen(_cmd(proto_i, work, False), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, bufsize=1)
        progress = Progress(proc, work, store)
        try:
            _kill_at(proc, progress, marker)
        except AssertionError as exc:
            raise AssertionError(f"kill {i} ({moment}): {exc}\n" + "\n".join(progress.lines[-20:])) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            progress.close()
        assert proc.returncode == -signal.SIGKILL, (i, moment)
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


def test_a_damaged_checkpoint_stops_resume_before_any_mlflow_run(tmp_path):
    """--resume reads every checkpoint it will continue from before the store hears of the run: a damaged one is
    one line and exit 2, with no new parent run (it was found only when its unit started, leaving FAILED runs)."""
    proto = tiny_protocol(tmp_path, name="crash", entries=ENTRIES, n_samples=200)
    work = tmp_path / "w"
    subprocess.run(_cmd(proto, work, False), env=_env(), check=True, capture_output=True)
    (work / "results.jsonl").unlink()  # as if killed before scoring: both units resume from their checkpoints
    (latest,) = list(work.glob("crash-*/a/latest.pt"))
    with open(latest, "ab") as f:
        f.write(b"\0")
    runs_before = len(_statuses(tmp_path))
    again = subprocess.run(_cmd(proto, work, True), env=_env(), capture_output=True, text=True)
    assert again.returncode == 2, again.stderr[-2000:]
    lines = again.stderr.strip().splitlines()
    assert "modified or damaged" in lines[-1] and str(latest) in lines[-1], lines
    assert len(_statuses(tmp_path)) == runs_before  # no parent or child run was opened


def test_sigterm_marks_the_runs_killed_and_still_dies_of_sigterm(tmp_path):
    """SIGTERM (scancel, torchrun stopping its peers, `kill`) ends a run as Ctrl-C does: its MLflow runs are
    marked KILLED before the process goes, not left RUNNING until a later run of the fingerprint finds them,
    and the process still ends by the signal (what a scheduler or torchrun expects to see); --resume finishes."""
    store = tmp_path / "s"
    store.mkdir()
    proto = tiny_protocol(store, name="crash", entries=ENTRIES, n_samples=200)
    work = tmp_path / "w"
    proc = subprocess.Popen(_cmd(proto, work, False), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    progress = Progress(proc, work, store)
    try:
        _kill_at(proc, progress, lambda p: len(p.digests["a"]) >= 2, signal.SIGTERM)  # entry a is training
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        progress.close()
    assert proc.returncode == -signal.SIGTERM, progress.lines[-5:]
    assert progress.lines[-1] == "bench: terminated (SIGTERM)", progress.lines[-5:]
    assert sorted(_statuses(store)) == ["KILLED", "KILLED"]  # the parent run and entry a's
    done = subprocess.run(_cmd(proto, work, True), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "marked" not in done.stderr  # nothing was left RUNNING for this run to close

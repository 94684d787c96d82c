"""`bench run --jobs N` and `--executor ray|slurm`: a protocol's independent units as parallel jobs.

A unit is one (entry, training seed): train it (or load its checkpoint), score it, log its MLflow child run
under the protocol's parent run and append its results.jsonl row. Units share nothing but files, so any
job engine can run them: a pool of local processes, Ray tasks (an embedded local cluster, or an existing one
given by `--address`), or Slurm jobs through submitit. Job parallelism is for sweeps of many small models;
one big model still uses data parallelism (`--nproc`, torchrun).

Why the result equals a sequential `bench run`:
- Before any unit starts, the coordinator builds the pinned extractor and segmenters and the real side's
  features, which land in the content-hashed cache (`BENCH_CACHE_DIR`). Every worker rebuilds its session
  from the same protocol and finds them there (on a cluster the cache must be on a shared path), and checks
  that it computes the coordinator's fingerprint and decodes the data to the coordinator's pixels: a worker with
  other data, weights or packages, or whose Pillow, libjpeg-turbo or CPU decode the files differently, refuses.
- Each unit is seeded by (protocol seed, entry, training seed) alone, so where and when it runs does not
  matter. Training is bit-exact only for the same CPU and thread count (DESIGN.md), so each unit runs with
  the coordinator's torch thread count unless `--threads` says otherwise; its row records the count.

Units are idempotent. A unit whose FINISHED row is in results.jsonl under this fingerprint (and pixels) is skipped; any
other unit resumes from its latest checkpoint (a sweep always runs as `--resume`). A worker that dies
(killed, pre-empted, out of memory) costs only its own unit: the others go on, the command ends with exit
status 1 naming the unfinished units, and the same command run again finishes them.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from bench.errors import BenchError, Terminated, die_of_sigterm, error_line, sigterm_as_interrupt
from bench.io import atomic_write_bytes, say
from bench.tracking import results as results_mod

EXECUTORS = ("local", "ray", "slurm", "submitit-local")
# What a worker must see as the coordinator does: where data, weights and cached features live, and the store.
SHARED_ENV = ("BENCH_CACHE_DIR", "BENCH_DATA", "BENCH_OFFLINE", "BENCH_WEIGHTS_DIR", "MLFLOW_TRACKING_URI",
              "TORCH_HOME", "GIT_PYTHON_REFRESH")
# submitit's own names for resources; any other `--slurm KEY=VALUE` is a Slurm option (slurm_KEY).
SUBMITIT_GENERIC = {"timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "nodes", "tasks_per_node", "name",
                    "stderr_to_stdout"}
SLURM_TIMEOUT_MIN = 4 * 60  # submitit's own default is 5 minutes, too short for any training


class UnitsUnfinished(Exception):
    """Some units' jobs ended without a row (killed, crashed): the same command run again resumes them."""

    def __init__(self, unfinished: dict[str, str]):
        self.unfinished = unfinished
        lines = "; ".join(f"{label}: {why}" for label, why in unfinished.items())
        super().__init__(f"{len(unfinished)} unit(s) did not finish ({lines}). Run the same command again to "
                         "resume them; finished units are not redone")


@dataclass(frozen=True)
class Unit:
    entry: str
    train_seed: Optional[int]
    after: Optional[tuple[str, Optional[int]]] = None  # train.init_from: this unit starts from that one's weights

    @property
    def key(self) -> tuple[str, Optional[int]]:
        return (self.entry, self.train_seed)

    @property
    def label(self) -> str:
        """File-name form: `b`, `b-seed-1`."""
        return self.entry if self.train_seed is None else f"{self.entry}-seed-{self.train_seed}"

    def __str__(self) -> str:
        return self.entry if self.train_seed is None else f"{self.entry} (training seed {self.train_seed})"


def units_of(protocol) -> list[Unit]:
    """The protocol's units in run order (the order of a sequential run and of its table)."""
    from bench.entries import runs_of

    out = []
    for entry, t in runs_of(protocol):
        source = entry.train.init_from if entry.train else None
        out.append(Unit(entry.name, t, (source, t) if source else None))
    return out


def unit_files(run_root: Path, unit: Unit) -> tuple[Path, Path]:
    """(log, marker) of a unit: its worker's output, and who runs it (pid, host; written when it starts)."""
    folder = run_root / "units"
    return folder / f"{unit.label}.log", folder / f"{unit.label}.json"


@dataclass
class Sweep:
    """How `bench run` spreads its units (bench/cli.py builds it from --jobs/--executor/...)."""
    jobs: Optional[int] = None  # units in flight at once; None: as many as the executor can take
    executor: str = "local"
    overrides: list[str] = field(default_factory=list)  # the command's --set items, replayed by every worker
    threads: Optional[int] = None  # torch threads per unit; None: this process's count
    address: Optional[str] = None  # Ray cluster to join; None: start an embedded one
    slurm: dict[str, str] = field(default_factory=dict)
    gpus_per_job: float = 0.0

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise BenchError(f"--executor must be one of {', '.join(EXECUTORS)}, got '{self.executor}'")
        if self.jobs is not None and self.jobs < 1:
            raise BenchError(f"--jobs must be at least 1, got {self.jobs}")
        if self.threads is not None and self.threads < 1:
            raise BenchError(f"--threads must be at least 1, got {self.threads}")
        if self.address and self.executor != "ray":
            raise BenchError("--address names a Ray cluster: it needs --executor ray")
        if self.slurm and self.executor not in ("slurm", "submitit-local"):
            raise BenchError("--slurm KEY=VALUE sets Slurm options: it needs --executor slurm")

    def run(self, session, parent: str, done_before: dict) -> list[dict[str, Any]]:
        """Run every unit not finished before as a job; return the rows in run order, or raise
        UnitsUnfinished when a job ended without its row."""
        units = units_of(session.protocol)
        threads = self.threads or torch.get_num_threads()
        todo = [u for u in units if u.key not in done_before]
        for u in units:
            if u.key in done_before:
                say(f"unit {u}: finished earlier (results.jsonl), not redone")
        results_path = session.results_path
        start = results_path.stat().st_size if results_path.is_file() else 0
        (session.run_root / "units").mkdir(parents=True, exist_ok=True)
        base = {"protocol": str(session.loaded.path.resolve()), "overrides": list(self.overrides),
                "workdir": str(results_path.parent.resolve()), "parent": parent,
                "fingerprint": session.fingerprint, "data_pixels": session.env["data_pixels"], "threads": threads,
                "env": {k: os.environ[k] for k in SHARED_ENV if k in os.environ}}
        unfinished: dict[str, str] = {}
        if todo:
            backend = _backend(self, threads, len(todo), session)
            say(f"{len(todo)} unit(s) as {backend.describe} ({threads} torch thread(s) each); logs in "
                f"{session.run_root / 'units'}")
            stopping = False
            try:
                unfinished = _schedule(todo, backend, base, session.run_root)
            except KeyboardInterrupt as exc:
                # Ctrl-C reached the local workers too (one process group); SIGTERM (kill, a scheduler's stop)
                # reached only this process, so it is passed on. Either way the units in flight are not waited
                # for: each marks its own MLflow run KILLED, and a re-run resumes them from their checkpoints.
                stopping = True
                backend.stop(forward_sigterm=isinstance(exc, Terminated))
                raise
            finally:
                backend.close(wait=not stopping)
            if unfinished:  # a dead worker left its child run RUNNING: close it now (a re-run would too)
                session.tracker.close_stale(session.fingerprint)
        rows = _rows_since(results_path, start, session.fingerprint, session.env["data_pixels"])
        missing = {str(u): unfinished.get(str(u), "its job ended without a result row")
                   for u in todo if u.key not in rows}
        if missing:
            raise UnitsUnfinished(missing)
        return [done_before.get(u.key) or rows[u.key] for u in units]


def _schedule(todo: list[Unit], backend, base: dict, run_root: Path) -> dict[str, str]:
    """Keep up to backend.slots units in flight, a unit only after the unit it starts from has ended;
    return {unit: why} for jobs that raised or died."""
    pending, running = list(todo), {}
    ended, unfinished = 0, {}
    while pending or running:
        busy = {u.key for u in pending} | {u.key for u in running.values()}
        for u in list(pending):
            if len(running) >= backend.slots:
                break
            if u.after is not None and u.after in busy:
                continue  # its init_from source has not ended yet
            pending.remove(u)
            log, _ = unit_files(run_root, u)
            running[backend.submit({**base, "entry": u.entry, "train_seed": u.train_seed, "log": str(log)})] = u
            say(f"unit {u}: started")
        if not running:
            break
        done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
        for fut in done:
            u = running.pop(fut)
            ended += 1
            try:
                outcome = fut.result()
                say(f"unit {u}: {outcome.get('status', 'ended')} [{ended}/{len(todo)}]")
            except Exception as exc:  # noqa: BLE001 - a dead worker is reported, the other units go on
                why = _why(exc)
                unfinished[str(u)] = f"{why}; log {unit_files(run_root, u)[0]}"
                say(f"unit {u}: did not finish ({why}) [{ended}/{len(todo)}]")
    return unfinished


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _last_line(path: str) -> str:
    try:
        lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(empty log)"


def _rows_since(path: Path, offset: int, fingerprint: str, pixels: str = "") -> dict[tuple, dict[str, Any]]:
    """The rows of this fingerprint and these decoded pixels appended after byte `offset` (this sweep's), newest
    per unit."""
    if not path.is_file():
        return {}
    with open(path, "rb") as f:
        f.seek(offset)
        tail = f.read().decode("utf-8", errors="replace")
    rows = {}
    for line in tail.splitlines():
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        # rows of this fingerprint the workers appended; another writer's line is not one (the run checked every
        # row of the fingerprint when it started: results.finished_rows)
        if (isinstance(row, dict) and row.get("fingerprint") == fingerprint and isinstance(row.get("entry"), str)
                and isinstance(row.get("train_seed"), (int, type(None)))):
            env = row.get("env")
            if isinstance(env, dict) and results_mod.other_pixels(env.get("data_pixels"), pixels):
                continue  # another sweep's worker, on a node that decodes the data to other pixels
            rows[(row["entry"], row.get("train_seed"))] = row
    return rows


# ---- executors: each turns a unit spec into a concurrent.futures.Future of run_unit's outcome ----------------

# `python -m bench.sweep` would put the working directory first on sys.path, so a worker started inside another
# checkout (or any folder holding a `bench` package) would run that code instead of the coordinator's. The worker
# replaces that entry with the folder this `bench` was imported from (`-P` would do it, but needs Python 3.11).
_BOOT = ("import runpy, sys; sys.path[0] = sys.argv.pop(1); "
         "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)")
_ROOT = str(Path(__file__).resolve().parent.parent)


def same_bench_argv(module: str, *args: str) -> list[str]:
    """The command that runs `module` as __main__ with this process's interpreter and this `bench`."""
    return [sys.executable, "-c", _BOOT, _ROOT, module, *args]


class _Local:
    """Each unit in its own `python -m bench.sweep` process, at most `jobs` at once (a killed process costs
    only its unit; a shared process pool would break for every unit)."""

    def __init__(self, jobs: int, threads: int, device_type: str):
        self.slots = jobs
        self.describe = f"{jobs} local job(s)"
        self.threads = threads
        self.pool = cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bench-unit")
        # On a machine with several GPUs each job slot gets its own (round robin), as Ray's num_gpus would.
        gpus = torch.cuda.device_count() if device_type == "cuda" else 0
        self.free_gpus = list(range(jobs)) if gpus > 1 else []
        self.gpus = gpus
        self.procs: set[subprocess.Popen] = set()  # workers in flight, for stop()

    def submit(self, spec: dict) -> cf.Future:
        return self.pool.submit(self._run, spec)

    def stop(self, forward_sigterm: bool) -> None:
        for proc in list(self.procs):
            if forward_sigterm and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def _run(self, spec: dict) -> dict:
        env = {**os.environ, **spec["env"], "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        slot = self.free_gpus.pop(0) if self.free_gpus else None
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
        try:
            with subprocess.Popen(same_bench_argv(__name__, json.dumps(spec)), env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
                self.procs.add(proc)
                try:
                    stdout, _ = proc.communicate()
                finally:
                    self.procs.discard(proc)
            out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout)
        finally:
            if slot is not None:
                self.free_gpus.append(slot)
        if out.returncode < 0:
            raise RuntimeError(f"worker killed by {signal.Signals(-out.returncode).name}")
        if out.returncode != 0:
            raise RuntimeError(f"worker exited with status {out.returncode}: {_last_line(spec['log'])}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=not wait)


class _Ray:
    """Ray tasks, one fresh worker process per unit (max_calls=1: nothing carries over between units)."""

    def __init__(self, jobs: Optional[int], threads: int, n_units: int, address: Optional[str], gpus: float):
        try:
            import ray
        except ImportError:
            raise BenchError("--executor ray needs Ray: pip install 'ganbench[sweep]'") from None
        self.ray = ray
        if address:
            ray.init(address=address, log_to_driver=False)
            self.slots = jobs or n_units  # the cluster queues tasks by their CPU and GPU needs
            self.describe = f"Ray tasks on {address}"
        else:
            self.slots = jobs or max(1, (os.cpu_count() or 1) // threads)
            ray.init(num_cpus=self.slots * threads, include_dashboard=False, log_to_driver=False)
            self.describe = f"Ray tasks on an embedded local cluster ({self.slots * threads} CPUs)"
        self.remote = ray.remote(max_retries=0, max_calls=1, num_cpus=threads, num_gpus=gpus)(run_unit)

    def submit(self, spec: dict) -> cf.Future:
        return self.remote.remote(spec).future()

    def stop(self, forward_sigterm: bool) -> None:
        pass  # ray.shutdown() in close() ends the tasks; a re-run resumes their units

    def close(self, wait: bool = True) -> None:
        self.ray.shutdown()


class _Submitit:
    """Slurm jobs through submitit (`slurm`), or submitit's local processes (`submitit-local`: the same path
    without a cluster)."""

    def __init__(self, jobs: Optional[int], threads: int, n_units: int, cluster: str, options: dict[str, str],
                 folder: Path, gpus: float):
        try:
            import submitit
        except ImportError:
            raise BenchError("--executor slurm needs submitit: pip install 'ganbench[sweep]'") from None
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params: dict[str, Any] = {"timeout_min": SLURM_TIMEOUT_MIN, "cpus_per_task": threads, "name": "bench-unit"}
        if gpus:
            params["gpus_per_node"] = int(gpus)
        for k, v in options.items():
            value: Any = int(v) if v.isdigit() else v
            params[k if k in SUBMITIT_GENERIC else f"slurm_{k}"] = value
        try:
            self.executor.update_parameters(**params)
        except Exception as exc:  # noqa: BLE001 - an unknown option: one line
            raise BenchError(f"--slurm: {_why(exc)}") from None
        self.slots = jobs or n_units
        self.describe = f"{'Slurm' if cluster == 'slurm' else 'submitit local'} jobs (logs also in {folder})"
        self.waiters = cf.ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="bench-slurm")

    def submit(self, spec: dict) -> cf.Future:
        job = self.executor.submit(run_unit, spec)
        return self.waiters.submit(job.result)

    def stop(self, forward_sigterm: bool) -> None:
        pass  # Slurm jobs run on (each resumable by a re-run); only this process's waiting ends

    def close(self, wait: bool = True) -> None:
        self.waiters.shutdown(wait=wait, cancel_futures=not wait)


def _backend(sweep: Sweep, threads: int, n_units: int, session):
    if sweep.executor == "local":
        return _Local(sweep.jobs or 1, threads, session.device.type)
    if sweep.executor == "ray":
        return _Ray(sweep.jobs, threads, n_units, sweep.address, sweep.gpus_per_job)
    cluster = "slurm" if sweep.executor == "slurm" else "local"
    return _Submitit(sweep.jobs, threads, n_units, cluster, sweep.slurm, session.run_root / "units" / "submitit",
                     sweep.gpus_per_job)


# ---- the worker side -------------------------------------------------------------------------------------

def run_unit(spec: dict) -> dict:
    """Run one unit in this (worker) process: rebuild the session from the protocol, check the fingerprint,
    skip a finished unit, else train-or-resume, score, log and record it. Returns {"status": ...}."""
    from bench.pipeline import open_session
    from bench.protocol.load import load_protocol

    for k, v in spec["env"].items():
        os.environ[k] = v
    if spec.get("log"):  # this process's output, progress bars included, goes to the unit's log
        Path(spec["log"]).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 2)
        os.close(fd)
    torch.set_num_threads(spec["threads"])
    loaded = load_protocol(spec["protocol"], spec["overrides"])
    session = open_session(loaded, Path(spec["workdir"]))
    if session.fingerprint != spec["fingerprint"]:
        raise BenchError(f"worker on {socket.gethostname()} computes fingerprint {session.fingerprint[:12]} but the "
                         f"sweep runs {spec['fingerprint'][:12]}: its data, weights, packages or device differ")
    # The same files may decode to other pixels on a node with another Pillow, libjpeg-turbo or CPU (docs/results.md,
    # "Decoded pixels"): its scores would measure other images under this protocol run. (A spec from an older
    # coordinator has no digest.)
    if spec.get("data_pixels") and session.env["data_pixels"] != spec["data_pixels"]:
        ours, theirs = session.env["data_pixels"][:12], spec["data_pixels"][:12]
        raise BenchError(f"worker on {socket.gethostname()} decodes the data to other pixels (sha256 {ours}) than the "
                         f"sweep's ({theirs}): its Pillow, libjpeg-turbo or CPU differ; run this sweep on nodes that "
                         "decode alike")
    unit = Unit(spec["entry"], spec["train_seed"])
    _, marker = unit_files(session.run_root, unit)
    atomic_write_bytes(marker, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                           "threads": spec["threads"]}).encode())
    if unit.key in results_mod.finished_rows(session.results_path, session.fingerprint, session.env["data_pixels"]):
        say(f"unit {unit}: finished earlier (results.jsonl), not redone")
        return {"status": "SKIPPED"}
    entry = next((e for e in session.protocol.entries if e.name == unit.entry), None)
    if entry is None:
        raise BenchError(f"the protocol has no entry '{unit.entry}'")
    session.load_real()
    say(f"unit {unit} ({entry.zoo}): " + (f"training {entry.train.steps} steps (resuming when a checkpoint exists)"
                                          if entry.train else f"loading {entry.checkpoint}"))
    row = session.run_entry(entry, unit.train_seed, spec["parent"], resume=True)
    return {"status": row["status"], "reason": row["reason"]}


def _main(argv: list[str]) -> int:
    """`python -m bench.sweep SPEC_JSON`: one unit of a local sweep. Prints the outcome as the last stdout line."""
    try:
        with sigterm_as_interrupt():  # a stopped job (scancel, Ray, kill) marks its MLflow run KILLED first
            outcome = run_unit(json.loads(argv[0]))
    except BenchError as exc:
        print(error_line(exc), file=sys.stderr, flush=True)
        return 2
    except Terminated:
        die_of_sigterm()
        return 128 + 15
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

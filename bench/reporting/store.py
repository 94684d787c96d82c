"""Reading protocol runs back out of MLflow (any tracking URI: SQLite file or `mlflow server`).

The layout read here is the one bench/entries.py and bench/pipeline.py write, both through bench/tracking/layout.py: one
parent run per `bench run` and one child run per entry and training seed. Everything is read through
MlflowClient with an explicit URI, never through mlflow's process-wide "current tracking URI".
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from bench.errors import BenchError
from bench.tracking import layout
from bench.tracking.mlflow_tracker import check_sqlite_store, quiet_libraries

CHILD_COLUMNS = ["run_id", "parent_run_id", "experiment", "protocol", "fingerprint", "entry", "zoo",
                 "train_seed", "status", "failure", "start_time", "end_time", "metrics", "baseline", "extractor",
                 "untrained", "eval_outputs", "data_pixels"]


# MLflow's SQL store keeps a metric of ±inf as ±(largest float64) (checked with mlflow's SqlAlchemyStore: +inf is read
# back as 1.7976931348623157e+308). No score reaches that value, so the readers turn it back into the infinity
# that was logged: PSNR's +inf (an output identical to its target) would otherwise show as 1.80e+308, or overflow
# to inf in a mean and turn a sample std into NaN.
_FLOAT_MAX = sys.float_info.max


def logged_value(v: float) -> float:
    """A metric value as it was logged (±inf restored; see _FLOAT_MAX)."""
    return math.copysign(math.inf, v) if abs(v) == _FLOAT_MAX else v


def client(uri: str):
    """An MlflowClient for `uri`; an unreachable or unusable store is one clear line."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # One progress bar per downloaded grid would bury the command's own output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    quiet_libraries()
    if uri.startswith("sqlite:///"):
        _check_sqlite_store(uri, Path(uri[len("sqlite:///"):]).expanduser().resolve())
    try:
        c = MlflowClient(tracking_uri=uri)
        c.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure to open the store is the user's to fix
        raise BenchError(f"MLflow store {uri} is not usable: {_first_line(exc)}") from None
    return c


def _check_sqlite_store(uri: str, db: Path) -> None:
    """Refuse, before MLflow opens it, an SQLite path a reader would change: everything here only reads.

    MLflow writes into whatever file it is given: a missing one it creates as an empty store (a typo should be an
    error); a folder, or a file that is not an MLflow store, check_sqlite_store refuses for the writer and the
    readers alike (an empty file became a 954 KB store from `bench leaderboard --no-log`). A reader also refuses
    what only a writer may do: a store lacking tables this MLflow defines (one an older MLflow wrote) MLflow
    migrates in place on opening, by the same test (mlflow.store.db.utils._all_tables_exist)."""
    if not db.exists():
        raise BenchError(f"MLflow store {uri}: no such database file ({db}); run `bench run` first or pass --uri")
    tables = check_sqlite_store(db, uri)
    from mlflow.store.db import utils as db_utils

    missing = sorted(set(db_utils.Base.metadata.tables) - tables)
    if missing:
        named = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise BenchError(f"MLflow store {uri}: {db} lacks tables this MLflow uses ({named}; an older MLflow wrote "
                         "it?) and opening it would migrate it; it was left as it is. Back it up and run "
                         f"`mlflow db upgrade {uri}`, or read it with the MLflow version that wrote it")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def experiment_ids(c, names: Optional[list[str]] = None) -> dict[str, str]:
    """id -> name of the named experiments (all active ones when `names` is empty)."""
    if names:
        out = {}
        for name in names:
            exp = c.get_experiment_by_name(name)
            if exp is None:
                known = sorted(e.name for e in c.search_experiments())
                raise BenchError(f"no MLflow experiment '{name}' in this store; experiments: "
                                 f"{', '.join(known) or 'none'}")
            out[exp.experiment_id] = exp.name
        return out
    return {e.experiment_id: e.name for e in c.search_experiments()}


def _search(c, exp_ids: list[str], filter_string: str = "") -> list[Any]:
    runs, token = [], None
    while True:
        page = c.search_runs(exp_ids, filter_string=filter_string, max_results=1000, page_token=token,
                             order_by=["attributes.start_time DESC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def parent_runs(c, exps: dict[str, str], protocol: Optional[str] = None) -> list[Any]:
    """Protocol (parent) runs, newest first."""
    flt = (layout.tag_filter(layout.FINGERPRINT, "", "!=") if protocol is None
           else layout.tag_filter(layout.PROTOCOL, protocol))
    return [r for r in _search(c, list(exps), flt) if layout.is_parent(r.data.tags)]


def latest_parent(c, exps: dict[str, str], protocol: str) -> Any:
    """The newest FINISHED run of `protocol`, else the newest run of any status (a report notes it)."""
    runs = parent_runs(c, exps, protocol)
    if not runs:
        raise BenchError(f"no runs of protocol '{protocol}' in experiment(s) {', '.join(exps.values())}; "
                         "run `bench run` first")
    return next((r for r in runs if r.info.status == "FINISHED"), runs[0])


def get_run(c, run_id: str) -> Any:
    try:
        return c.get_run(run_id)
    except Exception as exc:  # noqa: BLE001
        raise BenchError(f"MLflow run '{run_id}' not found: {_first_line(exc)}") from None


def child_runs(c, exps: dict[str, str], fingerprint: Optional[str] = None,
               parent_run_id: Optional[str] = None) -> pd.DataFrame:
    """One row per entry run, with its run-level metrics as a dict (per-seed values are fetched later,
    only for the runs a leaderboard keeps)."""
    flt = layout.tag_filter(layout.ENTRY, "", "!=")
    if fingerprint:
        flt += f" and {layout.tag_filter(layout.FINGERPRINT, fingerprint)}"
    if parent_run_id:
        flt += f" and {layout.tag_filter(layout.PARENT, parent_run_id)}"
    rows = []
    for r in _search(c, list(exps), flt):
        t = r.data.tags
        rows.append({
            "run_id": r.info.run_id, "parent_run_id": t.get(layout.PARENT, ""),
            "experiment": exps.get(r.info.experiment_id, r.info.experiment_id),
            "protocol": t.get(layout.PROTOCOL, ""), "fingerprint": t.get(layout.FINGERPRINT, ""),
            "entry": t[layout.ENTRY], "zoo": t.get(layout.ZOO, ""),
            # Protocols that train an entry under several seeds tag each child run with its seed;
            # runs without the tag are the single default training seed.
            "train_seed": t.get(layout.TRAIN_SEED, r.data.params.get("train.seed", "")),
            "status": r.info.status, "failure": t.get(layout.FAILURE, ""),
            "start_time": r.info.start_time, "end_time": r.info.end_time,
            "metrics": {k: logged_value(v) for k, v in r.data.metrics.items()},
            "baseline": t.get(layout.BASELINE, ""),  # the real-data row: real_data or identity (reference.py)
            "untrained": layout.untrained_of(t),  # runs logged before the tag read as trained
            "eval_outputs": t.get(layout.EVAL_OUTPUTS, ""),  # identical / varying; "" = not recorded
        })
    # The feature space and the decoded pixels are run-wide facts on the parent run: one lookup per protocol run.
    parents: dict[str, tuple[str, str]] = {}
    for row in rows:
        pid = row["parent_run_id"]
        if pid and pid not in parents:
            try:
                tags = c.get_run(pid).data.tags
                parents[pid] = (tags.get(layout.EXTRACTOR, ""), tags.get(layout.DATA_PIXELS, ""))
            except Exception:  # noqa: BLE001 - a deleted parent: the label cannot name the space nor the pixels
                parents[pid] = ("", "")
        row["extractor"], row["data_pixels"] = parents.get(pid, ("", ""))
    return pd.DataFrame(rows, columns=CHILD_COLUMNS)


def protocol_run_units(c, exps: dict[str, str], parent) -> tuple[pd.DataFrame, int]:
    """The entry runs that make up one protocol run's table: its own child runs, and for each (entry, training
    seed) it has no child run of, the newest earlier FINISHED one of the same fingerprint (started before this
    protocol run ended). A resumed protocol run (`bench run --resume`, or a sweep run again after a kill) re-runs
    only the units that had not finished; the others finished under earlier protocol runs. A unit this run ran,
    finished or not, is never replaced: a unit it ran and failed stays failed. The report and the regression gate
    both read a protocol run through this, so `bench check` after a resume sees the rows its report shows.
    An earlier unit whose protocol run recorded other decoded pixels (layout.DATA_PIXELS: another decoder read the
    same files) is never carried over: it was measured against other images. A protocol run that recorded none
    (logged before the tag) carries over only units that recorded none either.
    Returns (runs, units carried over from earlier runs)."""
    runs = child_runs(c, exps, parent_run_id=parent.info.run_id)
    fingerprint = parent.data.tags.get(layout.FINGERPRINT, "")
    if not fingerprint:
        return runs, 0
    earlier = child_runs(c, exps, fingerprint=fingerprint)
    end = parent.info.end_time or parent.info.start_time
    pixels = parent.data.tags.get(layout.DATA_PIXELS, "")
    earlier = earlier[(earlier["parent_run_id"] != parent.info.run_id) & (earlier["status"] == "FINISHED")
                      & (earlier["start_time"] <= end)
                      & (earlier["data_pixels"].isin(["", pixels]) if pixels else earlier["data_pixels"] == "")]
    have = {(e, str(t)) for e, t in zip(runs["entry"], runs["train_seed"])}
    earlier = earlier.sort_values("start_time", ascending=False).drop_duplicates(["entry", "train_seed"])
    add = earlier[[(e, str(t)) not in have for e, t in zip(earlier["entry"], earlier["train_seed"])]]
    if add.empty:
        return runs, 0
    return pd.concat([runs, add], ignore_index=True), len(add)


def per_seed(c, run_id: str, key: str) -> list[float]:
    """Per-evaluation-seed values of `key` (history `per_seed/<key>`, step i = i-th seed), in seed order."""
    try:
        hist = c.get_metric_history(run_id, f"per_seed/{key}")
    except Exception:  # noqa: BLE001 - an old run without per-seed history: the caller falls back
        return []
    latest: dict[int, Any] = {}
    for m in hist:  # a resumed run may log a step twice; the newest value wins
        if m.step not in latest or m.timestamp >= latest[m.step].timestamp:
            latest[m.step] = m
    return [logged_value(latest[s].value) for s in sorted(latest)]


def history(c, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, logged_value(m.value)) for m in c.get_metric_history(run_id, key))


def download_text(c, run_id: str, path: str) -> Optional[str]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = c.download_artifacts(run_id, path, tmp)
        except Exception:  # noqa: BLE001 - a missing artifact is reported by the caller
            return None
        return Path(local).read_text(encoding="utf-8")


def download_file(c, run_id: str, path: str, dest: Path) -> bool:
    """Copy one artifact to `dest`; False when the run has no such artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = c.download_artifacts(run_id, path, tmp)
        except Exception:  # noqa: BLE001
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_dest = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(local, tmp_dest)
        os.replace(tmp_dest, dest)
        return True


def log_texts(c, run_id: str, texts: dict[str, str]) -> None:
    """Attach text artifacts (name -> content) to a run, finished or not."""
    for name, text in texts.items():
        c.log_text(run_id, text, name)

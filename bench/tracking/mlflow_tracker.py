"""Mirror of every protocol run into MLflow: one parent run per `bench run`, one child per entry.

The default store is an embedded SQLite file in the working directory, so `mlflow ui
--backend-store-uri sqlite:///mlflow.db` shows it with no server. $MLFLOW_TRACKING_URI or the
protocol's `tracking.uri` point it elsewhere (an `mlflow server`, a team PostgreSQL backend).
"""

from __future__ import annotations

import logging
import os
import socket
import re
import time
from pathlib import Path
from typing import Any, Optional

from bench.errors import BenchError
from bench.tracking import layout

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def resolve_uri(protocol_uri: Optional[str]) -> str:
    return protocol_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _key(k: str) -> str:
    return _BAD_KEY.sub("_", k)


def _private_temp(target: Path) -> Path:
    """This process's temp path beside `target` (`.<name>.<pid>.init`), after removing those of creators that
    were killed (their pid is gone)."""
    for stale in target.parent.glob(f".{target.name}.*.init"):
        pid = stale.name[len(target.name) + 2:-len(".init")]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.init")
    tmp.unlink(missing_ok=True)
    return tmp


# The empty store a new SQLite file starts from is built once per MLflow schema and copied (see
# _empty_store). Its Default experiment points here until the copy is given its own artifact root.
_TEMPLATE_ROOT = "file:///ganbench-empty-store-template/mlruns"


def _schema_key() -> str:
    """Which empty schema this MLflow builds: its version and the names of its migration scripts."""
    import hashlib

    import mlflow

    versions = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
    names = sorted(p.name for p in versions.glob("*.py"))
    return f"{mlflow.__version__}-{hashlib.sha256(chr(10).join(names).encode()).hexdigest()[:12]}"


def _migrate(path: Path, artifact_root: str) -> None:
    """Build MLflow's schema in `path` by running its migrations (about 3 s on a 2-core machine)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(f"sqlite:///{path}", artifact_root).engine.dispose()


def _empty_store(dest: Path, artifact_root: str) -> None:
    """Write a new, fully migrated, empty store to `dest` (a private temp path).

    MLflow's migrations cost about 3 s per new store, and every `bench run` into a new folder, every sweep
    unit and many tests make one. So the migrated empty file is built once per MLflow schema in the cache
    (content-addressed by `_schema_key`, written atomically) and copied; the copy's Default experiment then
    gets this store's artifact root and the current time, the only things that differ from a store MLflow
    built in place (tests/test_tracking_store.py compares the two). Without a usable cache it is built in place."""
    import shutil
    import sqlite3

    from bench.io import cache_dir

    template = cache_dir() / "mlflow" / f"empty-store-{_schema_key()}.db"
    try:
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            build = _private_temp(template)
            try:
                _migrate(build, _TEMPLATE_ROOT)
                os.replace(build, template)  # racing builders each write a complete file
            finally:
                build.unlink(missing_ok=True)
        shutil.copyfile(template, dest)
    except OSError:  # a read-only or full cache: the store is still built, only slower
        dest.unlink(missing_ok=True)
        _migrate(dest, artifact_root)
        return
    from mlflow.utils.uri import append_to_uri_path, resolve_uri_if_local

    now = int(time.time() * 1000)
    con = sqlite3.connect(dest)
    try:
        # The cached template is checked on every copy: a damaged one (a torn disk, a tampered cache) made
        # every later new store fail with "database disk image is malformed" until the cache was cleared.
        ok = con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        with con:
            ok = ok and con.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                                    "last_update_time = ? WHERE experiment_id = 0",
                                    (append_to_uri_path(resolve_uri_if_local(artifact_root), "0"), now,
                                     now)).rowcount == 1
    except sqlite3.DatabaseError:
        ok = False
    finally:
        con.close()
    if not ok:  # drop the bad template (the next new store rebuilds it) and build this one in place
        log.warning("the cached empty MLflow store %s was damaged; removed, this store is built in place", template)
        template.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
        _migrate(dest, artifact_root)


def _table_names(db: Path, *, read_only: bool) -> set[str]:
    import sqlite3

    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) if read_only else sqlite3.connect(db)
    try:
        return {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()


def check_sqlite_store(db: Path, uri: str) -> set[str]:
    """An existing file a sqlite URI names must be an MLflow store; checked without writing to it, before MLflow
    opens it (only a killed writer's unfinished transaction is rolled back, as every SQLite client does).
    Returns its table names (none for a missing file).

    MLflow runs its schema migrations on whatever database it is given: a folder gave ~110 s of retries and
    dozens of warning lines, and an empty file or another program's SQLite database was turned into an MLflow
    store in place (new tables in the user's file). A missing file is fine: it is created complete."""
    import sqlite3

    if not db.exists():
        return set()
    if not db.is_file():
        raise BenchError(f"MLflow tracking store {uri}: {db} is a folder; name a database file, e.g. {db / 'mlflow.db'}")
    try:
        tables = _table_names(db, read_only=True)
    except sqlite3.Error as exc:
        if not getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY"):
            what = "is not an SQLite database" if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB" \
                else "cannot be read"
            raise BenchError(f"MLflow tracking store {uri}: {db} {what} ({exc}); it was left as it is") from None
        # A writer killed mid-transaction (SIGKILL, power loss) leaves a hot journal: SQLite rolls it back on
        # the next read-write open, but a read-only connection cannot, and refuses (SQLITE_READONLY_ROLLBACK).
        # The rollback only restores the last committed state, which every SQLite client does on open; no
        # table is added, so a read-write connection that only reads is still a check that leaves the file be.
        try:
            tables = _table_names(db, read_only=False)
        except sqlite3.Error as exc2:
            raise BenchError(f"MLflow tracking store {uri}: {db} has an unfinished transaction of a killed writer "
                             f"that cannot be rolled back here ({exc2}); it was left as it is") from None
    if not {"alembic_version", "runs"} <= tables:
        raise BenchError(f"MLflow tracking store {uri}: {db} is not an MLflow store (no MLflow tables); it was left "
                         "as it is: name a new file or an existing MLflow database")
    return tables


def _create_sqlite_store(db: Path, artifact_root: str) -> None:
    """Create a new SQLite store completely or not at all.

    MLflow builds a new database by running its schema migrations in place; a SIGKILL in the middle
    leaves a half-migrated file (e.g. a stray `_alembic_tmp_experiments` table) that every later run
    refuses. So the store is made in a private temp file beside it (`_empty_store`) and hard-linked into
    place: a link never replaces an existing file, so when several processes race to create one store,
    exactly one wins and the others use it. Temp files of killed creators are removed.
    """
    if db.exists():
        return
    tmp = _private_temp(db)
    try:
        _empty_store(tmp, artifact_root)
        try:
            os.link(tmp, db)
        except FileExistsError:
            pass  # another process created it first: theirs is complete too
    except Exception as exc:  # noqa: BLE001 - a read-only folder, a full disk, a broken driver: one line
        first = (str(getattr(exc, "strerror", None) or exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BenchError(f"MLflow tracking store sqlite:///{db} is not usable: cannot create it ({first})") from None
    finally:
        tmp.unlink(missing_ok=True)


def quiet_libraries() -> None:
    """Keep the libraries' own log lines (MLflow's migrations, urllib3's retries) out of bench's output."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)


class Tracker:
    def __init__(self, uri: str, experiment: str):
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
        import mlflow
        from mlflow.tracking import MlflowClient

        # MLflow installs its own INFO handler on import; its schema-migration chatter is not for users, nor
        # urllib3's "Retrying ..." warning printed above the one-line error for a server that does not answer.
        quiet_libraries()

        self.uri = uri
        artifact_location = None
        if uri.startswith("sqlite:///"):
            check_sqlite_store(Path(uri[len("sqlite:///"):]).expanduser().resolve(), uri)
            # Artifacts of an embedded store live beside its database file, not in whatever folder
            # the command happened to be started from.
            db_dir = Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
            try:
                db_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BenchError(f"MLflow tracking store {uri}: cannot create {db_dir} ({exc.strerror})") from None
            artifact_location = (db_dir / "mlruns").as_uri()
            _create_sqlite_store(Path(uri[len("sqlite:///"):]).expanduser().resolve(), artifact_location)
        # Failing here, before any training, is the point: an unreachable store is reported up front.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is not None and exp.lifecycle_stage != "active":
                raise BenchError(f"MLflow experiment '{experiment}' in {uri} is deleted; restore it in the UI "
                                 "or set tracking.experiment to another name")
            self.experiment_id = (exp.experiment_id if exp else
                                  self.client.create_experiment(experiment, artifact_location=artifact_location))
        except BenchError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise BenchError(f"MLflow tracking store {uri} is not usable: {first}") from None
        self._mlflow = mlflow

    def start_run(self, name: str, tags: dict[str, str], parent: Optional[str] = None) -> str:
        # Who owns the run: a later run can tell a crashed attempt (dead pid) from a live one.
        tags = {layout.HOST: socket.gethostname(), layout.PID: str(os.getpid()), **{k: str(v) for k, v in tags.items()}}
        if parent:
            tags[layout.PARENT] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def close_stale(self, fingerprint: str) -> list[str]:
        """Mark KILLED the RUNNING runs of this fingerprint whose process on this host is gone (a SIGKILL
        or power cut leaves them RUNNING forever otherwise). Runs of live processes are left alone."""
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"{layout.tag_filter(layout.FINGERPRINT, fingerprint)} and "
                                                     "attributes.status = 'RUNNING'", max_results=1000)
        closed = []
        for run in runs:
            tags = run.data.tags
            if tags.get(layout.HOST) != socket.gethostname() or not tags.get(layout.PID, "").isdigit():
                continue
            if int(tags[layout.PID]) != os.getpid() and not _alive(int(tags[layout.PID])):
                self.client.set_tag(run.info.run_id, layout.FAILURE, "the process running it died (killed)")
                self.client.set_terminated(run.info.run_id, "KILLED")
                closed.append(run.info.run_id)
        return closed

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_key(k), str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: Optional[int] = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_key(k), float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def log_artifact(self, run_id: str, path: Path, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

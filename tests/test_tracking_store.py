"""A new SQLite MLflow store is copied from an empty store migrated once per MLflow schema (in the cache),
not migrated in place each time: the copy must be the same database MLflow would have built there."""

import sqlite3
from pathlib import Path

from bench.io import cache_dir
from bench.tracking import mlflow_tracker
from bench.tracking.mlflow_tracker import Tracker, _create_sqlite_store, _migrate

TIMES = {"creation_time", "last_update_time"}


def _dump(db: Path) -> tuple[list, dict]:
    """Every table's definition and rows, with the Default experiment's creation times left out."""
    con = sqlite3.connect(db)
    try:
        # MLflow's own migrations order a table's constraints differently from one build to the next (its
        # batch operations go through a set), so a definition is compared as the set of its clauses.
        schema = sorted((kind, name, tuple(sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())))
                        for kind, name, sql in con.execute("SELECT type, name, sql FROM sqlite_master "
                                                           "WHERE name NOT LIKE 'sqlite_%'"))
        rows = {}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            cur = con.execute(f'SELECT * FROM "{table}"')
            cols = [c[0] for c in cur.description]
            rows[table] = sorted(tuple(v for c, v in zip(cols, r) if c not in TIMES) for r in cur.fetchall())
        return schema, rows
    finally:
        con.close()


def test_a_store_copied_from_the_template_equals_one_migrated_in_place(tmp_path):
    built = tmp_path / "in-place" / "mlflow.db"
    copied = tmp_path / "copied" / "mlflow.db"
    root = (tmp_path / "mlruns").as_uri()  # one artifact root for both, so the Default experiments can match
    built.parent.mkdir()
    copied.parent.mkdir()
    _migrate(built, root)
    _create_sqlite_store(copied, root)
    templates = list((cache_dir() / "mlflow").glob("empty-store-*.db"))
    assert len(templates) == 1
    schema, rows = _dump(built)
    assert (schema, rows) == _dump(copied)
    assert rows["experiments"][0][:3] == (0, "Default", f"{root}/0")  # not the template's placeholder root
    # the template itself still points at the placeholder: the copy was given this store's root
    assert _dump(templates[0])[1]["experiments"][0][2] != f"{root}/0"

    # the next store reuses the same template file rather than migrating again
    stamp = templates[0].stat().st_mtime_ns
    calls = []
    real = mlflow_tracker._migrate
    mlflow_tracker._migrate = lambda *a: (calls.append(a), real(*a))
    try:
        t = Tracker(f"sqlite:///{tmp_path / 'third' / 'mlflow.db'}", "e")
        t.end(t.start_run("r", {}))
    finally:
        mlflow_tracker._migrate = real
    assert calls == [] and templates[0].stat().st_mtime_ns == stamp


def test_an_unwritable_cache_still_gives_a_complete_store(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(blocker))
    db = tmp_path / "s" / "mlflow.db"
    t = Tracker(f"sqlite:///{db}", "e")
    run = t.start_run("r", {})
    t.end(run)
    assert t.client.get_run(run).info.status == "FINISHED"
    assert sorted(p.name for p in db.parent.iterdir() if p.name != "mlruns") == ["mlflow.db"]


def test_a_damaged_template_is_replaced_not_copied_into_every_new_store(tmp_path, monkeypatch):
    """A torn or tampered template made every new store fail ("database disk image is malformed") until the
    cache was cleared by hand; now the copy is checked, the store is built in place, and the next one gets
    a fresh template."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    root = (tmp_path / "mlruns").as_uri()
    (tmp_path / "a").mkdir()
    _create_sqlite_store(tmp_path / "a" / "mlflow.db", root)
    (template,) = (cache_dir() / "mlflow").glob("empty-store-*.db")
    good = tmp_path / "good-template.db"
    good.write_bytes(template.read_bytes())
    for i, damage in enumerate((good.read_bytes()[:20000], b"\0" * good.stat().st_size,
                                good.read_bytes()[:4096] + b"\xff" * (good.stat().st_size - 4096))):
        template.write_bytes(damage)
        db = tmp_path / f"s{i}" / "mlflow.db"
        t = Tracker(f"sqlite:///{db}", "e")
        run = t.start_run("r", {})
        t.end(run)
        assert t.client.get_run(run).info.status == "FINISHED", i
        assert not template.exists(), i  # the damaged file is gone ...
        (tmp_path / f"next{i}").mkdir()
        _create_sqlite_store(tmp_path / f"next{i}" / "mlflow.db", root)
        assert _dump(template) == _dump(good), i  # ... and the next new store rebuilt it


_KILLED_WRITER = """
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size = 1")  # spill pages into the file mid-transaction: the journal becomes hot
con.execute("BEGIN IMMEDIATE")
con.execute("CREATE TABLE half_written (a, b)")
for i in range(2000):
    con.execute("INSERT INTO half_written VALUES (?, ?)", (i, "x" * 500))
os.kill(os.getpid(), 9)
"""


def test_a_writer_killed_mid_transaction_leaves_a_store_the_next_run_opens(tmp_path):
    """SIGKILL during a write leaves a hot journal; a read-only connection cannot roll it back and SQLite refuses
    it ("attempt to write a readonly database"). The store check used to report that as "not an SQLite database"
    and exit 2, so a `bench run --resume` after a kill at the wrong moment could not start (seen in the crash
    test with two threads). The check must roll the journal back and see the last committed state."""
    import subprocess
    import sys

    db = tmp_path / "mlflow.db"
    _create_sqlite_store(db, (tmp_path / "mlruns").as_uri())
    before = _dump(db)
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(db)], capture_output=True)
    assert done.returncode == -9
    journal = db.with_name(db.name + "-journal")
    assert journal.exists() and journal.stat().st_size > 0
    # The refusal the check has to get past, as the read-only open sees it.
    try:
        sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True).execute("SELECT 1 FROM sqlite_master").fetchall()
        raise AssertionError("a read-only open read past a hot journal: this test no longer makes one")
    except sqlite3.OperationalError as exc:
        assert exc.sqlite_errorname == "SQLITE_READONLY_ROLLBACK"

    tables = mlflow_tracker.check_sqlite_store(db, f"sqlite:///{db}")
    assert "half_written" not in tables and {"runs", "alembic_version"} <= tables
    assert _dump(db) == before  # rolled back to exactly what was committed
    tracker = Tracker(f"sqlite:///{db}", "after-the-kill")  # and MLflow can write to it again
    assert tracker is not None


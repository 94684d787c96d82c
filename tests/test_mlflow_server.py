"""A real `mlflow server` (SQLite backend, local artifact store served over HTTP) on 127.0.0.1: a small
protocol runs against it, then the leaderboard and a report are read back over HTTP. The server is
started here and its whole process group is killed in teardown, so nothing is left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.cli import main
from tests.conftest import needs_data
from tests.progress import group_pids, wait_for
from tests.report_runs import ENTRIES, NAME, tiny_protocol

pytestmark = needs_data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@contextlib.contextmanager
def mlflow_server(tmp: Path):
    """Yields (url, pgid) of a ready server; always kills its whole process group on exit."""
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_cli), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{(tmp / 'server.db').as_posix()}",
           "--artifacts-destination", (tmp / "artifacts").as_uri()]
    log = open(tmp / "server.log", "wb")
    # A session of its own: the server forks workers, and teardown kills the whole group.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "GIT_PYTHON_REFRESH": "quiet"})
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{(tmp / 'server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        # however long a cold start takes on a busy machine, as long as the server's processes are working
        wait_for(ready, lambda: group_pids(proc.pid), "mlflow server not ready", poll_s=0.5,
                 describe=lambda: (tmp / "server.log").read_text()[-3000:])
        yield url, proc.pid
    finally:
        pgid = proc.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _alive(pgid):
                break
            os.killpg(pgid, sig)
            end = time.monotonic() + 15
            while _alive(pgid) and time.monotonic() < end:
                try:
                    proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
        proc.wait(timeout=10)
        log.close()


def test_protocol_over_http_then_leaderboard_and_report_and_no_process_left(tmp_path, capsys):
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with mlflow_server(server_dir) as (url, pgid):
        assert _alive(pgid)
        proto = tiny_protocol(tmp_path, name=NAME, entries=ENTRIES, n_samples=200)
        proto.write_text(proto.read_text().replace(f'uri: "sqlite:///{tmp_path.as_posix()}/mlflow.db"',
                                                   f'uri: "{url}"'))
        assert f'uri: "{url}"' in proto.read_text()
        assert main(["run", str(proto), "--workdir", str(tmp_path / "work")]) == 0
        assert not (tmp_path / "mlflow.db").exists()  # everything went over HTTP
        capsys.readouterr()

        assert main(["leaderboard", str(proto), "--csv", str(tmp_path / "lb.csv")]) == 0
        out = capsys.readouterr().out
        assert out.count("· fingerprint") == 1 and "trained" in out and f"in {url}" in out
        assert (tmp_path / "lb.csv").read_text().count("\n") == 3  # header + two entries

        assert main(["report", str(proto), "--out", str(tmp_path / "report")]) == 0
        assert (tmp_path / "report" / "img" / "samples-trained.png").stat().st_size > 0  # fetched over HTTP
        # The artifacts really live in the server's store, not next to the client.
        assert any(p.name == "samples.png" for p in (server_dir / "artifacts").rglob("*"))
    assert not _alive(pgid)  # the server and every worker it forked are gone

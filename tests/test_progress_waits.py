"""The progress-based waits of tests/progress.py can fail: a hung process (no CPU, nothing ending) stalls the
wait, a busy process doing the wrong thing trips its `wrong` marker, and a process that gets there ends it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.progress import FileChanges, cpu_ticks, group_pids, wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_a_process_that_finishes_ends_the_wait():
    proc = _spawn("sum(range(3_000_000))")
    wait_for(lambda: proc.poll() is not None, lambda: [proc.pid], "did not finish", stall_s=60)
    assert proc.returncode == 0


def test_a_process_that_does_nothing_fails_the_wait_after_the_stall_window():
    proc = _spawn("import time; time.sleep(600)")
    try:
        with pytest.raises(pytest.fail.Exception, match="sleeper: no progress for 1 s"):
            wait_for(lambda: proc.poll() is not None, lambda: group_pids(proc.pid), "sleeper", stall_s=1.0)
        assert proc.poll() is None  # failed while the process was still there, hung
    finally:
        proc.kill()
        proc.wait()


def test_a_busy_process_is_waited_for_past_the_stall_window_until_it_finishes():
    # 4 s of CPU, four times the stall window: its CPU time keeps changing, so the wait goes on
    proc = _spawn("import time\nend = time.process_time() + 4\nwhile time.process_time() < end: pass")
    ticks = []
    wait_for(lambda: proc.poll() is not None, lambda: [proc.pid], "busy", stall_s=1.0,
             wrong=lambda: ticks.append(cpu_ticks(proc.pid)))
    assert proc.returncode == 0
    assert max(t for t in ticks if t is not None) >= 2 * os.sysconf("SC_CLK_TCK")  # seen past 2 s of CPU


def test_a_busy_process_doing_the_wrong_thing_is_caught_by_its_marker(tmp_path):
    target = tmp_path / "latest.pt.sha256"
    target.write_text("0")
    changes = FileChanges(tmp_path, "*.sha256")
    proc = _spawn(f"import time, pathlib\nfor i in range(1, 10**6):\n    pathlib.Path({str(target)!r}).write_text(str(i))"
                  f"\n    time.sleep(0.01)")
    try:
        with pytest.raises(pytest.fail.Exception, match="trained on"):
            wait_for(lambda: proc.poll() is not None, lambda: [proc.pid], "writer", stall_s=600,
                     wrong=lambda: "trained on" if changes.most() > 3 else None)
        assert changes.most() > 3
    finally:
        proc.kill()
        proc.wait()

"""The progress-based waits of tests/progress.py can fail: a hung process (no CPU, nothing ending) stalls the
wait, a busy process doing the wrong thing trips its `wrong` marker, and a process that gets there ends it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests import progress
from tests.conftest import processes_naming
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


def test_run_waits_for_work_done_in_a_grandchild_and_returns_its_output():
    # the direct child only waits; the CPU is used by its own child: watched through the process tree
    code = ("import subprocess, sys\n"
            "subprocess.run([sys.executable, '-c', 'import time\\nend = time.process_time() + 3\\n"
            "while time.process_time() < end: pass\\nprint(\\'x\\' * 200_000)'], check=True)\n"
            "print('child done', file=sys.stderr)")
    done = progress.run([sys.executable, "-c", code], "grandchild", stall_s=1.0)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "x" * 200_000 + "\n"  # more than a pipe holds: read while running, all of it
    assert done.stderr == "child done\n"


def test_run_fails_a_hung_process_and_kills_its_tree():
    tag = f"sleeper-{uuid.uuid4().hex}"  # names this test's processes among every process on the machine
    code = ("import subprocess, sys, time\n"
            f"g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{tag}'])\n"
            "time.sleep(600)")
    with pytest.raises(pytest.fail.Exception, match="sleeper: no progress for 1 s"):
        progress.run([sys.executable, "-c", code, tag], "sleeper", stall_s=1.0)

    # The wait killed the process and the grandchild it started (which, its parent gone, is no longer in the
    # test's process tree: looked for among all processes). A killed process takes a moment to go; one that was
    # never killed sleeps on and stalls this wait.
    wait_for(lambda: not processes_naming(tag), lambda: processes_naming(tag),
             "a process the failed wait should have killed", stall_s=5.0)


def test_child_reads_every_pipe_while_the_test_waits_on_another_process():
    # two writers of more than a pipe's 64 KiB: waiting on the second first must not block the first
    procs = [subprocess.Popen([sys.executable, "-c", f"import sys; sys.stderr.write('{c}' * 300_000)"],
                              stderr=subprocess.PIPE, text=True) for c in "ab"]
    children = [progress.Child(p) for p in procs]
    assert children[1].wait("second")[1] == "b" * 300_000
    assert children[0].wait("first")[1] == "a" * 300_000


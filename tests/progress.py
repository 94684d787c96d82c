"""Waiting for another process by its progress, not by the clock.

A test that waits "up to 120 s" for a server to answer or for killed workers to exit fails on a busy machine
where the same work simply takes longer (CI shares 2 cores between test workers). These waits instead ask
whether the processes behind the event are still getting anywhere: the CPU time they have used (Linux
/proc), and which of them are alive. While either changes the wait goes on, however long that takes; only
when nothing has changed for `stall_s` seconds does the test fail. A process that is running gets CPU
within milliseconds even on a loaded machine, so `stall_s` of quiet means a hang (a deadlock, a process
waiting on something that never comes), not a slow machine.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable

STALL_S = 120.0


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the process name (state first); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # the name may hold spaces and ')'
    except (OSError, IndexError):
        return None


def cpu_ticks(pid: int) -> int | None:
    """User + system time of `pid` and of its children it has reaped, in clock ticks; None once it is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    # after the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def _live() -> Iterable[tuple[int, list[str]]]:
    """(pid, stat fields) of every live (not zombie) process."""
    for d in os.listdir("/proc"):
        if d.isdigit():
            fields = stat_fields(int(d))
            if fields is not None and fields[0] != "Z":
                yield int(d), fields


def group_pids(pgid: int) -> list[int]:
    """Live processes of process group `pgid`."""
    return [pid for pid, fields in _live() if int(fields[2]) == pgid]


def progress_marker(pids: Iterable[int]) -> tuple:
    """What changes while these processes get anywhere: each one's CPU time, and which are alive."""
    return tuple(sorted((pid, cpu_ticks(pid)) for pid in pids))


def wait_for(done: Callable[[], bool], watched: Callable[[], Iterable[int]], what: str,
             stall_s: float = STALL_S, poll_s: float = 0.1, describe: Callable[[], str] = lambda: "",
             wrong: Callable[[], str | None] = lambda: None) -> None:
    """Return once `done()`; fail the test if the processes `watched()` names make no progress (no CPU time,
    none starting or ending) for `stall_s` seconds before that, or as soon as `wrong()` names a progress marker
    of the failure itself (busy processes doing the wrong thing would otherwise be waited for forever)."""
    import pytest

    marker, since = None, time.monotonic()
    while not done():
        failure = wrong()
        if failure:
            pytest.fail(f"{what}: {failure}\n{describe()}")
        now = progress_marker(watched())
        if now != marker:
            marker, since = now, time.monotonic()
        elif time.monotonic() - since > stall_s:
            pytest.fail(f"{what}: no progress for {stall_s:.0f} s (processes and their CPU ticks: {marker})\n"
                        f"{describe()}")
        time.sleep(poll_s)


class FileChanges:
    """Counts how often the files matching `pattern` under `root` change content: a training process that
    writes a checkpoint every few steps and should have stopped shows itself by going on changing them."""

    def __init__(self, root, pattern: str):
        self.root, self.pattern = root, pattern
        self.last = self._read()
        self.changes = {path: 0 for path in self.last}

    def _read(self) -> dict:
        out = {}
        for path in self.root.glob(self.pattern):
            try:
                out[path] = path.read_bytes()
            except OSError:  # replaced between glob and read (atomic rename): read again next poll
                pass
        return out

    def most(self) -> int:
        """The most changes any one file has had since this object was made."""
        for path, data in self._read().items():
            if self.last.get(path) != data:
                self.last[path] = data
                self.changes[path] = self.changes.get(path, 0) + 1
        return max(self.changes.values(), default=0)


def descendants(pid: int) -> list[int]:
    """`pid`'s live descendants (children, their children, ...), by the parent pids in /proc."""
    children: dict[int, list[int]] = {}
    for p, fields in _live():
        children.setdefault(int(fields[1]), []).append(p)
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree(pid: int) -> list[int]:
    """`pid` itself (while it has not been reaped) and its live descendants: the processes doing its work. Its
    own CPU time counts its reaped children's, so work done by a child that has ended is not lost from view."""
    return ([pid] if stat_fields(pid) is not None else []) + descendants(pid)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and its descendants (a failed wait must not leave a busy process behind)."""
    import signal

    for p in [*descendants(pid), pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Child:
    """A started process whose pipes are read by threads from the start (so it never blocks on a full pipe
    while the test waits on another one) and which is waited for by its progress, like `wait_for`."""

    def __init__(self, proc):
        import threading

        self.proc, self._out, self._readers = proc, {}, []
        self._empty = "" if getattr(proc.stdout or proc.stderr, "encoding", None) else b""  # text=True: str
        for name in ("stdout", "stderr"):
            stream = getattr(proc, name)
            if stream is not None:
                self._out[name] = []
                t = threading.Thread(target=self._read, args=(stream, self._out[name]), daemon=True)
                t.start()
                self._readers.append(t)

    @staticmethod
    def _read(stream, into: list) -> None:
        for line in stream:  # as each line comes, so a failed wait can show the latest
            into.append(line)
        stream.close()

    def text(self, name: str):
        """What the process has written to `name` ("stdout", "stderr") so far; None for a pipe not captured."""
        if name not in self._out:
            return None
        return self._empty.join(list(self._out[name]))

    def wait(self, what: str, stall_s: float = STALL_S):
        """(stdout, stderr) once the process has ended and its pipes are read to the end; the test fails (and
        the process tree is killed) if it makes no progress for `stall_s` seconds first."""
        pid = self.proc.pid
        try:
            wait_for(lambda: self.proc.poll() is not None, lambda: tree(pid), what, stall_s=stall_s,
                     describe=lambda: f"stderr so far (end): {(self.text('stderr') or '')[-2000:]}")
            # the pipes end when every process holding them has: normally at once; a descendant left running
            # with them open is itself watched
            wait_for(lambda: not any(t.is_alive() for t in self._readers), lambda: descendants(pid),
                     f"{what} (its output pipes after it ended)", stall_s=stall_s)
        except BaseException:
            kill_tree(pid)
            raise
        return self.text("stdout"), self.text("stderr")


def run(args, what: str, stall_s: float = STALL_S, check: bool = False, capture_output: bool = True,
        text: bool = True, **popen_kwargs):
    """`subprocess.run` without a timeout: it waits however long the process needs while it (or a process it
    started) uses CPU, and fails the test after `stall_s` seconds of none (a hang)."""
    import subprocess

    pipe = subprocess.PIPE if capture_output else None
    proc = subprocess.Popen(args, stdout=popen_kwargs.pop("stdout", pipe), stderr=popen_kwargs.pop("stderr", pipe),
                            text=text, **popen_kwargs)
    out, err = Child(proc).wait(what, stall_s)
    done = subprocess.CompletedProcess(args, proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done

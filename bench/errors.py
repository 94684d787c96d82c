"""The one exception type that reaches people, and the two ways a run ends early that are not bugs.

Anything the user can fix (a YAML key, a data folder, a weights file, a name) is raised as
`BenchError` with a single line that names the problem; the CLI prints it and exits 2.
Running out of memory is the machine's answer to a size the user chose: `out_of_memory` turns it into one
line for the failed run's reason. SIGTERM (a scheduler's stop, torchrun stopping its peers, `kill`) is raised
as `Terminated`, a KeyboardInterrupt, so the code that marks MLflow runs KILLED on Ctrl-C runs for it too.
Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from typing import Iterator, Optional


class BenchError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


def one_line(text: object, limit: int = 2000) -> str:
    """`text` as the single line an error is printed as: line breaks folded, runs of spaces kept single,
    clipped to `limit` characters (an exception raised by user code or a huge YAML value can be any size)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def error_line(exc: BaseException) -> str:
    """What the CLI prints for a BenchError."""
    return f"bench: error: {one_line(exc)}"


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM; raised where it was, then re-delivered once the cleanup has run."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` (only the main thread can own a signal handler; elsewhere this
    does nothing). The previous handler is restored on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        # A second SIGTERM (a process-group kill after ours, a scheduler repeating itself) must not interrupt the
        # cleanup the first one started (marking runs KILLED): ignored from here; die_of_sigterm restores it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_of_sigterm() -> None:
    """End this process as SIGTERM's default action would have, after the cleanup `Terminated` allowed: a
    parent (a shell, torchrun, a sweep) then sees 'killed by SIGTERM', not an ordinary exit status."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def out_of_memory(exc: BaseException) -> Optional[str]:
    """One line for an allocation the machine refused (host or GPU), else None."""
    import torch

    text = str(exc)
    if not (isinstance(exc, (MemoryError, torch.OutOfMemoryError))
            or (isinstance(exc, RuntimeError) and "can't allocate memory" in text)):
        return None
    cpu = re.search(r"tried to allocate (\d+) bytes", text)
    if cpu:
        return f"out of memory: an allocation of {int(cpu.group(1)) / 2**30:.1f} GiB failed; lower train.batch_size, " \
               "evaluation.batch_size or evaluation.n_samples"
    gpu = re.search(r"[Tt]ried to allocate ([0-9.]+ [KMGT]?i?B)", text)
    size = f" of {gpu.group(1)}" if gpu else ""
    return f"out of memory: an allocation{size} failed; lower train.batch_size, evaluation.batch_size or " \
           "evaluation.n_samples"

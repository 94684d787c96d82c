"""Where ganbench keeps things, and how it writes them without ever leaving half a file."""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch


def say(msg: str) -> None:
    """Phase lines on stderr: progress bars only show on a terminal, these show in CI and sweep-unit logs too."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Content-addressed caches (real-side features, judges, downloads): $BENCH_CACHE_DIR or ~/.cache/ganbench."""
    env = os.environ.get("BENCH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ganbench"


def home_relative(text: str) -> str:
    """`text` with this user's home folder written as ~. Messages that end up in logged runs and committed
    reports (a weights file "not found in ~/.cache/torch/hub/checkpoints") then name the place every user has,
    not the machine and account that happened to run them."""
    home = str(Path.home()).rstrip("/")
    if len(home) < 2:  # home is / (some containers): nothing to shorten
        return text
    return re.sub(re.escape(home) + r"(?=/|\b|$)", "~", text)


def offline() -> bool:
    """BENCH_OFFLINE=1 means nothing may touch the network (no dataset or weights downloads)."""
    return os.environ.get("BENCH_OFFLINE", "").lower() in ("1", "true", "yes")


def check_file_target(path: Path) -> None:
    """Refuse, without writing anything, a path no file can be written to: a folder, or a path under a file.
    A command writing several files checks them all first, so a bad last one leaves no first ones behind."""
    from bench.errors import BenchError

    path = Path(path)
    if path.is_dir():
        raise BenchError(f"{path} is a folder; give the name of the file to write")
    for parent in path.absolute().parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise BenchError(f"cannot write {path}: a part of its folder path is a file")
            break


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then os.replace: readers see old or new, never half.
    A path that is a folder, or under a file, is one clear error (`--csv DIR`, `--out FILE/x`), not a traceback."""
    from bench.errors import BenchError

    path = Path(path)
    check_file_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BenchError(f"cannot write {path}: a part of its folder path is a file") from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(obj: Any, path: Path) -> str:
    """Save atomically; returns the sha256 of the bytes written (stored beside checkpoints to detect tampering)."""
    data = torch_bytes(obj)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def derive(seed: int, *parts: object) -> int:
    """A 63-bit seed for one purpose: derive(7, 'dcgan', 'init') never collides with derive(7, 'dcgan', 'data')."""
    text = ":".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tensor(*tensors: torch.Tensor) -> str:
    """Content hash of tensors (shape, dtype and bytes), independent of how they were stored."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# -- loading files bench did not just write: nothing in them may run code ----------------------------
#
# A pickle can name any importable callable and have the loader call it (`os.system` included), so files
# that come from a user, a shared cache folder or an earlier process are never plain-unpickled: torch files
# go through torch's weights-only unpickler with a small explicit allow-list, CIFAR-10 batches through
# `safe_unpickle` below, and statistics files through `np.load(allow_pickle=False)`.

_SAFE_LOAD_LOCK = threading.Lock()  # torch keeps the extra allowed globals in one process-wide set
_REFUSED = (re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global"),
            re.compile(r"unsupported GLOBAL (\S+) whose module"),
            re.compile(r"but got <class '([^']+)'>"))


class RefusedGlobal(Exception):
    """A file needs a global (class or function) outside the allow-list; `.name` is its dotted path."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def numpy_array_globals(*dtypes: str) -> list:
    """What torch's weights-only unpickler needs for numpy arrays of these dtypes only (e.g. "uint32"):
    numpy's array reconstructor (under its numpy 2 and numpy 1 module names), ndarray, dtype, and the
    dtype classes. An array of any other dtype (object arrays in particular) is still refused."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return [(_reconstruct, "numpy._core.multiarray._reconstruct"),
            (_reconstruct, "numpy.core.multiarray._reconstruct"),
            np.ndarray, np.dtype, *(type(np.dtype(d)) for d in dtypes)]


def safe_torch_load(path: Path, allow: list = ()) -> Any:
    """`torch.load` that never runs code from the file: weights_only=True (tensors, containers, numbers,
    strings), plus the globals in `allow` for this call only. A file that needs anything else raises
    RefusedGlobal (before anything in it is called); other failures propagate as torch raises them."""
    import pickle
    import warnings

    from torch import _weights_only_unpickler as wo

    with _SAFE_LOAD_LOCK, torch.serialization.safe_globals(list(allow)), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a plain pickle: refused below
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            for pattern in _REFUSED:
                found = pattern.search(str(exc))
                if found:  # torch writes builtins without their module ("exec")
                    name = found.group(1)
                    raise RefusedGlobal(name if "." in name else f"builtins.{name}") from None
            # torch stopped before naming it (e.g. at the framing of a protocol-4 pickle): find it without running it
            name = _first_unlisted_global(path, set(wo._get_allowed_globals()) | set(wo._get_user_allowed_globals()))
            if name:
                raise RefusedGlobal(name) from None
            raise


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Python 3's name for a global a protocol-2 pickle may spell the Python 2 way (`__builtin__.set`)."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _first_unlisted_global(path: Path, allowed: set[str]) -> str | None:
    """The first global a pickle names outside `allowed`, found by unpickling it with stand-ins: nothing it
    names is imported or called. Reads torch zip archives (their data.pkl) and plain or legacy pickle streams."""
    import pickle
    import zipfile

    class Standin:
        def __init__(self, *args, **kwargs):
            pass

        def __setstate__(self, state):
            pass

        def __setitem__(self, key, value):
            pass

        def append(self, item):
            pass

        def extend(self, items):
            pass

    class Scan(pickle.Unpickler):
        def find_class(self, module, name):
            module, name = _py3_name(module, name)
            if f"{module}.{name}" not in allowed:
                raise RefusedGlobal(f"{module}.{name}")
            return Standin

        def persistent_load(self, pid):
            return Standin()

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                stream = io.BytesIO(zf.read(pkl[0]) if pkl else b"")
        else:
            stream = io.BytesIO(Path(path).read_bytes())
        for _ in range(8):  # a legacy torch file is several pickles in a row
            Scan(stream).load()
    except RefusedGlobal as exc:
        return exc.name
    except Exception:
        return None
    return None


def _latin1_encode(text, encoding="utf-8"):
    """`_codecs.encode` as Python 3 pickles of bytes use it (latin-1 only; no other codec is reachable)."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise ValueError(f"_codecs.encode with {encoding!r}: only latin-1 text appears in array pickles")
    return text.encode("latin-1")


def _plain_dtype(*args):
    """numpy.dtype for numbers and strings only: an array of Python objects is never rebuilt."""
    import numpy as np

    dt = np.dtype(*args)
    if dt.hasobject:  # its elements could only come from this same unpickler, but no batch has them
        raise RefusedGlobal(f"numpy.dtype({dt.str!r}) (an array of Python objects)")
    return dt


def safe_unpickle(path: Path, what: str = "CIFAR-10 python batch") -> Any:
    """Unpickle a file from a user-named folder (CIFAR-10 python batches) without running anything.

    Only dicts, lists, strings, numbers and numpy arrays of numbers can come back: every global the
    pickle names must be numpy's array reconstruction (`_reconstruct`, `ndarray`, `dtype`) or latin-1
    `_codecs.encode`; anything else (`os.system`, `builtins.eval`, ...) is refused before it is called.
    Errors are one line: the refused global, or `not a <what>` with the reason.
    """
    import pickle

    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    allowed = {("numpy._core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # pickles written by numpy 1.x
               ("numpy", "ndarray"): np.ndarray,
               ("numpy", "dtype"): _plain_dtype,
               ("_codecs", "encode"): _latin1_encode}

    class Refusing(pickle.Unpickler):
        def find_class(self, module, name):
            module, name = _py3_name(module, name)
            found = allowed.get((module, name))
            if found is None:
                raise RefusedGlobal(f"{module}.{name}")
            return found

    from bench.errors import BenchError

    try:
        with open(path, "rb") as f:
            # latin1, as torchvision reads them: the batches were pickled by Python 2.
            return Refusing(f, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise BenchError(f"{path}: refused to load: it needs {exc.name}, which a {what} never holds "
                         "(loading it could run code)") from None
    except Exception as exc:
        raise BenchError(f"{path}: not a {what} ({type(exc).__name__})") from None

"""The real-only parts of the feature metrics, computed once per set of real features and cached.

Some metrics spend a third of their time on the real features alone: precision/recall needs every real
sample's k-NN radius, and KID the real-real kernel sums of its subsets (and of its variance's subsample).
None of that depends on the model, so a protocol that scores several entries against the same held-out
reals, or a second run, would recompute the very same numbers. They are cached like the real features
themselves (bench/evaluation.py `real_features`): in this process's memory, and on disk under a content
key, the sha256 of the real features plus everything else the value depends on (the metric's settings, the
draws' row numbers) and `CODE_VERSION`. Writes are atomic (bench/features/cache.py).

A hit returns what a miss computes, by the same code, so every score is the same bits with or without the
cache (tests/test_real_side.py checks it, and that a different real set or setting is a miss). Bump
`CODE_VERSION` whenever the code behind a cached value changes its numbers.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.features.cache import DiskCache, cache_key
from bench.io import sha256_tensor

CODE_VERSION = 2  # 2: KID's direct subset sums as dot(u², u) (kernel_sums.cube_sum), other last bits
MEMORY_ENTRIES = 64  # each value is O(N) numbers (radii, row sums); 64 of them at N = 50,000 are ~50 MB

ROOT: Path | None = None  # None: the cache folder (bench/io.py cache_dir); a fresh folder means a cold cache
_memory: OrderedDict[str, dict] = OrderedDict()
_hashes: dict[int, tuple[weakref.ref, int, str]] = {}


def features_hash(real: torch.Tensor) -> str:
    """sha256 of the real features, remembered per tensor object (80 MB of Inception features take ~0.2 s to
    hash and every metric asks). A tensor modified in place has a new `_version`, so it is hashed afresh."""
    entry = _hashes.get(id(real))
    if entry is not None and entry[0]() is real and entry[1] == real._version:
        return entry[2]
    digest = sha256_tensor(real)
    key = id(real)
    _hashes[key] = (weakref.ref(real, lambda _ref, key=key: _hashes.pop(key, None)), real._version, digest)
    return digest


def index_hash(*arrays: np.ndarray) -> str:
    """A short content hash of draw indices (which real rows a subset or subsample holds)."""
    return sha256_tensor(*(torch.as_tensor(np.ascontiguousarray(a)) for a in arrays))


def cached(real: torch.Tensor, kind: str, compute: Callable[[], dict[str, Any]], **params: Any) -> dict[str, Any]:
    """`compute()` (a dict of tensors, arrays and numbers that depends only on `real` and `params`), from memory,
    from the disk cache, or computed and stored in both."""
    key = cache_key(kind=f"real-side:{kind}", features=features_hash(real), code=CODE_VERSION, **params)
    if key in _memory:
        _memory.move_to_end(key)
        return _memory[key]
    disk = DiskCache("real-side", ROOT)
    value = disk.get(key)
    if value is None:
        value = compute()
        disk.put(key, value)
    else:
        value = {k: v for k, v in value.items() if k != "key"}
    _memory[key] = value
    while len(_memory) > MEMORY_ENTRIES:
        _memory.popitem(last=False)
    return value


def forget_memory() -> None:
    """Drop the in-memory copies (the disk cache stays): `bench perf metrics` times the path a new process takes."""
    _memory.clear()

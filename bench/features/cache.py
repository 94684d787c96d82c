"""A content-addressed on-disk cache: the key is a hash of everything the value depends on.

Keys are never names: a changed data file, extractor weight or preprocessing step gives a new key,
so a stale entry can never be read. Values are written atomically (temp file + os.replace), so two
processes filling the same key both leave a complete file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Optional

from bench.io import RefusedGlobal, atomic_torch_save, cache_dir, numpy_array_globals, safe_torch_load

log = logging.getLogger(__name__)
# What values hold besides tensors, dicts, lists, strings and numbers (features, decoded data sets with
# lists of names, judge/segmenter state dicts): the float64 FID statistics of real features (numpy).
ALLOWED = numpy_array_globals("float64")


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class DiskCache:
    def __init__(self, kind: str, root: Optional[Path] = None):
        self.dir = (root or cache_dir()) / kind
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.pt"

    def get(self, key: str) -> Optional[Any]:
        p = self.path(key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            # The cache may be a shared folder: an entry is loaded without running code (weights_only).
            value = safe_torch_load(p, allow=ALLOWED)
        except RefusedGlobal as exc:  # treated as a corrupt entry; nothing in it ran
            log.warning("cache entry %s refused: it needs %s, which no cache entry holds (loading it could run "
                        "code); recomputing", p, exc.name)
            self.misses += 1
            return None
        except Exception as exc:  # a corrupt entry is a miss: it is recomputed and replaced
            log.warning("cache entry %s unreadable (%s); recomputing", p, exc)
            self.misses += 1
            return None
        if not isinstance(value, dict) or value.get("key") != key:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        atomic_torch_save({**value, "key": key}, self.path(key))

"""Full-state checkpoints: everything needed to continue training exactly where it stopped.

A checkpoint holds every network, every optimiser and LR scheduler, the EMA of G, the AMP grad
scaler, the step counter, the data-sampler and noise generators, the global RNG states of every
data-parallel rank, the kept snapshots and best score, and the protocol fingerprint. The step lives inside the file,
never in its name. Writes are atomic, so `latest.pt` is always a complete checkpoint.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.runner.seeding import capture_global_rng, restore_global_rng

FORMAT = "ganbench-checkpoint-1"
# A full disk (or quota, or file-size limit) while writing: the user's problem to fix, not a crash.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def allowed_globals() -> list:
    """The only non-torch types a checkpoint holds, loaded without running code (weights_only=True): the
    numpy global RNG state is a uint32 array. Everything else in `payload()` is tensors (networks, optimiser
    moments, EMA, image pools, generator and torch/CUDA RNG states), dicts, lists, tuples, strings, numbers,
    booleans and None (configs, scheduler and GradScaler states, Python's `random` state, runner state)."""
    from bench.io import numpy_array_globals

    return numpy_array_globals("uint32")


def capture_rank_rng() -> dict[str, Any]:
    return capture_global_rng()


def payload(model, step: int, generators: dict[str, torch.Generator], fingerprint: str, entry: str,
            schedulers: dict[str, Any] | None = None, rank_rng: list[dict[str, Any]] | None = None,
            runner: dict[str, Any] | None = None, data_pixels: str = "") -> dict[str, Any]:
    """The whole training state as one dict (what `latest.pt` holds). `data_pixels`: the sha256 of the decoded
    data it trains on (bench/data/base.py `pixel_digest`; "" = not known, nothing recorded)."""
    from zoo.base import config_record

    rank_rng = rank_rng or [capture_global_rng()]
    return {
        # the same fingerprint's files can decode to other pixels elsewhere: a resume checks these (train.py)
        **({"data_pixels": data_pixels} if data_pixels else {}),
        "format": FORMAT,
        "entry": entry,
        "family": model.family,
        "config": config_record(model.cfg),  # later-added options only when set: old files keep their bytes
        "step": step,
        "fingerprint": fingerprint,
        "modules": {n: m.state_dict() for n, m in model.modules().items()},
        "optimizers": {n: o.state_dict() for n, o in model.optimizers().items()},
        "schedulers": {n: s.state_dict() for n, s in (schedulers or {}).items()},
        "ema": model.ema.state_dict() if model.ema is not None else None,
        "extra": model.extra_state(),  # image pools, growth phase
        "precision": model.trainer.precision.state_dict(),
        "generators": {n: g.get_state() for n, g in generators.items()},
        "global_rng": rank_rng[0],
        "global_rng_ranks": rank_rng,  # one entry per data-parallel rank
        "runner": dict(runner or {}),  # kept snapshots, best FID so far
    }


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write(path: Path, data: dict[str, Any]) -> str:
    """Write atomically, with a `<file>.sha256` sidecar so a tampered or bit-rotten file is caught on read.

    A kill can land between the two renames, so the sidecar briefly lists the old digest as well: first
    the sidecar with both, then the checkpoint, then the sidecar with the new one only. Whatever state a
    SIGKILL leaves, the checkpoint on disk matches a listed digest.
    """
    from bench.io import atomic_write_bytes, sha256_file, torch_bytes

    blob = torch_bytes(data)
    import hashlib

    new = hashlib.sha256(blob).hexdigest()
    side = digest_path(path)
    old = sha256_file(path) if path.is_file() else None
    try:
        atomic_write_bytes(side, ("\n".join(d for d in (new, old) if d) + "\n").encode())
        atomic_write_bytes(path, blob)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            # The temp file is gone and the previous checkpoint (if any) still matches its sidecar, so
            # `bench run --resume` continues from it once there is room.
            raise BenchError(f"{path.parent}: no space left on the device writing {path.name} "
                             f"({len(blob) / 2**20:.1f} MiB); free space, then `bench run --resume` continues "
                             "from the previous checkpoint") from None
        raise
    atomic_write_bytes(side, (new + "\n").encode())
    return new


def save(path: Path, model, step: int, generators: dict[str, torch.Generator], fingerprint: str,
         entry: str) -> str:  # a checkpoint with fresh runner state (tests, tools)
    return write(path, payload(model, step, generators, fingerprint, entry))


def read(path: Path) -> dict[str, Any]:
    side = digest_path(path)
    if side.is_file() and path.is_file():
        from bench.io import sha256_file

        recorded = side.read_text().split()
        actual = sha256_file(path)
        if actual not in recorded:
            raise BenchError(f"{path}: checkpoint was modified or damaged after it was written (sha256 {actual[:12]}, "
                             f"recorded {recorded[0][:12] if recorded else 'nothing'} in {side.name})")
    from bench.io import RefusedGlobal, safe_torch_load

    try:
        # Never unpickled with code execution: a checkpoint may come from anyone (a `checkpoint:` entry).
        payload = safe_torch_load(path, allow=allowed_globals())
    except FileNotFoundError:
        raise BenchError(f"{path}: checkpoint not found") from None
    except RefusedGlobal as exc:
        raise BenchError(f"{path}: refused to load: it needs {exc.name}, which a ganbench checkpoint never holds "
                         "(loading it could run code)") from None
    except Exception as exc:
        raise BenchError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BenchError(f"{path}: not a ganbench checkpoint")
    return payload


def load_into(payload: dict[str, Any], model, path: Path, weights_only: bool = False) -> None:
    """Load networks (and, unless weights_only, optimisers) into a built model; mismatches are one line."""
    if payload["family"] != model.family:
        raise BenchError(f"{path}: checkpoint is a '{payload['family']}' model, the entry is '{model.family}'")
    for name, module in model.modules().items():
        if name not in payload["modules"]:
            raise BenchError(f"{path}: checkpoint has no network '{name}'")
        try:
            module.load_state_dict(payload["modules"][name])
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
            raise BenchError(f"{path}: checkpoint does not fit this architecture ({name}: {first})") from None
    if payload.get("ema") is not None:
        # Sampling uses the weight average whenever the run kept one, for training and for scoring alike.
        from zoo.ema import EMA

        if model.ema is None:
            model.ema = EMA(model.modules()["G"], payload["ema"]["decay"])
        model.ema.load_state_dict(payload["ema"])
    if not weights_only:
        for name, opt in model.optimizers().items():
            opt.load_state_dict(payload["optimizers"][name])
        model.trainer.precision.load_state_dict(payload.get("precision") or {})
        model.load_extra_state(payload.get("extra") or {})


def check_config(payload: dict[str, Any], model, path: Path) -> None:
    """A checkpoint is only scored under the config it was trained with (else the card would lie)."""
    if payload["family"] != model.family:
        raise BenchError(f"{path}: checkpoint is a '{payload['family']}' model, the entry is '{model.family}'")
    from zoo.base import later_defaults

    # A key added to the family after the file was written reads as its default.
    stored, current = {**later_defaults(model.cfg), **payload.get("config", {})}, model.card()["config"]
    diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    if diff:
        k = diff[0]
        raise BenchError(f"{path}: checkpoint was trained with {k}={stored.get(k)!r}, the entry says "
                         f"{k}={current.get(k)!r}; make the entry's config match")


def restore_training_state(payload: dict[str, Any], generators: dict[str, torch.Generator], model=None,
                           schedulers: dict[str, Any] | None = None, rank: int = 0) -> int:
    for name, g in generators.items():
        if name in payload["generators"]:
            g.set_state(payload["generators"][name])
    for name, s in (schedulers or {}).items():
        if name in payload.get("schedulers", {}):
            s.load_state_dict(payload["schedulers"][name])
    ranks = payload.get("global_rng_ranks") or [payload["global_rng"]]
    restore_global_rng(ranks[rank] if rank < len(ranks) else payload["global_rng"])
    return int(payload["step"])

"""Full-state checkpoints: everything needed to continue training exactly where it stopped.

A checkpoint holds every network, every optimiser, the step counter, the data-sampler and noise
generators, the global RNG states and the protocol fingerprint. The step lives inside the file,
never in its name. Writes are atomic, so `latest.pt` is always a complete checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.io import atomic_torch_save
from bench.runner.seeding import capture_global_rng, restore_global_rng

FORMAT = "ganbench-checkpoint-1"


def save(path: Path, model, step: int, generators: dict[str, torch.Generator], fingerprint: str,
         entry: str) -> str:
    payload = {
        "format": FORMAT,
        "entry": entry,
        "family": model.family,
        "config": model.card()["config"],
        "step": step,
        "fingerprint": fingerprint,
        "modules": {n: m.state_dict() for n, m in model.modules().items()},
        "optimizers": {n: o.state_dict() for n, o in model.optimizers().items()},
        "generators": {n: g.get_state() for n, g in generators.items()},
        "global_rng": capture_global_rng(),
    }
    return atomic_torch_save(payload, path)


def read(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise BenchError(f"{path}: checkpoint not found") from None
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
    if not weights_only:
        for name, opt in model.optimizers().items():
            opt.load_state_dict(payload["optimizers"][name])


def check_config(payload: dict[str, Any], model, path: Path) -> None:
    """A checkpoint is only scored under the config it was trained with (else the card would lie)."""
    stored, current = payload.get("config", {}), model.card()["config"]
    diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    if diff:
        k = diff[0]
        raise BenchError(f"{path}: checkpoint was trained with {k}={stored.get(k)!r}, the entry says "
                         f"{k}={current.get(k)!r}; make the entry's config match")


def restore_training_state(payload: dict[str, Any], generators: dict[str, torch.Generator]) -> int:
    for name, g in generators.items():
        g.set_state(payload["generators"][name])
    restore_global_rng(payload["global_rng"])
    return int(payload["step"])

"""Seeds derived by name, and capture/restore of every RNG a training step can touch."""

from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
import torch


from bench.io import derive  # noqa: E402,F401 (defined with the other hashing helpers; lower layers use it too)


def entry_seed(protocol_seed: int, entry: str, train_seed: Optional[int] = None) -> int:
    """The seed an entry trains from (initial weights, data order, noise all derive from it).

    Training seed 0 and no training seed at all are the same seed, the one protocols had before
    `train_seeds` existed, so existing weights stay bit-identical; every other training seed is its own.
    """
    if not train_seed:
        return derive(protocol_seed, "entry", entry)
    return derive(protocol_seed, "entry", entry, "train_seed", train_seed)


def capture_global_rng() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        from bench.errors import BenchError

        raise BenchError("device 'cuda' requested but no CUDA device is available; use device: auto or cpu")
    return torch.device(requested)

"""What machine a number was computed on: recorded with every result and part of local judges' cache keys.

Training (of a GAN or of a judge) differs in the last bits across CPU models and thread counts, and a GAN
amplifies that; these facts let a reader tell machine variance from a real change.
"""

from __future__ import annotations

import platform
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def identity(device_type: str = "cpu") -> dict[str, object]:
    """Everything besides the inputs that can change trained weights in their last bits."""
    return {"cpu": cpu_model(), "machine": platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": device_type}

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
    return cpuinfo_fields().get("model name") or _platform_name()


def _platform_name() -> str:
    """What Python knows of the processor where /proc/cpuinfo says nothing (macOS, Windows)."""
    return platform.processor() or platform.machine() or "unknown"


# The instruction-set extensions that decide which matrix kernels MKL and oneDNN run (and so a trained
# network's last bits); reported when present, as /proc/cpuinfo spells them (x86 "flags", Arm "Features").
_MATH_FLAGS = ("fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
               "amx_bf16", "amx_int8", "asimd", "sve", "sve2", "sme")


def cpuinfo_fields(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo (Linux), keys lower-case; empty elsewhere."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break  # the end of the first processor's block
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


@lru_cache(maxsize=1)
def cpu_detail() -> str:
    """What tells two CPUs apart when their model name does not: under virtualisation the name is often the
    generic "Intel(R) Xeon(R) Processor" on machines whose kernels differ. Vendor, family, model and
    stepping (x86) or implementer and part (Arm), the ISA torch's own CPU kernels dispatch to, and the math
    extensions present. Recorded with every run (bench/tracking/layout.py CPU_DETAIL), not part of local
    judges' cache keys (`identity`), so adding it moved no cached judge."""
    try:
        kernels = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        kernels = "unknown"
    return describe_cpu(cpuinfo_fields(), kernels)


def describe_cpu(f: dict[str, str], kernels: str) -> str:
    """`cpu_detail` from parsed /proc/cpuinfo fields and torch's kernel ISA."""
    if "vendor_id" in f:
        chip = f"{f['vendor_id']} family {f.get('cpu family', '?')} model {f.get('model', '?')} " \
               f"stepping {f.get('stepping', '?')}"
    elif "cpu implementer" in f:
        chip = f"implementer {f['cpu implementer']} part {f.get('cpu part', '?')} variant {f.get('cpu variant', '?')}"
    else:
        chip = _platform_name()
    present = set((f.get("flags") or f.get("features") or "").split())
    extensions = " ".join(x for x in _MATH_FLAGS if x in present) or "no listed extensions"
    return f"{chip}; torch kernels {kernels}; {extensions}"


def identity(device_type: str = "cpu") -> dict[str, object]:
    """Everything besides the inputs that can change trained weights in their last bits."""
    return {"cpu": cpu_model(), "machine": platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": device_type}

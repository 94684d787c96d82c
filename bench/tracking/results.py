"""The result envelope and the append-only JSONL that is the offline source of truth.

MLflow mirrors it; if the two ever disagree, results.jsonl wins. Lines are only appended (one
`write` of one line with O_APPEND), never rewritten.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import torch

from bench import machine
from bench.errors import BenchError

# Recorded with every result. Pillow decodes and resizes the image files, scikit-image computes SSIM and lpips
# holds LPIPS's network code: each can move a score without changing the fingerprint.
_PACKAGES = ("torch", "torchvision", "torch-fidelity", "mlflow", "numpy", "scipy", "pydantic", "pillow",
             "scikit-image", "lpips", "ganbench")


@dataclass
class EvalResult:
    protocol: str
    fingerprint: str
    entry: str
    zoo: str
    status: str  # FINISHED or FAILED
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {mean, std, per_seed}
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    train_seed: Optional[int] = None  # None: the entry's single default training run (protocol without train_seeds)


def finished_rows(path: Path, fingerprint: str,
                  pixels: Optional[str] = None) -> dict[tuple[str, Optional[int]], dict[str, Any]]:
    """The newest FINISHED row of every (entry, training seed) of one fingerprint (what `bench run --resume`
    need not redo). A torn last line (a kill mid-append) is ignored: it was never a complete result.
    `pixels` (bench.data.base.pixel_digest of this run's data): when a unit's newest finished row recorded other
    decoded pixels under the same fingerprint (another Pillow, libjpeg-turbo or CPU decoded the same files), that
    is an error, since its scores were measured against other images. Rows from before the digest was recorded
    are taken; an older row of other pixels that a newer one of these pixels replaced is only history."""
    rows: dict[tuple[str, Optional[int]], dict[str, Any]] = {}
    lines: dict[tuple[str, Optional[int]], int] = {}
    if not path.is_file():
        return rows
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line: the append after a kill starts on a fresh line, so it may sit mid-file
        except RecursionError:  # valid JSON nested deeper than the parser goes: nothing bench wrote
            raise BenchError(f"{path} line {number}: not a ganbench result row (nested too deeply); fix or remove "
                             "that line") from None
        # Valid JSON that is not a result row was written by something else (an edit, another tool): resuming
        # from it would skip or mis-table a unit, so it is one clear error instead of a traceback later.
        problem = _row_problem(row, fingerprint)
        if problem:
            raise BenchError(f"{path} line {number}: not a ganbench result row ({problem}); fix or remove that line")
        if row.get("fingerprint") == fingerprint and row.get("status") == "FINISHED":
            key = (row["entry"], row.get("train_seed"))
            rows[key], lines[key] = row, number
    for key, row in rows.items():
        theirs = row.get("env", {}).get("data_pixels")
        if other_pixels(theirs, pixels):
            change = decoder_change(row.get("env", {}), decoder_environment())
            raise BenchError(
                f"{path} line {lines[key]}: entry '{row['entry']}' was scored on data decoded to other pixels "
                f"(sha256 {theirs[:12]}, now {pixels[:12]}; {change}), so --resume would pool scores of different "
                "images; run without --resume in another --workdir")
    return rows


# What turns the same data files into pixels, as every result records it: a change in any of them can change
# the pixels. The CPU kernels no longer do (bench/data/resample.py), but rows decoded before that on a CPU without
# AVX2 hold other pixels, and the kernels they recorded say why.
_DECODERS = ("pillow", "pillow.libjpeg_turbo", "torch")


def other_pixels(recorded, ours: str) -> bool:
    """Whether a record (a result row, a checkpoint, a sweep row) names decoded pixels that are not `ours`. A
    record without pixels (made before they were recorded) is not "other": it pools with a fingerprint's one set."""
    return bool(ours) and recorded is not None and recorded != ours


def decoder_change(then: Any, now: dict[str, Any]) -> str:
    """What differs between two recorded environments in what decodes and resizes images (Pillow, its
    libjpeg-turbo, torch and the CPU kernels torch dispatches to), for the messages that refuse to pool them."""
    then = then if isinstance(then, dict) else {}
    old, new = then.get("packages"), now.get("packages", {})
    old = old if isinstance(old, dict) else {}
    changed = [f"{k} {old.get(k, 'unrecorded')} then, {new.get(k)} now" for k in _DECODERS if old.get(k) != new.get(k)]
    kernels_then, kernels_now = _kernels(then.get("cpu_detail")), _kernels(now.get("cpu_detail"))
    if kernels_then != kernels_now:
        changed.append(f"torch CPU kernels {kernels_then} then, {kernels_now} now")
    return "; ".join(changed) if changed else "Pillow, libjpeg-turbo, torch and its CPU kernels recorded alike"


def _kernels(cpu_detail: Any) -> str:
    """The ISA torch's CPU kernels dispatch to, from a recorded `cpu_detail` (bench/machine.py): "unrecorded"
    when absent."""
    if not isinstance(cpu_detail, str):
        return "unrecorded"
    for part in cpu_detail.split(";"):
        if part.strip().startswith("torch kernels "):
            return part.strip()[len("torch kernels "):]
    return "unrecorded"


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _row_problem(row: Any, fingerprint: str) -> str:
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    if row.get("fingerprint") != fingerprint or row.get("status") != "FINISHED":
        return ""  # another protocol's row, or one resume redoes anyway
    if not isinstance(row.get("entry"), str):
        return "no entry name"
    seed = row.get("train_seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        return "'train_seed' is not an integer"
    metrics = row.get("metrics")
    if not isinstance(metrics, dict):
        return "'metrics' is not a mapping"
    for key, value in metrics.items():
        mean = value.get("mean") if isinstance(value, dict) else None
        if isinstance(mean, bool) or not isinstance(mean, (int, float)):
            return f"metric '{key}' has no numeric mean"
    env = row.get("env", {})
    if not isinstance(env, dict):
        return "'env' is not a mapping"
    # A row that cannot say which pixels it measured must not pass as one from before the digest was recorded.
    if "data_pixels" in env and not (isinstance(env["data_pixels"], str) and _SHA256.fullmatch(env["data_pixels"])):
        return "'env.data_pixels' is not a sha256"
    return ""


def append(path: Path, result: EvalResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(asdict(result), sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        # Several sweep jobs append to one file (bench/sweep.py): the torn-line check and the write happen
        # under an exclusive lock, so two writers never interleave or both "repair" the same tail.
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a kill mid-append left a torn line: start afresh
            line = b"\n" + line
        written = os.write(fd, line)
        if written != len(line):  # a short write (disk full) must not pass silently
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
    finally:
        os.close(fd)  # releases the lock


def read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def git_sha() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        if out.returncode == 0 and sha:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


def environment_packages() -> dict[str, str]:
    """package -> installed version ("absent"), as every result records them."""
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "absent"
    # The JPEG decoder inside Pillow's wheel: the library that turns CIFAR-10's, CelebA's and the translation
    # sets' files into pixels (its version can change under an unchanged Pillow built elsewhere).
    try:
        from PIL import features

        versions["pillow.libjpeg_turbo"] = features.version("libjpeg_turbo") or "absent"
    except ImportError:
        versions["pillow.libjpeg_turbo"] = "absent"
    return versions


def decoder_environment() -> dict[str, Any]:
    """The parts of `environment` that decode and resize images (for `decoder_change`), without the git call."""
    return {"packages": environment_packages(), "cpu_detail": machine.cpu_detail()}


def environment(device: torch.device) -> dict[str, Any]:
    versions = environment_packages()
    return {
        "git_sha": git_sha(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        # Training differs in the last bits across CPUs and thread counts: recorded so that a reader can
        # tell that variance from a real change (scoring a fixed checkpoint does not depend on either).
        "cpu": machine.cpu_model(),
        "cpu_detail": machine.cpu_detail(),
        "packages": versions,
    }

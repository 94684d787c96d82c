"""`bench perf train`: the shared runner's DCGAN training step against the reference script's, on this machine.

The reference is pytorch/examples `dcgan/main.py`, run from a checkout the user names (`--dcgan-ref PATH`).
It runs with `--dataset fake`, at 64 px, batch 64, ngf = ndf = 64, nz 100, and `--workers 0`, so no loader
process competes for the cores. Both sides use the same torch, the same thread count and the same shapes.

How each side is timed:
- The reference prints one line per step, and each line is timed as it arrives (the script runs with `-u`).
  A step's time is the gap between two lines. Gaps that carry other work are dropped: the line after an
  epoch's first step (image saving), an epoch's first step (its checkpoint, the loader restart) and the
  epoch's last, partial batch.
- Our side runs `train_entry` (bench/runner/train.py), the loop every protocol uses (LR schedulers, the finite-loss
  check, EMA hook, progress bar), with `log_every: 1`. The gap between two log calls is one step. Its data is
  an in-memory uint8 tensor of the same shape, as a protocol's data is.

The ratio is the reference's median step over ours. The two sides alternate, `--repeats` times each, and the
min, median and max of the ratios are printed.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.errors import BenchError

RES, BATCH, WIDTH, NZ = 64, 64, 64, 100
FAKE_IMAGES = 1000  # torchvision FakeData's default size: 15 full batches of 64 and one of 40 per epoch
_LINE = re.compile(r"^\[(\d+)/(\d+)\]\[(\d+)/(\d+)\] Loss_D")


def reference_script(path: str) -> Path:
    """main.py of a pytorch/examples checkout (the repository root or its dcgan/ folder)."""
    root = Path(path).expanduser()
    for candidate in (root / "dcgan" / "main.py", root / "main.py"):
        if candidate.is_file():
            return candidate
    raise BenchError(f"--dcgan-ref {path}: no dcgan/main.py there (give a checkout of pytorch/examples)")


def reference_steps(script: Path, steps: int, warmup: int, threads: int) -> list[float]:
    """Seconds per clean training step of the reference script, `steps` of them after `warmup` clean ones."""
    per_epoch = FAKE_IMAGES // BATCH - 2  # clean gaps per epoch: steps 2 .. 14 of 0 .. 15
    epochs = -(-(steps + warmup) // per_epoch) + 1
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-u", str(script), "--dataset", "fake", "--batchSize", str(BATCH), "--imageSize",
               str(RES), "--ngf", str(WIDTH), "--ndf", str(WIDTH), "--nz", str(NZ), "--niter", str(epochs),
               "--workers", "0", "--outf", out, "--manualSeed", "0"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=out)
        gaps, last = [], None
        last_batch = -(-FAKE_IMAGES // BATCH) - 1
        try:
            for line in proc.stdout:
                now = time.perf_counter()
                m = _LINE.match(line)
                if not m:
                    continue
                i = int(m.group(3))
                if last is not None and 2 <= i < last_batch:
                    gaps.append(now - last)
                last = now
                if len(gaps) >= warmup + steps:
                    break
        finally:
            proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            proc.wait()
    if len(gaps) < warmup + steps:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{script}: the reference ended after {len(gaps)} timed steps ({tail})")
    return gaps[warmup:]


def our_steps(steps: int, warmup: int, threads: int, channels_last: bool = False, reuse: bool = False) -> list[float]:
    """Seconds per training step of the shared runner on the same DCGAN shapes (`train.channels_last`: NHWC
    weights and batches, which oneDNN's CPU convolutions run without reordering every call; `reuse`: the
    recipe's `g_fakes: reuse`, G's step scoring D's fakes, one G forward per step as the reference does)."""
    from bench.protocol.schema import TrainSpec
    from bench.runner.train import train_entry
    from zoo import ZOO
    from zoo.base import DataSpec

    torch.set_num_threads(threads)
    images = torch.randint(0, 256, (FAKE_IMAGES, 3, RES, RES), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ZOO.get("dcgan").build({"resolution": RES, "ngf": WIDTH, "ndf": WIDTH, "latent_dim": NZ,
                                        "g_fakes": "reuse" if reuse else "fresh"},
                                       DataSpec("fake", RES, 3), "cpu")
    spec = TrainSpec(steps=warmup + steps + 1, batch_size=BATCH, log_every=1, checkpoint_every=10**9,
                     channels_last=channels_last)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as run_dir:
        train_entry(model, images, spec, Path(run_dir), 0, "perf", "dcgan",
                    lambda losses, step: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return gaps[warmup:warmup + steps]


def perf_train(dcgan_ref: str | None, steps: int = 20, warmup: int = 3, repeats: int = 3,
               threads: int | None = None) -> str:
    threads = threads or torch.get_num_threads()
    lines = [f"DCGAN 64 px, batch {BATCH}, ngf = ndf = {WIDTH}, nz {NZ}, {threads} thread(s); "
             f"{steps} timed steps after {warmup} warm-up, {repeats} repeats"]
    script = reference_script(dcgan_ref) if dcgan_ref else None
    # (channels_last, g_fakes reuse): the default; NHWC; NHWC and the reference's own one-G-forward step
    sides = {"ganbench (default)": (False, False), "ganbench (train.channels_last)": (True, False),
             "ganbench (channels_last, g_fakes: reuse)": (True, True)}
    times: dict[str, list[float]] = {name: [] for name in [*sides, "reference"]}
    for r in range(repeats):  # the sides alternate, so a slow spell of the machine hits all of them
        for name, (cl, reuse) in sides.items():
            print(f"[perf] repeat {r + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            times[name].append(statistics.median(our_steps(steps, warmup, threads, cl, reuse)))
        if script is not None:
            print(f"[perf] repeat {r + 1}/{repeats}: reference {script}", file=sys.stderr, flush=True)
            times["reference"].append(statistics.median(reference_steps(script, steps, warmup, threads)))

    def spread(xs: list[float], fmt: str) -> str:
        return f"median {fmt.format(statistics.median(xs))} (min {fmt.format(min(xs))}, max {fmt.format(max(xs))})"

    width = max(map(len, times))
    for name, xs in times.items():
        if xs:
            lines.append(f"  {name:<{width}}  step {spread(xs, '{:.3f}')} s")
    if script is None:
        lines.append("  reference: not given (--dcgan-ref PATH, a checkout of pytorch/examples): no ratio")
    else:
        for name in sides:
            ratios = [ref / ours for ref, ours in zip(times["reference"], times[name])]
            lines.append(f"  reference / {name}: {spread(ratios, '{:.2f}')}x   (target >= 1.30x)")
    lines.append("  pix2pix: the junyanz reference is not timed by this command (see docs/metrics.md, Performance)")
    return "\n".join(lines)

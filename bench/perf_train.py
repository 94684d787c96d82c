"""`bench perf train`: the shared runner's training step against the reference scripts', on this machine.

DCGAN: pytorch/examples `dcgan/main.py`, run from a checkout the user names (`--dcgan-ref PATH`), with
`--dataset fake`, at 64 px, batch 64, ngf = ndf = 64, nz 100, and `--workers 0`, so no loader process
competes for the cores.

pix2pix: the junyanz pytorch-CycleGAN-and-pix2pix `train.py` (`--pix2pix-ref PATH`), `--model pix2pix` with its
own defaults (unet_256, basic 70x70 PatchGAN, batch norm, vanilla GAN loss + 100 L1, Adam 2e-4), batch 1, on
the facades training pairs (BtoA, resize 286, random crop 256, flips), `--num_threads 0` for the same reason.
Our side trains `pix2pix` at 256 px with `generator: unet_256` on the same files with the same jitter.

Both sides use the same torch, the same thread count and the same shapes. How each side is timed:
- A reference prints one line per step, and each line is timed as it arrives (the script runs with `-u`).
  A step's time is the gap between two lines. Gaps that carry other work are dropped: for DCGAN the line
  after an epoch's first step (image saving), an epoch's first step (its checkpoint, the loader restart) and
  the epoch's last, partial batch; pix2pix prints nothing else inside its first epoch, which the timed steps
  never leave.
- Our side runs `train_entry` (bench/runner/train.py), the loop every protocol uses (LR schedulers, the finite-loss
  check, EMA hook, progress bar), with `log_every: 1`. The gap between two log calls is one step. Its data is
  an in-memory uint8 tensor, as a protocol's data is.

The ratio is the reference's median step over ours. The sides alternate, `--repeats` times each, and the
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
P2P_RES, P2P_LOAD, P2P_BATCH = 256, 286, 1
_P2P_LINE = re.compile(r"^\(epoch: (\d+), iters: (\d+), time: ")


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
        last_batch = -(-FAKE_IMAGES // BATCH) - 1

        def clean(line: str) -> bool | None:  # a step line; does the gap ending at it hold only a step?
            m = _LINE.match(line)
            return None if not m else 2 <= int(m.group(3)) < last_batch

        return _line_gaps(script, cmd, out, clean, steps, warmup, threads)


def _line_gaps(script: Path, cmd: list[str], cwd: str | Path, clean, steps: int, warmup: int,
               threads: int) -> list[float]:
    """Run a reference script and time the gaps between its step lines as they arrive. `clean(line)` is None
    for a line that is not a step, else whether the gap that ends at it holds only one step. Returns `steps`
    clean gaps after `warmup`; stops the script as soon as it has them."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    gaps, last = [], None
    try:
        for line in proc.stdout:
            now = time.perf_counter()
            counts = clean(line)
            if counts is None:
                continue
            if last is not None and counts:
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


# marks the rows whose step computes in another precision than the reference (printed with a footnote)
BF16 = "precision: bf16 *"


def our_steps(steps: int, warmup: int, threads: int, channels_last: bool = False, reuse: bool = False,
              fused: bool = False, precision: str = "fp32") -> list[float]:
    """Seconds per training step of the shared runner on the same DCGAN shapes (`train.channels_last`: NHWC
    weights and batches, which oneDNN's CPU convolutions run without reordering every call; `reuse`: the
    recipe's `g_fakes: reuse`, G's step scoring D's fakes, one G forward per step as the reference does;
    `precision`: `train.precision`, bf16 autocast)."""
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
                     channels_last=channels_last, fused_adam=fused, precision=precision)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as run_dir:
        train_entry(model, images, spec, Path(run_dir), 0, "perf", "dcgan",
                    lambda losses, step: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return gaps[warmup:warmup + steps]


def pix2pix_reference_script(path: str) -> Path:
    """train.py of a pytorch-CycleGAN-and-pix2pix checkout."""
    script = Path(path).expanduser() / "train.py"
    if not (script.is_file() and (script.parent / "models" / "pix2pix_model.py").is_file()):
        raise BenchError(f"--pix2pix-ref {path}: no train.py with models/pix2pix_model.py there (give a checkout of "
                         "junyanz/pytorch-CycleGAN-and-pix2pix)")
    return script


def facades_root(path: str | None) -> Path:
    """The facades pairs (train/ of 512x256 AB files): --facades, else $BENCH_DATA/facades."""
    root = Path(path).expanduser() if path else (Path(os.environ["BENCH_DATA"]) / "facades"
                                                 if os.environ.get("BENCH_DATA") else None)
    if root is None or not (root / "train").is_dir():
        raise BenchError(f"pix2pix timing needs the facades pairs: no train/ folder in {root or '$BENCH_DATA/facades'} "
                         "(give --facades PATH)")
    return root


def pix2pix_reference_steps(script: Path, dataroot: Path, steps: int, warmup: int, threads: int) -> list[float]:
    """Seconds per training step of the reference pix2pix train.py, `steps` of them after `warmup`."""
    with tempfile.TemporaryDirectory() as out:
        never = str(10 ** 9)
        cmd = [sys.executable, "-u", str(script), "--dataroot", str(dataroot), "--name", "perf", "--model", "pix2pix",
               "--direction", "BtoA", "--netG", "unet_256", "--netD", "basic", "--batch_size", str(P2P_BATCH),
               "--load_size", str(P2P_LOAD), "--crop_size", str(P2P_RES), "--gpu_ids", "-1", "--num_threads", "0",
               "--checkpoints_dir", out, "--display_id", "-1", "--no_html", "--print_freq", "1",
               "--display_freq", never, "--save_latest_freq", never, "--save_epoch_freq", never,
               "--n_epochs", "1", "--n_epochs_decay", "0"]
        # every step line ends a clean gap: the first epoch, which the timed steps never leave, prints nothing else
        return _line_gaps(script, cmd, script.parent, lambda line: True if _P2P_LINE.match(line) else None,
                          steps, warmup, threads)


def our_pix2pix_steps(dataroot: Path, steps: int, warmup: int, threads: int, channels_last: bool = False,
                      fused: bool = False, precision: str = "fp32", gemm: bool = False) -> list[float]:
    """Seconds per training step of the shared runner's pix2pix on the reference's setting (`gemm`:
    `train.gemm_convs`, the U-Net's weight-bound inner convolutions as unfold + one matrix product)."""
    from bench.data import load_dataset
    from bench.protocol.schema import DatasetSpec, TrainSpec
    from bench.runner.train import train_entry
    from zoo import ZOO

    torch.set_num_threads(threads)
    data = load_dataset(DatasetSpec(name="facades", root=str(dataroot), resolution=P2P_RES, channels=3,
                                    train_size=400, eval_size=2, direction="BtoA", load_size=P2P_LOAD, flip=True), 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ZOO.get("pix2pix").build({"resolution": P2P_RES, "generator": "unet_256"}, data.spec, "cpu")
    spec = TrainSpec(steps=warmup + steps + 1, batch_size=P2P_BATCH, log_every=1, checkpoint_every=10**9,
                     channels_last=channels_last, fused_adam=fused, precision=precision, gemm_convs=gemm)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as run_dir:
        train_entry(model, data.train_images, spec, Path(run_dir), 0, "perf", "pix2pix",
                    lambda losses, step: stamps.append(time.perf_counter()), data=data)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return gaps[warmup:warmup + steps]


def _spread(xs: list[float], fmt: str) -> str:
    return f"median {fmt.format(statistics.median(xs))} (min {fmt.format(min(xs))}, max {fmt.format(max(xs))})"


def _timed(title: str, sides: dict, reference, repeats: int, missing: str) -> list[str]:
    """Alternate our settings (`sides`: name -> zero-argument step timer) with the reference (or None), `repeats`
    times, so a slow spell of the machine hits all of them; lines of medians and reference/ours ratios."""
    times: dict[str, list[float]] = {name: [] for name in [*sides, "reference"]}
    for r in range(repeats):
        for name, run in sides.items():
            print(f"[perf] {title} repeat {r + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            times[name].append(statistics.median(run()))
        if reference is not None:
            print(f"[perf] {title} repeat {r + 1}/{repeats}: reference", file=sys.stderr, flush=True)
            times["reference"].append(statistics.median(reference()))
    width = max(map(len, times))
    lines = [f"  {name:<{width}}  step {_spread(xs, '{:.3f}')} s" for name, xs in times.items() if xs]
    if reference is None:
        lines.append(f"  reference: not given ({missing}): no ratio")
    else:
        for name in sides:
            ratios = [ref / ours for ref, ours in zip(times["reference"], times[name])]
            lines.append(f"  reference / {name}: {_spread(ratios, '{:.2f}')}x   (target >= 1.30x)")
    return lines


def perf_train(dcgan_ref: str | None, steps: int = 20, warmup: int = 3, repeats: int = 3,
               threads: int | None = None, pix2pix_ref: str | None = None, facades: str | None = None,
               models: tuple[str, ...] = ("dcgan", "pix2pix")) -> str:
    from bench.machine import cpu_detail

    threads = threads or torch.get_num_threads()
    # the bf16 rows' speed depends on the CPU's bf16 instructions (AMX, AVX-512 BF16): say which CPU this was
    lines = [f"CPU: {cpu_detail()}"]
    if "dcgan" in models:
        script = reference_script(dcgan_ref) if dcgan_ref else None
        lines.append(f"DCGAN 64 px, batch {BATCH}, ngf = ndf = {WIDTH}, nz {NZ}, {threads} thread(s); "
                     f"{steps} timed steps after {warmup} warm-up, {repeats} repeats")
        # (channels_last, g_fakes reuse, fused Adam, precision): the default; NHWC; NHWC and the reference's own
        # one-G-forward step; with Adam's fused kernel; and the fastest fp32 setting under bf16 autocast
        sides = {name: (lambda o=o: our_steps(steps, warmup, threads, *o))
                 for name, o in {"ganbench (default)": (False, False, False, "fp32"),
                                 "ganbench (train.channels_last)": (True, False, False, "fp32"),
                                 "ganbench (channels_last, g_fakes: reuse)": (True, True, False, "fp32"),
                                 "ganbench (channels_last, reuse, fused_adam)": (True, True, True, "fp32"),
                                 f"ganbench (channels_last, reuse, {BF16})": (True, True, False, "bf16")}.items()}
        lines += _timed("DCGAN", sides, script and (lambda: reference_steps(script, steps, warmup, threads)),
                        repeats, "--dcgan-ref PATH, a checkout of pytorch/examples")
    if "pix2pix" in models:
        root = facades_root(facades)
        script = pix2pix_reference_script(pix2pix_ref) if pix2pix_ref else None
        lines.append(f"pix2pix {P2P_RES} px (facades BtoA, resize {P2P_LOAD}, crop, flip), unet_256 + basic PatchGAN, "
                     f"batch {P2P_BATCH}, {threads} thread(s); {steps} timed steps after {warmup} warm-up, "
                     f"{repeats} repeats")
        # (channels_last, fused Adam, precision[, gemm_convs])
        sides = {name: (lambda o=o: our_pix2pix_steps(root, steps, warmup, threads, *o))
                 for name, o in {"ganbench (default)": (False, False, "fp32"),
                                 "ganbench (train.channels_last)": (True, False, "fp32"),
                                 "ganbench (train.fused_adam)": (False, True, "fp32"),
                                 "ganbench (fused_adam, gemm_convs)": (False, True, "fp32", True),
                                 f"ganbench (fused_adam, {BF16})": (False, True, "bf16")}.items()}
        lines += _timed("pix2pix", sides,
                        script and (lambda: pix2pix_reference_steps(script, root, steps, warmup, threads)),
                        repeats, "--pix2pix-ref PATH, a checkout of junyanz/pytorch-CycleGAN-and-pix2pix")
    lines.append(f"{BF16}: forward passes autocast to bfloat16 (`train.precision: bf16`), a different numerical "
                 "recipe from the references' float32, not float noise: the float32 rows are the like-for-like "
                 "comparison")
    return "\n".join(lines)

"""Cheap checks of everything a protocol names (data, weights, checkpoints, entries, metrics, disk), before
the store is opened and before anything trains: a bad input writes nothing anywhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from bench.data import load_dataset
from bench.data.labelmap import LabelMaps
from bench.errors import BenchError
from bench.features import segmenter as semantic
from bench.features.extractors import preflight_extractor
from bench.io import sha256_file
from bench.metrics import METRICS
from bench.metrics.base import check_applicable, inputs_of
from bench.protocol.load import resolved_config
from bench.protocol.load import LoadedProtocol
from bench.runner import checkpoint
from bench.runner import distributed as dist
from bench.runner.precision import Precision
from bench.runner.seeding import pick_device
from zoo import ZOO
from zoo.base import ExternalWeights, reads_instances, task_of


def resolve_checkpoint(path: str, protocol_path: Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists():
        p = protocol_path.parent / p
    return p

def preflight(loaded: LoadedProtocol, workdir: Path | None = None) -> tuple[torch.device, Any, dict[str, str]]:
    """Cheap checks of everything the user supplied (data, weights, checkpoints, fit modes).

    They run before the store is opened and before any expensive work, so a bad input writes
    nothing anywhere. Returns the device, the data and the sha256 of every checkpoint entries load.
    """
    protocol = loaded.protocol
    device = pick_device(protocol.device)
    if device.type == "cuda" and dist.current().active:
        device = torch.device("cuda", dist.current().local_rank)  # one GPU per torchrun process
    data = load_dataset(protocol.dataset, protocol.seed)
    preflight_extractor(protocol.evaluation.extractor, protocol.evaluation.weights, protocol.dataset.name,
                        protocol.dataset.channels, data=data)
    loaded_ckpts = {}
    ckpt_bytes: list[int] = []
    provided: dict[str, frozenset[str]] = {}  # entry -> the metric inputs its model can give (declared)
    for entry in protocol.entries:
        # Every entry is built once here (on the CPU, cheap), so a config that cannot work with this
        # data fails now, not after the judge and earlier entries have trained.
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # shapes only: nothing allocated
            where = f"entries[{entry.name}].config"
            built = ZOO.get(entry.zoo).build(resolved_config(entry, where), data.spec, "meta", where=where)
        res, task = built.resolution, task_of(built)
        provided[f"{entry.name} ({entry.zoo})"] = inputs_of(built, data)
        if task != data.task and not (task == "unconditional" and data.task == "unconditional"):
            raise BenchError(f"entries[{entry.name}]: zoo entry '{entry.zoo}' is a {task} model but data set "
                             f"'{protocol.dataset.name}' is {data.task} data")
        if task != "unconditional" and res != protocol.dataset.resolution:
            raise BenchError(f"entries[{entry.name}].config.resolution is {res} but dataset.resolution is "
                             f"{protocol.dataset.resolution}; an image-to-image model translates at the data's size")
        in_ch = getattr(data.spec, "input_channels", 0)
        if reads_instances(built):  # pix2pixHD's feature encoder pools per instance: it needs the instance ids
            if not (isinstance(data.train_inputs, LabelMaps) and data.train_inputs.has_instances):
                raise BenchError(f"entries[{entry.name}]: zoo entry '{entry.zoo}' reads the inputs' instance ids "
                                 f"(pix2pixhd's feat_num > 0), which '{protocol.dataset.name}' does not have (label "
                                 "maps read with dataset.instance: true have them)")
        elif task == "paired" and in_ch:
            try:  # label maps (bench/data/labelmap.py): a family that reads only images fails now, not mid-run
                built.translate(torch.zeros(1, in_ch, *protocol.dataset.frame, device="meta"))
            except RuntimeError:
                raise BenchError(f"entries[{entry.name}]: zoo entry '{entry.zoo}' cannot read the {in_ch}-channel "
                                 f"label-map inputs of '{protocol.dataset.name}' (pix2pixhd reads label maps)") from None
        if "segmenter" in built.requires() and not semantic.available(data):
            raise BenchError(f"entries[{entry.name}]: L_sem needs the semantic network S, which is trained on label "
                             f"maps that data set '{protocol.dataset.name}' does not have (facades_sr has them); "
                             "set lambda_sem: 0")
        if isinstance(built, ExternalWeights) and not entry.checkpoint:
            raise BenchError(f"entries[{entry.name}]: zoo entry '{entry.zoo}' scores a generator you bring; give "
                             "checkpoint: {path, format, latent_dim, resolution, ...} instead of train:")
        if entry.train and entry.train.steps and not built.optimizers():  # e.g. pix2pixhd_sem's bicubic baseline
            raise BenchError(f"entries[{entry.name}]: zoo entry '{entry.zoo}' has nothing to train with this config; "
                             "use train: {steps: 0}")
        if "vgg19" in built.requires():
            from bench.features import weights
            from bench.io import offline

            weights.resolve("vgg19", allow_download=not offline())
        _check_memory(entry, built, task, protocol)
        if entry.train:
            ckpt_bytes.append(_checkpoint_bytes(built, entry.train) * len(protocol.train_seeds_of(entry)))
            try:
                Precision(entry.train.precision, device.type)
            except ValueError as exc:
                raise BenchError(f"entries[{entry.name}].train.precision: {exc}") from None
            world = dist.current()
            if entry.train.batch_size % world.size:
                raise BenchError(f"entries[{entry.name}].train.batch_size {entry.train.batch_size} does not "
                                 f"split evenly over {world.size} torchrun processes")
        if entry.fit == "pad":
            diff = res - protocol.dataset.resolution
            if diff < 0 or diff % 2:
                raise BenchError(f"entries[{entry.name}].fit: pad needs a model at least as large as the data "
                                 f"and an even size difference, got data {protocol.dataset.resolution} px vs "
                                 f"model {res} px")
        if entry.checkpoint:
            path = resolve_checkpoint(entry.checkpoint, loaded.path)
            if not path.is_file():
                raise BenchError(f"entries[{entry.name}].checkpoint: {path} not found")
            try:
                loaded_ckpts[entry.name] = sha256_file(path)
            except OSError as exc:
                raise BenchError(f"entries[{entry.name}].checkpoint: cannot read {path} ({exc.strerror})") from None
            if isinstance(built, ExternalWeights):
                # Your own generator's file: loaded on the CPU (never unpickling code) and run once on two
                # latents, so a wrong format, shape or latent layout is one line before anything runs.
                ZOO.get(entry.zoo).build(resolved_config(entry, where), data.spec, "cpu", where=where).load_weights(path)
            else:
                # Read and fit it now (into the shape-only model): a damaged, foreign or mismatched checkpoint
                # is refused before the store is opened, not after other entries have trained.
                payload = checkpoint.read(path)
                checkpoint.check_config(payload, built, path)
                with torch.device("meta"):
                    checkpoint.load_into(payload, built, path, weights_only=True)
    check_applicable(protocol.evaluation.metrics, provided, METRICS)
    if workdir is not None:
        _check_writable(workdir)
        # Every entry's checkpoints stay on disk, and the largest is briefly written twice (temp + rename).
        _check_space(workdir, sum(ckpt_bytes) + max(ckpt_bytes, default=0))
    return device, data, loaded_ckpts

def physical_memory() -> int:
    """Bytes of RAM on this machine (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 0

def _check_memory(entry, built, task: str, protocol) -> None:
    """Refuse sizes whose first allocation alone exceeds the machine's RAM (a typo such as batch_size
    100000000), before the store is opened: without this the allocator's refusal came as a traceback after
    the judge and earlier entries had run. Only lower bounds are counted (a training batch of float32
    images, the latents of one evaluation seed, one generated batch), so no size that could fit is refused."""
    ram = physical_memory()
    if not ram:
        return
    ch, (h, w) = protocol.dataset.channels, protocol.dataset.frame
    image = ch * h * w * 4  # one float32 image at the data's size
    gib = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
    where = f"this machine's {gib(ram)} of memory"
    if entry.train and entry.train.steps:  # an untrained floor (steps: 0) never draws a training batch
        stacks = 1 if task == "unconditional" else 2  # translation draws an input and a target per pair
        need = entry.train.batch_size * stacks * image
        if need > ram:
            raise BenchError(f"entries[{entry.name}].train.batch_size {entry.train.batch_size}: one batch of "
                             f"{ch}x{h}x{w} images takes {gib(need)} as float32, more than {where}; lower it")
        if entry.train.eval_every and task == "unconditional":
            need = entry.train.eval_n * built.latent_dim * 4
            if need > ram:
                raise BenchError(f"entries[{entry.name}].train.eval_n {entry.train.eval_n}: its latents alone take "
                                 f"{gib(need)}, more than {where}; lower it")
    ev = protocol.evaluation
    if task == "unconditional":  # a translator scores at most the held-out inputs, which are loaded already
        need = ev.n_samples * built.latent_dim * 4  # every latent of a seed is drawn first (bench/runner/sampling.py)
        if need > ram:
            raise BenchError(f"evaluation.n_samples {ev.n_samples}: the latents alone of one evaluation seed of "
                             f"entry '{entry.name}' take {gib(need)}, more than {where}; lower it")
    need = ev.batch_size * image
    if need > ram:
        raise BenchError(f"evaluation.batch_size {ev.batch_size}: one batch of {ch}x{h}x{w} images takes "
                         f"{gib(need)} as float32, more than {where}; lower it")

def _checkpoint_bytes(model, train) -> int:
    """About what one trained entry's checkpoints take: weights plus two Adam moments per parameter (an
    upper bound for SGD/RMSprop), the EMA copy of G, times latest.pt + kept snapshots + best.pt."""
    nets = model.modules()
    size = lambda m: sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))  # noqa: E731
    per = 3 * sum(size(m) for m in nets.values()) + (size(nets["G"]) if train.ema and "G" in nets else 0)
    copies = 1 + (train.keep_last if train.keep_last > 1 else 0) + (1 if train.eval_every else 0)
    return per * copies

def _check_space(folder: Path, need: int) -> None:
    import shutil

    free = shutil.disk_usage(folder).free
    if free < need:
        raise BenchError(f"work folder {folder} has {free / 2**20:.1f} MiB free but this protocol's checkpoints "
                         f"need about {need / 2**20:.1f} MiB; free space or pass --workdir on a larger disk")

def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".bench-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"work folder {folder} is not writable ({exc.strerror or exc})") from None

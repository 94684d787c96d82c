"""One training loop for every zoo family: batches in, `train_step`, logging, grids, checkpoints.

Real batches are drawn with replacement from the training part by a seeded generator (iterations,
not epochs, are the unit, as in the seed case study), so the data-sampler position is just that
generator's state, which the checkpoint stores. The family pulls batches itself (`draw()`), so a
critic loop can take a fresh batch per critic step and a semi-supervised family can also pull
labelled ones (`draw.labelled()`).

Around `train_step` the runner owns what is the same for every family: learning-rate schedules,
mixed precision, gradient clipping, the EMA of G, data-parallel ranks, the divergence guard,
periodic and best checkpoints and the in-training FID monitor.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torchvision.utils import save_image
from tqdm import tqdm

from bench.data.base import pixel_digest
from bench.data.labelmap import instance_ids_of
from bench.data.transforms import Size, fit_float, hw, to_float
from bench.io import atomic_write_bytes, say
from bench.protocol.schema import LRSchedule, TrainSpec
from bench.runner import checkpoint
from bench.runner import distributed as dist
from bench.runner.gemm_convs import gemm_convs
from bench.runner.precision import Precision
from bench.runner.seeding import derive
from bench.tracking import results as results_mod
from zoo.base import Training, frame_of, reads_instances, task_of
from zoo.ema import EMA

logger = logging.getLogger("bench")


class EntryFailed(Exception):
    """Training or sampling of one entry went numerically wrong; the protocol goes on without it."""


@dataclass
class TrainOutcome:
    steps: int
    resumed_from: int
    checkpoint: Path
    checkpoint_sha256: str
    grid: Path
    best: Optional[dict] = None  # {"step", "fid"} of best.pt when the run monitored FID


GRID = 64  # images in the fixed-noise grid (8 x 8)


def save_grid(model, z: torch.Tensor, path: Path, data=None) -> Path:
    """The fixed-noise 8x8 grid; for image-to-image models, 8 held-out rows of input | output | target
    (paired) or a | G(a) | F(G(a)) (unpaired)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if task_of(model) != "unconditional" and data is not None:
        imgs, nrow = translation_rows(model, data), 3
    else:
        with torch.no_grad():
            imgs = model.generate(z).float().cpu()
        nrow = int(math.sqrt(len(z)))
    buf = io.BytesIO()
    save_image(imgs.add(1).div(2).clamp(0, 1), buf, format="png", nrow=nrow)
    atomic_write_bytes(path, buf.getvalue())
    return path


def translate_inputs(model, inputs, start: int, stop: int, sample_seeds=None) -> torch.Tensor:
    """`model.translate` on held-out inputs [start, stop) (uint8, or label maps), in [-1, 1] on the model's
    device. A model that reads instance ids (zoo.base.InstanceTranslator, pix2pixHD with feat_num > 0) gets
    those rows' ids from the label maps as well."""
    x = to_float(inputs[start:stop]).to(model.device)
    if reads_instances(model):
        ids = instance_ids_of(inputs, slice(start, stop)).to(model.device)
        return model.translate(x, sample_seeds=sample_seeds, instances=ids)
    return model.translate(x, sample_seeds=sample_seeds)


def translation_rows(model, data, rows: int = 8) -> torch.Tensor:
    x = to_float(data.eval_inputs[:rows])
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)  # test-time dropout (pix2pix) draws from the global RNG: same grid every time
        # Outputs are drawn at the inputs' (height, width): whole frames stay as wide as they are.
        out = fit_float(translate_inputs(model, data.eval_inputs, 0, len(x)).float().cpu(), x.shape[-2:])
        if data.task == "unpaired":
            third = fit_float(model.translate_back(out.to(model.device)).float().cpu(), x.shape[-2:])
        else:
            third = to_float(data.eval_images[:rows])
    if x.shape[1] != out.shape[1]:  # label-map inputs (one-hot + instance boundaries): drawn in colour
        from bench.data.labelmap import render_inputs

        x = render_inputs(x, data.spec)
    return torch.stack([x, out, third], 1).flatten(0, 1)


class Draw:
    """The batch source a family pulls from: `draw()` -> a real batch in [-1, 1] at the family's
    resolution, `draw.labelled()` -> (images, labels) from the small labelled subset. For image-to-image
    data `draw()` returns (input, target) (paired: the same crop and flip for both halves; unpaired: one
    image of each domain, drawn independently). `draw.with_instances()` -> (input, target, instance ids) for a
    family that reads label maps' instance ids (zoo.base.InstanceTranslator): the same draw, the ids flipped
    with the input and the target."""

    def __init__(self, images: torch.Tensor, labels: Optional[torch.Tensor], batch_size: int, seed: int,
                 model, fit: str, world: dist.World, channels_last: bool = False,
                 inputs: Optional[torch.Tensor] = None, paired: bool = True, crop: Optional[Size] = None,
                 flip: bool = False):
        if batch_size % world.size:
            raise ValueError(f"batch_size {batch_size} does not split evenly over {world.size} ranks")
        self.images, self.labels, self.global_batch = images, labels, batch_size
        self.inputs, self.paired, self.flip = inputs, paired, flip
        self.crop = hw(crop) if crop else tuple(images.shape[-2:])  # (height, width); whole frames are not square
        self.local_batch = batch_size // world.size
        self.model, self.fit, self.world, self.channels_last = model, fit, world, channels_last
        self.rng = torch.Generator().manual_seed(derive(seed, "data"))
        self.labelled_rng = torch.Generator().manual_seed(derive(seed, "labelled-batches"))
        self.labelled_idx = None
        if model.labelled_per_class:
            # A family that names its own data seed (sgan's `seed_data`) gets the same labelled subset in every
            # entry and training seed, so entries that differ in training alone see the same labels.
            data_seed = model.labelled_seed
            subset_seed = (derive(seed, "labelled-subset") if data_seed is None
                           else derive(data_seed, "seed_data", "labelled-subset"))
            self.labelled_idx = labelled_subset(labels, model.labelled_per_class, subset_seed, model.data.num_classes)

    def generators(self) -> dict[str, torch.Generator]:
        return {"data": self.rng, "labelled": self.labelled_rng}

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        return x[dist.local_slice(self.local_batch, self.world)]

    def _augment(self, *stacks: torch.Tensor) -> list[torch.Tensor]:
        """Random crop to `crop` px and optional horizontal flip, one draw per image applied to every
        stack (so both halves of a pair move together). Drawn for the global batch, then sliced."""
        (h, w), (ch, cw) = stacks[0].shape[-2:], self.crop
        if (h, w) == (ch, cw) and not self.flip:
            return [self._local(s) for s in stacks]
        n = stacks[0].shape[0]
        if h - ch == w - cw:  # one draw for both offsets: the stream every square protocol was fingerprinted with
            offsets = torch.randint(0, h - ch + 1, (n, 2), generator=self.rng)
        else:
            offsets = torch.stack([torch.randint(0, h - ch + 1, (n,), generator=self.rng),
                                   torch.randint(0, w - cw + 1, (n,), generator=self.rng)], 1)
        flips = torch.rand(n, generator=self.rng) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        out = []
        for s in stacks:
            crops = torch.stack([img[:, oy:oy + ch, ox:ox + cw] for img, (oy, ox) in zip(s, offsets.tolist())])
            crops[flips] = crops[flips].flip(-1)
            out.append(self._local(crops))
        return out

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = fit_float(to_float(x), frame_of(self.model), self.fit).to(self.model.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __call__(self):
        # Every rank draws the global batch and keeps its slice (see bench/runner/distributed.py).
        idx = torch.randint(0, len(self.images), (self.global_batch,), generator=self.rng)
        if self.inputs is None:
            (x,) = self._augment(self.images[idx])
            return self._prepare(x)
        if self.paired:
            x, y = self._augment(self.inputs[idx], self.images[idx])
        else:  # two domains of different sizes, sampled independently
            idx_a = torch.randint(0, len(self.inputs), (self.global_batch,), generator=self.rng)
            (x,), (y,) = self._augment(self.inputs[idx_a]), self._augment(self.images[idx])
        return self._prepare(x), self._prepare(y)

    def with_instances(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input, target, instance ids int64 (B, H, W)): a paired batch drawn as `draw()` draws it (the same
        random stream), the label maps' instance ids cropped and flipped with the input and the target."""
        if self.inputs is None or not self.paired:
            raise RuntimeError("instance ids come with paired label-map inputs")
        idx = torch.randint(0, len(self.images), (self.global_batch,), generator=self.rng)
        ids = instance_ids_of(self.inputs, idx).unsqueeze(1)
        x, y, ids = self._augment(self.inputs[idx], self.images[idx], ids)
        return self._prepare(x), self._prepare(y), ids[:, 0].to(self.model.device)

    def training_batches(self, batch_size: int):
        """(input, target, instance ids) of every training pair once, in order, unaugmented, on the model's
        device: what an InstanceTranslator fits its test-time features on after training."""
        for i in range(0, len(self.images), batch_size):
            rows = slice(i, min(i + batch_size, len(self.images)))
            yield (self._prepare(self.inputs[rows]), self._prepare(self.images[rows]),
                   instance_ids_of(self.inputs, rows).to(self.model.device))

    def labelled_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels): a batch from the whole labelled training part, for class-conditional families
        (the labels follow the images through the same draw and rank slice)."""
        if self.labels is None:
            raise RuntimeError("this data set has no class labels")
        idx = torch.randint(0, len(self.images), (self.global_batch,), generator=self.rng)
        (x,) = self._augment(self.images[idx])
        return self._prepare(x), self._local(self.labels[idx]).to(self.model.device)

    def labelled(self, n: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.labelled_idx is None:
            raise RuntimeError("this family declared no labelled stream (labelled_per_class = 0)")
        n = n or self.local_batch
        pick = torch.randint(0, len(self.labelled_idx), (n * self.world.size,), generator=self.labelled_rng)
        idx = self.labelled_idx[pick[dist.local_slice(n, self.world)]]
        return self._prepare(self.images[idx]), self.labels[idx].to(self.model.device)


def labelled_subset(labels: Optional[torch.Tensor], per_class: int, seed: int, num_classes: int) -> torch.Tensor:
    """Indices of `per_class` training images of every class, chosen with a seed (e.g. 10 x 10 = the
    100 labelled MNIST digits of the semi-supervised GAN); the rest of the training part is unlabelled."""
    if labels is None:
        raise ValueError("a semi-supervised family needs a labelled data set")
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(num_classes):
        members = (labels == c).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} training images, {per_class} labelled ones are needed")
        picks.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(picks)


def lr_factor(schedule: LRSchedule, total: int) -> Callable[[int], float]:
    """Multiplier of the base rate after `step` completed steps."""
    if schedule.kind == "linear":  # constant, then linearly to 0 at the last step (pix2pix, CycleGAN)
        start = int(schedule.start * total)
        return lambda step: 1.0 if step < start else max(0.0, 1.0 - (step - start) / max(1, total - start))
    if schedule.kind == "step":  # StepLR
        return lambda step: schedule.gamma ** (step // schedule.every)
    return lambda step: 1.0


def _all_finite(losses: dict[str, float], world: dist.World) -> Optional[str]:
    """The first non-finite loss on any rank (ranks agree, so none of them waits on a dead peer)."""
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if world.active:
        flag = torch.tensor([1.0 if bad else 0.0])
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and not bad:
            return "a non-finite loss on another rank"
    return f"{bad[0]}={losses[bad[0]]}" if bad else None


def fuse_adam(optimizers) -> None:
    """`train.fused_adam`: each Adam updates its parameters with torch's fused kernel, one pass over each tensor,
    instead of the default multi-tensor (foreach) loop, which reads and writes every parameter, gradient and
    moment several times. The update is the same up to float rounding (tests/test_train_speed.py), but not bit
    for bit, so it is a protocol option and enters the fingerprint. On pix2pix's 57 M parameters Adam's step
    went from 0.18 s to 0.04 s here, 15% of a 256 px training step (bench perf train). The optimisers are
    built with the model, before the training options are known, so the flag is set on their parameter groups,
    which is where `Adam.step` reads it; a checkpoint keeps it with the groups."""
    for opt in optimizers:
        if isinstance(opt, torch.optim.Adam):
            for group in opt.param_groups:
                group["foreach"], group["fused"] = False, True


def train_entry(model, train_images: torch.Tensor, spec: TrainSpec, run_dir: Path, seed: int,
                fingerprint: str, entry: str, log: Callable[[dict[str, float], int], None],
                resume: bool = False, fit: str = "resize", train_labels: Optional[torch.Tensor] = None,
                monitor: Optional[Callable[[object], float]] = None,
                world: Optional[dist.World] = None, data=None, pixels: Optional[str] = None) -> TrainOutcome:
    """Train `model` for `spec.steps`. `data` (a RealData) adds the image-to-image inputs, the training
    crop size and flips; plain tensors are enough for unconditional families. `pixels` is the data's
    pixel_digest when the caller already has it (a run's session does), computed from `data` otherwise."""
    world = world or dist.current()
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = run_dir / "latest.pt"
    try:
        model.trainer = Training(Precision(spec.precision, model.device.type), spec.grad_clip, world,
                                 lambda params: dist.average_gradients(params, world))
        extra = {}
        if data is not None:
            extra = dict(inputs=data.train_inputs, paired=data.task != "unpaired", crop=data.spec.frame,
                         flip=getattr(data, "flip", False))
        draw = Draw(train_images, train_labels, spec.batch_size, seed, model, fit, world, spec.channels_last,
                    **extra)
    except ValueError as exc:
        raise EntryFailed(str(exc)) from None
    if spec.channels_last:
        for m in model.modules().values():
            m.to(memory_format=torch.channels_last)
    if spec.fused_adam:
        fuse_adam(model.optimizers().values())
    if spec.ema:
        model.ema = EMA(model.modules()["G"], spec.ema)
    model.noise_rng.manual_seed(derive(seed, "noise"))
    generators = {**draw.generators(), "noise": model.noise_rng}
    factor = lr_factor(spec.lr_schedule, spec.steps)
    schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, factor) for n, o in model.optimizers().items()}
    fixed_z = model.sample_latent(GRID, torch.Generator().manual_seed(derive(seed, "fixed-noise")))
    torch.manual_seed(derive(seed, "global", world.rank))  # dropout and friends differ per rank
    state = {"snapshots": [], "best": None}

    start = 0
    if resume and world.is_main:
        # A writer killed mid-write leaves its temp file behind (the target itself is never half-written).
        for tmp in run_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    # The decoded training data's sha256: a checkpoint trained on other pixels of the same files (another Pillow,
    # libjpeg-turbo or CPU, docs/results.md "Decoded pixels") is not continued, as one of another fingerprint is not.
    if pixels is None:
        pixels = pixel_digest(data) if data is not None else ""
    if resume and latest.is_file():
        payload = checkpoint.read(latest)
        theirs = payload.get("data_pixels")
        if results_mod.other_pixels(theirs, pixels):
            logger.warning("%s: %s was trained on data decoded to other pixels (sha256 %s, now %s); training from "
                           "scratch", entry, latest, str(theirs)[:12], pixels[:12])
        elif payload.get("fingerprint") == fingerprint and payload.get("entry") == entry:
            checkpoint.load_into(payload, model, latest)
            start = checkpoint.restore_training_state(payload, generators, model, schedulers, world.rank)
            state.update(payload.get("runner", {}))
        else:
            logger.warning("%s: %s belongs to another protocol fingerprint; training from scratch", entry, latest)
    dist.barrier(world)  # nobody overwrites latest.pt before every rank has read it

    def save(step: int) -> str:
        payload = checkpoint.payload(model, step, generators, fingerprint, entry, schedulers,
                                     dist.gather_objects(checkpoint.capture_rank_rng(), world), state, pixels)
        sha = ""
        if world.is_main:
            sha = checkpoint.write(latest, payload)
            if spec.keep_last > 1 and step % spec.checkpoint_every == 0:
                snap = run_dir / f"step-{step:07d}.pt"
                checkpoint.write(snap, payload)
                state["snapshots"] = [s for s in state["snapshots"] if s != snap.name] + [snap.name]
                for old in state["snapshots"][:-spec.keep_last]:
                    (run_dir / old).unlink(missing_ok=True)
                state["snapshots"] = state["snapshots"][-spec.keep_last:]
        dist.barrier(world)
        return sha

    def finish() -> None:
        # What a model fixes once, from the final weights, before the final checkpoint holds them: pix2pixHD's
        # test-time instance features (k-means per class over the whole training part; deterministic).
        if reads_instances(model):
            model.fit_instance_features(draw.training_batches(draw.local_batch))

    sha, saved = "", False
    # A run that stopped early (train.patience) stays stopped when resumed.
    end = state.get("stopped_early") or spec.steps
    with gemm_convs(model.modules().values(), spec.gemm_convs), \
            tqdm(total=spec.steps, initial=start, desc=f"train {entry}", unit="step", leave=False,
                 disable=None if world.is_main else True, dynamic_ncols=True) as bar:
        # Without a terminal (CI, a sweep unit's log) the bar is off: a line at every tenth of the steps instead,
        # at step counts (progress markers), so the lines are the same on every machine.
        tenth = max(1, math.ceil(spec.steps / 10)) if bar.disable and world.is_main else 0
        for step in range(start, end):
            try:
                losses = model.train_step(draw, step)
            except ValueError as exc:
                # torch's BatchNorm refuses one value per channel (a batch of 1 at a 1x1 layer, e.g. unet_seed's
                # bottleneck at 64 px): a size the user chose, so this entry fails with one line, not a traceback.
                if "more than 1 value per channel" not in str(exc):
                    raise
                raise EntryFailed(f"train.batch_size {spec.batch_size} ({draw.local_batch} per process) is too small "
                                  f"for this model: {exc}; BatchNorm needs more than one value per channel, so "
                                  "use a larger batch") from None
            bad = _all_finite(losses, world)
            if bad:
                raise EntryFailed(f"non-finite loss {bad} at step {step + 1}")
            for s in schedulers.values():
                s.step()
            if model.ema is not None:
                model.ema.update(model.modules()["G"])
            done = step + 1
            bar.update(1)
            if tenth and (done % tenth == 0 or done == spec.steps):
                say(f"train {entry}: step {done}/{spec.steps} "
                    + " ".join(f"{k} {float(v):.3f}" for k, v in losses.items()))
            if done % spec.log_every == 0 or done == spec.steps:
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
                if world.is_main:
                    log(losses, done)
            if spec.sample_every and done % spec.sample_every == 0 and world.is_main:
                save_grid(model, fixed_z, run_dir / "samples" / f"step-{done:07d}.png", data)
            if monitor is not None and spec.eval_every and (done % spec.eval_every == 0 or done == spec.steps):
                if world.is_main:
                    fid = monitor(model)
                    log({"train/fid": fid}, done)
                    if state["best"] is None or fid < state["best"]["fid"]:
                        state["best"] = {"step": done, "fid": fid}
                        checkpoint.write(run_dir / "best.pt", checkpoint.payload(
                            model, done, generators, fingerprint, entry, schedulers,
                            [checkpoint.capture_rank_rng()], state, pixels))
                state["best"] = dist.broadcast_object(state["best"], world)
                if spec.patience and done - state["best"]["step"] >= spec.patience and done < spec.steps:
                    # no improvement for `patience` steps: stop here (the course recipe's early stop)
                    state["stopped_early"] = done
                    logger.info("%s: FID has not improved since step %d; stopping at %d", entry,
                                state["best"]["step"], done)
                    finish()
                    sha, saved = save(done), True
                    break
            if done == spec.steps:
                finish()
            if done % spec.checkpoint_every == 0 or done == spec.steps:
                sha, saved = save(done), True
    if not saved:
        # Nothing trained in this call (steps 0, or already finished): still leave a complete checkpoint.
        finish()  # a finished run's checkpoint already holds the result; it is recomputed identically
        sha = save(max(start, end))
    grid = run_dir / "samples.png"
    if world.is_main:
        save_grid(model, fixed_z, grid, data)
    dist.barrier(world)
    best = state["best"]
    if best is not None and state.get("stopped_early"):
        best = {**best, "stopped_early_at": state["stopped_early"]}
    return TrainOutcome(spec.steps, start, latest, sha, grid, best)

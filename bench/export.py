"""`bench export-samples`: a protocol entry's seeded samples and the real held-out split as PNG folders.

The images are written exactly as they enter the feature extractor (uint8, the protocol's
resolution and channels, generated ones after the same fit and quantisation), so any external tool
(torch-fidelity's `fidelity` command, clean-fid, ...) scores the same pixels that `bench` scored.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from bench.data.base import pixel_digest
from bench.errors import BenchError
from bench.features.extractors import make_extractor
from bench.entries import entry_dir
from bench.preflight import preflight, resolve_checkpoint
from bench.protocol.load import resolved_config
from bench.protocol.load import LoadedProtocol
from bench.pipeline import run_fingerprint
from bench.runner import checkpoint
from bench.runner.sampling import fake_batches
from zoo.base import task_of
from bench.runner.seeding import derive
from zoo import ZOO


def _write_png(img: torch.Tensor, path: Path) -> None:
    arr = img.permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr, mode="L" if arr.shape[2] == 1 else "RGB").save(path)


def _write_folder(batches, folder: Path, total: int, desc: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    i = 0
    with tqdm(total=total, desc=desc, unit="img", leave=False, disable=None) as bar:
        for batch in batches:
            for img in batch:
                _write_png(img, folder / f"{i:06d}.png")
                i += 1
            bar.update(len(batch))
    return i


def export_samples(loaded: LoadedProtocol, entry_name: str, out: Path, seed: int | None, workdir: Path,
                   ckpt: str | None = None, world_size: int = 1) -> dict:
    protocol = loaded.protocol
    entries = {e.name: e for e in protocol.entries}
    if entry_name not in entries:
        raise BenchError(f"unknown entry '{entry_name}' in {loaded.path}; valid: {', '.join(entries)}")
    entry = entries[entry_name]
    ev = protocol.evaluation
    seed = ev.seeds[0] if seed is None else seed
    out = out.expanduser().resolve()  # `--out .` names the current folder, whose Path name is empty
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchError(f"{out} exists and is not an empty folder; export into a new folder")
    device, data, loaded_ckpts = preflight(loaded)
    extractor = make_extractor(ev.extractor, data, derive(protocol.seed, "judge"), device, ev.weights)
    fp = run_fingerprint(protocol, data, extractor, loaded_ckpts, device, world_size)
    if ckpt:
        path = Path(ckpt)
    elif entry.checkpoint:
        path = resolve_checkpoint(entry.checkpoint, loaded.path)
    else:
        # With training seeds, the first one's run (pass --checkpoint <entry>/seed-<t>/latest.pt for another).
        run_root = workdir / f"{protocol.name}-{fp[:12]}"
        path = entry_dir(run_root, entry.name, protocol.train_seeds_of(entry)[0]) / "latest.pt"
        if not path.is_file():
            raise BenchError(f"{path} not found: run `bench run {loaded.path}` first (same --workdir), "
                             "or pass --checkpoint")
    with torch.random.fork_rng(devices=[]):
        where = f"entries[{entry.name}].config"
        model = ZOO.get(entry.zoo).build(resolved_config(entry, where), data.spec, device, where=where)
    if task_of(model) != "unconditional":
        raise BenchError(f"export-samples writes latent samples of unconditional entries; '{entry.name}' is a "
                         f"{model.task} image-to-image model")
    payload = checkpoint.read(path)
    scored = True
    if ckpt is None and entry.train is not None:
        # Only a finished checkpoint of this very protocol is what `bench run` scored.
        if payload.get("fingerprint") != fp or payload.get("entry") != entry.name:
            raise BenchError(f"{path} belongs to another protocol fingerprint or entry")
        if payload.get("step") != entry.train.steps:
            raise BenchError(f"{path} is at step {payload.get('step')} of {entry.train.steps}: the run did not "
                             f"finish; run `bench run --resume {loaded.path}` first")
    elif ckpt is not None:
        scored = False  # a checkpoint named on the command line is not part of the protocol's fingerprint
        checkpoint.check_config(payload, model, path)
    checkpoint.load_into(payload, model, path, weights_only=True)
    # Written into a new private sibling folder and renamed at the end: a failed export leaves no half folder.
    # The name is made unique here (mkdtemp): a fixed `<out>.partial` was removed if it existed, which deleted
    # a user's folder of that name.
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise BenchError(f"--out {out}: cannot create it in {out.parent} ({exc.strerror or exc})") from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would stay with the renamed folder: others could not read the samples
    try:
        n_fake = _write_folder(fake_batches(model, ev.n_samples, seed, ev.batch_size, protocol.dataset.resolution,
                                            protocol.dataset.channels, entry.fit), tmp / "fake", ev.n_samples, "fake")
        reals = (data.eval_images[i:i + ev.batch_size] for i in range(0, len(data.eval_images), ev.batch_size))
        n_real = _write_folder(reals, tmp / "real", len(data.eval_images), "real")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # interrupted or failed: no half folder is left beside OUT
        raise
    info = {"protocol": protocol.name, "fingerprint": fp if scored else None, "entry": entry.name,
            # real/ holds this machine's decoding of the data files (docs/results.md, "Decoded pixels")
            "data_pixels": pixel_digest(data), "eval_seed": seed, "checkpoint": str(path), "fake": n_fake,
            "real": n_real, "extractor": extractor.name,
            "note": "fake/ and real/ hold the exact uint8 pixels bench feeds its feature extractor"}
    (tmp / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        out.rmdir()  # checked empty above
    os.replace(tmp, out)
    return info

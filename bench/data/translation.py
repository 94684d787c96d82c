"""Image-to-image data: paired "AB" images and unpaired two-domain folders.

Paired (pix2pix): each file holds the two images side by side, A on the left and B on the right, as the
pix2pix releases ship them (facades: left = photo, right = label map, so label -> photo is `BtoA`).
`dataset.direction` says which half is the input. Two parallel folders `A/` and `B/` with the same file
names are accepted too. Splits: `train/` trains; the held-out pool is `test/` and `val/` together (eval_size
pairs drawn from it with the protocol seed), never trained on. A set with only one of them (edges2shoes_swapped
ships `val/` alone) is split with the
protocol seed, the held-out pairs carved first.

Unpaired (CycleGAN): `trainA/ trainB/ testA/ testB/`, any subset, file names with spaces allowed.
With train folders present, they train and the test folders are held out; with only test folders (as in
../shared/data), a seeded split carves `eval_size` held-out images per domain and trains on the rest.

Both fill `RealData` so the rest of bench needs no special case: `eval_images` is the reference the
generated images are scored against (the paired targets; domain B for unpaired), `eval_inputs` what
the model translates (the aligned inputs; domain A). Training images are stored at `load_size` (the
jitter size, e.g. 286 for 256) and cropped at random per batch, identically for both halves of a pair.
The data fingerprint is the sha256 of every file used (names and bytes); decoded, resized tensors are
cached in `<cache>/datasets/` under that hash, the sizes and the Pillow version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from bench.data.transforms import resize_uint8
from bench.errors import BenchError
from bench.protocol.schema import DatasetSpec
from bench.data.base import (ContentHasher, DataSpec, RealData, cached_arrays, data_root, decode_image,
                              images_in)

# Known data sets: the folder name under $BENCH_DATA, and for paired sets the natural direction.
PAIRED_DEFAULTS = {"facades": "facades", "edges2shoes_swapped": "edges2shoes_swapped", "paired": None}
UNPAIRED_DEFAULTS = {"horse2zebra": "horse2zebra", "apple2orange": "apple2orange", "unpaired": None}


def stack_resized(arrays: list[np.ndarray], size: int) -> torch.Tensor:
    """Resize each image to size x size (bilinear, antialiased) and stack as uint8 (N, 3, size, size)."""
    return torch.cat([resize_uint8(torch.from_numpy(a).unsqueeze(0), size) for a in arrays]) if arrays else \
        torch.empty(0, 3, size, size, dtype=torch.uint8)


def _sizes(spec: DatasetSpec) -> tuple[int, int]:
    return spec.resolution, spec.load_size or spec.resolution


def paired_files(root: Path, split: str) -> list[tuple[Path, Optional[Path]]]:
    """(AB file, None) or (A file, B file) pairs of one split, sorted by name."""
    folder = root / split
    if (folder / "A").is_dir() and (folder / "B").is_dir():
        a_files = images_in(folder / "A")
        b_names = {p.name: p for p in images_in(folder / "B")}
        missing = [p.name for p in a_files if p.name not in b_names]
        if missing:
            raise BenchError(f"{folder / 'B'}: no partner for A image '{missing[0]}'")
        return [(p, b_names[p.name]) for p in a_files]
    if folder.is_dir():
        return [(p, None) for p in images_in(folder)]
    return []


def split_pair(files: tuple[Path, Optional[Path]]) -> tuple[np.ndarray, np.ndarray]:
    a_path, b_path = files
    if b_path is not None:
        a, b = decode_image(a_path), decode_image(b_path)
    else:
        ab = decode_image(a_path)
        w = ab.shape[2]
        if w % 2:
            raise BenchError(f"{a_path}: an AB image needs an even width (two halves), got {w} px")
        a, b = ab[:, :, : w // 2], ab[:, :, w // 2:]
    if a.shape != b.shape:
        raise BenchError(f"{a_path}: the two halves differ in size {a.shape[1:]} vs {b.shape[1:]}")
    return a, b


def split_one_folder(pool: list, spec: DatasetSpec, seed: int, root: Path,
                     unit: str = "pairs") -> tuple[list, list, list[int], list[int]]:
    """A set shipped as one split (edges2shoes_swapped has only val/): a seeded split of that folder, the
    held-out part carved first from a permutation by the protocol seed, so a larger train_size never takes an
    evaluation pair and the same seed always holds out the same pairs. Returns (train, held, tr, ev) as the
    two-folder path does: pools and the chosen indices into them."""
    if spec.train_size + spec.eval_size > len(pool):
        raise BenchError(f"{spec.name}: train_size + eval_size = {spec.train_size + spec.eval_size} but {root} "
                         f"has one split of {len(pool)} {unit} (split with the protocol seed)")
    perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
    held = [pool[i] for i in sorted(perm[:spec.eval_size])]
    train = [pool[i] for i in sorted(perm[spec.eval_size:spec.eval_size + spec.train_size])]
    return train, held, list(range(len(train))), list(range(len(held)))


def load_paired(spec: DatasetSpec, seed: int):
    if spec.channels != 3:
        raise BenchError(f"{spec.name}: paired images are RGB; set dataset.channels: 3")
    root = data_root(spec, PAIRED_DEFAULTS.get(spec.name))
    train = paired_files(root, "train")
    held = paired_files(root, "test") + paired_files(root, "val")
    if not train and not held:
        raise BenchError(f"{root}: a paired data set needs train/ and test/ (or val/) folders of AB images, or "
                         "one of them to split")
    if train and held:
        for label, pool, size in (("train", train, spec.train_size), ("eval", held, spec.eval_size)):
            if size > len(pool):
                raise BenchError(f"{spec.name}: {label}_size {size} exceeds the {len(pool)} pairs in {root}")
        gen = torch.Generator().manual_seed(seed + 1)
        tr = sorted(torch.randperm(len(train), generator=gen)[:spec.train_size].tolist())
        ev = sorted(torch.randperm(len(held), generator=gen)[:spec.eval_size].tolist())
    else:
        train, held, tr, ev = split_one_folder(train or held, spec, seed, root)
    res, load = _sizes(spec)
    h = ContentHasher()
    for files in [train[i] for i in tr] + [held[i] for i in ev]:
        for p in files:
            if p is not None:
                h.add(root, p)
    fingerprint = h.h.hexdigest()

    def read(files, idx, size):
        xs, ys = [], []
        for i in idx:
            a, b = split_pair(files[i])
            x, y = (a, b) if spec.direction == "AtoB" else (b, a)
            xs.append(x)
            ys.append(y)
        return stack_resized(xs, size), stack_resized(ys, size)

    def decode():
        (tx, ty), (ex, ey) = read(train, tr, load), read(held, ev, res)
        return {"train_x": tx, "train_y": ty, "eval_x": ex, "eval_y": ey}

    t = cached_arrays(fingerprint, decode, kind="paired", res=res, load=load, direction=spec.direction)
    return RealData(spec=DataSpec(spec.name, res, 3, 0), train_images=t["train_y"], train_labels=None,
                    eval_images=t["eval_y"], eval_labels=None, fingerprint=fingerprint, source=str(root),
                    train_inputs=t["train_x"], eval_inputs=t["eval_x"], task="paired")


def load_unpaired(spec: DatasetSpec, seed: int):
    if spec.channels != 3:
        raise BenchError(f"{spec.name}: unpaired images are RGB; set dataset.channels: 3")
    root = data_root(spec, UNPAIRED_DEFAULTS.get(spec.name))
    res, load = _sizes(spec)
    h = ContentHasher()
    chosen = {}
    for dom in ("A", "B"):
        train_dir, test_dir = root / f"train{dom}", root / f"test{dom}"
        test = images_in(test_dir) if test_dir.is_dir() else []
        if train_dir.is_dir():
            train, held = images_in(train_dir), test
        else:
            if not test:
                raise BenchError(f"{root}: an unpaired data set needs train{dom}/ or test{dom}/ with images")
            # Only test images: a seeded split carves the held-out part first, so it never trains.
            perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed)).tolist()
            held, train = [test[i] for i in perm[:spec.eval_size]], [test[i] for i in perm[spec.eval_size:]]
        for label, pool, size in (("train", train, spec.train_size), ("eval", held, spec.eval_size)):
            if size > len(pool):
                raise BenchError(f"{spec.name}: {label}_size {size} exceeds the {len(pool)} domain-{dom} "
                                 f"images available in {root}")
        # CycleGAN's reference trains on every image of each domain; `domain_sizes: all` does too
        train = sorted(train) if spec.domain_sizes == "all" else sorted(train)[:spec.train_size]
        held = sorted(held)[:spec.eval_size]
        for p in train + held:
            h.add(root, p)
        chosen[dom] = (train, held)
    fingerprint = h.h.hexdigest()

    def decode():
        out = {}
        for dom, (train, held) in chosen.items():
            out[f"train_{dom}"] = stack_resized([decode_image(p) for p in train], load)
            out[f"eval_{dom}"] = stack_resized([decode_image(p) for p in held], res)
        return out

    t = cached_arrays(fingerprint, decode, kind="unpaired", res=res, load=load)
    return RealData(spec=DataSpec(spec.name, res, 3, 0), train_images=t["train_B"], train_labels=None,
                    eval_images=t["eval_B"], eval_labels=None, fingerprint=fingerprint, source=str(root),
                    train_inputs=t["train_A"], eval_inputs=t["eval_A"], task="unpaired")

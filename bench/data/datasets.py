"""Real data sets, split into a training part and a held-out evaluation part.

The evaluation part is never trained on; it is the reference for FID/KID (SEEDS.md §4.4, "dataset
leakage"). Images are kept as uint8 (N, C, H, W): that is how the feature extractors read both the
real and the generated side, so both go through identical preprocessing.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from bench.data.transforms import resize_uint8, to_channels
from bench.errors import BenchError
from bench.io import cache_dir, offline
from bench.protocol.schema import DatasetSpec
from bench.registry import Registry
from zoo.base import DataSpec


@dataclass
class RealData:
    spec: DataSpec
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: Optional[torch.Tensor]
    eval_images: torch.Tensor
    eval_labels: Optional[torch.Tensor]
    fingerprint: str  # sha256 of the source files' decoded content
    source: str  # the folder the files were read from


def _search_roots(spec: DatasetSpec, subdirs: list[str]) -> list[Path]:
    if spec.root:
        return [Path(spec.root).expanduser()]
    roots = []
    env = os.environ.get("BENCH_DATA")
    if env:
        roots += [Path(env) / s for s in subdirs] + [Path(env)]
    roots += [cache_dir() / "data" / s for s in subdirs]
    return roots


# ---------------------------------------------------------------------------------------------
# MNIST from IDX files (gzip or raw), as LeCun distributes them and torchvision stores them.

_MNIST_FILES = {
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
}


def _find_idx(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (magic 0x0801 labels / 0x0803 images, big-endian sizes), checking its length."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise BenchError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise BenchError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise BenchError(f"{path}: truncated or corrupt IDX file ({len(raw) - offset} bytes of data, "
                         f"header says {expected})")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _locate_mnist(spec: DatasetSpec) -> Path:
    roots = _search_roots(spec, ["mnist", "MNIST/raw"])
    for root in roots:
        if _find_idx(root, _MNIST_FILES["test_images"]) and _find_idx(root, _MNIST_FILES["test_labels"]):
            return root
    if not spec.root and not offline():
        target = cache_dir() / "data"
        try:
            import torchvision

            torchvision.datasets.MNIST(str(target), train=False, download=True)
            return target / "MNIST" / "raw"
        except Exception:  # no network: fall through to the one-line error below
            pass
    looked = ", ".join(str(r) for r in roots)
    raise BenchError(f"mnist: no IDX files ({_MNIST_FILES['test_images']}[.gz]) found in {looked}; "
                     "set dataset.root or $BENCH_DATA, or run online once so torchvision can download them")


def load_mnist(spec: DatasetSpec, seed: int) -> RealData:
    root = _locate_mnist(spec)
    test_x = read_idx(_find_idx(root, _MNIST_FILES["test_images"]))
    test_y = read_idx(_find_idx(root, _MNIST_FILES["test_labels"]))
    if test_x.ndim != 3 or test_y.ndim != 1 or len(test_x) != len(test_y):
        raise BenchError(f"{root}: MNIST images and labels do not match ({test_x.shape} vs {test_y.shape})")
    h = hashlib.sha256()
    for arr in (test_x, test_y):
        h.update(arr.tobytes())
    train_path = _find_idx(root, _MNIST_FILES["train_images"])
    train_lpath = _find_idx(root, _MNIST_FILES["train_labels"])
    if train_path and train_lpath:
        # The full set is here: train on the train split, evaluate on the official test split.
        train_x, train_y = read_idx(train_path), read_idx(train_lpath)
        for arr in (train_x, train_y):
            h.update(arr.tobytes())
        pools = (train_x, train_y, test_x, test_y)
    else:
        # Only the test split (as in ../shared/data/mnist): carve a held-out part with the protocol seed.
        need = spec.train_size + spec.eval_size
        if need > len(test_x):
            raise BenchError(f"mnist: train_size + eval_size = {need} but only {len(test_x)} test images exist "
                             f"in {root} (no train split there)")
        perm = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(seed)).numpy()
        ev, tr = perm[:spec.eval_size], perm[spec.eval_size:need]
        pools = (test_x[tr], test_y[tr], test_x[ev], test_y[ev])
    return _finish(spec, seed, "mnist", 10, pools, h.hexdigest(), root)


def _finish(spec: DatasetSpec, seed: int, name: str, num_classes: int, pools, fingerprint: str,
            root: Path) -> RealData:
    train_x, train_y, eval_x, eval_y = pools
    gen = torch.Generator().manual_seed(seed + 1)
    for label, pool, size in (("train", train_x, spec.train_size), ("eval", eval_x, spec.eval_size)):
        if size > len(pool):
            raise BenchError(f"{name}: {label}_size {size} exceeds the {len(pool)} images available in {root}")
    tr = torch.randperm(len(train_x), generator=gen)[:spec.train_size].numpy()
    ev = torch.randperm(len(eval_x), generator=gen)[:spec.eval_size].numpy()

    def prep(arr: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(arr))
        x = x.unsqueeze(1) if x.ndim == 3 else x
        return resize_uint8(to_channels(x, spec.channels), spec.resolution)

    return RealData(
        spec=DataSpec(name, spec.resolution, spec.channels, num_classes),
        train_images=prep(train_x[tr]),
        train_labels=torch.from_numpy(train_y[tr].astype(np.int64)),
        eval_images=prep(eval_x[ev]),
        eval_labels=torch.from_numpy(eval_y[ev].astype(np.int64)),
        fingerprint=fingerprint,
        source=str(root),
    )


DATASETS: Registry[Callable[[DatasetSpec, int], RealData]] = Registry("dataset", {
    "mnist": load_mnist,
})


def load_dataset(spec: DatasetSpec, seed: int) -> RealData:
    return DATASETS.get(spec.name)(spec, seed)

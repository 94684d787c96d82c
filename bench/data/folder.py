"""Unlabelled image folders: CelebA faces and any folder of images a user names.

CelebA (`dataset.name: celeba`) reads the aligned faces `img_align_celeba*/NNNNNN.jpg`. The copy in
../shared/data is the first 2,000 images downscaled by its uploader to 89x109 (half of 178x218), so the
usual GAN preprocessing, a centred 178x178 square then a resize, becomes a centred 89x89 square here.
The crop defaults to the short side of each image, so the same protocol works on either size;
`dataset.center_crop` sets it in pixels. Online, and only when no folder is found, torchvision's CelebA
downloader fills the cache (`BENCH_OFFLINE=1` forbids it).

`dataset.name: image_folder` with `dataset.root` reads every image under that folder (recursively,
sorted by relative path; names with spaces are fine), with the same centre crop. Labels do not exist.

Split: the protocol seed carves `eval_size` held-out images first and trains on `train_size` of the
rest, so the FID reference is never trained on (no dataset leakage). The fingerprint is the sha256 of every
used file's relative name and bytes; decoded, cropped, resized tensors are cached under it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from bench.data.transforms import resize_uint8
from bench.data.base import (IMAGE_SUFFIXES, ContentHasher, DataSpec, RealData, cached_arrays, center_square,
                              decode_image, images_under)
from bench.errors import BenchError
from bench.io import cache_dir, offline
from bench.protocol.schema import DatasetSpec

# Folder names CelebA's aligned images come in: the official one, and the half-size copy in ../shared/data.
CELEBA_FOLDERS = ("img_align_celeba", "img_align_celeba_89x109")


def _celeba_root(spec: DatasetSpec) -> Path:
    """The folder holding CelebA's aligned images: dataset.root, $BENCH_DATA/celeba, the cache, or a download."""
    bases = []
    if spec.root:
        bases.append(Path(spec.root).expanduser())
    else:
        if os.environ.get("BENCH_DATA"):
            bases.append(Path(os.environ["BENCH_DATA"]) / "celeba")
        bases.append(cache_dir() / "data" / "celeba")
    for base in bases:
        for sub in ("", *CELEBA_FOLDERS, *(f"celeba/{f}" for f in CELEBA_FOLDERS)):
            folder = base / sub if sub else base
            if folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
                return folder
    if spec.root:
        raise BenchError(f"celeba: no images in {bases[0]} or its {'/'.join(CELEBA_FOLDERS)} subfolders")
    if offline():
        raise BenchError(f"celeba: no images under {' or '.join(map(str, bases))} and BENCH_OFFLINE forbids "
                         "downloading (set dataset.root or $BENCH_DATA)")
    return _download_celeba(bases[-1])


def _download_celeba(target: Path) -> Path:  # pragma: no cover - needs the network
    import torchvision

    try:
        torchvision.datasets.CelebA(str(target.parent), split="all", target_type=[], download=True)
    except Exception as exc:  # Google Drive quotas make this fail often; say so in one line
        raise BenchError(f"celeba: download failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         "fetch img_align_celeba.zip by hand and set dataset.root") from None
    return target / "img_align_celeba"


def _read(path: Path, channels: int, crop: Optional[int], size: int) -> torch.Tensor:
    """uint8 (1, C, size, size): centred square crop (default: the short side), then an antialiased resize."""
    arr = decode_image(path, "RGB" if channels == 3 else "L")
    h, w = arr.shape[1:]
    if crop is not None and crop > min(h, w):
        raise BenchError(f"{path}: image is {w}x{h}, smaller than dataset.center_crop {crop}")
    return resize_uint8(torch.from_numpy(center_square(arr, crop)).unsqueeze(0), size)


def _load(spec: DatasetSpec, seed: int, root: Path, name: str):

    files = images_under(root)
    need = spec.train_size + spec.eval_size
    if not files:
        raise BenchError(f"{name}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    if need > len(files):
        raise BenchError(f"{name}: train_size + eval_size = {need} but only {len(files)} images exist in {root}")
    # The held-out part is carved first, with the protocol seed, so changing train_size never moves it.
    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    held = [files[i] for i in perm[:spec.eval_size]]
    train = [files[i] for i in perm[spec.eval_size:need]]
    h = ContentHasher()
    for p in train:
        h.add(root, p)
    h.h.update(b"--held-out--")  # keeps "which file is held out" in the hash
    for p in held:
        h.add(root, p)
    fingerprint = h.h.hexdigest()
    res, crop, ch = spec.resolution, spec.center_crop, spec.channels

    def decode():
        def stack(paths):
            return torch.cat([_read(p, ch, crop, res) for p in paths])
        return {"train": stack(train), "eval": stack(held)}

    t = cached_arrays(fingerprint, decode, kind="folder", res=res, crop=crop, channels=ch)
    return RealData(spec=DataSpec(name, res, ch, 0), train_images=t["train"], train_labels=None,
                    eval_images=t["eval"], eval_labels=None, fingerprint=fingerprint, source=str(root))


def load_celeba(spec: DatasetSpec, seed: int):
    if spec.channels != 3:
        raise BenchError("celeba: the faces are RGB; set dataset.channels: 3")
    return _load(spec, seed, _celeba_root(spec), "celeba")


def load_image_folder(spec: DatasetSpec, seed: int):
    if not spec.root:
        raise BenchError("image_folder: set dataset.root to the folder holding the images")
    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise BenchError(f"image_folder: data folder {root} not found")
    return _load(spec, seed, root, "image_folder")

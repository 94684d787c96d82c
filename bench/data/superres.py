"""Super-resolution pairs for the semantic-network Pix2PixHD variant (`pix2pixhd_sem`, trained on "paired
low-res/high-res data" as a course summary of Pix2PixHD puts it): y is a photo at `dataset.resolution`,
x the same photo downscaled `dataset.scale` times.

What G receives: the low-resolution image brought back to full size by bicubic interpolation, not the
small image itself. That variant's generator is an encoder-decoder with encoder→decoder skips, and a
skip joins feature maps of one size, so its input and output share a size (the "pre-upsampling" layout of SRCNN and
VDSR). It also keeps everything downstream unchanged: preflight's "an image-to-image model translates
at the data's size" holds, and the runner's random crop and flip (bench/runner/train.py `Draw`) cut both
halves of a pair at the same offset, which would misalign them if x were `scale` times smaller.

Degradation, stated because every SR number depends on it: PIL's BICUBIC resize both ways (Keys' cubic
with a = −0.5, widened by the scale when shrinking, as MATLAB's imresize): torch's
`interpolate(..., "bicubic", antialias=True)`, which is that filter (tested against Pillow), in the
arithmetic of bench/data/resample.py (the same bits on every CPU): downscale,
round to 8 bits as a stored low-resolution image would be, upscale to the original size, round again. `dataset.scale` defaults to 4 (the usual ×4 benchmark
setting); resolution, and the jitter size `load_size` if set, must be multiples of it. Training pairs are
degraded at the stored (jitter) size, so every random crop is a ×`scale` degradation of its target.

Data sets:
- `facades_sr`: the CMP facades photos (the left, A half of the pix2pix AB files; `dataset.ab_half` may
  only be A). Besides the pairs it carries what the frozen semantic network S of `pix2pixhd_sem` needs
  (bench/features/segmenter.py): the label maps of the right half as class ids (nearest colour of the
  12-colour palette below), all 400 `train/` photos with their maps to train S, the 100 `val/` photos
  to measure it, and the maps of the held-out images for the `seg_agreement` metric. The held-out part
  is a seeded draw from `test/` and `val/` together, as for `facades` (bench/data/translation.py); S never trains on it.
- `superres`: any images under `dataset.root`. With `train/` and `test/` (or `val/`) sub-folders those
  are the splits; otherwise every image in the folder (recursively, by relative name) is split with the
  protocol seed, held-out part first. Side-by-side AB files (or `A/` and `B/` sub-folders) are read with
  `dataset.ab_half: A|B` naming the half to use. Non-square images are centre-cropped to their short side.
  No label maps, so no S: `pix2pixhd_sem` needs `lambda_sem: 0` and `seg_agreement` is unavailable.

The fingerprint is the sha256 of every file read (names and bytes, S's files included); decoded,
degraded tensors are cached under it, the sizes, the scale and the Pillow version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from bench.data import resample
from bench.data.base import (ContentHasher, DataSpec, RealData, cached_arrays, center_square, data_root, decode_image,
                              images_under)
from bench.data.translation import paired_files, split_one_folder, split_pair, stack_resized
from bench.errors import BenchError
from bench.protocol.schema import DatasetSpec

DEFAULT_SCALE = 4

# CMP facades (Tyleček & Šára 2013) classes in their label order 1..12. The pix2pix release draws label k
# with the k-th of 12 colours along the jet colour map; these are those colours as measured in its JPEG
# label images (the most frequent colour of each cluster over the training set; JPEG blurs boundaries,
# so pixels are assigned to the nearest one). Checked against the data: background is the dark blue
# around the building, facade the dominant blue, shop the dark red along the ground floor.
FACADES_CLASSES = ("background", "facade", "window", "door", "cornice", "sill", "balcony", "blind", "deco",
                   "molding", "pillar", "shop")
FACADES_PALETTE = ((0, 0, 222), (0, 48, 253), (0, 128, 254), (3, 206, 255), (35, 253, 228), (114, 252, 149),
                   (192, 255, 63), (253, 240, 4), (255, 157, 4), (252, 81, 2), (249, 2, 4), (173, 1, 2))
_DECODE_VERSION = 1  # part of the decode cache key: bump when the palette or the degradation changes


@dataclass
class SuperResData(RealData):
    """RealData (task 'paired': inputs = degraded images, images = targets) plus what S needs."""

    scale: int = DEFAULT_SCALE
    class_names: tuple[str, ...] = ()  # empty: no label maps, hence no semantic network S
    eval_label_maps: Optional[torch.Tensor] = None  # uint8 (N, H, W) class ids, aligned with eval_images
    seg_train: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # S's training photos and class-id maps
    seg_heldout: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # S's held-out photos and maps

    @property
    def has_label_maps(self) -> bool:
        return bool(self.class_names) and self.seg_train is not None

    def pixel_tensors(self) -> dict[str, Any]:
        """RealData's, and the maps `seg_agreement` scores against and S's photos and maps."""
        seg = {f"{split}.{part}": (pair[i] if pair is not None else None)
               for split, pair in (("seg_train", self.seg_train), ("seg_heldout", self.seg_heldout))
               for i, part in enumerate(("photos", "maps"))}
        return {**super().pixel_tensors(), "eval_label_maps": self.eval_label_maps, **seg}


def degrade(images: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> the low-resolution input at the same size: bicubic ↓scale, 8-bit rounding,
    bicubic ↑scale, 8-bit rounding (antialias=True selects PIL's a = −0.5 kernel in both directions; without
    it torch upsamples with a = −0.75). resample.resize works in bounded blocks itself."""
    _, _, h, w = images.shape
    if h % scale or w % scale:
        raise ValueError(f"a {h}x{w} image cannot be downscaled exactly {scale}x")
    lo = resample.resize(images, (h // scale, w // scale), "bicubic", to_uint8=True)
    return resample.resize(lo, (h, w), "bicubic", to_uint8=True)


def label_ids(rgb: np.ndarray, palette=FACADES_PALETTE) -> np.ndarray:
    """uint8 (3, H, W) colour-coded label image -> uint8 (H, W) ids of the nearest palette colour."""
    pal = torch.tensor(palette, dtype=torch.float32)  # (K, 3)
    px = torch.from_numpy(rgb).float().flatten(1).T  # (H·W, 3)
    return torch.cdist(px, pal).argmin(1).to(torch.uint8).view(rgb.shape[1:]).numpy()


def _resize_ids(ids: list[np.ndarray], size: int) -> torch.Tensor:
    """Class-id maps to size x size by nearest neighbour (interpolating ids would invent classes)."""
    if not ids:
        return torch.empty(0, size, size, dtype=torch.uint8)
    t = torch.from_numpy(np.stack(ids)).unsqueeze(1).float()
    return F.interpolate(t, size=(size, size), mode="nearest").squeeze(1).to(torch.uint8)


def _check(spec: DatasetSpec) -> tuple[int, int, int]:
    if spec.channels != 3:
        raise BenchError(f"{spec.name}: super-resolution images are RGB; set dataset.channels: 3")
    scale = spec.scale if spec.scale is not None else DEFAULT_SCALE
    res, load = spec.resolution, spec.load_size or spec.resolution
    for key, size in (("resolution", res), ("load_size", load)):
        if size % scale or size // scale < 1:
            raise BenchError(f"{spec.name}: dataset.{key} {size} is not a multiple of dataset.scale {scale}; "
                             f"the low-resolution input would not be an exact {scale}x downscale")
    return scale, res, load


def _pick(n_train: int, n_held: int, spec: DatasetSpec, seed: int, root: Path) -> tuple[list[int], list[int]]:
    """The protocol's train/eval subsets of the two pools, drawn as for every paired data set."""
    for label, n, size in (("train", n_train, spec.train_size), ("eval", n_held, spec.eval_size)):
        if size > n:
            raise BenchError(f"{spec.name}: {label}_size {size} exceeds the {n} images available in {root}")
    gen = torch.Generator().manual_seed(seed + 1)
    tr = sorted(torch.randperm(n_train, generator=gen)[:spec.train_size].tolist())
    ev = sorted(torch.randperm(n_held, generator=gen)[:spec.eval_size].tolist())
    return tr, ev


def load_facades_sr(spec: DatasetSpec, seed: int) -> SuperResData:
    scale, res, load = _check(spec)
    if spec.ab_half not in (None, "A"):
        raise BenchError("facades_sr: super-resolves the photos (the A half); the label maps (B) are what the "
                         "semantic network S predicts, so dataset.ab_half can only be A")
    root = data_root(spec, "facades")
    train, test, val = (paired_files(root, s) for s in ("train", "test", "val"))
    held = test + val
    if not train or not val:
        raise BenchError(f"{root}: facades_sr needs train/ and val/ folders of AB images (test/ optional)")
    tr, ev = _pick(len(train), len(held), spec, seed, root)
    h = ContentHasher()
    for files in train + held:  # S trains on all of train/ and is measured on val/: every file counts
        h.add(root, files[0])
    fingerprint = h.h.hexdigest()

    def decode():
        def read(files):
            photos, ids = [], []
            for f in files:
                a, b = split_pair(f)
                photos.append(a)
                ids.append(label_ids(b))
            return photos, ids

        train_photos, train_ids = read(train)
        held_photos, held_ids = read([held[i] for i in ev])
        val_photos, val_ids = read(val)
        y_train = stack_resized([train_photos[i] for i in tr], load)
        y_eval = stack_resized(held_photos, res)
        return {"train_x": degrade(y_train, scale), "train_y": y_train,
                "eval_x": degrade(y_eval, scale), "eval_y": y_eval, "eval_maps": _resize_ids(held_ids, res),
                "seg_train": (stack_resized(train_photos, res), _resize_ids(train_ids, res)),
                "seg_heldout": (stack_resized(val_photos, res), _resize_ids(val_ids, res))}

    t = cached_arrays(fingerprint, decode, kind="facades_sr", res=res, load=load, scale=scale, train=tr, eval=ev,
                decoder=_DECODE_VERSION)
    return SuperResData(spec=DataSpec(spec.name, res, 3, 0), train_images=t["train_y"], train_labels=None,
                        eval_images=t["eval_y"], eval_labels=None, fingerprint=fingerprint, source=str(root),
                        train_inputs=t["train_x"], eval_inputs=t["eval_x"], task="paired", scale=scale,
                        class_names=FACADES_CLASSES, eval_label_maps=t["eval_maps"], seg_train=t["seg_train"],
                        seg_heldout=t["seg_heldout"])


def load_superres(spec: DatasetSpec, seed: int) -> SuperResData:
    scale, res, load = _check(spec)
    if not spec.root:
        raise BenchError("superres: needs dataset.root, the folder with the images")
    root = data_root(spec, None)
    half = spec.ab_half

    def files_of(split: str) -> list:
        if half is not None:
            return paired_files(root, split)
        return [(p, None) for p in images_under(root / split, recursive=False)] if (root / split).is_dir() else []

    train = files_of("train")
    held = files_of("test") + files_of("val")
    if train and held:
        tr, ev = _pick(len(train), len(held), spec, seed, root)
        train_files, held_files = [train[i] for i in tr], [held[i] for i in ev]
    else:
        if half is not None:
            raise BenchError(f"{root}: superres with dataset.ab_half needs train/ and test/ (or val/) folders of "
                             "AB images")
        # The held-out part is carved first, so a larger train_size never takes an evaluation image.
        every = [(p, None) for p in images_under(root)]
        train_files, held_files, _, _ = split_one_folder(every, spec, seed, root, unit="images")
    h = ContentHasher()
    for files in train_files + held_files:
        for p in files:
            if p is not None:
                h.add(root, p)
    fingerprint = h.h.hexdigest()

    def image(files) -> np.ndarray:
        if half is None:
            return center_square(decode_image(files[0]))
        a, b = split_pair(files)
        return center_square(a if half == "A" else b)

    def decode():
        y_train = stack_resized([image(f) for f in train_files], load)
        y_eval = stack_resized([image(f) for f in held_files], res)
        return {"train_x": degrade(y_train, scale), "train_y": y_train, "eval_x": degrade(y_eval, scale),
                "eval_y": y_eval}

    t = cached_arrays(fingerprint, decode, kind="superres", res=res, load=load, scale=scale, half=half,
                decoder=_DECODE_VERSION)
    return SuperResData(spec=DataSpec(spec.name, res, 3, 0), train_images=t["train_y"], train_labels=None,
                        eval_images=t["eval_y"], eval_labels=None, fingerprint=fingerprint, source=str(root),
                        train_inputs=t["train_x"], eval_inputs=t["eval_x"], task="paired", scale=scale)


SUPERRES_SETS = {"facades_sr": load_facades_sr, "superres": load_superres}

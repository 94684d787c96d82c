"""Label-map data: semantic label ids + instance ids (+ photo), as pix2pixHD consumes them.

Layout (cityscapes as pix2pixHD's datasets/cityscapes ships it; any folder with it works via dataset.root):

    train_label/  label-id PNGs, one channel (8-bit 'L', palette 'P' or 16-bit), value = class id
    train_inst/   instance-id PNGs, usually 16-bit (cityscapes: class id * 1000 + k for things, the class
                  id for stuff); only read with `dataset.instance` on (the default)
    train_img/    the photos (RGB), the translation targets
    test_label/ test_inst/ test_img/   the held-out split, used when test_img/ exists

A label map, its instance map and its photo are matched by name: the same file stem, or the cityscapes
stems `<city>_<seq>_<frame>_gtFine_labelIds` / `_gtFine_instanceIds` / `_leftImg8bit`. Without test
photos (../shared/data has test label and instance maps but no photos, so nothing to score against) the
protocol seed holds out `eval_size` of the training frames, which are never trained on.

What the model reads, as in pix2pixHD: `label_nc` one-hot channels (cityscapes: 35, the ids 0-33 plus
spare) and, with instance maps, one more channel, the instance boundary map: 1 where a pixel's instance
id differs from one of its 4 neighbours. Label and instance maps are resized with nearest neighbour
(interpolating ids would invent classes) and the boundaries are computed after resizing, at the size the
model sees; photos are resized bilinearly with antialiasing like every other image in bench. Inputs are
never cropped or interpolated afterwards: training only flips them, together with the targets.

Square tiles (dataset.aspect 1, the default): bench's images are square, cityscapes frames 2:1. Rather than
squash the frame or throw half of it away, each frame is cut into floor(long / short) side-by-side squares
(cityscapes: the left and right halves; a remainder is trimmed equally from both ends), each resized to
`resolution`. Objects keep their aspect ratio, every pixel of a 2:1 frame is used, and the fully convolutional
generator sees the same scale as on a frame. `train_size`/`eval_size` count frames; a frame's tiles always stay
in one split.

Whole frames (dataset.aspect A > 1, for families that declare zoo.base.FrameTranslator: pix2pixhd): each frame
is one sample, resized whole to `resolution` high and A x `resolution` wide (cityscapes at A 2, resolution 512:
the paper's 1024x512), so the model sees the scene's full context as pix2pixHD does. A frame must be exactly A
times as wide as tall, else one error line names it: a centre crop would silently throw away part of the scene,
and a squash would distort it. Everything downstream keeps the frame's (H, W): instance ids and boundaries are
computed at that size, flips mirror the whole frame, outputs and sample grids are as wide as the frames. Feature
extractors (FID/KID) get each frame resized whole to their square input (bench/features/extractors.py
FRAMES_TO_SQUARE). Aspect 1 leaves the data fingerprint and the decoded cache exactly as before.

Inputs are stored compactly (one id plane + one boundary plane per tile or frame) in `LabelMaps`, which expands
the one-hot stack only for the samples indexed: at the paper's 1024x512, the one-hot training set would
take 2975 x 36 x 512 x 1024 bytes = 56 GB. Expanded inputs are uint8 0/255, so bench's usual uint8 ->
[-1, 1] conversion (`to_float`) turns them into exactly -1/+1. pix2pixHD feeds 0/1; the two differ by
the affine map 2x - 1, which the first convolution absorbs (and the generator's instance norm removes).

Instance ids: with instance maps, each tile's instance-id plane is kept too (resized with nearest neighbour
like the class ids, so its boundary map is exactly the boundary channel), renumbered 0..K-1 per tile in the
order of the original ids and stored in the smallest integer type that holds every tile's K (uint8, int16 or
int32). Not every model reads them: one that pools features per instance (pix2pixHD's instance-wise feature
encoder, zoo/pix2pixhd.py `feat_num`, declared by zoo.base.InstanceTranslator) gets them explicitly,
`LabelMaps.instance_ids(rows)`, in training batches (`Draw.with_instances`, flipped with the input and the
target) and with evaluation inputs (bench/runner/sampling.py `translate_inputs`). They are not in the data
fingerprint (what the model reads of the same files is unchanged); they are in the cache layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from bench.data.transforms import Size, hw, resize_uint8
from bench.data.base import IMAGE_SUFFIXES, ContentHasher, DataSpec, RealData, cached_arrays, data_root, decode_image
from bench.errors import BenchError
from bench.protocol.schema import DatasetSpec

# Data set name -> (folder under $BENCH_DATA, default label_nc). `labelmap` is any folder (dataset.root)
# and must say how many classes it has.
LABELMAP_DEFAULTS: dict[str, tuple[Optional[str], Optional[int]]] = {
    "cityscapes": ("cityscapes", 35),
    "labelmap": (None, None),
}
# Bumped when the decoded (cached) tensors change for the same files (tiling, resizing, boundaries; 2: the
# per-tile instance ids are kept). Part of the cache key.
_LAYOUT_VERSION = 2
# Bumped when what a model reads from the same files changes (one-hot + boundary planes): part of the data
# fingerprint. Layout 2 added the instance ids and left these planes as they were, so fingerprints stand.
_INPUTS_VERSION = 1
_CITYSCAPES_STEM = re.compile(r"_(leftImg8bit|gt(Fine|Coarse)_(labelIds|instanceIds))$")

# The official cityscapes colours of label ids 0-33 (cityscapesScripts' labels.py), used to draw the
# label maps in sample grids; other ids and other data sets get seeded colours.
CITYSCAPES_COLOURS = [
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]


@dataclass(frozen=True)
class LabelMapSpec(DataSpec):
    """DataSpec of label-map data: the model reads `input_channels` (label_nc one-hot + 1 boundary) and
    writes `channels` (3, the photo)."""

    input_channels: int = 0
    label_nc: int = 0
    instance: bool = True


class LabelMaps:
    """Label-map inputs of N tiles, expanded to uint8 (C, H, W) one-hot stacks (0/255) when indexed.

    Supports what bench does with image-to-image inputs: len(), `.shape`, and indexing by an int, a slice
    or an index tensor (-> a dense uint8 tensor, as the photo tensors are). With instance maps it also keeps
    each tile's instance ids (`instances`, 0..K-1 per tile), read with `instance_ids(key)` by the models that
    ask for them.
    """

    dtype = torch.uint8

    def __init__(self, ids: torch.Tensor, edges: Optional[torch.Tensor], label_nc: int,
                 instances: Optional[torch.Tensor] = None):
        self.ids, self.edges, self.label_nc = ids, edges, label_nc  # uint8 (N, H, W); bool (N, H, W) or None
        self.instances = instances  # small ints (N, H, W) or None (no instance maps read)
        if instances is not None and instances.shape != ids.shape:
            raise ValueError(f"instance ids {tuple(instances.shape)} do not match the label ids {tuple(ids.shape)}")

    def digest_parts(self) -> dict[str, Optional[torch.Tensor]]:
        """What `pixel_digest` (bench/data/base.py) hashes of label-map inputs: the decoded ids, edges and instances."""
        return {"ids": self.ids, "edges": self.edges, "instances": self.instances}

    @property
    def has_instances(self) -> bool:
        return self.instances is not None

    def instance_ids(self, key) -> torch.Tensor:
        """int64 (..., H, W): the instance ids of the tiles `key` selects (as for indexing)."""
        if self.instances is None:
            raise ValueError("these label maps were read without instance maps (dataset.instance: false)")
        return self.instances[key].long()

    @property
    def channels(self) -> int:
        return self.label_nc + (self.edges is not None)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.ids), self.channels, *self.ids.shape[-2:]))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key) -> torch.Tensor:
        ids = self.ids[key].long().unsqueeze(-3)
        # Scattered straight into uint8: F.one_hot's int64 stack of a 50 x 512 x 512 batch would take 3.8 GB.
        planes = torch.zeros(*ids.shape[:-3], self.channels, *ids.shape[-2:], dtype=torch.uint8)
        planes[..., :self.label_nc, :, :].scatter_(-3, ids, 255)
        if self.edges is not None:
            planes[..., self.label_nc, :, :] = self.edges[key].to(torch.uint8) * 255
        return planes


def instance_ids_of(inputs, key) -> torch.Tensor:
    """int64 (..., H, W): the instance ids of rows `key` of a data set's image-to-image inputs, for a model
    that reads them (zoo.base.InstanceTranslator); one clear error when the inputs have none."""
    if not isinstance(inputs, LabelMaps) or not inputs.has_instances:
        raise ValueError("the model reads the inputs' instance ids, which only label maps read with their "
                         "instance maps have (a label-map data set with dataset.instance: true)")
    return inputs.instance_ids(key)


def boundary_map(inst: torch.Tensor) -> torch.Tensor:
    """bool (..., H, W): True where the instance id differs from a 4-neighbour (pix2pixHD's edge map)."""
    edge = torch.zeros(inst.shape, dtype=torch.bool)
    dx = inst[..., :, 1:] != inst[..., :, :-1]
    dy = inst[..., 1:, :] != inst[..., :-1, :]
    edge[..., :, 1:] |= dx
    edge[..., :, :-1] |= dx
    edge[..., 1:, :] |= dy
    edge[..., :-1, :] |= dy
    return edge


def resize_nearest(ids: torch.Tensor, size: Size) -> torch.Tensor:
    """Integer maps (..., H, W) to size x size (or size = (height, width)), each output pixel the id at its
    centre (PIL's NEAREST): no value that was not in the map appears. float32 holds every 16-bit id exactly."""
    h, w = hw(size)
    if ids.shape[-2:] == (h, w):
        return ids
    lead = ids.shape[:-2]
    x = ids.reshape(-1, 1, *ids.shape[-2:]).float()
    out = F.interpolate(x, size=(h, w), mode="nearest-exact")
    return out.reshape(*lead, h, w).to(ids.dtype)


def tiles(height: int, width: int) -> list[tuple[int, int, int]]:
    """(top, left, side) of the floor(long / short) squares a frame is cut into, centred along its long side."""
    side = min(height, width)
    n = max(height, width) // side
    start = (max(height, width) - n * side) // 2
    if width >= height:
        return [(0, start + i * side, side) for i in range(n)]
    return [(start + i * side, 0, side) for i in range(n)]


def _key(path: Path) -> str:
    return _CITYSCAPES_STEM.sub("", path.stem)


def _files(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES:
            if _key(p) in out:
                raise BenchError(f"{folder}: '{out[_key(p)].name}' and '{p.name}' name the same frame")
            out[_key(p)] = p
    return out


def _frames(root: Path, split: str, instance: bool) -> list[tuple[Path, Optional[Path], Path]]:
    """(label, instance or None, photo) of one split, matched by name; [] when the split has no photos."""
    photos_dir, labels_dir, inst_dir = root / f"{split}_img", root / f"{split}_label", root / f"{split}_inst"
    if not photos_dir.is_dir():
        return []
    if not labels_dir.is_dir():
        raise BenchError(f"{root}: {split}_img/ has no {split}_label/ folder of label-id maps beside it")
    if instance and not inst_dir.is_dir():
        raise BenchError(f"{root}: no {split}_inst/ folder; instance boundary maps need the instance-id maps "
                         "(or set dataset.instance: false)")
    labels, photos = _files(labels_dir), _files(photos_dir)
    insts = _files(inst_dir) if instance else {}
    for key, label in labels.items():
        if key not in photos:
            raise BenchError(f"{photos_dir}: no photo for label map '{label.name}'")
        if instance and key not in insts:
            raise BenchError(f"{inst_dir}: no instance map for label map '{label.name}'")
    extra = sorted(set(photos) - set(labels))
    if extra:
        raise BenchError(f"{labels_dir}: no label map for photo '{photos[extra[0]].name}'")
    if not labels:
        raise BenchError(f"{labels_dir}: no label maps ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [(labels[k], insts.get(k), photos[k]) for k in sorted(labels)]


def renumber(inst: torch.Tensor) -> torch.Tensor:
    """int32 ids 0..K-1 of one tile's instances, in the order of their original ids (a bijection, so the
    boundaries and the grouping of pixels are unchanged)."""
    return torch.unique(inst, return_inverse=True)[1].to(torch.int32)


def compact(inst: torch.Tensor) -> torch.Tensor:
    """The smallest of uint8, int16, int32 that holds every id of `inst` (ids are >= 0)."""
    top = int(inst.max()) if inst.numel() else 0
    dtype = torch.uint8 if top < 2**8 else torch.int16 if top < 2**15 else torch.int32
    return inst.to(dtype)


def windows(height: int, width: int, aspect: int, where: Path) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the pieces a frame is read as: with aspect 1 its square tiles (`tiles`); with
    aspect > 1 the whole frame, which must be exactly aspect times as wide as tall (one line naming it if not)."""
    if aspect == 1:
        return [(top, left, side, side) for top, left, side in tiles(height, width)]
    if width != aspect * height:
        raise BenchError(f"{where}: frame is {width}x{height} px ({width / height:.3g}:1) but dataset.aspect is "
                         f"{aspect} (whole frames {aspect}:1); use frames of that shape or the aspect they have")
    return [(0, 0, height, width)]


def _read_frame(files, res: int, label_nc: int, aspect: int = 1):
    """One frame -> (ids uint8 (T, H, W), boundaries bool (T, H, W) or None, photos uint8 (T, 3, H, W), instance
    ids int32 (T, H, W) or None): T square tiles of H = W = res, or (aspect > 1) the whole frame, H = res and
    W = aspect x res."""
    label_path, inst_path, photo_path = files
    label, photo = decode_image(label_path, "ids"), decode_image(photo_path)
    bad = label[(label < 0) | (label >= label_nc)]
    if bad.size:
        raise BenchError(f"{label_path}: label id {int(bad.max() if bad.max() >= label_nc else bad.min())} is "
                         f"outside 0..{label_nc - 1} (dataset.label_nc is {label_nc})")
    inst = decode_image(inst_path, "ids") if inst_path is not None else None
    for other, arr in ((photo_path, photo[0]), (inst_path, inst)):
        if arr is not None and arr.shape != label.shape:
            raise BenchError(f"{other}: {arr.shape[1]}x{arr.shape[0]} px, but its label map {label_path.name} is "
                             f"{label.shape[1]}x{label.shape[0]}")
    ids, edges, photos, insts = [], [], [], []
    size = (res, aspect * res)
    for top, left, height, width in windows(*label.shape, aspect, label_path):
        window = (slice(top, top + height), slice(left, left + width))
        ids.append(resize_nearest(torch.from_numpy(label[window]), size).to(torch.uint8))
        if inst is not None:
            resized = resize_nearest(torch.from_numpy(inst[window]), size)
            edges.append(boundary_map(resized))
            insts.append(renumber(resized))
        photos.append(resize_uint8(torch.from_numpy(photo[(slice(None), *window)].copy()).unsqueeze(0), size)[0])
    stack = lambda xs: torch.stack(xs) if xs else None  # noqa: E731
    return torch.stack(ids), stack(edges), torch.stack(photos), stack(insts)


def _read_split(frames, res: int, label_nc: int, aspect: int = 1) -> dict[str, Optional[torch.Tensor]]:
    parts = [_read_frame(f, res, label_nc, aspect) for f in frames]
    cat = lambda k: torch.cat([p[k] for p in parts]) if parts[0][k] is not None else None  # noqa: E731
    insts = cat(3)
    return {"ids": cat(0), "edges": cat(1), "photos": cat(2), "inst": compact(insts) if insts is not None else None}


def load_labelmap(spec: DatasetSpec, seed: int):

    folder, default_nc = LABELMAP_DEFAULTS[spec.name]
    label_nc = spec.label_nc or default_nc
    if label_nc is None:
        raise BenchError(f"{spec.name}: set dataset.label_nc, the number of label ids (one-hot channels)")
    instance = True if spec.instance is None else spec.instance
    if spec.channels != 3:
        raise BenchError(f"{spec.name}: the photos are RGB; set dataset.channels: 3")
    if spec.load_size is not None:
        raise BenchError(f"{spec.name}: label maps are not crop-jittered (pix2pixHD trains cityscapes on "
                         "whole frames); remove dataset.load_size")
    root = data_root(spec, folder)
    train = _frames(root, "train", instance)
    if not train:
        raise BenchError(f"{root}: a label-map data set needs train_img/ and train_label/"
                         f"{' and train_inst/' if instance else ''} folders")
    held = _frames(root, "test", instance)
    if not held:
        # No held-out photos: the seed carves the held-out frames first, so they never train.
        if spec.train_size + spec.eval_size > len(train):
            raise BenchError(f"{spec.name}: train_size {spec.train_size} + eval_size {spec.eval_size} exceed the "
                             f"{len(train)} frames in {root / 'train_img'} (without test_img/ both come from there)")
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        held, train = [train[i] for i in perm[:spec.eval_size]], [train[i] for i in perm[spec.eval_size:]]
    else:
        for label, pool, size in (("train", train, spec.train_size), ("eval", held, spec.eval_size)):
            if size > len(pool):
                raise BenchError(f"{spec.name}: {label}_size {size} exceeds the {len(pool)} {label} frames in {root}")
    train, held = sorted(train)[:spec.train_size], sorted(held)[:spec.eval_size]
    h = ContentHasher()
    for frame in train + held:
        for p in frame:
            if p is not None:
                h.add(root, p)
    # The protocol may leave label_nc and instance to the data set's defaults: the values in force are
    # part of what the model reads, so they enter the data fingerprint.
    # Whole frames (aspect > 1) are other inputs than square tiles of the same files; aspect 1 adds nothing, so
    # every earlier data fingerprint and cache entry stands.
    aspect_key = {} if spec.aspect == 1 else {"aspect": spec.aspect}
    h.h.update(f"label_nc={label_nc} instance={instance} layout={_INPUTS_VERSION}".encode())
    if aspect_key:
        h.h.update(f" aspect={spec.aspect}".encode())
    fingerprint = h.h.hexdigest()
    res = spec.resolution

    def decode():
        tr, ev = (_read_split(train, res, label_nc, spec.aspect), _read_split(held, res, label_nc, spec.aspect))
        return {**{f"train_{k}": v for k, v in tr.items()}, **{f"eval_{k}": v for k, v in ev.items()}}

    t = cached_arrays(fingerprint, decode, kind="labelmap", res=res, label_nc=label_nc, instance=instance,
                      layout=_LAYOUT_VERSION, **aspect_key)
    inputs = {s: LabelMaps(t[f"{s}_ids"], t[f"{s}_edges"], label_nc, t[f"{s}_inst"]) for s in ("train", "eval")}
    data_spec = LabelMapSpec(spec.name, res, 3, 0, aspect=spec.aspect, input_channels=inputs["train"].channels,
                             label_nc=label_nc, instance=instance)
    return RealData(spec=data_spec, train_images=t["train_photos"], train_labels=None,
                    eval_images=t["eval_photos"], eval_labels=None, fingerprint=fingerprint, source=str(root),
                    train_inputs=inputs["train"], eval_inputs=inputs["eval"], task="paired")


def _palette(name: str, label_nc: int) -> torch.Tensor:
    """(label_nc, 3) uint8 colours: cityscapes' own for cityscapes, otherwise drawn from a fixed seed."""
    colours = torch.randint(40, 256, (label_nc, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    if name == "cityscapes":
        n = min(label_nc, len(CITYSCAPES_COLOURS))
        colours[:n] = torch.tensor(CITYSCAPES_COLOURS[:n], dtype=torch.uint8)
    return colours


def render_inputs(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Label-map inputs in [-1, 1] (B, label_nc [+1], H, W) -> colour images in [-1, 1] (B, 3, H, W) for
    sample grids: each pixel in its class colour, instance boundaries in white."""
    label_nc = spec.label_nc
    ids = x[:, :label_nc].argmax(1)
    rgb = _palette(spec.name, label_nc)[ids].permute(0, 3, 1, 2).float().div(127.5).sub(1)
    if x.shape[1] > label_nc:
        rgb = torch.where(x[:, label_nc:label_nc + 1] > 0, torch.ones_like(rgb), rgb)
    return rgb

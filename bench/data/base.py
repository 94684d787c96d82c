"""What every data loader shares, in one place: the data contract a family sees (DataSpec), the loaded
data (RealData) and its per-image digests, and for image files one suffix list, one folder lookup, one
listing, one decoder, one content hasher and one decoded-array cache. Loaders import this module and never
each other's helpers (no import cycles)."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from bench.errors import BenchError
from bench.protocol.schema import DatasetSpec


@dataclass(frozen=True)
class DataSpec:
    """What a family needs to know about the data it will be trained on."""

    name: str
    resolution: int  # the height; the width too unless aspect > 1
    channels: int
    num_classes: int = 0
    # width / height of every image (dataset.aspect): > 1 only for label maps read as whole frames
    # (bench/data/labelmap.py), which only families declaring zoo.base.FrameTranslator accept.
    aspect: int = 1

    @property
    def frame(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return self.resolution, self.aspect * self.resolution


@dataclass
class RealData:
    spec: DataSpec
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: Optional[torch.Tensor]
    eval_images: torch.Tensor
    eval_labels: Optional[torch.Tensor]
    fingerprint: str  # sha256 of the source files' decoded content
    source: str  # the folder the files were read from
    # Image-to-image data (bench/data/translation.py): what the model translates, aligned with
    # train_images/eval_images for paired data, the other domain for unpaired data.
    train_inputs: Optional[torch.Tensor] = None
    eval_inputs: Optional[torch.Tensor] = None
    task: str = "unconditional"  # or "paired" / "unpaired"
    flip: bool = False  # training augmentation (dataset.flip)
    # Per-image content digests of the held-out images as read from the source, before any resize
    # (`image_digests`); None = digest `eval_images` themselves. What measures (a judge) must never have
    # trained on one of these: checked against the judge file's own list when the extractor is built.
    eval_digests: Optional[torch.Tensor] = None
    # Where the training images came from when that is another file than `source` (CIFAR-10's train zip beside
    # the test zip), so the run's first line says which split trains and which one measures.
    train_source: str = ""

    def reference_digests(self) -> torch.Tensor:
        return self.eval_digests if self.eval_digests is not None else image_digests(self.eval_images)

    def pixel_tensors(self) -> dict[str, Any]:
        """name -> every decoded tensor a run trains on or measures against (None = absent), in a fixed order, for
        `pixel_digest`; label-map inputs give their parts (`digest_parts`). Subclasses add what they carry."""
        return {name: getattr(self, name) for name in ("train_images", "train_labels", "eval_images", "eval_labels",
                                                        "train_inputs", "eval_inputs")}


def pixel_digest(data: RealData) -> str:
    """sha256 of the decoded tensors of a loaded data set: what its runs trained on and were scored against.

    The protocol fingerprint hashes the image files' bytes (CIFAR-10: its decoded pixels), so two machines
    whose Pillow or libjpeg decode or resize the same files differently share a fingerprint but not the pixels:
    runs recording different digests are not comparable (bench/reporting/leaderboard.py splits them, `--resume`
    and the report refuse to pool them). Costs ~0.07 s for cifar10-zoo's 18,000 images (55 MB, 2026-12-05)."""
    h = hashlib.sha256()
    for name, value in data.pixel_tensors().items():
        if value is None:
            continue
        parts = {"": value} if isinstance(value, torch.Tensor) else value.digest_parts()
        for part, t in parts.items():
            if t is None:
                continue
            arr = np.ascontiguousarray(t.detach().cpu().numpy())
            h.update(f"{name}{'.' + part if part else ''}:{arr.dtype.str}:{list(arr.shape)}\0".encode())
            h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


DIGEST_BYTES = 16  # a truncated sha256 per image: 2^-64 collision odds over 10^5 images are nil


def image_digests(images) -> torch.Tensor:
    """uint8 (N, DIGEST_BYTES): the sha256 of each image's uint8 pixels (shape-independent bytes)."""
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.dtype != np.uint8:
        raise TypeError("image digests are taken of uint8 pixels")
    out = np.zeros((len(arr), DIGEST_BYTES), dtype=np.uint8)
    for i, x in enumerate(arr):
        out[i] = np.frombuffer(hashlib.sha256(np.ascontiguousarray(x).tobytes()).digest()[:DIGEST_BYTES], np.uint8)
    return torch.from_numpy(out)


# ---------------------------------------------------------------------------------------------
# Image files in folders (paired/unpaired sets, label maps, CelebA, any folder a user names).

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def data_root(spec: DatasetSpec, folder: Optional[str]) -> Path:
    if spec.root:
        root = Path(spec.root).expanduser()
    elif folder and os.environ.get("BENCH_DATA"):
        root = Path(os.environ["BENCH_DATA"]) / folder
    else:
        from bench.io import cache_dir

        if folder is None:
            raise BenchError(f"dataset '{spec.name}' needs dataset.root: the folder with the images")
        root = cache_dir() / "data" / folder
    if not root.is_dir():
        raise BenchError(f"{spec.name}: data folder {root} not found (set dataset.root or $BENCH_DATA)")
    return root


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def images_under(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files in a folder (and its sub-folders), hidden ones skipped, sorted by relative path."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    out = [p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
           and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def center_square(a: np.ndarray, side: Optional[int] = None) -> np.ndarray:
    """The centred side x side square of a (C, H, W) image (default: the short side), so resizing to a
    square never distorts the picture."""
    h, w = a.shape[1:]
    s = min(h, w) if side is None else side
    top, left = (h - s) // 2, (w - s) // 2
    return np.ascontiguousarray(a[:, top:top + s, left:left + s])


ID_MAP_MODES = {"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"}  # one integer per pixel (label/instance maps)


def decode_image(source: Path | bytes, mode: str = "RGB", where: Optional[str] = None,
                 size: Optional[int] = None) -> np.ndarray:
    """The one image decoder of every loader (Pillow, from a path or bytes, decoded at once so a truncated
    file fails here). mode "RGB": uint8 (3, H, W); "L": uint8 (1, H, W); "ids": a one-channel integer map
    (label or instance ids) as int64 (H, W), never converted. `size`: the exact side the image must have,
    checked before decoding (resizing would silently change reference pixels). Any failure is one line
    naming the file."""
    from PIL import Image, UnidentifiedImageError

    where = where or str(source)
    try:
        # Pillow only warns between its bomb limit and twice it, then decodes anyway: a 120 KB PNG declaring
        # 10000x10000 printed two warning lines per image and decoded 100 M pixels each. It is an error here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(source if isinstance(source, bytes) else source.read_bytes()))
        with im:
            if size is not None and im.size != (size, size):
                raise BenchError(f"{where}: image is {im.size[0]}x{im.size[1]}, expected {size}x{size}")
            if mode == "ids" and im.mode not in ID_MAP_MODES:
                raise BenchError(f"{where}: not a one-channel id map (mode {im.mode}); label and instance maps "
                                 "hold one integer id per pixel, e.g. cityscapes' *_labelIds.png")
            im.load()
            arr = np.asarray(im) if mode == "ids" else np.asarray(im.convert(mode))
    except UnidentifiedImageError:
        raise BenchError(f"{where}: not a readable image (Pillow cannot identify it)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise BenchError(f"{where}: not decoded: it declares more pixels than Pillow's decompression-bomb limit "
                         f"({Image.MAX_IMAGE_PIXELS:,}); if it is a real image, resize it first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BenchError(f"{where}: not a readable image ({msg})") from None
    if mode == "ids":
        return arr.astype(np.int64)
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))


class ContentHasher:
    def __init__(self):
        self.h = hashlib.sha256()

    def add(self, root: Path, path: Path) -> None:
        self.h.update(path.relative_to(root).as_posix().encode() + b"\0")
        self.h.update(hashlib.sha256(path.read_bytes()).digest())


def cached_arrays(fingerprint: str, decode, **params) -> dict:
    """Decoded, resized tensors keyed by the files' content hash, the sizes, the Pillow version (JPEG decoding
    may change with it) and the resize arithmetic's version; a second load of the same data skips decoding."""
    import PIL

    from bench.data.resample import VERSION as resample_version
    from bench.features.cache import DiskCache, cache_key

    cache = DiskCache("datasets")
    key = cache_key(data=fingerprint, pillow=PIL.__version__, resample=resample_version, **params)
    hit = cache.get(key)
    if hit is not None:
        return hit
    value = decode()
    cache.put(key, value)
    return value



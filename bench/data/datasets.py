"""Real data sets, split into a training part and a held-out evaluation part.

The evaluation part is never trained on; it is the reference for FID/KID (a held-out reference avoids
dataset leakage). Images are kept as uint8 (N, C, H, W): that is how the feature extractors read both the
real and the generated side, so both go through identical preprocessing.

Data sets: mnist (IDX files) and cifar10 (a zip of class folders, the folders, or torchvision's python
batches). A data set with only its test split (as in ../shared/data) is carved into train/eval parts
with the protocol seed; with a train split present, the protocol trains on it and evaluates on test.
`load_judge_data` gives a data set at its native size for a `judge:<name>` extractor.
"""

from __future__ import annotations

import gzip
import zlib
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from bench.data.transforms import resize_uint8, to_channels
from bench.errors import BenchError
from bench.io import cache_dir, offline, safe_unpickle, sha256_file
from bench.protocol.schema import DatasetSpec
from bench.registry import Registry
from bench.data.base import DataSpec, RealData, cached_arrays, decode_image, image_digests  # noqa: F401 (RealData, image_digests: re-exported)


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
    except (OSError, EOFError, zlib.error) as exc:
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


@dataclass
class _Pools:
    """A data set as read from disk, before any protocol split: its test split and, if present, its train split."""
    name: str
    num_classes: int
    test: tuple[np.ndarray, np.ndarray]  # images uint8 (N, H, W) or (N, C, H, W), labels (N,)
    train: Optional[tuple[np.ndarray, np.ndarray]]
    fingerprint: str
    root: Path
    train_root: Optional[Path] = None  # where the train split came from, when not `root` (CIFAR-10's second zip)


def _read_mnist(spec: DatasetSpec) -> _Pools:
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
    train = None
    if train_path and train_lpath:
        train = (read_idx(train_path), read_idx(train_lpath))
        if train[0].ndim != 3 or train[1].ndim != 1 or len(train[0]) != len(train[1]):
            raise BenchError(f"{root}: MNIST train images and labels do not match "
                             f"({train[0].shape} vs {train[1].shape})")
        for arr in train:
            h.update(arr.tobytes())
    return _Pools("mnist", 10, (test_x, test_y), train, h.hexdigest(), root)


def load_mnist(spec: DatasetSpec, seed: int) -> RealData:
    return _split_pools(spec, seed, _read_mnist(spec))


# When only a data set's test split is present (MNIST in ../shared/data), it is carved into two fixed pools:
# a reference pool of a fifth of the images (2,000 of MNIST's 10,000 test images: the FID/KID reference of
# every protocol) and a training pool (the rest: what GANs and the shipped judge train on). The carve orders
# images by the sha256 of their pixels, so it is the same on every machine, with every torch/numpy version
# and for every protocol seed: a judge trained on the training pool has never seen any protocol's reference
# image (tested by content hash).
REFERENCE_FRACTION = 5  # one image in five


def canonical_carve(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training-pool indices, reference-pool indices) of a test-only data set, by pixel content."""
    digests = [hashlib.sha256(np.ascontiguousarray(x).tobytes()).digest() for x in images]
    order = np.array(sorted(range(len(images)), key=lambda i: (digests[i], i)), dtype=np.int64)
    n_ref = len(images) // REFERENCE_FRACTION
    while 0 < n_ref < len(order) and digests[order[n_ref]] == digests[order[n_ref - 1]]:
        n_ref += 1  # identical images stay on one side of the cut
    return np.sort(order[n_ref:]), np.sort(order[:n_ref])


def _split_pools(spec: DatasetSpec, seed: int, p: _Pools) -> RealData:
    test_x, test_y = p.test
    if p.train is not None:
        # The full set is here: train on the train split, evaluate on the official test split.
        pools = (*p.train, test_x, test_y)
    else:
        # Only the test split (as in ../shared/data): the fixed pools of `canonical_carve`.
        tr, ev = canonical_carve(test_x)
        for label, pool, size in (("train", tr, spec.train_size), ("eval", ev, spec.eval_size)):
            if size > len(pool):
                raise BenchError(f"{p.name}: {label}_size {size} exceeds the {len(pool)}-image {label} pool carved "
                                 f"from the {len(test_x)} test images in {p.root} (no train split there; one image "
                                 f"in {REFERENCE_FRACTION} is the fixed reference pool, the rest the training pool)")
        pools = (test_x[tr], test_y[tr], test_x[ev], test_y[ev])
    data = _finish(spec, seed, p.name, p.num_classes, pools, p.fingerprint, p.root)
    if p.train is not None and p.train_root is not None:
        data.train_source = str(p.train_root)
    return data


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
        eval_digests=image_digests(eval_x[ev]),
    )


# ---------------------------------------------------------------------------------------------
# CIFAR-10 from a zip of class folders, the class folders themselves, or torchvision's python batches.
#
# Layouts, looked for in this order in each search root (the first match wins for that root):
#   cifar10-test-jpg.zip      entries test/<class>/<name>.jpg (and train/<class>/... if the zip has them)
#   test/<class>/*.jpg|png    and train/<class>/... when present
#   cifar-10-batches-py/      what torchvision.datasets.CIFAR10 downloads (data_batch_1..5, test_batch)
# The zip comes first: in ../shared/data it is the complete test split, the loose folders a subset.

# The official label order, which is alphabetical: labels are the sorted class folder names.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_ZIP = "cifar10-test-jpg.zip"
# The complete 50,000-image train split, read from beside the test zip when present: GANs and the shipped
# judge:cifar10 train on it, and the test split is the FID/KID reference, as in the literature.
CIFAR10_TRAIN_ZIP = "cifar10-train-jpg.zip"
CIFAR10_BATCHES = "cifar-10-batches-py"
CIFAR10_SIZE = 32
CIFAR10_SUFFIXES = (".jpg", ".jpeg", ".png")  # members of the CIFAR-10 JPEG zips
# Part of the decoded-array cache key together with Pillow's version: another libjpeg may decode the
# same bytes to slightly different pixels, and those pixels (not the bytes) are the data fingerprint.
_DECODE_VERSION = 1
_SPLITS = ("test", "train")


def _cifar10_layout(root: Path) -> Optional[tuple[str, Path]]:
    if (root / CIFAR10_ZIP).is_file():
        return "zip", root / CIFAR10_ZIP
    if any((root / "test" / c).is_dir() for c in CIFAR10_CLASSES):
        return "folders", root
    if (root / CIFAR10_BATCHES / "test_batch").is_file():
        return "batches", root / CIFAR10_BATCHES
    return None


def _locate_cifar10(spec: DatasetSpec) -> tuple[str, Path]:
    roots = _search_roots(spec, ["cifar10"])
    for root in roots:
        found = _cifar10_layout(root)
        if found:
            return found
    if not spec.root and not offline():
        target = cache_dir() / "data" / "cifar10"
        try:
            import torchvision

            # One archive holds both splits; torchvision checks its md5 before extracting.
            torchvision.datasets.CIFAR10(str(target), train=True, download=True)
            return "batches", target / CIFAR10_BATCHES
        except Exception:  # no network: fall through to the one-line error below
            pass
    looked = ", ".join(str(r) for r in roots)
    raise BenchError(f"cifar10: no {CIFAR10_ZIP}, test/<class>/ image folders or {CIFAR10_BATCHES}/ found in "
                     f"{looked}; set dataset.root or $BENCH_DATA, or run online once so torchvision can download it")


def _skipped(name: str) -> bool:
    """Hidden files and macOS zip debris are not data."""
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _member_label(name: str, where: str) -> tuple[str, int]:
    """'test/cat/0001.jpg' -> ('test', 3), checking the layout; `where` names the file in errors."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] not in _SPLITS:
        raise BenchError(f"{where}: unexpected file; cifar10 reads test/<class>/<image> and train/<class>/<image>")
    split, cls, fname = parts
    if cls not in CIFAR10_CLASSES:
        raise BenchError(f"{where}: unknown cifar10 class folder '{cls}'; valid: {', '.join(CIFAR10_CLASSES)}")
    if not fname.lower().endswith(CIFAR10_SUFFIXES):
        raise BenchError(f"{where}: not an image file (cifar10 reads {', '.join(CIFAR10_SUFFIXES)})")
    return split, CIFAR10_CLASSES.index(cls)


def _folder_members(root: Path) -> list[tuple[str, Path]]:
    out = []
    for split in _SPLITS:
        top = root / split
        if top.is_dir():
            for path in top.rglob("*"):
                name = path.relative_to(root).as_posix()
                if path.is_file() and not _skipped(name):
                    out.append((name, path))
    return sorted(out)


def _unpickle(path: Path) -> dict:
    # A user-named folder may hold anything: only what a CIFAR-10 batch holds is unpickled, nothing runs.
    return safe_unpickle(path)


def _batch_files(folder: Path) -> dict[str, list[Path]]:
    files = {"test": [folder / "test_batch"]}
    train = [folder / f"data_batch_{i}" for i in range(1, 6)]
    if all(p.is_file() for p in train):
        files["train"] = train
    return files


def _decode_cifar10(kind: str, path: Path, members) -> dict[str, dict]:
    """-> {split: {'images': uint8 (N, 3, 32, 32), 'labels': int64 (N,), 'names': [...]}}, sorted by name."""
    found: dict[str, tuple[list, list, list]] = {}
    if kind == "batches":
        meta = path / "batches.meta"
        if meta.is_file():
            names = tuple(_unpickle(meta).get("label_names", CIFAR10_CLASSES))
            if names != CIFAR10_CLASSES:
                raise BenchError(f"{meta}: label names {names} are not the CIFAR-10 classes")
        for split, files in members.items():
            xs, ys, ns = found.setdefault(split, ([], [], []))
            for f in files:
                batch = _unpickle(f)
                try:
                    x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, CIFAR10_SIZE, CIFAR10_SIZE)
                    y = np.asarray(batch["labels"], dtype=np.int64)
                except (KeyError, ValueError) as exc:
                    raise BenchError(f"{f}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
                if len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() >= len(CIFAR10_CLASSES))):
                    raise BenchError(f"{f}: images and labels do not match")
                xs.extend(x)
                ys.extend(y.tolist())
                ns.extend(f"{f.name}/{i:05d}" for i in range(len(y)))
    else:
        zips: dict[Path, zipfile.ZipFile] = {}
        try:
            for name, src in members:
                if kind == "zip":
                    zpath, member = src
                    where = f"{zpath} entry {name}"
                else:
                    where = str(src)
                split, label = _member_label(name, where)
                try:
                    if kind == "zip":
                        if zpath not in zips:
                            zips[zpath] = zipfile.ZipFile(zpath)
                        data = zips[zpath].read(member)
                    else:
                        data = src.read_bytes()
                except (zipfile.BadZipFile, OSError) as exc:  # e.g. a CRC mismatch inside the zip
                    raise BenchError(f"{where}: cannot read ({exc})") from None
                xs, ys, ns = found.setdefault(split, ([], [], []))
                xs.append(decode_image(data, "RGB", where, CIFAR10_SIZE))
                ys.append(label)
                ns.append(name)
        finally:
            for zf in zips.values():
                zf.close()
    out = {}
    for split, (xs, ys, ns) in found.items():
        labels = np.asarray(ys, dtype=np.int64)
        missing = [c for i, c in enumerate(CIFAR10_CLASSES) if not (labels == i).any()]
        if missing:
            raise BenchError(f"{path}: the {split} split has no images of class {', '.join(missing)}")
        out[split] = {"images": torch.from_numpy(np.stack(xs)), "labels": torch.from_numpy(labels), "names": ns}
    if "test" not in out:
        raise BenchError(f"{path}: no test/<class>/ images (cifar10 needs at least the test split)")
    return out


def _cifar10_members(kind: str, path: Path):
    """What will be decoded, and a sha256 of its bytes: the key of the decoded-array cache."""
    h = hashlib.sha256(kind.encode())
    if kind == "zip":
        members = []
        train_zip = path.parent / CIFAR10_TRAIN_ZIP
        for zpath in (path, train_zip) if train_zip.is_file() and train_zip != path else (path,):
            h.update(sha256_file(zpath).encode())
            try:
                with zipfile.ZipFile(zpath) as zf:
                    names = sorted(i.filename for i in zf.infolist() if not i.is_dir() and not _skipped(i.filename))
            except (zipfile.BadZipFile, OSError) as exc:
                raise BenchError(f"{zpath}: not a readable zip file ({exc})") from None
            members += [(n, (zpath, n)) for n in names]
        return sorted(members, key=lambda m: m[0]), h.hexdigest()
    if kind == "folders":
        members = _folder_members(path)
        for name, p in members:
            h.update(f"{name}\0{sha256_file(p)}\0".encode())
        return members, h.hexdigest()
    members = _batch_files(path)
    for split, files in sorted(members.items()):
        for f in files:
            h.update(f"{split}/{f.name}\0{sha256_file(f)}\0".encode())
    return members, h.hexdigest()


def read_cifar10(kind: str, path: Path) -> tuple[dict[str, dict], str]:
    """Decoded splits of one CIFAR-10 source, and its fingerprint (sha256 of decoded pixels and labels).

    Decoding 10,000 JPEGs takes seconds, so the arrays are cached by the content of the files; the
    cache writes atomically, so concurrent first loads each leave a complete entry.
    """
    members, content = _cifar10_members(kind, path)

    def decode() -> dict:
        splits = _decode_cifar10(kind, path, members)
        h = hashlib.sha256()
        for split in _SPLITS:
            if split in splits:
                h.update(split.encode())
                h.update(splits[split]["images"].numpy().tobytes())
                h.update(splits[split]["labels"].numpy().tobytes())
        return {"splits": splits, "fingerprint": h.hexdigest()}

    # the one decoded-array cache of every loader (bench/data/base.py), keyed by the files' content
    hit = cached_arrays(content, decode, kind="cifar10-decoded", decoder=_DECODE_VERSION)
    splits, fingerprint = hit["splits"], hit["fingerprint"]
    return splits, fingerprint


def _read_cifar10(spec: DatasetSpec) -> _Pools:
    kind, path = _locate_cifar10(spec)
    splits, fingerprint = read_cifar10(kind, path)

    def arrays(split):
        return splits[split]["images"].numpy(), splits[split]["labels"].numpy()

    train_zip = path.parent / CIFAR10_TRAIN_ZIP
    return _Pools("cifar10", len(CIFAR10_CLASSES), arrays("test"), arrays("train") if "train" in splits else None,
                  fingerprint, path, train_zip if kind == "zip" and train_zip.is_file() else None)


def load_cifar10(spec: DatasetSpec, seed: int) -> RealData:
    if spec.channels != 3:
        raise BenchError("cifar10: the images are RGB; set dataset.channels: 3")
    return _split_pools(spec, seed, _read_cifar10(spec))


def _translation_sets() -> dict[str, Callable[[DatasetSpec, int], RealData]]:
    from bench.data.labelmap import LABELMAP_DEFAULTS, load_labelmap
    from bench.data.superres import SUPERRES_SETS
    from bench.data.translation import PAIRED_DEFAULTS, UNPAIRED_DEFAULTS, load_paired, load_unpaired

    return {**{n: load_paired for n in PAIRED_DEFAULTS}, **{n: load_unpaired for n in UNPAIRED_DEFAULTS},
            **{n: load_labelmap for n in LABELMAP_DEFAULTS}, **SUPERRES_SETS}


def _folder_sets() -> dict[str, Callable[[DatasetSpec, int], RealData]]:
    from bench.data.folder import load_celeba, load_image_folder

    return {"celeba": load_celeba, "image_folder": load_image_folder}


DATASETS: Registry[Callable[[DatasetSpec, int], RealData]] = Registry("dataset", {
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    **_translation_sets(),
    **_folder_sets(),
})


def load_dataset(spec: DatasetSpec, seed: int) -> RealData:
    data = DATASETS.get(spec.name)(spec, seed)
    if spec.domain_sizes != "train_size" and data.task != "unpaired":
        raise BenchError(f"{spec.name}: dataset.domain_sizes is for unpaired data (two domains); this is "
                         f"{data.task} data")
    if spec.colourise:
        from bench.data.colourise import colourisation

        data = colourisation(data)
    data.flip = spec.flip
    return data


# ---------------------------------------------------------------------------------------------
# Data for a judge trained on another data set than the protocol's (extractor `judge:<name>`).

@dataclass(frozen=True)
class JudgeSource:
    read: Callable[[DatasetSpec], _Pools]
    locate: Callable[[DatasetSpec], object]
    resolution: int  # the data set's native size: the judge is trained on it
    channels: int


JUDGE_SOURCES: dict[str, JudgeSource] = {
    "mnist": JudgeSource(_read_mnist, _locate_mnist, 28, 1),
    "cifar10": JudgeSource(_read_cifar10, _locate_cifar10, CIFAR10_SIZE, 3),
}


def _native_spec(name: str, train_size: int = 1, eval_size: int = 2) -> DatasetSpec:
    src = JUDGE_SOURCES[name]
    return DatasetSpec(name=name, resolution=src.resolution, channels=src.channels, train_size=train_size,
                       eval_size=eval_size)


def locate_judge_data(name: str) -> None:
    """Cheap check that a judge's data can be found, before anything is written."""
    JUDGE_SOURCES[name].locate(_native_spec(name))


def load_judge_data(name: str, seed: int) -> RealData:
    """`name` at its native resolution and channels, split the fixed way a shipped `judge:<name>` is trained.

    With a train split present the judge trains on all of it and the whole test split measures its
    accuracy (CIFAR-10 in ../shared/data: 50,000 train, 10,000 test). With only the test split (MNIST in
    ../shared/data) it trains on the training pool of `canonical_carve` and the reference pool measures its
    accuracy: the images every protocol's reference is drawn from are never trained on.
    """
    pools = JUDGE_SOURCES[name].read(_native_spec(name))
    n_test = len(pools.test[0])
    if pools.train is not None:
        sizes = len(pools.train[0]), n_test
    else:
        tr, ev = canonical_carve(pools.test[0])
        if not len(ev):
            raise BenchError(f"{name}: only {n_test} images in {pools.root}; too few to train a judge")
        sizes = len(tr), len(ev)
    return _split_pools(_native_spec(name, *sizes), seed, pools)

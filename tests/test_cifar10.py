"""CIFAR-10 from ../shared/data (test and train zips, loose folders) and the shipped judge:cifar10, offline."""

import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch

import bench.data.datasets as datasets
from bench.cli import main
from bench.data import load_dataset
from bench.data.datasets import CIFAR10_CLASSES, CIFAR10_TRAIN_ZIP, CIFAR10_ZIP, load_judge_data, read_cifar10
from bench.errors import BenchError
from bench.features.extractors import check_extractor_name, make_extractor, preflight_extractor
from bench.protocol.schema import DatasetSpec
from tests.conftest import DATA, needs_data, tiny_protocol

pytestmark = needs_data

def spec(**kw):
    base = dict(name="cifar10", resolution=32, channels=3, train_size=3000, eval_size=1000)
    base.update(kw)
    return DatasetSpec(**base)


@pytest.fixture(scope="module")
def zipped():
    return read_cifar10("zip", DATA / "cifar10" / CIFAR10_ZIP)


@pytest.fixture(scope="module")
def loose():
    return read_cifar10("folders", DATA / "cifar10")


def _one_line_error(fn, *match):
    with pytest.raises(BenchError) as exc:
        fn()
    msg = str(exc.value)
    assert "\n" not in msg
    for m in match:
        assert str(m) in msg, msg
    return msg


def _copy_classes(dst, per_class=3):
    """A small folder copy of the loose test split: every class, the first few images of each."""
    for cls in CIFAR10_CLASSES:
        (dst / "test" / cls).mkdir(parents=True)
        for i in range(per_class):
            shutil.copy(DATA / "cifar10" / "test" / cls / f"{i:04d}.jpg", dst / "test" / cls)
    return dst


def test_zips_are_the_complete_test_and_train_splits(zipped):
    splits, fingerprint = zipped
    assert set(splits) == {"test", "train"} and len(fingerprint) == 64
    for split, n in (("test", 1000), ("train", 5000)):
        x, y = splits[split]["images"], splits[split]["labels"]
        assert x.shape == (10 * n, 3, 32, 32) and x.dtype == torch.uint8
        assert np.bincount(y.numpy()).tolist() == [n] * 10
        names = splits[split]["names"]
        assert names == sorted(names) and names[0] == f"{split}/airplane/0000.jpg"
        assert all(CIFAR10_CLASSES[label] == nm.split("/")[1] for nm, label in zip(names, y.tolist()))


def test_loose_folders_decode_to_the_same_pixels_as_the_zip(zipped, loose, tmp_path):
    z, f = zipped[0]["test"], loose[0]["test"]
    assert f["images"].shape == (1000, 3, 32, 32)
    index = {n: i for i, n in enumerate(z["names"])}
    rows = torch.tensor([index[n] for n in f["names"]])
    assert torch.equal(z["images"][rows], f["images"]) and torch.equal(z["labels"][rows], f["labels"])
    # The same JPEG bytes zipped give the same fingerprint as the folder: it is over decoded pixels.
    small = tmp_path / CIFAR10_ZIP  # no train zip beside it: the test split alone, like the loose folders
    with zipfile.ZipFile(small, "w", zipfile.ZIP_STORED) as zf:
        for name in f["names"]:
            zf.write(DATA / "cifar10" / name, name)
    assert read_cifar10("zip", small)[1] == loose[1] != zipped[1]


def test_zip_is_preferred_gans_train_on_train_and_the_test_split_is_the_reference(zipped):
    a = load_dataset(spec(), seed=0)
    assert a.source.endswith(CIFAR10_ZIP)  # the complete splits win over the loose subset beside them
    assert a.train_source.endswith(CIFAR10_TRAIN_ZIP)  # and the run's first line says which file trains
    assert a.train_images.shape == (3000, 3, 32, 32) and a.eval_images.shape == (1000, 3, 32, 32)
    assert a.train_images.dtype == torch.uint8 and a.spec.num_classes == 10
    assert set(a.train_labels.tolist()) == set(range(10))
    splits = zipped[0]
    test = {t.numpy().tobytes() for t in splits["test"]["images"]}
    train_split = {t.numpy().tobytes() for t in splits["train"]["images"]}
    assert all(t.numpy().tobytes() in train_split for t in a.train_images)
    assert all(t.numpy().tobytes() in test for t in a.eval_images)
    b = load_dataset(spec(), seed=0)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.eval_labels, b.eval_labels)
    c = load_dataset(spec(), seed=1)
    assert not torch.equal(a.eval_images, c.eval_images)
    assert a.fingerprint == c.fingerprint
    with pytest.raises(BenchError, match="eval_size 10001 exceeds the 10000 images"):
        load_dataset(spec(train_size=50000, eval_size=10001), seed=0)


def test_resolution_and_channels(tmp_path):
    d = load_dataset(spec(resolution=64, train_size=10, eval_size=10), seed=0)
    assert d.train_images.shape == (10, 3, 64, 64)
    _one_line_error(lambda: load_dataset(spec(channels=1), seed=0), "cifar10", "RGB")


def test_folder_root_and_bad_files_are_one_line_errors_naming_the_file(tmp_path):
    root = _copy_classes(tmp_path / "c")
    d = load_dataset(spec(root=str(root), train_size=20, eval_size=6), seed=0)  # 30 images: 24 train, 6 reference
    assert d.source == str(root) and d.eval_images.shape == (6, 3, 32, 32)
    _one_line_error(lambda: load_dataset(spec(root=str(root), train_size=20, eval_size=7), seed=0),
                    "eval_size 7 exceeds the 6-image eval pool")

    bad = root / "test" / "cat" / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    _one_line_error(lambda: load_dataset(spec(root=str(root), train_size=20, eval_size=10), seed=0),
                    bad, "not a readable image")
    good = (DATA / "cifar10" / "test" / "cat" / "0000.jpg").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # truncated: fails when decoded, not later
    _one_line_error(lambda: load_dataset(spec(root=str(root), train_size=20, eval_size=10), seed=0),
                    bad, "not a readable image")
    bad.unlink()

    from PIL import Image

    big = root / "test" / "dog" / "big.png"
    Image.new("RGB", (40, 40)).save(big)
    _one_line_error(lambda: load_dataset(spec(root=str(root), train_size=20, eval_size=10), seed=0),
                    big, "40x40", "32x32")
    big.unlink()
    note = root / "test" / "dog" / "notes.txt"
    note.write_text("hello")
    _one_line_error(lambda: load_dataset(spec(root=str(root), train_size=20, eval_size=10), seed=0),
                    note, "not an image file")
    note.unlink()
    (root / "test" / "dog" / ".DS_Store").write_bytes(b"\0")  # hidden files are not data
    shutil.copytree(root / "test" / "cat", root / "test" / "kitten")
    _one_line_error(lambda: load_dataset(spec(root=str(root), train_size=20, eval_size=10), seed=0),
                    "kitten", "valid: airplane")
    shutil.rmtree(root / "test" / "kitten")
    shutil.rmtree(root / "test" / "frog")
    _one_line_error(lambda: load_dataset(spec(root=str(root), train_size=20, eval_size=10), seed=0),
                    "no images of class frog")


def test_a_bad_zip_entry_is_named(tmp_path):
    root = tmp_path / "z"
    root.mkdir()
    with zipfile.ZipFile(root / CIFAR10_ZIP, "w") as zf:
        for cls in CIFAR10_CLASSES:
            zf.write(DATA / "cifar10" / "test" / cls / "0000.jpg", f"test/{cls}/0000.jpg")
        zf.writestr("test/cat/0001.jpg", b"garbage")
    _one_line_error(lambda: load_dataset(spec(root=str(root), train_size=5, eval_size=5), seed=0),
                    root / CIFAR10_ZIP, "entry test/cat/0001.jpg", "not a readable image")
    (root / CIFAR10_ZIP).write_bytes(b"PK but not a zip")
    _one_line_error(lambda: load_dataset(spec(root=str(root), train_size=5, eval_size=5), seed=0),
                    root / CIFAR10_ZIP, "not a readable zip")


def test_a_train_folder_is_trained_on_and_test_is_held_out(tmp_path):
    root = _copy_classes(tmp_path / "c", per_class=2)
    shutil.copytree(root / "test", root / "train")
    (root / "train" / "ship" / "0000.jpg").unlink()  # 19 training images, 20 test images
    d = load_dataset(spec(root=str(root), train_size=19, eval_size=20), seed=0)
    assert len(d.train_images) == 19 and len(d.eval_images) == 20
    with pytest.raises(BenchError, match="train_size 20 exceeds the 19 images"):
        load_dataset(spec(root=str(root), train_size=20, eval_size=20), seed=0)


def test_torchvision_python_batches_are_read(tmp_path):
    """The layout torchvision's download leaves in the cache (written here by hand, nothing downloaded)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name, n in [("test_batch", 30)] + [(f"data_batch_{i}", 10) for i in range(1, 6)]:
        batches[name] = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": [i % 10 for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)
    d = load_dataset(spec(root=str(tmp_path), train_size=50, eval_size=30), seed=0)
    assert d.source == str(folder)
    want = torch.from_numpy(batches["test_batch"]["data"].reshape(-1, 3, 32, 32))
    order = [bytes(t.numpy()) for t in want]
    got = sorted(order.index(bytes(t.numpy())) for t in d.eval_images)
    assert got == list(range(30))  # the whole test batch is the held-out part, pixels unchanged
    (folder / "test_batch").write_bytes(b"not a pickle")
    _one_line_error(lambda: load_dataset(spec(root=str(tmp_path), train_size=50, eval_size=30), seed=0),
                    folder / "test_batch", "not a CIFAR-10 python batch")


def test_missing_data_offline_lists_the_folders_searched(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(lambda: load_dataset(spec(root=str(empty)), seed=0), "cifar10: no", empty)
    monkeypatch.setenv("BENCH_DATA", str(empty))
    msg = _one_line_error(lambda: load_dataset(spec(), seed=0), empty / "cifar10", empty,
                          datasets.cache_dir() / "data" / "cifar10")
    assert "download" in msg
    # The shipped judge is a file: it needs no data at all.
    preflight_extractor("judge:cifar10")


def test_decoded_arrays_come_from_the_cache(zipped, monkeypatch):
    def no_decoding(*args):
        raise AssertionError("decoded again instead of read from the cache")

    monkeypatch.setattr(datasets, "_decode_cifar10", no_decoding)
    splits, fingerprint = read_cifar10("zip", DATA / "cifar10" / CIFAR10_ZIP)
    assert fingerprint == zipped[1] and torch.equal(splits["test"]["images"], zipped[0]["test"]["images"])


def test_extractor_names(tmp_path, capsys):
    check_extractor_name("judge:cifar10", "mnist")
    check_extractor_name("judge:cifar10", "mnist", channels=1)  # grayscale is replicated to RGB
    check_extractor_name("judge", "cifar10", channels=3)
    check_extractor_name("judge:mnist", "mnist")
    _one_line_error(lambda: check_extractor_name("judge:nosuch", "mnist"), "judge:nosuch", "judge:cifar10",
                    "judge:mnist")
    _one_line_error(lambda: check_extractor_name("judge:mnist", "cifar10", channels=3), "1-channel", "RGB")
    _one_line_error(lambda: check_extractor_name("resnet", "mnist"), "unknown extractor 'resnet'")
    p = tiny_protocol(tmp_path, extractor="judge:cifar10")
    assert main(["validate", str(p)]) == 0
    capsys.readouterr()
    preflight_extractor("judge:cifar10")


def test_shipped_judge_cifar10_reads_grayscale_mnist_and_other_sizes():
    mnist = load_dataset(DatasetSpec(name="mnist", resolution=28, channels=1, train_size=100, eval_size=64), seed=0)
    first = make_extractor("judge:cifar10", mnist, 7, torch.device("cpu"))
    assert first.name == "judge:cifar10" and first.info["cache"] == "shipped" and first.info["local"] is False
    assert first.info["trained_on"] == "cifar10" and first.info["judge_input"] == "3x32x32"
    assert first.info["judge_train_size"] == 50000 and first.info["judge_eval_size"] == 10000
    assert first.info["heldout_accuracy"] > 0.6
    out = first(mnist.eval_images)
    assert out["pool"].shape == (64, 128) and out["logits"].shape == (64, 10)
    assert torch.isfinite(out["pool"]).all() and out["pool"].std() > 0
    # The protocol seed does not change the instrument.
    second = make_extractor("judge:cifar10", mnist, 8, torch.device("cpu"))
    assert second.sha256 == first.sha256 and torch.equal(second(mnist.eval_images)["pool"], out["pool"])

    # The same judge scores RGB images at another size too (resized to 32 inside the extractor).
    rgb = load_dataset(spec(resolution=64, train_size=10, eval_size=16), seed=0)
    assert first(rgb.eval_images)["logits"].shape == (16, 10)
    # The judge's data: the whole train split trains it, the whole test split measures it.
    a = load_judge_data("cifar10", 1)
    assert len(a.train_images) == 50000 and len(a.eval_images) == 10000 and a.source.endswith(CIFAR10_ZIP)
    assert (DATA / "cifar10" / CIFAR10_TRAIN_ZIP).is_file()
    # A grayscale judge cannot read colour: refused before anything runs.
    _one_line_error(lambda: make_extractor("judge:mnist", rgb, 7, "cpu"), "1-channel")

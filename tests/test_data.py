import gzip
import shutil

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.data import load_dataset
from bench.data.datasets import read_idx
from bench.errors import BenchError
from bench.protocol.schema import DatasetSpec
from tests.conftest import DATA, needs_data, tiny_protocol

pytestmark = needs_data


def spec(**kw):
    base = dict(name="mnist", resolution=28, channels=1, train_size=3000, eval_size=1000)
    base.update(kw)
    return DatasetSpec(**base)


def test_mnist_test_split_is_read_and_matches_known_label_counts():
    y = read_idx(DATA / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x = read_idx(DATA / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8


def test_split_is_disjoint_seeded_and_sized():
    a = load_dataset(spec(), seed=0)
    assert a.train_images.shape == (3000, 1, 28, 28) and a.eval_images.shape == (1000, 1, 28, 28)
    assert a.train_images.dtype == torch.uint8
    train = {t.numpy().tobytes() for t in a.train_images}
    held = {t.numpy().tobytes() for t in a.eval_images}
    # The pools are cut by content digest, so not even a duplicate picture is on both sides.
    assert not train & held
    b = load_dataset(spec(), seed=0)
    assert torch.equal(a.eval_images, b.eval_images) and torch.equal(a.train_labels, b.train_labels)
    c = load_dataset(spec(), seed=1)
    assert not torch.equal(a.eval_images, c.eval_images)
    assert a.fingerprint == c.fingerprint  # the fingerprint is the source content; the seed is in the protocol


def test_raw_and_gz_idx_give_the_same_data(tmp_path):
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(DATA / "mnist" / f"{stem}.gz") as src, open(tmp_path / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    a = load_dataset(spec(), seed=0)
    b = load_dataset(spec(root=str(tmp_path)), seed=0)
    assert torch.equal(a.eval_images, b.eval_images) and a.fingerprint == b.fingerprint


def test_resize_and_channel_replication():
    d = load_dataset(spec(resolution=32, channels=3, train_size=10, eval_size=10), seed=0)
    assert d.train_images.shape == (10, 3, 32, 32)
    assert torch.equal(d.train_images[:, 0], d.train_images[:, 2])


def test_too_many_images_requested():
    with pytest.raises(BenchError, match="train_size 9500 exceeds the 8000-image train pool"):
        load_dataset(spec(train_size=9500, eval_size=1000), seed=0)
    with pytest.raises(BenchError, match="eval_size 2001 exceeds the 2000-image eval pool"):
        load_dataset(spec(train_size=10, eval_size=2001), seed=0)


def test_corrupt_and_missing_data_are_one_line_errors(tmp_path, capsys):
    raw = gzip.open(DATA / "mnist" / "t10k-images-idx3-ubyte.gz").read()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[: len(raw) // 2])
    shutil.copy(DATA / "mnist" / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(BenchError, match="truncated or corrupt IDX"):
        load_dataset(spec(root=str(tmp_path)), seed=0)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x01garbage")
    with pytest.raises(BenchError, match="bad magic"):
        load_dataset(spec(root=str(tmp_path)), seed=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    p = tiny_protocol(tmp_path)
    p.write_text(p.read_text().replace("name: mnist,", f"name: mnist, root: {empty.as_posix()},"))
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mnist: no IDX files" in err and str(empty) in err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("side", [10000, 20000])  # between Pillow's limit and twice it (a warning); above (an error)
def test_an_image_declaring_too_many_pixels_is_one_line_and_not_decoded(side, tmp_path, capsys):
    """A small file can declare 100 M pixels: Pillow only warned (two lines per image) and decoded it."""
    import warnings

    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("1", (side, side)).save(folder / "bomb.png")  # a few hundred KB on disk
    Image.new("RGB", (8, 8)).save(folder / "ok.png")
    assert (folder / "bomb.png").stat().st_size < 2**20
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning escapes either
        assert main(["score", str(folder), str(folder), "--no-log"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "decompression-bomb limit" in err[0] and "bomb.png" in err[0], err

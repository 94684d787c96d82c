"""Pinned judges: one file everywhere, and never trained on what they measure against (proved by content hash).

The shipped judge files (bench/judges/) are the instrument; these tests check that the manifest pins them,
that each file's list of training-image digests is really the set it was trained on (recomputed from the
data here), that no shipped protocol's reference image is in that set, and that a protocol whose reference
overlaps a judge's training images is refused before anything is written.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.data import load_dataset
from bench.data.datasets import canonical_carve, image_digests, load_judge_data, read_idx
from bench.errors import BenchError
from bench.features.extractors import make_extractor, preflight_extractor
from bench.features.judge import SHIPPED_RECIPES, read_judge_file, shipped_file
from bench.features.weights import manifest, resolve
from bench.io import sha256_file
from bench.protocol.load import load_protocol
from tests.conftest import DATA, REPO, needs_data, tiny_protocol


def _digest_set(t: torch.Tensor) -> set[bytes]:
    return {bytes(r) for r in t.numpy()}


@pytest.mark.parametrize("name", sorted(SHIPPED_RECIPES))
def test_shipped_judge_is_the_pinned_file(name):
    entry = manifest().get(f"judge:{name}")
    path, sha = resolve(f"judge:{name}", allow_download=False)
    assert path == shipped_file(name) and sha == sha256_file(path) == entry.sha256 and len(sha) == 64
    judge = read_judge_file(path)
    assert judge.meta["name"] == f"judge:{name}" and judge.meta["recipe"]["steps"] == SHIPPED_RECIPES[name].steps
    assert judge.train_digests.dtype == torch.uint8 and len(judge.train_digests) == judge.meta["train_size"]


def test_a_modified_judge_file_is_refused(tmp_path, monkeypatch):
    from bench.features import extractors, judge as judge_mod

    fake_dir = tmp_path / "judges"
    fake_dir.mkdir()
    for n in SHIPPED_RECIPES:
        shutil.copyfile(shipped_file(n), fake_dir / shipped_file(n).name)
    blob = bytearray((fake_dir / "judge-mnist.pt").read_bytes())
    blob[-100] ^= 1
    (fake_dir / "judge-mnist.pt").write_bytes(bytes(blob))
    monkeypatch.setattr(judge_mod, "JUDGE_DIR", fake_dir)
    extractors._SHIPPED_CACHE.clear()
    with pytest.raises(BenchError, match=r"judge:mnist weights file .* has sha256 .*modified or replaced"):
        preflight_extractor("judge", dataset="mnist", channels=1)
    extractors._SHIPPED_CACHE.clear()


@needs_data
@pytest.mark.parametrize("name", sorted(SHIPPED_RECIPES))
def test_judge_file_lists_exactly_the_images_it_was_trained_on(name):
    """The digests in the file are recomputed from the data the recipe trains on: the list is not a claim."""
    judge = read_judge_file(shipped_file(name))
    data = load_judge_data(name, 0)
    assert judge.meta["data_fingerprint"] == data.fingerprint
    assert _digest_set(judge.train_digests) == _digest_set(image_digests(data.train_images))
    # Its held-out images are disjoint from its training images (and it is a real classifier).
    assert not _digest_set(image_digests(data.eval_images)) & _digest_set(judge.train_digests)
    assert judge.meta["heldout_accuracy"] > (0.97 if name == "mnist" else 0.6)


def _shipped_protocols() -> list[Path]:
    return sorted((REPO / "protocols").glob("*.yaml")) + sorted((REPO / "protocols" / "paper").glob("*.yaml"))


@needs_data
@pytest.mark.parametrize("path", _shipped_protocols(), ids=lambda p: str(p.relative_to(REPO / "protocols")))
def test_no_shipped_protocol_reference_image_was_seen_by_its_judge(path):
    protocol = load_protocol(path).protocol
    ex = protocol.evaluation.extractor
    if not ex.startswith("judge"):
        pytest.skip(f"{ex}: not a judge (pretrained weights, not trained by ganbench)")
    name = protocol.dataset.name if ex == "judge" else ex.split(":", 1)[1]
    try:
        data = load_dataset(protocol.dataset, protocol.seed)
    except BenchError as exc:  # paper-scale data (e.g. the full MNIST train split) is not in ../shared/data
        pytest.skip(f"data not here: {exc}")
    judge = read_judge_file(shipped_file(name))
    seen, ref = _digest_set(judge.train_digests), _digest_set(data.reference_digests())
    assert len(ref) == len(data.eval_images)
    assert not seen & ref, f"{path.name}: {len(seen & ref)} reference images were in judge:{name}'s training set"
    preflight_extractor(ex, dataset=protocol.dataset.name, channels=protocol.dataset.channels, data=data)
    if name == protocol.dataset.name:
        # Same data set: the reference digests live in the same space as the judge's (source pixels), so
        # the disjointness above is not vacuous: every reference image is one of the judge's held-out images.
        assert ref <= _digest_set(image_digests(load_judge_data(name, 0).eval_images))


@needs_data
def test_mnist_carve_is_fixed_by_content_not_by_seed():
    raw = read_idx(next((DATA / "mnist").glob("t10k-images*")))
    train, ref = canonical_carve(raw)
    assert len(ref) == 2000 and len(train) == 8000 and not set(train) & set(ref)
    spec = load_protocol(REPO / "protocols" / "quickstart.yaml").protocol.dataset
    a, b = load_dataset(spec, 0), load_dataset(spec, 7)
    assert _digest_set(a.reference_digests()) == _digest_set(b.reference_digests()) == _digest_set(image_digests(raw[ref]))


@needs_data
def test_a_reference_the_judge_trained_on_is_refused(tmp_path, capsys):
    """MNIST with a train split present: the reference becomes the whole test split, which contains the
    shipped judge's training pool. bench refuses in preflight, with one line, before writing anything."""
    root = tmp_path / "mnist-full"
    root.mkdir()
    src = DATA / "mnist"
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(src / name, root / name)
    # A stand-in "train split": the test images again (any images would do; what matters is the reference).
    shutil.copyfile(src / "t10k-images-idx3-ubyte.gz", root / "train-images-idx3-ubyte.gz")
    with gzip.open(src / "t10k-labels-idx1-ubyte.gz") as f:
        labels = f.read()
    with gzip.open(root / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(labels)
    proto = tiny_protocol(tmp_path, name="overlap").read_text().replace(
        "name: mnist, resolution: 28", f"name: mnist, root: {root.as_posix()}, resolution: 28")
    (tmp_path / "overlap.yaml").write_text(proto)
    capsys.readouterr()
    assert main(["run", str(tmp_path / "overlap.yaml"), "--workdir", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "judge:mnist was trained on" in err[0] and "reference images" in err[0], err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "work").exists()
    # judge:local trains on the protocol's own training part instead (this machine only), so it passes preflight.
    preflight_extractor("judge:local", dataset="mnist", channels=1)


@needs_data
def test_local_judge_is_keyed_by_machine_and_recorded_as_local(tmp_path, monkeypatch):
    from bench.features import judge as judge_mod

    spec = load_protocol(tiny_protocol(tmp_path)).protocol.dataset
    data = load_dataset(spec, 0)
    short = judge_mod.JudgeRecipe(steps=5)
    ex = make_extractor("judge:local", data, 3, torch.device("cpu"), recipe=short)
    assert ex.name == "judge:local" and ex.info["local"] is True and ex.info["cache"] == "miss"
    assert ex.info["machine"]["threads"] == torch.get_num_threads() and ex.info["machine"]["cpu"]
    assert make_extractor("judge:local", data, 3, "cpu", recipe=short).info["cache"] == "hit"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads != 1 else 2)  # another thread count is another machine: retrained
        assert make_extractor("judge:local", data, 3, "cpu", recipe=short).info["cache"] == "miss"
    finally:
        torch.set_num_threads(threads)


def test_judge_names_are_checked():
    from bench.features.extractors import check_extractor_name

    for bad, text in (("judge:nosuch", "no shipped judge 'nosuch'"), ("resnet", "unknown extractor 'resnet'")):
        with pytest.raises(BenchError, match=text):
            check_extractor_name(bad, "mnist")
    with pytest.raises(BenchError, match="no judge is shipped for data set 'facades'"):
        check_extractor_name("judge", "facades", 3)
    with pytest.raises(BenchError, match="no class labels"):
        check_extractor_name("judge:local", "facades", 3)

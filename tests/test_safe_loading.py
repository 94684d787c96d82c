"""Loading a file never runs code: checkpoints named by protocols, cache entries (a shared folder on a
cluster), reference statistics files and CIFAR-10 python batches are read without executing anything.

Every hostile file here holds a pickle payload that creates a marker file when unpickled. A control
unpickles a copy (pointing at another marker) with the ordinary loader in a subprocess and checks that
its marker does appear, so these tests fail if bench ever loads such a file the ordinary way.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.errors import BenchError
from bench.features.cache import DiskCache
from bench.features.stats import RunningStats, load_reference_stats, save_reference_stats
from bench.io import safe_torch_load, safe_unpickle, sha256_file
from bench.runner import checkpoint
from tests import progress
from tests.conftest import needs_data
from zoo import ZOO
from zoo.base import DataSpec


class Touch:
    """Unpickling this runs `touch <marker>` through os.system (the pickle names posix.system, not this class)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class Exec:
    """The same through builtins.exec, with no shell."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def plain_pickle(marker: Path, cls=Touch) -> bytes:
    return pickle.dumps(cls(marker))  # protocol 4 or 5: what `pickle.dumps` writes by default


def torch_file(marker: Path, key: str = "k", cls=Touch) -> bytes:
    """A torch.save zip archive that looks like a ganbench checkpoint or cache entry, with the payload inside."""
    buf = io.BytesIO()
    torch.save({"format": checkpoint.FORMAT, "key": key, "step": 1, "trap": cls(marker)}, buf)
    return buf.getvalue()


def npz_with_object_array(marker: Path) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, mu=np.array([Touch(marker)], dtype=object), sigma=np.eye(1))
    return buf.getvalue()


UNSAFE_LOADERS = {
    "pickle": "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))",
    "torch": "import sys, torch; torch.load(sys.argv[1], weights_only=False)",
    "npz": "import sys, numpy as np; np.load(sys.argv[1], allow_pickle=True)['mu']",
}


def assert_runs_when_loaded_unsafely(tmp: Path, make, loader: str) -> None:
    """Control: the same kind of file, loaded the ordinary way in another process, does run its payload."""
    marker = tmp / "control-marker"
    path = tmp / "control-copy"
    path.write_bytes(make(marker))
    progress.run([sys.executable, "-c", UNSAFE_LOADERS[loader], str(path)], f"unsafe {loader} load")
    assert marker.exists(), f"control: {loader} did not run the payload, so the test could not fail"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: "), err
    return err[0]


# -- (a) a checkpoint named by a protocol ---------------------------------------------------------------

PROTOCOL = """name: trap
seed: 0
dataset: {{name: mnist, resolution: 28, channels: 1, train_size: 200, eval_size: 100}}
entries:
  - {{name: e, zoo: mnist_gan, checkpoint: '{ckpt}'}}
evaluation: {{n_samples: 50, seeds: [0], batch_size: 50, metrics: [fid], extractor: inception-v3-compat,
             weights: {{path: '{weights}', sha256: '{sha}'}}}}
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


@needs_data
@pytest.mark.parametrize("kind", ["plain-pickle", "torch-archive", "torch-archive-with-sidecar"])
def test_a_checkpoint_with_a_payload_is_refused_before_anything_runs(kind, tmp_path, capsys, inception_standin):
    marker = tmp_path / "pwned"
    make = plain_pickle if kind == "plain-pickle" else torch_file
    assert_runs_when_loaded_unsafely(tmp_path, make, "pickle" if kind == "plain-pickle" else "torch")
    ckpt = tmp_path / "given.pt"
    ckpt.write_bytes(make(marker))
    if kind.endswith("sidecar"):  # whoever wrote the file can write a matching digest too: it proves nothing
        checkpoint.digest_path(ckpt).write_text(sha256_file(ckpt) + "\n")
    store = tmp_path / "store"
    store.mkdir()
    weights, sha = inception_standin
    proto = tmp_path / "trap.yaml"
    proto.write_text(PROTOCOL.format(ckpt=ckpt.as_posix(), weights=Path(weights).as_posix(), sha=sha,
                                     store=store.as_posix()))
    code = main(["run", str(proto), "--workdir", str(tmp_path / "work")])
    line = one_line_error(capsys)
    assert code == 2, line
    assert not marker.exists(), "the checkpoint's payload ran"
    assert "refused to load: it needs posix.system" in line and "ganbench checkpoint never holds" in line, line
    assert not list(store.iterdir())


@pytest.mark.parametrize("cls,name", [(Touch, "posix.system"), (Exec, "builtins.exec")])
@pytest.mark.parametrize("make", [plain_pickle, torch_file], ids=["plain-pickle", "torch-archive"])
def test_checkpoint_read_refuses_any_global_outside_the_allow_list(make, cls, name, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "given.pt"
    path.write_bytes(make(marker, cls=cls))
    with pytest.raises(BenchError, match=f"given.pt: refused to load: it needs {name}, which a ganbench "
                                         r"checkpoint never holds \(loading it could run code\)"):
        checkpoint.read(path)
    assert not marker.exists()


def test_the_allow_list_is_minimal_and_local(tmp_path):
    """numpy arrays only of the RNG state's dtype, and nothing stays allowed after the call."""
    path = tmp_path / "x.pt"
    torch.save({"format": checkpoint.FORMAT, "a": np.zeros(3)}, path)  # float64: no checkpoint holds one
    with pytest.raises(BenchError, match="it needs numpy.dtypes.Float64DType"):
        checkpoint.read(path)
    torch.save({"format": checkpoint.FORMAT, "a": np.array([object()], dtype=object)}, path)
    with pytest.raises(BenchError, match="refused to load: it needs numpy.dtypes.ObjectDType"):
        checkpoint.read(path)
    torch.save({"format": checkpoint.FORMAT, "a": np.zeros(3, np.uint32)}, path)
    before = set(torch.serialization.get_safe_globals())  # torch's own process-wide additions
    assert checkpoint.read(path)["a"].dtype == np.uint32
    assert set(torch.serialization.get_safe_globals()) == before


def test_a_checkpoint_written_by_ganbench_still_loads_and_restores_every_rng(tmp_path):
    import random

    model = ZOO.get("mnist_gan").build({}, DataSpec("mnist", 28, 1, 10))
    gen = torch.Generator().manual_seed(3)
    np.random.seed(11)
    random.seed(12)
    checkpoint.save(tmp_path / "latest.pt", model, 7, {"data": gen}, "fp", "e")
    expect = (np.random.rand(), random.random(), torch.rand(2, generator=gen))
    payload = checkpoint.read(tmp_path / "latest.pt")
    assert payload["global_rng"]["numpy"][1].dtype == np.uint32 and isinstance(payload["global_rng"]["python"], tuple)
    np.random.seed(0)
    random.seed(0)
    gen2 = torch.Generator()
    assert checkpoint.restore_training_state(payload, {"data": gen2}, model) == 7
    assert (np.random.rand(), random.random()) == expect[:2] and torch.equal(torch.rand(2, generator=gen2), expect[2])
    checkpoint.load_into(payload, ZOO.get("mnist_gan").build({}, DataSpec("mnist", 28, 1, 10)), tmp_path / "x.pt")


# -- (b) the content-addressed cache ------------------------------------------------------------------

@pytest.mark.parametrize("make", [plain_pickle, torch_file], ids=["plain-pickle", "torch-archive"])
def test_a_cache_entry_with_a_payload_is_a_miss_and_is_replaced(make, tmp_path, caplog):
    marker = tmp_path / "pwned"
    assert_runs_when_loaded_unsafely(tmp_path, make, "pickle" if make is plain_pickle else "torch")
    cache = DiskCache("features", root=tmp_path / "cache")
    key = "ab" * 32
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_bytes(make(marker) if make is plain_pickle else torch_file(marker, key=key))
    with caplog.at_level(logging.WARNING, logger="bench.features.cache"):
        assert cache.get(key) is None
    assert not marker.exists(), "the cache entry's payload ran"
    assert cache.misses == 1 and "refused: it needs posix.system" in caplog.text
    value = {"features": {"pool": torch.ones(2, 3)}, "stats": {"mu": np.zeros(3), "sigma": np.eye(3)}}
    cache.put(key, value)
    hit = cache.get(key)
    assert hit is not None and cache.hits == 1 and np.array_equal(hit["stats"]["sigma"], np.eye(3))


def test_what_bench_caches_loads_from_the_cache(tmp_path):
    """Every kind of value the code puts: features with float64 stats, decoded splits with lists of names,
    state dicts."""
    cache = DiskCache("any", root=tmp_path)
    stats = RunningStats(8)
    stats.update(torch.rand(4, 8))
    values = {
        "features": {"features": {"pool": torch.rand(4, 8), "logits": torch.rand(4, 10)}, "stats": stats.as_fid_stats()},
        "cifar": {"splits": {"test": {"images": torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
                                      "labels": torch.tensor([0, 1]), "names": ["a/00000", "a/00001"]}},
                  "fingerprint": "f" * 64},
        "judge": {"state_dict": torch.nn.Linear(2, 2).state_dict()},
        "pairs": {"train_x": torch.zeros(1, 3, 4, 4), "eval_y": torch.zeros(1, 3, 4, 4)},
    }
    for name, value in values.items():
        cache.put(name, value)
        assert cache.get(name) is not None, name
    assert cache.hits == len(values) and cache.misses == 0


def test_real_features_recompute_and_replace_a_poisoned_entry_end_to_end(tmp_path, monkeypatch):
    from bench.evaluation import real_features

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    weight = torch.rand(3 * 8 * 8, 5, generator=torch.Generator().manual_seed(0))

    def extract(images):
        pool = images.float().flatten(1) @ weight
        return {"pool": pool, "logits": pool[:, :3]}

    extractor = type("Toy", (), {"name": "toy", "sha256": "0" * 64, "__call__": lambda self, x: extract(x)})()
    data = SimpleNamespace(eval_images=torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8,
                                                     generator=torch.Generator().manual_seed(1)))
    _, stats, status = real_features(extractor, data, 8)
    assert status == "miss"
    [entry] = list((tmp_path / "cache" / "features").glob("*.pt"))  # the key the code computed
    key = entry.stem
    marker = tmp_path / "pwned"
    entry.write_bytes(torch_file(marker, key=key))
    _, again, status = real_features(extractor, data, 8)
    assert status == "miss" and not marker.exists(), "the poisoned entry was used or its payload ran"
    assert np.array_equal(again["sigma"], stats["sigma"])
    _, third, status = real_features(extractor, data, 8)
    assert status == "hit" and np.array_equal(third["mu"], stats["mu"])  # replaced by a good entry


# -- (c) reference statistics files ------------------------------------------------------------------

def test_stats_show_prints_a_good_file(tmp_path, capsys):
    rs = RunningStats(4)
    rs.update(np.random.default_rng(0).normal(size=(50, 4)))
    path = tmp_path / "ref.npz"
    digest = save_reference_stats(rs.as_fid_stats(), path)
    assert digest == sha256_file(path) and not list(tmp_path.glob(".*.tmp"))
    back = load_reference_stats(path)
    assert back["mu"].dtype == np.float64 and np.array_equal(back["mu"], rs.mean) and np.array_equal(back["sigma"], rs.cov)
    with np.load(path, allow_pickle=False) as npz:  # pytorch-fid's layout, nothing else
        assert sorted(npz.files) == ["mu", "sigma"]
    assert main(["stats", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dimension 4" in out and f"sha256 {digest}" in out
    assert f"trace(sigma) {np.trace(rs.cov):.6g}" in out and f"||mu|| {np.linalg.norm(rs.mean):.6g}" in out


@pytest.mark.parametrize("kind", ["plain-pickle", "object-array-in-npz"])
def test_stats_show_refuses_a_file_with_a_payload(kind, tmp_path, capsys):
    marker = tmp_path / "pwned"
    make = plain_pickle if kind == "plain-pickle" else npz_with_object_array
    assert_runs_when_loaded_unsafely(tmp_path, make, "pickle" if kind == "plain-pickle" else "npz")
    path = tmp_path / "ref.npz"
    path.write_bytes(make(marker))
    assert main(["stats", "show", str(path)]) == 2
    line = one_line_error(capsys)
    assert "refused to load: it holds pickled Python objects" in line, line
    assert not marker.exists()


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("arrays,expect", [
    ({"m": np.zeros(3), "sigma": np.eye(3)}, "has no 'mu'"),
    ({"mu": np.zeros(3), "sigma": np.eye(2)}, "'sigma' has shape (2, 2), expected (3, 3)"),
    ({"mu": np.zeros((3, 1)), "sigma": np.eye(3)}, "'mu' has shape (3, 1), expected (d,)"),
    ({"mu": np.array([0.0, np.nan]), "sigma": np.eye(2)}, "'mu' contains NaN or inf"),
    ({"mu": np.zeros(2), "sigma": np.array([[1.0, 0.5], [0.0, 1.0]])}, "not symmetric"),
    ({"mu": np.array(["a", "b"]), "sigma": np.eye(2)}, "'mu' is not a numeric array"),
    # not a covariance: sigma = -I was scored as FID -116.6 and logged as a finished run
    ({"mu": np.zeros(3), "sigma": -np.eye(3)}, "'sigma' has a negative trace (-3)"),
    ({"mu": np.zeros(2), "sigma": np.array([[1.0, 2.0], [2.0, 1.0]])}, "'sigma' has a clearly negative eigenvalue"),
    # finite but past any feature statistic: the FID overflowed to inf (with overflow warnings) and was logged
    ({"mu": np.full(3, 1e300), "sigma": np.eye(3)}, "'mu' has values of magnitude 1e+300"),
])
def test_a_malformed_stats_file_is_one_line(arrays, expect, tmp_path, capsys):
    path = _npz(tmp_path / "ref.npz", **arrays)
    assert main(["stats", "show", str(path)]) == 2
    assert expect in one_line_error(capsys)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_singular_covariance_is_still_a_covariance(tmp_path, capsys, dtype):
    """Fewer images than dimensions give a singular sigma; stored as float32 its smallest eigenvalues are ~-1e-8 of
    the largest from rounding alone (200 images at 2,048 dimensions): accepted."""
    x = np.random.default_rng(0).standard_normal((200, 2048))
    sigma = np.cov(x, rowvar=False).astype(dtype)
    assert np.linalg.eigvalsh(sigma.astype(np.float64))[0] < 0 or dtype is np.float64  # the case the check must pass
    path = _npz(tmp_path / "ref.npz", mu=x.mean(0).astype(dtype), sigma=sigma)
    assert main(["stats", "show", str(path)]) == 0


def test_a_header_declaring_a_huge_array_is_refused_before_it_is_allocated(tmp_path, capsys):
    """An .npz is small on disk whatever shape its headers declare; numpy allocated the declared shape first
    (a MemoryError traceback for (100000, 100000))."""
    import zipfile

    good = _npz(tmp_path / "good.npz", mu=np.zeros(128), sigma=np.eye(128))
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(bomb, "w") as w:
        for info in z.infolist():
            data = z.read(info)
            w.writestr(info.filename, data.replace(b"(128, 128)", b"(100000, 100000)")
                       if info.filename == "sigma.npy" else data)
    assert main(["stats", "show", str(bomb)]) == 2
    assert "'sigma' declares shape (100000, 100000)" in one_line_error(capsys)


def test_stats_files_that_are_not_npz(tmp_path, capsys):
    (tmp_path / "text.npz").write_text("mu,sigma\n1,2\n")
    np.save(tmp_path / "one.npy", np.zeros(3))
    for name, expect in [("text.npz", "not an .npz statistics file"), ("one.npy", "a single .npy array"),
                         ("missing.npz", "statistics file not found")]:
        assert main(["stats", "show", str(tmp_path / name)]) == 2
        assert expect in one_line_error(capsys), name
    (tmp_path / "cut.npz").write_bytes(_npz(tmp_path / "ok.npz", mu=np.zeros(3), sigma=np.eye(3)).read_bytes()[:200])
    assert main(["stats", "show", str(tmp_path / "cut.npz")]) == 2
    assert "not a readable .npz statistics file" in one_line_error(capsys)


# -- (d) CIFAR-10 python batches ---------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_a_cifar_style_batch_loads(protocol, tmp_path):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({"data": data, "labels": [0, 1], b"batch_label": "training batch 1 of 5",
                     "filenames": ["a.png", "b.png"]}, f, protocol=protocol)
    batch = safe_unpickle(tmp_path / "data_batch_1")
    assert batch["data"].dtype == np.uint8 and np.array_equal(batch["data"], data) and batch["labels"] == [0, 1]
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile"], "num_vis": 3072}, f, protocol=protocol)
    assert safe_unpickle(tmp_path / "batches.meta")["label_names"] == ["airplane", "automobile"]


def test_a_python2_cifar_batch_loads(tmp_path):
    """The real files were written by Python 2: numpy 1's module path and str (latin-1) array data."""
    raw = bytes(range(256)) * 24  # 2 x 3072 bytes, every byte value
    blob = (b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00"
            b"\x85U\x01b\x87Rq\x04(K\x01K\x02M\x00\x0c\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|"
            b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T" + len(raw).to_bytes(4, "little") + raw +
            b"tbU\x06labelsq\x07]q\x08(K\x00K\x01eu.")
    (tmp_path / "test_batch").write_bytes(blob)
    batch = safe_unpickle(tmp_path / "test_batch")
    assert batch["data"].shape == (2, 3072) and batch["data"].tobytes() == raw and batch["labels"] == [0, 1]


@pytest.mark.parametrize("cls,name", [(Touch, "posix.system"), (Exec, "builtins.exec")])
def test_a_cifar_batch_with_a_payload_is_refused(cls, name, tmp_path):
    marker = tmp_path / "pwned"
    assert_runs_when_loaded_unsafely(tmp_path, lambda m: plain_pickle(m, cls), "pickle")
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:  # the payload inside an otherwise ordinary batch
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "x": cls(marker)}, f, protocol=2)
    with pytest.raises(BenchError, match=f"data_batch_1: refused to load: it needs {name}, which a CIFAR-10 "
                                         r"python batch never holds \(loading it could run code\)"):
        safe_unpickle(path)
    assert not marker.exists()


def test_a_cifar_batch_needs_nothing_else(tmp_path):
    path = tmp_path / "b"
    for obj, expect in [(np.array([1, "a"], dtype=object), r"numpy.dtype\('\|O'\)"),
                        ({1, 2}, "builtins.set"), (torch.zeros(2), "torch._utils._rebuild_tensor_v2")]:
        path.write_bytes(pickle.dumps(obj, protocol=2))
        with pytest.raises(BenchError, match=f"refused to load: it needs {expect}"):
            safe_unpickle(path)
    path.write_bytes(b"\x80\x02}q\x00(U\x04data")
    with pytest.raises(BenchError, match=r"b: not a CIFAR-10 python batch \((EOFError|UnpicklingError)\)"):
        safe_unpickle(path)
    with pytest.raises(BenchError, match=r"not a CIFAR-10 python batch \(FileNotFoundError\)"):
        safe_unpickle(tmp_path / "missing")


def test_safe_torch_load_leaves_no_global_allowed(tmp_path):
    torch.save({"a": np.zeros(2, np.uint32)}, tmp_path / "x.pt")
    from bench.io import numpy_array_globals

    before = set(torch.serialization.get_safe_globals())  # torch's own process-wide additions
    assert safe_torch_load(tmp_path / "x.pt", numpy_array_globals("uint32"))["a"].dtype == np.uint32
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(Exception):  # allowed inside the call only
        torch.load(tmp_path / "x.pt", weights_only=True)

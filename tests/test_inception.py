"""The inception-v3-compat path: manifest resolution, offline errors, and a real run on test weights.

Pretrained weights are not obtainable here, so these tests use seeded random-init weights with
calibrated BatchNorm statistics (tests/inception_weights.py). They exercise the real code path;
the numbers they produce say nothing about image quality.
"""

import json

import pytest
import torch

from bench.cli import main
from bench.features import weights
from tests.conftest import needs_data, write_protocol
from bench.features.standin import build_test_inception_weights

PROTO = """
name: inception-tiny
seed: 0
dataset: {{name: mnist, resolution: 28, channels: 1, train_size: 300, eval_size: 48}}
entries:
  - {{name: untrained, zoo: mnist_gan, train: {{steps: 0}}}}
evaluation:
  n_samples: 48
  seeds: [0]
  batch_size: 24
  extractor: inception-v3-compat
{weights}
  metrics: [is, fid, kid]
  is_splits: 2
  fid_interval_groups: 0
  fid_inf_points: 0
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


@pytest.fixture(scope="module")
def test_weights(tmp_path_factory):
    path, sha = build_test_inception_weights(tmp_path_factory.mktemp("w") / "inception-test.pth", seed=0)
    return path, sha


def _proto(tmp_path, weights_yaml=""):
    return write_protocol(tmp_path / "p.yaml", PROTO.format(weights=weights_yaml, store=tmp_path.as_posix()))


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@needs_data
def test_missing_inception_weights_exit_2_with_file_digest_and_fetch_command(tmp_path, capsys):
    p = _proto(tmp_path)
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 2
    err = _one_line(capsys)
    entry = weights.manifest().get("inception-v3-compat")
    assert entry.file in err and "6726825d" in err and "bench weights fetch inception-v3-compat" in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "mlflow.db").exists()


@needs_data
def test_weights_with_the_wrong_sha256_are_refused(tmp_path, capsys, test_weights):
    path, sha = test_weights
    wrong = "a" * 64
    p = _proto(tmp_path, f"  weights: {{path: {path}, sha256: {wrong}}}")
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 2
    err = _one_line(capsys)
    assert f"has sha256 {sha}, expected {wrong}" in err
    # without a stated digest, the manifest's is checked (the test file is not the pretrained one)
    p = _proto(tmp_path, f"  weights: {{path: {path}}}")
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 2
    assert "expected 6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2" in _one_line(capsys)


def test_the_manifest_pins_full_digests_not_the_file_names_prefixes():
    """torch.hub names carry 8 hex digits of the sha256; a file sharing only those (one in 2**32 by chance, or
    made to) was accepted. Every such file now has its full digest pinned, beginning with its name's prefix."""
    for name in ("inception-v3-compat", "alexnet", "vgg16", "vgg19"):
        entry = weights.manifest().get(name)
        assert entry.sha256 == weights.FULL_SHA256[entry.file] and entry.sha256.startswith(entry.sha256_prefix)
        assert entry.matches(entry.sha256)
        assert not entry.matches(entry.sha256_prefix + "0" * 56), name


def test_manifest_file_in_weights_dir_is_found_and_checked(tmp_path, monkeypatch):
    entry = weights.manifest().get("inception-v3-compat")
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / entry.file).write_bytes(b"not the weights")
    with pytest.raises(Exception, match="delete it and fetch again"):
        weights.resolve("inception-v3-compat", allow_download=False)


def test_calibrated_test_weights_give_non_degenerate_features(test_weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path, _ = test_weights
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=path)
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(6, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    pool, logits = net(x)
    assert pool.shape == (6, 2048) and logits.shape == (6, 1008)
    # A random-init net without calibration gives ~1e-7 features; calibrated ones are unit-scale
    # and differ between images.
    assert pool.abs().mean() > 0.1
    assert (pool[0] - pool[1]).abs().mean() > 1e-3
    # Rebuilding with the same seed gives the same file.
    again, sha2 = build_test_inception_weights(path + ".again", seed=0)
    assert sha2 == test_weights[1]


@needs_data
def test_bench_run_scores_with_inception_weights_from_a_path(tmp_path, capsys, test_weights):
    path, sha = test_weights
    p = _proto(tmp_path, f"  weights: {{path: {path}, sha256: {sha}}}")
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 0
    r = json.loads((tmp_path / "w" / "results.jsonl").read_text().splitlines()[0])
    assert r["info"]["extractor"] == "inception-v3-compat" and r["info"]["extractor_sha256"] == sha
    m = r["metrics"]
    assert m["fid"]["mean"] > 0 and 1.0 <= m["is"]["mean"] <= 1008
    assert m["kid/subset_size"]["mean"] == 48

"""Evaluation properties: batch-size independence, seed sensitivity, and a network that is never touched."""

import json
import socket

import pytest

from bench.cli import main
from tests.conftest import needs_data, tiny_protocol

pytestmark = needs_data

UNTRAINED = """  - {name: g, zoo: mnist_gan, train: {steps: 0}}
  - {name: d, zoo: dcgan, config: {ngf: 8, ndf: 8}, fit: pad, train: {steps: 0}}
"""


def _rows(workdir):
    return {r["entry"]: r for r in map(json.loads, (workdir / "results.jsonl").read_text().splitlines())}


def test_scores_do_not_depend_on_the_evaluation_batch_size_and_do_depend_on_the_seed(tmp_path):
    rows = []
    for bs in (64, 500):
        d = tmp_path / f"bs{bs}"
        d.mkdir()
        p = tiny_protocol(d, entries=UNTRAINED, batch_size=bs, reference=True)
        assert main(["run", str(p), "--workdir", str(d / "w")]) == 0
        rows.append(_rows(d / "w"))
    a, b = rows
    for entry in ("g", "d", "real_data"):  # the real-data row draws its training images batch-independently too
        assert a[entry]["fingerprint"] == b[entry]["fingerprint"]  # batch size is not part of it
        for key, value in a[entry]["metrics"].items():
            for x, y in zip(value["per_seed"], b[entry]["metrics"][key]["per_seed"]):
                assert x == pytest.approx(y, rel=1e-6, abs=1e-9), (entry, key)
        m = a[entry]["metrics"]
        for key in ("fid", "kid/mean", "is", "fid/ci95_low"):
            s0, s1 = m[key]["per_seed"]
            assert s0 != s1, key  # the second eval seed draws other latents, subsets and resamples


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    return attempts


def test_offline_mode_never_attempts_the_network(tmp_path, monkeypatch, capsys, no_network):
    # Missing Inception weights: one line, no download attempt.
    p = tiny_protocol(tmp_path, extractor="inception-v3-compat")
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 2
    assert "weights missing" in capsys.readouterr().err
    assert main(["weights", "fetch", "inception-v3-compat"]) == 2
    assert "bench weights fetch" in capsys.readouterr().err
    # Missing data with no root: torchvision's download is not attempted either.
    empty = tmp_path / "nodata"
    empty.mkdir()
    monkeypatch.setenv("BENCH_DATA", str(empty))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    p = tiny_protocol(tmp_path)
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 2
    assert "no IDX files" in capsys.readouterr().err
    assert no_network == []


def test_weights_verify_reports_missing_files(capsys):
    assert main(["weights", "verify"]) == 0
    out = capsys.readouterr().out
    assert "inception-v3-compat: missing" in out and "alexnet: missing" in out

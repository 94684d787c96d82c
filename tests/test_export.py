"""`bench export-samples` writes the pixels bench scored: torch-fidelity's own command line, run on the
exported folders with the same weights file, reproduces bench's FID and KID."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.metrics.base import derive_seed
from tests.conftest import needs_data, write_protocol
from bench.features.standin import build_test_inception_weights

pytestmark = needs_data

PROTO = """
name: export-check
seed: 3
dataset: {{name: mnist, resolution: 28, channels: 1, train_size: 200, eval_size: 40}}
entries:
  - {{name: g, zoo: mnist_gan, train: {{steps: 2, batch_size: 8}}}}
evaluation:
  n_samples: 40
  seeds: [7]
  batch_size: 20
  extractor: inception-v3-compat
  weights: {{path: {path}, sha256: {sha}}}
  metrics: [fid, kid]
  kid_subsets: 10
  kid_subset_size: 30
  fid_interval_groups: 0
  fid_inf_points: 0
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


def test_torch_fidelity_cli_on_exported_folders_matches_bench(tmp_path, capsys):
    wpath, sha = build_test_inception_weights(tmp_path / "inception-test.pth", seed=1)
    p = write_protocol(tmp_path / "p.yaml", PROTO.format(path=wpath, sha=sha, store=tmp_path.as_posix()))
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 0
    result = json.loads((tmp_path / "w" / "results.jsonl").read_text().splitlines()[0])
    out = tmp_path / "export"
    assert main(["export-samples", str(p), "--entry", "g", "--out", str(out), "--workdir", str(tmp_path / "w")]) == 0
    assert len(list((out / "fake").glob("*.png"))) == 40 and len(list((out / "real").glob("*.png"))) == 40
    info = json.loads((out / "export.json").read_text())
    assert info["fingerprint"] == result["fingerprint"]
    assert info["data_pixels"] == result["env"]["data_pixels"]  # real/ holds the pixels the run was scored on
    # a second export into the same folder is refused rather than mixing files
    assert main(["export-samples", str(p), "--entry", "g", "--out", str(out), "--workdir", str(tmp_path / "w")]) == 2
    capsys.readouterr()
    # A user's folder named like the old fixed temp folder (<out>.partial) is never touched (it was rmtree'd).
    mine = tmp_path / "again.partial"
    mine.mkdir()
    (mine / "important.txt").write_text("keep")
    assert main(["export-samples", str(p), "--entry", "g", "--out", str(tmp_path / "again"),
                 "--workdir", str(tmp_path / "w")]) == 0
    assert (mine / "important.txt").read_text() == "keep"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "again").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    assert sorted(q.name for q in tmp_path.iterdir() if "again" in q.name) == ["again", "again.partial"]
    # --out under a file: one line, exit 2, nothing written
    (tmp_path / "afile").write_text("x")
    assert main(["export-samples", str(p), "--entry", "g", "--out", str(tmp_path / "afile" / "ex"),
                 "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: --out ") and "afile" in err[0], err

    fidelity = Path(sys.executable).parent / "fidelity"
    cmd = [str(fidelity), "--input1", str(out / "real"), "--input2", str(out / "fake"), "--fid", "--kid",
           "--kid-subsets", "10", "--kid-subset-size", "30", "--rng-seed", str(derive_seed(7, "kid")),
           "--feature-extractor-weights-path", wpath, "--cpu", "--json", "--no-cache", "--silent",
           "--batch-size", "20"]
    ref = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    ours = result["metrics"]
    assert ours["fid"]["per_seed"][0] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert ours["kid/mean"]["per_seed"][0] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["kid/std"]["per_seed"][0] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-4)

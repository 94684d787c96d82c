"""A size the machine cannot take fails that run with one line, and the protocol goes on: a batch the
allocator refuses (out of memory), a batch BatchNorm cannot normalise (one value per channel). Before, both
ended `bench run` with a traceback, after the judge and earlier entries had run and with the rest unrun."""

import json
import resource
import subprocess
import sys

import pytest

from bench.cli import main
from bench.preflight import physical_memory
from tests.conftest import needs_data, tiny_protocol, write_protocol

pytestmark = needs_data

LIMIT = 8 * 2**30  # address space of the run below: its 3,000,000-image float32 batch (9.4 GB) cannot fit


def _rows(workdir):
    return {r["entry"]: r for r in map(json.loads, (workdir / "results.jsonl").read_text().splitlines())}


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS bounds the allocator on Linux")
def test_out_of_memory_fails_the_entry_with_one_line_and_the_protocol_goes_on(tmp_path):
    if physical_memory() < 12 * 2**30:
        pytest.skip("the batch below must fit the machine's RAM (or preflight refuses it, tested elsewhere)")
    entries = """  - {name: huge, zoo: mnist_gan, train: {steps: 1, batch_size: 3000000}}
  - {name: small, zoo: mnist_gan, train: {steps: 2, batch_size: 16}}"""
    proto = tiny_protocol(tmp_path, name="oom", entries=entries, n_samples=200)
    work = tmp_path / "w"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(proto), "--workdir", str(work), "--device", "cpu"],
                          capture_output=True, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT)))
    assert done.returncode == 1, done.stderr[-2000:]  # a failed entry, not bad input and not a crash
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    rows = _rows(work)
    assert rows["huge"]["status"] == "FAILED"
    assert rows["huge"]["reason"].startswith("out of memory: an allocation of "), rows["huge"]["reason"]
    assert "lower train.batch_size" in rows["huge"]["reason"]
    assert rows["small"]["status"] == "FINISHED"  # the next entry ran


def test_a_batch_batchnorm_cannot_normalise_fails_the_entry_with_one_line(tmp_path, capsys):
    """unet_seed at 64 px ends at a 1x1 BatchNorm layer: a batch of 1 gives it one value per channel."""
    from tests.conftest import DATA

    proto = write_protocol(tmp_path / "p.yaml", f"""name: bn
dataset: {{name: facades, root: '{(DATA / "facades").as_posix()}', resolution: 64, channels: 3, train_size: 8,
          eval_size: 4}}
entries:
  - {{name: one, zoo: pix2pix, config: {{resolution: 64, generator: unet_seed, ngf: 4, ndf: 4}}, train: {{steps: 1, batch_size: 1}}}}
  - {{name: two, zoo: pix2pix, config: {{resolution: 64, generator: unet_seed, ngf: 4, ndf: 4}}, train: {{steps: 1, batch_size: 2}}}}
evaluation: {{n_samples: 4, seeds: [0], batch_size: 4, extractor: "judge:cifar10", metrics: [ssim], reference: false}}
tracking: {{uri: "sqlite:///{tmp_path.as_posix()}/mlflow.db"}}
""")
    code = main(["run", str(proto), "--workdir", str(tmp_path / "w")])
    assert code == 1
    rows = _rows(tmp_path / "w")
    assert rows["one"]["status"] == "FAILED" and rows["two"]["status"] == "FINISHED"
    assert rows["one"]["reason"].startswith("train.batch_size 1 (1 per process) is too small for this model: "
                                            "Expected more than 1 value per channel"), rows["one"]["reason"]

"""The shared runner: exact resume from full-state checkpoints, atomic files, clear checkpoint errors,
and a failing entry that does not take the protocol down."""

import json
import math

import pytest
import torch

from bench.cli import main
from bench.errors import BenchError
from bench.protocol.schema import TrainSpec
from bench.runner import checkpoint
from bench.runner.train import train_entry
from tests.conftest import needs_data, tiny_protocol
from zoo import ZOO
from zoo.base import DataSpec

MNIST = DataSpec("mnist", 28, 1, 10)


def _model(name="mnist_gan", **cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ZOO.get(name).build(cfg, MNIST)


def _images(n=64):
    return (torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)


def _train(model, tmp, steps, resume=False):
    spec = TrainSpec(steps=steps, batch_size=8, checkpoint_every=3, log_every=1)
    return train_entry(model, _images(), spec, tmp, seed=5, fingerprint="fp", entry="e",
                       log=lambda losses, step: None, resume=resume)


@pytest.mark.parametrize("family", ["mnist_gan", "dcgan"])
def test_k_steps_then_resume_is_bit_identical_to_one_go(tmp_path, family):
    cfg = {"ngf": 8, "ndf": 8} if family == "dcgan" else {}
    straight = _model(family, **cfg)
    _train(straight, tmp_path / "a", 7)
    interrupted = _model(family, **cfg)
    _train(interrupted, tmp_path / "b", 3)  # as if killed right after the step-3 checkpoint
    resumed = _model(family, **cfg)  # a fresh process: nothing carried over but the file
    out = _train(resumed, tmp_path / "b", 7, resume=True)
    assert out.resumed_from == 3
    for name, module in straight.modules().items():
        for (k, a), b in zip(module.state_dict().items(), resumed.modules()[name].state_dict().values()):
            assert torch.equal(a, b), (name, k)
    for name, opt in straight.optimizers().items():
        sa, sb = opt.state_dict()["state"], resumed.optimizers()[name].state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_checkpoint_holds_the_full_training_state(tmp_path):
    _train(_model(), tmp_path, 3)
    payload = checkpoint.read(tmp_path / "latest.pt")
    assert payload["step"] == 3 and payload["fingerprint"] == "fp" and payload["entry"] == "e"
    assert set(payload["modules"]) == {"G", "D"} and set(payload["optimizers"]) == {"G", "D"}
    assert set(payload["generators"]) == {"data", "noise"}
    assert {"torch", "python", "numpy"} <= set(payload["global_rng"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind


def test_resume_ignores_a_checkpoint_from_another_fingerprint(tmp_path):
    _train(_model(), tmp_path, 3)
    spec = TrainSpec(steps=3, batch_size=8, checkpoint_every=3)
    out = train_entry(_model(), _images(), spec, tmp_path, 5, "other-fp", "e", lambda *a: None, resume=True)
    assert out.resumed_from == 0


def test_corrupt_and_foreign_checkpoints_are_one_line_errors(tmp_path):
    _train(_model(), tmp_path, 3)
    data = (tmp_path / "latest.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BenchError, match="corrupt or truncated checkpoint"):
        checkpoint.read(tmp_path / "cut.pt")
    payload = checkpoint.read(tmp_path / "latest.pt")
    with pytest.raises(BenchError, match="checkpoint is a 'mnist_gan' model, the entry is 'dcgan'"):
        checkpoint.load_into(payload, _model("dcgan"), tmp_path / "latest.pt")
    payload["modules"]["G"]["project.weight"] = torch.zeros(3, 3)
    with pytest.raises(BenchError, match="does not fit this architecture"):
        checkpoint.load_into(payload, _model(), tmp_path / "latest.pt")


@needs_data
def test_failing_entry_is_marked_failed_and_the_others_are_scored(tmp_path, monkeypatch):
    from zoo.mnist_gan import MnistGAN

    real_step = MnistGAN.train_step

    def step(self, real, i):  # the entry configured with beta2 0.998 diverges at its third step
        losses = real_step(self, real, i)
        return {**losses, "G": math.nan} if self.cfg.beta2 == 0.998 and i == 2 else losses

    monkeypatch.setattr(MnistGAN, "train_step", step)
    entries = """  - {name: diverges, zoo: mnist_gan, config: {beta2: 0.998}, train: {steps: 5, batch_size: 8}}
  - {name: fine, zoo: mnist_gan, train: {steps: 5, batch_size: 8}}
  - name: from_checkpoint
    zoo: mnist_gan
    checkpoint: CKPT
"""
    ck = tmp_path / "given.pt"
    _train(_model(), tmp_path / "c", 3)
    (tmp_path / "c" / "latest.pt").rename(ck)
    p = tiny_protocol(tmp_path, entries=entries.replace("CKPT", ck.as_posix()), n_samples=100)
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 1
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    assert rows["diverges"]["status"] == "FAILED" and "non-finite loss G=nan at step 3" in rows["diverges"]["reason"]
    assert rows["fine"]["status"] == "FINISHED" and "fid" in rows["fine"]["metrics"]
    assert rows["from_checkpoint"]["status"] == "FINISHED"
    assert rows["from_checkpoint"]["checkpoint_sha256"] and rows["from_checkpoint"]["metrics"]["fid"]["mean"] > 0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.as_posix()}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    failed = [r for r in runs if r.data.tags.get("bench.entry") == "diverges"][0]
    assert failed.info.status == "FAILED" and "non-finite" in failed.data.tags["bench.failure"]

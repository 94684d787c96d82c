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


class Killed(Exception):
    pass


def _train(model, tmp, steps, resume=False, kill_at=None, **spec):
    """Train `steps`; with kill_at, die as a SIGKILL would right after logging step `kill_at`."""
    spec = TrainSpec(**{"steps": steps, "batch_size": 8, "checkpoint_every": 3, "log_every": 1, **spec})
    fit = "pad" if model.resolution == 32 else "resize"

    def log(losses, step):
        if step == kill_at:
            raise Killed

    return train_entry(model, _images(), spec, tmp, seed=5, fingerprint="fp", entry="e",
                       log=log, resume=resume, fit=fit, train_labels=torch.arange(64) % 10)


RESUME_CASES = {
    "mnist_gan": ({}, {}),
    "dcgan": ({"ngf": 8, "ndf": 8, "instance_noise": 0.1, "instance_noise_steps": 5}, {}),
    "mlp_gan": ({}, {"ema": 0.9, "lr_schedule": {"kind": "linear"}}),
    "wgan": ({"ngf": 8, "ndf": 8}, {"lr_schedule": {"kind": "step", "every": 2, "gamma": 0.5}}),
    "wgan_gp": ({"ngf": 8, "ndf": 8}, {"grad_clip": 1.0}),
    "sgan": ({"labelled_per_class": 2}, {"ema": 0.5}),
}


@pytest.mark.parametrize("family", list(RESUME_CASES))
def test_k_steps_then_resume_is_bit_identical_to_one_go(tmp_path, family):
    cfg, spec = RESUME_CASES[family]
    straight = _model(family, **cfg)
    _train(straight, tmp_path / "a", 7, **spec)
    interrupted = _model(family, **cfg)
    with pytest.raises(Killed):  # killed during step 5, after the step-3 checkpoint
        _train(interrupted, tmp_path / "b", 7, kill_at=5, **spec)
    resumed = _model(family, **cfg)  # a fresh process: nothing carried over but the file
    out = _train(resumed, tmp_path / "b", 7, resume=True, **spec)
    assert out.resumed_from == 3
    for name, module in straight.modules().items():
        for (k, a), b in zip(module.state_dict().items(), resumed.modules()[name].state_dict().values()):
            assert torch.equal(a, b), (name, k)
    for name, opt in straight.optimizers().items():
        sa, sb = opt.state_dict()["state"], resumed.optimizers()[name].state_dict()["state"]
        key = "exp_avg" if "exp_avg" in next(iter(sa.values())) else "square_avg"
        assert all(torch.equal(sa[i][key], sb[i][key]) for i in sa)
        assert opt.param_groups[0]["lr"] == resumed.optimizers()[name].param_groups[0]["lr"]
    if straight.ema is not None:
        for a, b in zip(straight.ema.shadow.state_dict().values(), resumed.ema.shadow.state_dict().values()):
            assert torch.equal(a, b)


def test_checkpoint_holds_the_full_training_state(tmp_path):
    _train(_model(), tmp_path, 3)
    payload = checkpoint.read(tmp_path / "latest.pt")
    assert payload["step"] == 3 and payload["fingerprint"] == "fp" and payload["entry"] == "e"
    assert set(payload["modules"]) == {"G", "D"} and set(payload["optimizers"]) == {"G", "D"}
    assert set(payload["generators"]) == {"data", "labelled", "noise"}
    assert set(payload["schedulers"]) == {"G", "D"} and payload["precision"]["kind"] == "fp32"
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


def test_a_model_without_the_runner_computes_as_the_runners_fp32():
    """zoo/base.py's default precision (the zoo does not import the runner) is the runner's "fp32"."""
    from bench.runner.precision import Precision
    from zoo.base import ALONE, Training

    default, fp32 = Training().precision, Precision("fp32")
    assert default.state_dict() == fp32.state_dict() and default.scaler is None is fp32.scaler
    assert type(default.autocast()) is type(fp32.autocast()) and type(default.off()) is type(fp32.off())
    from bench.runner.distributed import SINGLE

    assert (ALONE.rank, ALONE.size, ALONE.active, ALONE.is_main) == (SINGLE.rank, SINGLE.size, SINGLE.active,
                                                                     SINGLE.is_main)


@needs_data
def test_generated_images_with_nan_fail_only_their_entry_before_any_metric(tmp_path, monkeypatch):
    from zoo.mnist_gan import MnistGAN

    real_generate = MnistGAN.generate

    def generate(self, z, **kw):  # the entry configured with beta2 0.998 emits one NaN pixel per batch
        out = real_generate(self, z, **kw)
        if self.cfg.beta2 == 0.998:
            out = out.clone()
            out.view(-1)[0] = math.nan
        return out

    monkeypatch.setattr(MnistGAN, "generate", generate)
    entries = """  - {name: broken, zoo: mnist_gan, config: {beta2: 0.998}, train: {steps: 2, batch_size: 8}}
  - {name: fine, zoo: mnist_gan, train: {steps: 2, batch_size: 8}}
"""
    p = tiny_protocol(tmp_path, entries=entries, n_samples=100)
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 1
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    assert rows["broken"]["status"] == "FAILED"
    assert "generated images contain NaN/inf" in rows["broken"]["reason"] and not rows["broken"].get("metrics")
    assert rows["fine"]["status"] == "FINISHED" and math.isfinite(rows["fine"]["metrics"]["fid"]["mean"])

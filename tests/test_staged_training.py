"""pix2pixHD's staged training (Wang et al. 2018, §3.2): a local enhancer starts from a trained global
generator (`train.init_from`, the zoo.base.WarmStart capability) and keeps that global part frozen for its first
`fix_global_steps` steps (the official niter_fix_global)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.cli import main
from tests.conftest import needs_data, write_protocol
from zoo import ZOO
from zoo.base import DataSpec

DATA = DataSpec("facades", 32, 3, 0)
SMALL = {"resolution": 32, "ngf": 8, "ndf": 8, "n_downsample_global": 2, "n_blocks_global": 1, "n_blocks_local": 1,
         "num_D": 1, "n_layers_D": 1, "lambda_vgg": 0.0}


def _build(**cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ZOO.get("pix2pixhd").build({**SMALL, **cfg}, DATA, "cpu")
    model.noise_rng.manual_seed(0)
    return model


def _pairs():
    g = torch.Generator().manual_seed(1)
    return lambda: (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1)


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def test_global_part_stays_frozen_for_fix_global_steps():
    model = _build(generator="local", fix_global_steps=2)
    draw = _pairs()
    for step in range(3):
        before_global, before_local = _snapshot(model.G.global_features), _snapshot(model.G.back)
        model.train_step(draw, step)
        global_moved = any(not torch.equal(a, b) for a, b in zip(before_global, model.G.global_features.parameters()))
        local_moved = any(not torch.equal(a, b) for a, b in zip(before_local, model.G.back.parameters()))
        assert local_moved and global_moved == (step >= 2), step


def test_a_local_enhancer_takes_the_global_generators_layers():
    source = _build(generator="global")
    source.train_step(_pairs(), 0)
    target = _build(generator="local")
    payload = {"family": "pix2pixhd", "modules": {n: m.state_dict() for n, m in source.modules().items()}}
    said = target.warm_start(payload, "entry 'g'")
    assert "global part" in said
    mine = target.G.global_features.state_dict()
    theirs = source.G.state_dict()
    assert mine and all(torch.equal(v, theirs[f"model.{k}"]) for k, v in mine.items())
    with pytest.raises(ValueError, match="does not match"):
        _build(generator="local", ngf=16).warm_start(payload, "entry 'g'")


@needs_data
def test_staged_protocol_runs_and_refuses_bad_references(tmp_path, capsys):
    entries = f"""  - {{name: g1, zoo: pix2pixhd, config: {json.dumps({**SMALL, "generator": "global"})}, train: {{steps: 2, batch_size: 1}}}}
  - {{name: g2, zoo: pix2pixhd, config: {json.dumps({**SMALL, "generator": "local", "fix_global_steps": 1})},
     train: {{steps: 2, batch_size: 1, init_from: g1}}}}"""
    text = f"""name: staged
seed: 0
dataset: {{name: facades, resolution: 32, channels: 3, train_size: 8, eval_size: 4}}
entries:
{{entries}}
evaluation: {{n_samples: 4, seeds: [0], batch_size: 4, metrics: [ssim, psnr], extractor: judge:cifar10, reference: false}}
tracking: {{uri: "sqlite:///{tmp_path.as_posix()}/m.db"}}
"""
    proto = write_protocol(tmp_path / "s.yaml", text.replace("{entries}", entries))
    assert main(["run", str(proto), "--workdir", str(tmp_path / "w")]) == 0
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    assert rows["g2"]["status"] == "FINISHED" and "global part" in rows["g2"]["info"]["init_from"]
    capsys.readouterr()
    for bad, expected in [("init_from: g3", "is no entry"), ("init_from: g2", "names this entry itself")]:
        broken = entries.replace("init_from: g1", bad)
        assert main(["validate", str(write_protocol(tmp_path / "b.yaml", text.replace("{entries}", broken)))]) == 2
        assert expected in capsys.readouterr().err
    later = entries.replace("init_from: g1", "").replace("train: {steps: 2, batch_size: 1}}",
                                                         "train: {steps: 2, batch_size: 1, init_from: g2}}", 1)
    assert main(["validate", str(write_protocol(tmp_path / "l.yaml", text.replace("{entries}", later)))]) == 2
    assert "is a later entry" in capsys.readouterr().err
    dcgan = entries.replace("zoo: pix2pixhd, config: " + json.dumps({**SMALL, "generator": "local", "fix_global_steps": 1}),
                            "zoo: dcgan, config: {}")
    assert main(["validate", str(write_protocol(tmp_path / "d.yaml", text.replace("{entries}", dcgan)))]) == 2
    assert "cannot start from another entry's weights" in capsys.readouterr().err

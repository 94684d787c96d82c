"""Training-speed options that change a trained model only by float rounding: `train.fused_adam`."""

import torch

from bench.protocol.load import fingerprint, load_protocol
from bench.protocol.schema import TrainSpec
from bench.runner.train import train_entry
from tests.conftest import tiny_protocol
from zoo import ZOO
from zoo.base import DataSpec

ENTRY = """  - name: g
    zoo: dcgan
    train: {{steps: 10, batch_size: 8{extra}}}
"""


def _train(tmp_path, fused: bool):
    images = (torch.rand(32, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ZOO.get("dcgan").build({"resolution": 32, "ngf": 16, "ndf": 16}, DataSpec("mnist", 32, 1), "cpu")
    spec = TrainSpec(steps=4, batch_size=8, checkpoint_every=100, log_every=1, fused_adam=fused)
    train_entry(model, images, spec, tmp_path / str(fused), 3, "fp", "e", lambda losses, step: None)
    return model


def test_fused_adam_trains_the_same_model_to_float_rounding(tmp_path):
    plain, fused = _train(tmp_path, False), _train(tmp_path, True)
    assert all(g["fused"] and not g["foreach"] for o in fused.optimizers().values() for g in o.param_groups)
    assert not any(g.get("fused") for o in plain.optimizers().values() for g in o.param_groups)
    for name, net in plain.modules().items():
        for (key, a), b in zip(net.state_dict().items(), fused.modules()[name].state_dict().values()):
            if a.is_floating_point():
                # four GAN steps: Adam's first steps move each weight by about lr; rounding stays ~1e-7 of it
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (name, key, (a - b).abs().max())
    moved = max((a - b).abs().max() for a, b in zip(plain.modules()["G"].state_dict().values(),
                                                   _initial_G().state_dict().values()) if a.is_floating_point())
    assert moved > 1e-4  # the comparison above is between trained weights, not two copies of the initial ones


def _initial_G():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ZOO.get("dcgan").build({"resolution": 32, "ngf": 16, "ndf": 16}, DataSpec("mnist", 32, 1), "cpu").G


def test_fused_adam_enters_the_fingerprint_only_when_set(tmp_path):
    fp = {}
    for label, extra in (("absent", ""), ("false", ", fused_adam: false"), ("true", ", fused_adam: true")):
        (tmp_path / label).mkdir()
        proto = load_protocol(tiny_protocol(tmp_path / label, entries=ENTRY.format(extra=extra))).protocol
        fp[label] = fingerprint(proto, "data", "weights")
    assert fp["absent"] == fp["false"] != fp["true"]

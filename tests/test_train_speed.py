"""Training-speed options that change a trained model only by float rounding: `train.fused_adam`,
`train.gemm_convs`."""

import pytest
import torch
from torch import nn

from bench.protocol.load import fingerprint, load_protocol
from bench.protocol.schema import TrainSpec
from bench.runner import gemm_convs as gc
from bench.runner.train import train_entry
from tests.conftest import tiny_protocol
from zoo import ZOO
from zoo.base import DataSpec

ENTRY = """  - name: g
    zoo: dcgan
    train: {{steps: 10, batch_size: 8{extra}}}
"""


def _train(tmp_path, fused: bool, gemm: bool = False):
    images = (torch.rand(32, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ZOO.get("dcgan").build({"resolution": 32, "ngf": 16, "ndf": 16}, DataSpec("mnist", 32, 1), "cpu")
    spec = TrainSpec(steps=4, batch_size=8, checkpoint_every=100, log_every=1, fused_adam=fused, gemm_convs=gemm)
    train_entry(model, images, spec, tmp_path / f"{fused}-{gemm}", 3, "fp", "e", lambda losses, step: None)
    return model


def _same_to_rounding(plain, other):
    for name, net in plain.modules().items():
        assert list(net.state_dict()) == list(other.modules()[name].state_dict())
        for (key, a), b in zip(net.state_dict().items(), other.modules()[name].state_dict().values()):
            if a.is_floating_point():
                # four GAN steps: Adam's first steps move each weight by about lr; rounding stays ~1e-7 of it
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (name, key, (a - b).abs().max())


def test_fused_adam_trains_the_same_model_to_float_rounding(tmp_path):
    plain, fused = _train(tmp_path, False), _train(tmp_path, True)
    assert all(g["fused"] and not g["foreach"] for o in fused.optimizers().values() for g in o.param_groups)
    assert not any(g.get("fused") for o in plain.optimizers().values() for g in o.param_groups)
    _same_to_rounding(plain, fused)
    moved = max((a - b).abs().max() for a, b in zip(plain.modules()["G"].state_dict().values(),
                                                   _initial_G().state_dict().values()) if a.is_floating_point())
    assert moved > 1e-4  # the comparison above is between trained weights, not two copies of the initial ones


def _initial_G():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ZOO.get("dcgan").build({"resolution": 32, "ngf": 16, "ndf": 16}, DataSpec("mnist", 32, 1), "cpu").G


@pytest.mark.parametrize("key", ["fused_adam", "gemm_convs"])
def test_speed_options_enter_the_fingerprint_only_when_set(tmp_path, key):
    fp = {}
    for label, extra in (("absent", ""), ("false", f", {key}: false"), ("true", f", {key}: true")):
        (tmp_path / label).mkdir()
        proto = load_protocol(tiny_protocol(tmp_path / label, entries=ENTRY.format(extra=extra))).protocol
        fp[label] = fingerprint(proto, "data", "weights")
    assert fp["absent"] == fp["false"] != fp["true"]


# (module, input shape): pix2pix unet_256's inner layers at batch 1 (weight-bound: the GEMM path), a batched
# weight-bound case (the path that folds the batch into one product) and DCGAN's widest layer at batch 64
# (oneDNN's path). Odd sizes and stride 1 check the index arithmetic beyond the 4/2/1 of the U-Net.
LAYERS = [(lambda: nn.Conv2d(512, 512, 4, 2, 1), (1, 512, 4, 4), True),
          (lambda: nn.ConvTranspose2d(1024, 512, 4, 2, 1), (1, 1024, 2, 2), True),
          (lambda: nn.ConvTranspose2d(512, 512, 4, 2, 1, bias=False), (3, 512, 3, 2), True),
          (lambda: nn.Conv2d(256, 1024, (4, 3), (1, 2), (2, 1)), (2, 256, 5, 7), True),
          (lambda: nn.Conv2d(512, 512, 4, 2, 1), (1, 512, 7, 5), True),  # strides that leave a remainder
          (lambda: nn.ConvTranspose2d(512, 128, 4, 1, 0), (4, 512, 1, 1), True),
          (lambda: nn.Conv2d(256, 512, 4, 2, 1, bias=False), (64, 256, 8, 8), False)]


@pytest.mark.parametrize("make, shape, gemm", LAYERS)
def test_gemm_convs_compute_the_same_layer_to_float_rounding(make, shape, gemm, monkeypatch):
    torch.manual_seed(0)
    net = make()
    x = torch.randn(shape)
    ref_x = x.clone().requires_grad_(True)
    ref = net(ref_x)
    g = torch.randn_like(ref)
    ref.backward(g)
    ref_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    calls = []
    for name in ("unfold", "fold"):
        monkeypatch.setattr(gc.F, name, lambda *a, _f=getattr(gc.F, name), **k: calls.append(1) or _f(*a, **k))
    with gc.gemm_convs([net]) as switched:
        assert switched == 1 and type(net) is not type(make())
        out_x = x.clone().requires_grad_(True)
        out = net(out_x)
        out.backward(g)
    assert type(net) is type(make())  # the plain class is back
    assert bool(calls) == gemm
    if not gemm:
        assert torch.equal(out, ref)  # oneDNN's own kernel: bit for bit
    scale = ref.abs().max()
    assert out.shape == ref.shape and (out - ref).abs().max() <= 1e-5 * scale
    for a, b in [(ref_x.grad, out_x.grad), *zip(ref_grads, [p.grad for p in net.parameters()])]:
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_gemm_convs_switch_only_what_they_reproduce():
    plain = [nn.Conv2d(8, 8, 3), nn.ConvTranspose2d(8, 8, 4, 2, 1)]
    kept = [nn.Conv2d(8, 8, 3, dilation=2), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 8, 3, padding=1,
            padding_mode="reflect"), nn.ConvTranspose2d(8, 8, 3, 2, 1, output_padding=1),
            nn.Conv2d(8, 8, 3, padding="same"), nn.utils.parametrizations.spectral_norm(nn.Conv2d(8, 8, 3))]
    with gc.gemm_convs([nn.Sequential(*plain, *kept)]) as switched:
        assert switched == 2
        assert [type(m) for m in plain] == [gc.GemmConv2d, gc.GemmConvTranspose2d]
    with gc.gemm_convs([nn.Sequential(*plain)], on=False) as switched:
        assert switched == 0 and type(plain[0]) is nn.Conv2d


def test_gemm_convs_train_the_same_model_to_float_rounding(tmp_path, monkeypatch):
    """Through the runner, every DCGAN convolution forced onto the GEMM path (the size rule off): four steps
    end at the same weights to rounding, and the trained model is left with its plain modules."""
    plain = _train(tmp_path, False)
    monkeypatch.setattr(gc, "MAX_COLUMNS", 10 ** 9)
    monkeypatch.setattr(gc, "MIN_WEIGHTS", 0)
    calls = []
    for name in ("unfold", "fold"):  # D's convolutions unfold, G's transposed ones fold
        monkeypatch.setattr(gc.F, name, lambda *a, _n=name, _f=getattr(gc.F, name), **k: calls.append(_n) or _f(*a, **k))
    gemm = _train(tmp_path, False, gemm=True)
    assert set(calls) == {"unfold", "fold"}
    assert {type(m) for net in gemm.modules().values() for m in net.modules()}.isdisjoint(
        {gc.GemmConv2d, gc.GemmConvTranspose2d})
    _same_to_rounding(plain, gemm)


@pytest.mark.parametrize("make, shape", [(lambda: nn.Conv2d(512, 512, 4, 2, 1), (512, 4, 4)),
                                         (lambda: nn.ConvTranspose2d(1024, 512, 4, 2, 1), (0, 1024, 2, 2)),
                                         (lambda: nn.ConvTranspose2d(1024, 512, 4, 2, 1), (1, 1024, 2, 2))])
def test_gemm_convs_leave_autocast_unbatched_and_empty_calls_to_the_module(make, shape, monkeypatch):
    """Inputs the GEMM path does not take run the module's own kernel: bit for bit the plain output. Under
    bf16 autocast (the last case, otherwise a GEMM call) `F.fold` would sum patches in bf16: another recipe."""
    torch.manual_seed(0)
    net, x = make(), torch.randn(shape)
    autocast = shape[0] == 1
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        ref = net(x)
    calls = []
    for name in ("unfold", "fold"):
        monkeypatch.setattr(gc.F, name, lambda *a, _f=getattr(gc.F, name), **k: calls.append(1) or _f(*a, **k))
    with gc.gemm_convs([net]), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = net(x)
    assert not calls and out.dtype == ref.dtype and torch.equal(out, ref)

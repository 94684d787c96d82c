"""The recipe's stabilisers (zoo/stabilisers.py) and DCGAN's architecture options, each by its defining
property: spectral norm makes every D weight's largest singular value 1, DiffAugment moves, masks and
recolours images differentiably and reaches every D input, the replay pool feeds D old fakes and is
checkpointed, the init choices have their distributions, and every kernel/upsampling choice doubles exactly."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from bench.errors import BenchError
from zoo import ZOO
from zoo.base import DataSpec
from zoo.stabilisers import diffaugment, parse_policy

DATA = DataSpec("toy", 32, 3, 10)


def _dcgan(**cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ZOO.get("dcgan").build({"ngf": 8, "ndf": 8, **cfg}, DATA, "cpu")
    model.noise_rng.manual_seed(1)
    return model


def _reals(n=8, seed=2):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _sigma(layer: nn.Module) -> float:
    w = layer.weight
    if isinstance(layer, nn.ConvTranspose2d):
        w = w.transpose(0, 1)
    return float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1).double(), ord=2))


def test_spectral_norm_gives_every_d_weight_unit_largest_singular_value():
    model = _dcgan(spectral_norm=True, d_norm="none", loss="hinge")
    layers = [m for m in model.D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    model.D.train()
    with torch.no_grad():
        for _ in range(200):  # one power iteration per training forward
            model.D(_reals())
    model.D.eval()
    assert [round(_sigma(m), 2) for m in layers] == [1.0] * len(layers)
    plain = _dcgan(d_norm="none")
    assert abs(_sigma(next(m for m in plain.D.modules() if isinstance(m, nn.Conv2d))) - 1) > 0.2
    assert all(torch.isfinite(torch.tensor(list(model.train_step(lambda: _reals(), 0).values()))))


def test_stabilisers_a_family_cannot_honour_are_refused():
    with pytest.raises(BenchError, match="choose one"):
        _dcgan(spectral_norm=True, clip_weights=0.01)
    with pytest.raises(BenchError, match="spectral_norm is not available for progan"):
        ZOO.get("progan").build({"resolution": 8, "spectral_norm": True}, DataSpec("toy", 8, 3, 0), "meta")
    with pytest.raises(BenchError, match="replay_pool is not available for sgan"):
        ZOO.get("sgan").build({"replay_pool": 4}, DataSpec("mnist", 28, 1, 10), "meta")
    with pytest.raises(BenchError, match="unknown policy 'blur'"):
        _dcgan(diffaug="translation,blur")


def _uniform(seed):
    g = torch.Generator().manual_seed(seed)
    return lambda n, *shape: torch.rand(n, *shape, generator=g)


def test_translation_shifts_by_whole_pixels_with_zero_fill():
    x = torch.rand(6, 3, 32, 32) + 1  # strictly positive, so the zero fill is visible
    out = diffaugment(x, ("translation",), _uniform(0))
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if torch.equal(out[i], nn.functional.pad(x[i], (4, 4, 4, 4))[:, 4 - dy:36 - dy, 4 - dx:36 - dx])]
        assert len(found) == 1, i  # exactly one shift of at most 32/8 = 4 pixels explains the output
    assert any(out[i].eq(0).any() for i in range(len(x)))


def test_cutout_zeroes_one_half_size_square():
    x = torch.rand(16, 3, 32, 32) + 1
    out = diffaugment(x, ("cutout",), _uniform(1))
    for i in range(len(x)):
        zero = out[i, 0].eq(0)
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert len(rows) <= 16 and len(cols) <= 16 and zero.sum() == len(rows) * len(cols)  # one rectangle
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])  # everything else untouched
    assert max(int(out[i, 0].eq(0).sum()) for i in range(len(x))) == 16 * 16  # unclipped squares are 16 x 16


def test_diffaugment_is_differentiable_and_empty_policy_is_identity():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_()
    out = diffaugment(x, parse_policy("color,translation,cutout"), _uniform(2))
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    y = torch.rand(2, 3, 8, 8)
    assert diffaugment(y, parse_policy(""), _uniform(3)) is y
    bright = diffaugment(torch.zeros(64, 3, 8, 8), ("color",), _uniform(4))
    assert bright.mean(dim=(1, 2, 3)).std() > 0.1  # brightness moves each image by its own draw


def test_every_d_input_is_augmented_in_both_steps():
    model = _dcgan(diffaug="translation,cutout")
    seen = []
    model.D.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    reals = _reals()
    model.train_step(lambda: reals, 0)
    assert len(seen) == 3  # D on reals, D on fakes (D step), D on fakes (G step)
    assert not torch.equal(seen[0], reals) and seen[0].eq(0).any()  # zero fill / cutout reached D
    assert all(s.eq(0).any() for s in seen[1:])


def test_replay_pool_feeds_old_fakes_and_is_checkpointed():
    model = _dcgan(replay_pool=16)
    for step in range(4):
        model.train_step(lambda: _reals(8, step), step)
    assert len(model.replay) == 16
    state = model.extra_state()
    other = _dcgan(replay_pool=16)
    other.load_extra_state(state)
    assert all(torch.equal(a, b) for a, b in zip(model.replay.images, other.replay.images))
    fresh = torch.zeros(8, 3, 32, 32)
    assert torch.equal(model.replayed(fresh), other.replayed(fresh))  # same generator state, same draws
    assert model.replayed(fresh).abs().sum(dim=(1, 2, 3)).gt(0).any()  # some come from the history


@pytest.mark.parametrize("kind", ["normal", "xavier", "orthogonal"])
def test_init_choices(kind):
    model = _dcgan(init=kind, d_norm="none")
    conv = next(m for m in model.D.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 3)
    w = conv.weight.detach().reshape(conv.out_channels, -1)
    fan_in, fan_out = conv.weight[0].numel(), conv.out_channels * conv.weight[0, 0].numel()
    if kind == "normal":
        assert w.std().item() == pytest.approx(0.02, rel=0.1)
    elif kind == "xavier":
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    else:
        assert torch.allclose(w @ w.T, torch.eye(len(w)), atol=1e-5)  # orthonormal rows (out <= in*k*k)
    assert dataclasses.asdict(model.cfg)["init"] == kind


@pytest.mark.parametrize("kernel", [3, 4, 5])
@pytest.mark.parametrize("upsample", ["transposed", "nearest", "pixelshuffle"])
@pytest.mark.parametrize("resolution", [32, 64])
def test_every_kernel_and_upsampling_doubles_exactly(kernel, upsample, resolution):
    spec = DataSpec("toy", resolution, 1, 0)
    model = ZOO.get("dcgan").build({"ngf": 4, "ndf": 4, "kernel": kernel, "upsample": upsample,
                                    "resolution": resolution}, spec, "cpu")
    x = model.generate(torch.randn(2, 100))
    assert x.shape == (2, 1, resolution, resolution)
    assert model.D(x).shape == (2, 1)


def test_new_options_left_at_their_defaults_keep_the_fingerprint(tmp_path):
    from bench.protocol.load import canonical, load_protocol
    from tests.conftest import write_protocol

    text = """name: fp
seed: 0
dataset: {{name: mnist, resolution: 28, channels: 1, train_size: 100, eval_size: 50}}
entries:
  - {{name: d, zoo: dcgan, config: {config}, train: {{steps: 1}}}}
evaluation: {{n_samples: 20, seeds: [0], metrics: [fid]}}
"""
    def entry_config(config):
        path = write_protocol(tmp_path / "p.yaml", text.format(config=config))
        return canonical(load_protocol(path).protocol)["entries"][0]["config"]

    plain = entry_config("{}")
    assert not {"spectral_norm", "diffaug", "replay_pool", "init", "upsample"} & set(plain)
    assert entry_config("{spectral_norm: false, upsample: transposed}") == plain
    assert entry_config("{spectral_norm: true, d_norm: none}")["spectral_norm"] is True


def test_minibatch_discrimination_sees_the_rest_of_the_batch():
    from zoo.stabilisers import MinibatchDiscrimination

    torch.manual_seed(0)
    layer = MinibatchDiscrimination(12, kernels=7, kernel_dim=5)
    f = torch.randn(6, 12)
    out = layer(f)
    assert out.shape == (6, 12 + 7) and torch.equal(out[:, :12], f)
    same = layer(f[:1].repeat(6, 1))
    assert torch.allclose(same[:, 12:], torch.full((6, 7), 5.0))  # n − 1 identical others, exp(0) each
    moved = f.clone()
    moved[5] += 3
    assert not torch.allclose(layer(moved)[0, 12:], out[0, 12:])  # sample 0's output depends on sample 5
    model = _dcgan(minibatch_kernels=10)
    assert model.D(_reals(4)).shape == (4, 1)
    assert all(torch.isfinite(torch.tensor(list(model.train_step(lambda: _reals(), 0).values()))))


def test_bcr_penalises_a_d_that_is_not_invariant_to_flips_and_shifts():
    from zoo.stabilisers import consistency_penalty

    x = _reals(8)
    mean_d = lambda t: t.mean(dim=(1, 2, 3))[:, None]  # noqa: E731  (invariant to flips; shifts only drop pixels)
    left_d = lambda t: t[:, :, :, :16].mean(dim=(1, 2, 3))[:, None]  # noqa: E731
    flat = torch.ones(8, 3, 32, 32)  # no shift or flip changes a constant image except by zero fill
    assert consistency_penalty(mean_d, flat * 0, mean_d(flat * 0), _uniform(0)) == 0
    assert consistency_penalty(left_d, x, left_d(x), _uniform(0)) > consistency_penalty(mean_d, x, mean_d(x), _uniform(0))
    model = _dcgan(bcr_real=10.0, bcr_fake=10.0)
    logs = model.train_step(lambda: _reals(), 0)
    assert logs["D/bcr_real"] > 0 and logs["D/bcr_fake"] > 0


def test_historical_averaging_pulls_towards_the_mean_of_past_parameters():
    model = _dcgan(hist_avg=1.0)
    snapshots = []
    for step in range(3):
        model.train_step(lambda: _reals(8, step), step)
        snapshots.append([p.detach().clone() for p in model.G.parameters()])
    history = model.history["G"]
    assert history.count == 3
    for m, *ps in zip(history.mean, *snapshots):
        assert torch.allclose(m, sum(ps) / 3, atol=1e-6)  # θ̄ is the mean over every update so far
    expected = sum((p - m).pow(2).sum() for p, m in zip(model.G.parameters(), history.mean))
    assert float(history.penalty()) == pytest.approx(float(expected))
    other = _dcgan(hist_avg=1.0)
    other.load_extra_state(model.extra_state())  # checkpointed with the model
    history_d = model.history["D"].mean
    assert other.history["G"].count == 3 and all(torch.equal(a, b) for a, b in zip(other.history["D"].mean, history_d))
    assert len(history_d) == len(list(model.D.parameters()))


def test_self_attention_starts_as_identity_and_sees_far_pixels():
    from zoo.stabilisers import SelfAttention

    torch.manual_seed(0)
    block = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block(x), x)  # γ = 0 at init
    with torch.no_grad():
        block.gamma.fill_(1.0)
    y = x.clone()
    y[:, :, 7, 7] += 5.0  # one far corner
    assert not torch.allclose(block(y)[:, :, 0, 0], block(x)[:, :, 0, 0])  # reaches the opposite corner
    for res in (4, 8, 16):
        model = ZOO.get("dcgan").build({"ngf": 8, "ndf": 8, "attention_res": res}, DATA, "cpu")
        assert sum(isinstance(m, SelfAttention) for m in model.G.modules()) == 1
        assert sum(isinstance(m, SelfAttention) for m in model.D.modules()) == 1
        assert model.generate(torch.randn(2, 100)).shape == (2, 3, 32, 32)
    with pytest.raises(BenchError, match="attention_res must be one of"):
        ZOO.get("dcgan").build({"attention_res": 32}, DATA, "meta")


def test_real_then_fake_is_two_d_updates_with_the_fake_pass_through_the_updated_d():
    model = _dcgan(d_step="real_then_fake", init="xavier")
    reals = _reals()
    seen_weights = []
    model.D.register_forward_pre_hook(lambda mod, args: seen_weights.append(model.D.fc.weight.detach().clone()))
    logs = model.train_step(lambda: reals, 0)
    assert model.opt_D.state[model.D.fc.weight]["step"] == 2  # two Adam steps per D step
    assert not torch.equal(seen_weights[0], seen_weights[1])  # the fake pass saw the D updated on reals
    assert logs["D"] == pytest.approx(0.5 * (logs["D/real"] + logs["D/fake"]))
    with pytest.raises(BenchError, match="real_then_fake"):
        _dcgan(d_step="real_then_fake", loss="hinge")


def test_progressive_learning_rate_follows_the_resolution_table():
    spec = DataSpec("toy", 8, 3, 0)
    cfg = {"resolution": 8, "start_resolution": 4, "fade_steps": 2, "stable_steps": 2, "fmap_base": 32,
           "fmap_max": 16, "latent_dim": 16, "lr_per_resolution": {8: 0.002}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ZOO.get("progan").build(cfg, spec, "cpu")
    model.noise_rng.manual_seed(0)
    seen = []
    for step in range(6):
        res = model.resolution  # the phase of this step (the model moves to the next one at its end)
        model.train_step(lambda: torch.rand(4, 3, res, res) * 2 - 1, step)
        seen.append((res, model.opt_G.param_groups[0]["lr"], model.opt_D.param_groups[0]["lr"]))
    assert seen == [(4, 1e-3, 1e-3)] * 2 + [(8, 0.002, 0.002)] * 4  # 4 px at lr_G; fading in 8 px already at 8's
    with pytest.raises(BenchError, match="lr_per_resolution"):
        ZOO.get("progan").build({**cfg, "lr_per_resolution": {16: 0.002}}, spec, "meta")


def test_early_stop_on_fid_patience_and_it_stays_stopped_on_resume(tmp_path):
    from bench.protocol.schema import TrainSpec
    from bench.runner.train import train_entry

    fids = iter([5.0, 4.0, 6.0, 7.0, 8.0, 9.0, 1.0])  # best at the 2nd evaluation (step 4), then worse

    def monitor(model):
        return next(fids)

    spec = TrainSpec(steps=40, batch_size=4, eval_every=2, patience=4, checkpoint_every=100, log_every=100)
    images = (torch.rand(32, 1, 28, 28) * 255).to(torch.uint8)
    model = ZOO.get("mnist_gan").build({}, DataSpec("mnist", 28, 1, 10), "cpu")
    out = train_entry(model, images, spec, tmp_path, 5, "fp", "e", lambda *a: None, monitor=monitor)
    assert out.best == {"step": 4, "fid": 4.0, "stopped_early_at": 8}  # 8 − 4 = patience: stopped there
    again = train_entry(ZOO.get("mnist_gan").build({}, DataSpec("mnist", 28, 1, 10), "cpu"), images, spec,
                        tmp_path, 5, "fp", "e", lambda *a: None, resume=True, monitor=monitor)
    assert again.resumed_from == 8 and again.best["stopped_early_at"] == 8
    assert next(fids) == 8.0  # four evaluations (steps 2-8) were used; the resumed run evaluated nothing more
    with pytest.raises(ValueError, match="patience needs eval_every"):
        TrainSpec(steps=10, patience=5)


def test_stylegan_course_layer_order():
    from zoo.stylegan import LayerEpilogue

    torch.manual_seed(0)
    official, course = LayerEpilogue(8, 16, True), LayerEpilogue(8, 16, True, "course")
    with torch.no_grad():
        official.noise.weight.fill_(0.5)  # the noise scale starts at 0; make the noise count
    course.load_state_dict(official.state_dict())  # same parameters, another order
    x, w, noise = torch.randn(2, 8, 4, 4), torch.randn(2, 16), torch.randn(2, 1, 4, 4)
    a = official(x, w, noise)
    b = course(x, w, noise)
    assert torch.allclose(b, course.act(course.bias(course.noise(course.adain(x, w), noise))))
    assert torch.allclose(a, official.adain(official.act(official.bias(official.noise(x, noise))), w))
    assert not torch.allclose(a, b)


def test_phase_lr_floor_anneals_within_each_resolution():
    spec = DataSpec("toy", 8, 3, 0)
    model = ZOO.get("progan").build({"resolution": 8, "start_resolution": 4, "fade_steps": 4, "stable_steps": 4,
                                     "fmap_base": 32, "fmap_max": 16, "latent_dim": 16, "phase_lr_floor": 0.5},
                                    spec, "meta")
    scales = [model.phase_lr_scale(s) for s in range(16)]
    # 4 px: steps 0-3 (constant for 2, then down to 0.75 at its last step); 8 px: steps 4-11 fade + stable, then on
    assert scales[:4] == [1.0, 1.0, 1.0, 0.75]
    assert scales[4:12] == [1.0, 1.0, 1.0, 1.0, 1.0, 0.875, 0.75, 0.625]
    assert all(s >= 0.5 for s in scales)


def test_checkpoints_record_new_options_only_when_set_and_old_files_still_fit(tmp_path):
    from pathlib import Path

    from bench.runner import checkpoint

    plain, sn = _dcgan(d_norm="none"), _dcgan(d_norm="none", spectral_norm=True)
    assert "spectral_norm" not in checkpoint.payload(plain, 0, {}, "fp", "e")["config"]  # bytes as before the option
    assert checkpoint.payload(sn, 0, {}, "fp", "e")["config"]["spectral_norm"] is True
    old = {"family": "dcgan", "config": checkpoint.payload(plain, 0, {}, "fp", "e")["config"]}  # a file from before
    checkpoint.check_config(old, plain, Path("old.pt"))  # the missing key reads as its default: it fits
    with pytest.raises(BenchError, match="spectral_norm=False"):
        checkpoint.check_config(old, sn, Path("old.pt"))


def test_reused_fakes_are_one_g_forward_whose_outputs_g_step_scores_through_the_updated_d():
    reals = _reals()
    counts = {}
    for mode in ("fresh", "reuse"):
        model = _dcgan(g_fakes=mode)
        g_outputs, d_inputs = [], []
        model.G.register_forward_hook(lambda mod, args, out: g_outputs.append(out.detach().clone()))
        model.D.register_forward_pre_hook(lambda mod, args: d_inputs.append(args[0].detach().clone()))
        model.train_step(lambda: reals, 0)
        counts[mode] = len(g_outputs)
        # D sees real, fake (its step), then G's fakes (G's step); reuse: G's step scores D's very fakes
        assert len(d_inputs) == 3
        assert torch.equal(d_inputs[1], d_inputs[2]) is (mode == "reuse")
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.G.parameters())
    assert counts == {"fresh": 2, "reuse": 1}  # the reference's one G forward per step
    with pytest.raises(BenchError, match="reuse_fakes is not available for cdcgan"):
        ZOO.get("cdcgan").build({"g_fakes": "reuse"}, DataSpec("toy", 32, 3, 10), "meta")


def test_g_fakes_left_at_fresh_keeps_earlier_fingerprints_and_checkpoints():
    from zoo.base import config_record

    assert "g_fakes" not in config_record(_dcgan().cfg)
    assert config_record(_dcgan(g_fakes="reuse").cfg)["g_fakes"] == "reuse"

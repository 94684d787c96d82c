"""The style-based zoo of issue 7: ProGAN and StyleGAN (shared blocks, fade-in, growth schedule, resume
mid-fade, style mixing, truncation, noise), their parameter counts at 1024 px, and the sampling figures."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.protocol.schema import TrainSpec
from bench.runner import checkpoint
from bench.runner.train import train_entry
from zoo import style_figures
from zoo.base import DataSpec, count_params
from zoo.progan import ProGAN, stage_of
from zoo.style_layers import (SQRT2, AdaIN, EqualConv2d, EqualLinear, GrowthSchedule, MinibatchStdDev,
                              NoiseInjection, Phase, PixelNorm, instance_norm, width)
from zoo.stylegan import StyleGAN

RGB16 = DataSpec("tiny", 16, 3)
GROW = {"resolution": 16, "fmap_base": 64, "fmap_max": 16, "latent_dim": 8, "fade_steps": 2, "stable_steps": 2}
TINY = {ProGAN: GROW, StyleGAN: {**GROW, "w_dim": 8, "mapping_layers": 2}}
FAMILIES = [ProGAN, StyleGAN]


def build(cls, data=RGB16, seed=0, **over):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls.build({**TINY[cls], **over}, data)


def meta_build(cls, res=1024, channels=3, **over):
    with torch.device("meta"):
        return cls.build(over, DataSpec("meta", res, channels), "meta")


class SeededDraw:
    """Real batches in [-1, 1] at the model's current resolution, from a generator of its own."""

    def __init__(self, model, batch=8, seed=3):
        self.model, self.batch, self.g, self.sizes = model, batch, torch.Generator().manual_seed(seed), []

    def __call__(self):
        r = self.model.resolution
        self.sizes.append(r)
        return torch.rand(self.batch, self.model.data.channels, r, r, generator=self.g) * 2 - 1


def randomise_noise_scales(G, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, NoiseInjection):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))


# -- shared blocks ------------------------------------------------------------------------------------------

def test_equalised_lr_layers_store_standard_normal_weights_and_scale_by_gain_over_sqrt_fan_in():
    torch.manual_seed(0)
    conv = EqualConv2d(128, 64, 3, gain=SQRT2)
    assert abs(conv.weight.std().item() - 1) < 0.01 and abs(conv.weight.mean().item()) < 0.01
    assert conv.scale == pytest.approx(SQRT2 / math.sqrt(128 * 9))
    x = torch.randn(2, 128, 5, 5)
    ref = F.conv2d(x, conv.weight * SQRT2 / math.sqrt(128 * 9), conv.bias, padding=1)
    assert torch.allclose(conv(x), ref, atol=1e-5)

    lin = EqualLinear(256, 512, gain=1.0)  # the seed's c = 1.0
    assert abs(lin.weight.std().item() - 1) < 0.01
    v = torch.randn(3, 256)
    assert torch.allclose(lin(v), F.linear(v, lin.weight / 16.0, lin.bias), atol=1e-5)

    # A learning-rate multiplier (StyleGAN's mapping, 0.01) stores N(0, 1/lrmul²) and scales by lrmul.
    mapped = EqualLinear(256, 512, gain=SQRT2, lrmul=0.01)
    with torch.no_grad():
        mapped.bias.normal_()
    assert abs(mapped.weight.std().item() - 100) < 1
    assert torch.allclose(mapped(v), F.linear(v, mapped.weight * SQRT2 / 16 * 0.01, mapped.bias * 0.01), atol=1e-5)

    # Every conv/linear of both families is equalised, with the configured gain on LeakyReLU layers.
    for cls in FAMILIES:
        m = build(cls, gain=1.0)
        layers = [l for net in m.modules().values() for l in net.modules() if isinstance(l, (EqualConv2d, EqualLinear))]
        assert not [l for net in m.modules().values() for l in net.modules()
                    if isinstance(l, (torch.nn.Conv2d, torch.nn.Linear))]
        fan_in = lambda l: l.weight[0].numel()  # noqa: E731
        assert all(math.isclose(l.scale, l.gain / math.sqrt(fan_in(l)) * getattr(l, "lrmul", 1.0)) for l in layers)
        assert {round(l.gain, 6) for l in layers} <= {1.0, 0.25}  # gain/4 on ProGAN's first dense


def test_pixelnorm_gives_unit_mean_square_over_channels_at_every_pixel():
    x = torch.randn(4, 32, 6, 6) * 7 + 3
    y = PixelNorm()(x)
    assert torch.allclose(y.pow(2).mean(dim=1), torch.ones(4, 6, 6), atol=1e-5)
    z = PixelNorm()(torch.randn(5, 512) * 0.01)  # latents: per vector
    assert torch.allclose(z.pow(2).mean(dim=1), torch.ones(5), atol=1e-4)


def test_minibatch_stddev_adds_one_channel_constant_within_a_group():
    x = torch.randn(8, 3, 4, 4)
    y = MinibatchStdDev(4)(x)
    assert y.shape == (8, 4, 4, 4) and torch.equal(y[:, :3], x)
    s = y[:, 3]
    assert torch.equal(s, s[:, :1, :1].expand_as(s))  # constant over H, W
    # Official strided groups: with N = 8, G = 4 the groups are {0, 2, 4, 6} and {1, 3, 5, 7}.
    for members in ([0, 2, 4, 6], [1, 3, 5, 7]):
        vals = s[members, 0, 0]
        assert torch.equal(vals, vals[:1].expand(4))
        grp = x[members]
        expected = torch.sqrt(grp.var(dim=0, unbiased=False) + 1e-8).mean()
        assert vals[0].item() == pytest.approx(expected.item(), rel=1e-5)
    assert s[0, 0, 0] != s[1, 0, 0]
    assert MinibatchStdDev(4)(torch.randn(6, 3, 4, 4)).shape == (6, 4, 4, 4)  # group 3 divides 6


def test_adain_output_has_spatial_mean_y_b_and_std_y_s_per_channel():
    torch.manual_seed(0)
    adain = AdaIN(6, 10)
    with torch.no_grad():
        adain.affine.bias.normal_()
    x, w = torch.randn(3, 6, 8, 8) * 4 + 2, torch.randn(3, 10)
    y_s, y_b = adain.styles(w)
    out = adain(x, w)
    assert torch.allclose(out.mean(dim=(2, 3)), y_b, atol=1e-4)
    assert torch.allclose(out.std(dim=(2, 3), unbiased=False), y_s.abs(), atol=1e-4)
    assert torch.allclose(instance_norm(x).std(dim=(2, 3), unbiased=False), torch.ones(3, 6), atol=1e-4)


def test_noise_injection_is_one_map_per_sample_scaled_per_channel_and_starts_at_zero():
    inj = NoiseInjection(4)
    x, noise = torch.randn(2, 4, 5, 5), torch.randn(2, 1, 5, 5)
    assert torch.equal(inj(x, noise), x)  # scales initialised to 0
    with torch.no_grad():
        inj.weight.copy_(torch.tensor([0.0, 1.0, 2.0, -1.0]))
    d = inj(x, noise) - x
    for c, scale in enumerate([0.0, 1.0, 2.0, -1.0]):
        assert torch.allclose(d[:, c], scale * noise[:, 0])


def test_growth_schedule_fades_linearly_then_stabilises_per_stage():
    s = GrowthSchedule(start_stage=0, final_stage=2, fade_steps=4, stable_steps=2)
    phases = [(p.resolution, p.alpha, p.fading) for p in map(s.at, range(15))]
    assert phases == [(4, 1.0, False), (4, 1.0, False),
                      (8, 0.0, True), (8, 0.25, True), (8, 0.5, True), (8, 0.75, True),
                      (8, 1.0, False), (8, 1.0, False),
                      (16, 0.0, True), (16, 0.25, True), (16, 0.5, True), (16, 0.75, True),
                      (16, 1.0, False), (16, 1.0, False), (16, 1.0, False)]
    assert [i for i in range(15) if s.boundary(i)] == [2, 6, 8, 12]  # fade starts and fade ends
    assert GrowthSchedule(1, 1, 4, 2).at(0).resolution == 8  # nothing to grow
    assert GrowthSchedule(0, 3, 0, 0).at(0).resolution == 32  # no schedule: straight to the end
    no_fade = GrowthSchedule(0, 1, 0, 3)
    assert [(no_fade.at(i).resolution, no_fade.at(i).alpha) for i in range(5)] == [(4, 1.0)] * 3 + [(8, 1.0)] * 2


# -- fade-in -------------------------------------------------------------------------------------------------

def _styles_and_noise(m, n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, m.latent_dim, generator=g)
    noise = m.noise_maps(n, g, m.G)
    return z, noise


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.family)
def test_alpha_zero_is_the_upsampled_previous_stage_exactly_and_alpha_one_only_the_new_path(cls):
    m = build(cls)
    G, D = m.G, m.D
    if cls is StyleGAN:
        randomise_noise_scales(G)
        z, noise = _styles_and_noise(m)
        gen = lambda s, a: G(z, stage=s, alpha=a, noise=noise)  # noqa: E731
    else:
        z = torch.randn(3, m.latent_dim)
        gen = lambda s, a: G(z, stage=s, alpha=a)  # noqa: E731
    calls = []
    hooks = [G.to_rgb[s].register_forward_hook(lambda *_, s=s: calls.append(("G", s))) for s in range(3)]
    hooks += [D.from_rgb[s].register_forward_hook(lambda *_, s=s: calls.append(("D", s))) for s in range(3)]
    x16 = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        for s in (1, 2):
            r = 4 * 2 ** s
            prev = gen(s - 1, 1.0)
            assert torch.equal(gen(s, 0.0), F.interpolate(prev, scale_factor=2, mode="nearest"))
            x = F.avg_pool2d(x16, 16 // r)
            assert torch.equal(D(x, stage=s, alpha=0.0), D(F.avg_pool2d(x, 2), stage=s - 1, alpha=1.0))
            calls.clear()
            new = gen(s, 1.0)
            D(x, stage=s, alpha=1.0)
            assert ("G", s - 1) not in calls and ("D", s - 1) not in calls  # the old path is not computed
            half = gen(s, 0.5)
            assert torch.allclose(half, 0.5 * gen(s, 0.0) + 0.5 * new, atol=1e-6)
    for h in hooks:
        h.remove()
    # The reals fade the same way: at α = 0 they are their own upsampled half-resolution version.
    assert torch.equal(m.fade_reals(x16, 0.0), F.interpolate(F.avg_pool2d(x16, 2), scale_factor=2))
    assert m.fade_reals(x16, 1.0) is x16


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.family)
def test_shapes_at_every_stage_and_generate_at_the_final_size(cls):
    m = build(cls, resolution=32, fmap_base=128, fmap_max=16)
    z = torch.randn(4, m.latent_dim)
    with torch.no_grad():
        for s in range(stage_of(32) + 1):
            r = 4 * 2 ** s
            for a in (0.0, 0.5, 1.0):
                img = m.G(z, stage=s, alpha=a)
                assert img.shape == (4, 3, r, r)
                assert m.D(img, stage=s, alpha=a).shape == (4, 1)
            m.apply_phase(Phase(s, 1.0, False))
            assert m.resolution == r
            out = m.generate(z)
            assert out.shape == (4, 3, 32, 32) and out.abs().max() <= 1
            # Until the model has grown, samples are its current output upsampled (nearest) to 32 px.
            k = 32 // r
            assert torch.equal(out, F.interpolate(out[:, :, ::k, ::k], size=(32, 32), mode="nearest"))
            if cls is ProGAN:
                assert torch.equal(out, F.interpolate(m.G(z).clamp(-1, 1), size=(32, 32), mode="nearest"))
        with pytest.raises(ValueError, match="px"):
            m.D(torch.zeros(2, 3, 8, 8))  # D at 32 px refuses 8 px images
    rows = m.inspect()
    assert rows["G"][-1][2] == (3, 32, 32) and rows["D"][-1][2] == (1,)


C1024 = [512, 512, 512, 512, 256, 128, 64, 32, 16]  # the paper's widths at 4 ... 1024 px


def test_widths_follow_the_paper_at_1024_px():
    assert [width(4 * 2 ** s, 8192, 512) for s in range(9)] == C1024
    for cls in FAMILIES:  # built on the meta device (bench zoo list/inspect, protocol checks): nothing allocated
        m = meta_build(cls)
        assert [rgb.c_in for rgb in m.G.to_rgb] == C1024
        assert m.resolution == 4 and m.card()["growth"]["final_resolution"] == 1024  # the schedule's start
        rows = m.inspect()
        assert rows["G"][-1][2] == (3, 1024, 1024) and rows["D"][-1][2] == (1,)
        # Traced grown (α = 1): every layer runs but the fromRGBs of the lower resolutions.
        assert sum(n for *_, n in rows["D"]) == 23_087_249 - sum(4 * ch for ch in C1024[:-1])


# -- parameter counts at 1024 px -----------------------------------------------------------------------------

def conv(c_in, c_out, k=3, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def test_progan_parameter_counts_at_1024_px_match_the_derivation():
    c = C1024
    g = 512 * 16 * 512 + 512 + conv(512, 512)  # dense z -> 4x4x512 (bias per channel), 3x3 conv
    g += sum(conv(c[s - 1], c[s]) + conv(c[s], c[s]) for s in range(1, 9))
    to_rgb = [conv(ch, 3, 1) for ch in c]
    assert sum(to_rgb) == 7_659
    d = sum(conv(3, ch, 1) for ch in c)  # fromRGB at every resolution
    d += sum(conv(c[s], c[s]) + conv(c[s], c[s - 1]) for s in range(1, 9))
    d += conv(513, 512) + (512 * 16 * 512 + 512) + (512 + 1)  # mbstd channel, dense, dense -> 1
    m = meta_build(ProGAN)
    assert count_params(m.G) == g + sum(to_rgb) == 23_079_115  # Table 2: 23.1M
    assert g + to_rgb[-1] == 23_071_507  # without the toRGBs only growth uses
    assert count_params(m.D) == d == 23_087_249  # Table 2: 23.1M


def test_stylegan_generator_count_at_1024_px_equals_the_official_26_219_627():
    c = C1024
    mapping = 8 * (512 * 512 + 512)
    epilogue = lambda ch: ch + ch + 512 * 2 * ch + 2 * ch  # noise scale, bias, style affine  # noqa: E731
    synthesis = 4 * 4 * 512 + epilogue(512) + conv(512, 512, bias=False) + epilogue(512)
    synthesis += sum(conv(c[s - 1], c[s], bias=False) + epilogue(c[s]) + conv(c[s], c[s], bias=False) + epilogue(c[s])
                     for s in range(1, 9))
    to_rgb = sum(conv(ch, 3, 1) for ch in c)
    m = meta_build(StyleGAN)
    assert mapping == 2_101_248 and synthesis + to_rgb == 24_118_379
    assert count_params(m.G) == mapping + synthesis + to_rgb == 26_219_627  # official Gs.print_layers() "Total"
    assert m.param_breakdown() == {"mapping": 2_101_248, "synthesis_blocks": 24_110_720, "to_rgb": 7_659}
    assert count_params(m.D) == 23_087_249
    # Not trainable, not counted (as in the official graph): w_avg, the phase buffers, the blur kernels.
    assert {n for n, _ in m.G.named_buffers()} >= {"w_avg", "stage", "alpha"}


# -- StyleGAN: mixing, truncation, noise ---------------------------------------------------------------------

def test_style_mixing_with_identical_latents_equals_no_mixing():
    m = build(StyleGAN)
    G = m.G
    randomise_noise_scales(G)
    z, noise = _styles_and_noise(m)
    with torch.no_grad():
        ws = G.broadcast(G.mapping(z))
        plain = G.synthesis(ws, noise, stage=2, alpha=1.0)
        for cutoff in (1, 3, torch.tensor([1, 4, 5])):
            assert torch.equal(G.synthesis(G.mix(ws, ws.clone(), cutoff), noise, stage=2, alpha=1.0), plain)
        other = G.broadcast(G.mapping(torch.randn(3, m.latent_dim)))
        mixed = G.mix(ws, other, torch.tensor([1, 4, 6]))
        assert torch.equal(mixed[0, 0], ws[0, 0]) and torch.equal(mixed[0, 1], other[0, 1])
        assert torch.equal(mixed[1, :4], ws[1, :4]) and torch.equal(mixed[1, 4:], other[1, 4:])
        assert torch.equal(mixed[2], ws[2])  # crossover at the number of layers: no mixing
        assert not torch.equal(G.synthesis(mixed, noise, stage=2, alpha=1.0)[0], plain[0])


def test_mixing_regularisation_draws_a_crossover_per_sample_with_the_configured_probability():
    m = build(StyleGAN, style_mixing_prob=0.5)
    m.apply_phase(m.schedule.at(6))  # 16 px: 6 layers
    seen = []
    original = m.G.mix
    m.G.mix = lambda a, b, cutoff: (seen.append(cutoff.clone()), original(a, b, cutoff))[1]
    m.noise_rng.manual_seed(0)
    with torch.no_grad():
        for _ in range(20):
            m.fakes(16)
    cut = torch.cat(seen)
    assert cut.min() >= 1 and cut.max() <= 6
    assert 0.35 < (cut < 6).float().mean() < 0.65  # about half the samples mixed
    assert set(cut[cut < 6].tolist()) == {1, 2, 3, 4, 5}
    never = build(StyleGAN, style_mixing_prob=0.0)
    never.G.mix = lambda *a: pytest.fail("mixed with style_mixing_prob 0")
    with torch.no_grad():
        never.fakes(4)


def test_psi_zero_gives_the_same_image_for_every_z():
    m = build(StyleGAN, truncation_cutoff=0)
    randomise_noise_scales(m.G)
    with torch.no_grad():
        m.G.w_avg.normal_()
    z = torch.randn(5, m.latent_dim)
    shared = m.noise_maps(1, torch.Generator().manual_seed(0))
    imgs = m.synthesize(m.mapping(z), shared, psi=0.0, cutoff=0)
    assert torch.allclose(imgs, imgs[:1].expand_as(imgs), atol=1e-6)
    assert not torch.allclose(m.synthesize(m.mapping(z), shared, psi=1.0), imgs, atol=1e-3)
    # Truncation moves w towards w_avg only on layers < cutoff.
    ws = m.G.broadcast(m.mapping(z))
    t = m.G.truncate(ws, 0.5, cutoff=2)
    assert torch.allclose(t[:, :2], m.G.w_avg + 0.5 * (ws[:, :2] - m.G.w_avg)) and torch.equal(t[:, 2:], ws[:, 2:])
    # generate() applies the configured ψ to the same styles.
    m2 = build(StyleGAN, truncation_cutoff=0, truncation_psi=0.0)
    m2.G.load_state_dict(m.G.state_dict())
    assert torch.allclose(m2.generate(z), m.generate(z, truncation_psi=0.0))


def test_zero_noise_scale_removes_all_stochastic_variation():
    m = build(StyleGAN)
    m.apply_phase(m.schedule.at(6))
    randomise_noise_scales(m.G)
    w = m.mapping(torch.randn(1, m.latent_dim)).expand(4, -1)
    noise = m.noise_maps(4, torch.Generator().manual_seed(0))
    varied = m.synthesize(w, noise)
    assert (varied[0] - varied[1]).abs().max() > 1e-3  # different noise, different details
    with torch.no_grad():
        for mod in m.G.modules():
            if isinstance(mod, NoiseInjection):
                mod.weight.zero_()
    still = m.synthesize(w, noise)
    assert torch.equal(still, still[:1].expand_as(still))
    assert torch.allclose(still[:1], m.synthesize(w[:1], None), atol=1e-5)  # as if there were no noise


def test_w_avg_tracks_the_batch_mean_of_w_with_decay_0995():
    m = build(StyleGAN, style_mixing_prob=0.0)
    before = m.G.w_avg.clone()
    m.noise_rng.manual_seed(7)
    z = m.noise(8)
    m.noise_rng.manual_seed(7)
    with torch.no_grad():
        m.fakes(8, track=True)
        batch_mean = m.G.mapping(z).mean(0)
    assert torch.allclose(m.G.w_avg, batch_mean + 0.995 * (before - batch_mean), atol=1e-6)
    with torch.no_grad():
        m.fakes(8)  # the D step does not move it
    assert torch.allclose(m.G.w_avg, batch_mean + 0.995 * (before - batch_mean), atol=1e-6)


def test_generate_is_deterministic_and_independent_of_the_batch_size():
    m = build(StyleGAN)
    randomise_noise_scales(m.G)
    z = torch.randn(5, m.latent_dim)
    full = m.generate(z)
    assert torch.equal(full, m.generate(z))
    assert torch.allclose(full, torch.cat([m.generate(z[:2]), m.generate(z[2:])]), atol=1e-5)
    state = torch.get_rng_state()
    m.generate(z)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never touched


# -- training and resuming -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.family)
def test_train_step_grows_through_a_fade_and_updates_weights(cls):
    m = build(cls, resolution=8, fade_steps=2, stable_steps=2)
    draw = SeededDraw(m)
    g0, d0 = copy.deepcopy(m.G.state_dict()), copy.deepcopy(m.D.state_dict())
    phases, logs = [], []
    for step in range(7):
        logs.append(m.train_step(draw, step))
        phases.append((logs[-1]["grow/resolution"], logs[-1]["grow/alpha"]))
        if step == 1:  # still at 4 px: the 8 px block and its toRGB/fromRGB have not moved
            assert torch.equal(m.G.state_dict()["to_rgb.1.weight"], g0["to_rgb.1.weight"])
            assert torch.equal(m.D.state_dict()["from_rgb.1.0.weight"], d0["from_rgb.1.0.weight"])
    assert phases == [(4, 1.0), (4, 1.0), (8, 0.0), (8, 0.5), (8, 1.0), (8, 1.0), (8, 1.0)]
    assert draw.sizes == [4, 4, 8, 8, 8, 8, 8]  # the runner's reals follow `resolution`
    assert all(math.isfinite(v) for l in logs for v in l.values())
    g1, d1 = m.G.state_dict(), m.D.state_dict()
    moved = lambda a, b, k: not torch.equal(a[k], b[k])  # noqa: E731
    assert moved(g0, g1, "to_rgb.1.weight") and moved(d0, d1, "from_rgb.1.0.weight")
    assert sum(moved(g0, g1, k) for k in g0) > len(g0) // 2 and sum(moved(d0, d1, k) for k in d0) > len(d0) // 2
    assert int(m.G.stage) == int(m.D.stage) == 1 and float(m.G.alpha) == 1.0 and m.resolution == 8
    assert m.extra_state()["growth"] == {"steps": 7, "images": 56, "stage": 1, "resolution": 8, "alpha": 1.0,
                                         "fading": False}
    if cls is StyleGAN:
        assert m.G.w_avg.abs().sum() > 0
        assert "D/r1" in logs[-1]
    else:
        assert {"D/gp", "D/drift"} <= set(logs[-1])


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.family)
def test_resuming_mid_fade_continues_the_same_alpha_and_outputs(cls):
    cfg = {"fade_steps": 4, "stable_steps": 2}
    a = build(cls, **cfg)
    draw_a = SeededDraw(a)
    for step in range(4):  # steps 2, 3 fade 8 px in: the next step is α = 0.5
        a.train_step(draw_a, step)
    saved = {"extra": copy.deepcopy(a.extra_state()),
             "modules": {n: copy.deepcopy(m.state_dict()) for n, m in a.modules().items()},
             "optimizers": {n: copy.deepcopy(o.state_dict()) for n, o in a.optimizers().items()},
             "noise": a.noise_rng.get_state(), "data": draw_a.g.get_state()}
    assert saved["extra"]["growth"] == {"steps": 4, "images": 32, "stage": 1, "resolution": 8, "alpha": 0.5,
                                        "fading": True}

    b = build(cls, seed=99, **cfg)  # a fresh process: different initial weights, phase at the start
    assert b.resolution == 4
    for n, m in b.modules().items():
        m.load_state_dict(saved["modules"][n])
    for n, o in b.optimizers().items():
        o.load_state_dict(saved["optimizers"][n])
    b.load_extra_state(saved["extra"])
    b.noise_rng.set_state(saved["noise"])
    draw_b = SeededDraw(b)
    draw_b.g.set_state(saved["data"])
    assert b.extra_state() == a.extra_state() and b.resolution == a.resolution == 8
    assert float(b.G.alpha) == float(a.G.alpha) == 0.5 and float(b.D.alpha) == 0.5

    z = torch.randn(4, a.latent_dim)
    assert torch.equal(a.generate(z), b.generate(z))
    for step in range(4, 7):  # through the end of the fade (an optimiser reset at step 6) and on
        la, lb = a.train_step(draw_a, step), b.train_step(draw_b, step)
        assert la == lb
    for n in a.modules():
        for (k, x), y in zip(a.modules()[n].state_dict().items(), b.modules()[n].state_dict().values()):
            assert torch.equal(x, y), (n, k)
    assert torch.equal(a.generate(z), b.generate(z))

    with pytest.raises(ValueError, match="does not match"):
        build(cls, fade_steps=3, stable_steps=2).load_extra_state(saved["extra"])


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.family)
def test_runner_resume_mid_fade_is_bit_identical_and_a_weights_only_load_keeps_the_phase(tmp_path, cls):
    images = (torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    spec = TrainSpec(steps=7, batch_size=8, checkpoint_every=3, log_every=1, ema=0.9)
    cfg = {"fade_steps": 4, "stable_steps": 2}

    class Killed(Exception):
        pass

    def run(model, folder, resume=False, kill_at=None):
        def log(losses, step):
            if step == kill_at:
                raise Killed
        return train_entry(model, images, spec, tmp_path / folder, 5, "fp", "e", log, resume=resume)

    straight = build(cls, **cfg)
    run(straight, "a")
    with pytest.raises(Killed):
        run(build(cls, **cfg), "b", kill_at=5)  # after the step-3 checkpoint, which is mid-fade (α = 0.25)
    payload = checkpoint.read(tmp_path / "b" / "latest.pt")
    assert payload["step"] == 3 and payload["extra"]["growth"]["alpha"] == 0.25
    resumed = build(cls, **cfg)
    out = run(resumed, "b", resume=True)
    assert out.resumed_from == 3
    for n, module in straight.modules().items():
        for (k, x), y in zip(module.state_dict().items(), resumed.modules()[n].state_dict().values()):
            assert torch.equal(x, y), (n, k)
    for x, y in zip(straight.ema.shadow.state_dict().values(), resumed.ema.shadow.state_dict().values()):
        assert torch.equal(x, y)
    assert int(straight.ema.shadow.stage) == int(straight.G.stage) == 1  # the EMA copy follows the growth

    # Scoring loads weights only (no extra state): the phase comes with the networks' buffers.
    scored = build(cls, **cfg)
    final = checkpoint.read(tmp_path / "a" / "latest.pt")
    checkpoint.load_into(final, scored, tmp_path / "a" / "latest.pt", weights_only=True)
    z = torch.randn(3, straight.latent_dim)
    assert scored.resolution == 8 and torch.equal(scored.generate(z), straight.generate(z))


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.family)
def test_runner_options_bf16_channels_last_and_clipping(tmp_path, cls):
    images = (torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    for i, opts in enumerate([{"precision": "bf16"}, {"channels_last": True, "grad_clip": 1.0}]):
        logs = []
        spec = TrainSpec(steps=5, batch_size=6, checkpoint_every=100, log_every=1, **opts)  # 6: mbstd group 3
        train_entry(build(cls), images, spec, tmp_path / str(i), 5, "fp", "e", lambda l, s: logs.append(l))
        assert len(logs) == 5 and all(math.isfinite(v) for l in logs for v in l.values())
        assert logs[-1]["grow/resolution"] == 8.0


# -- configs -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [{"resolution": 48}, {"resolution": 2048}, {"start_resolution": 32},
                                 {"fade_steps": -1}, {"gain": 0.0}, {"drift": -1.0}, {"mbstd_group": 0},
                                 {"real_target": 0.9}])
def test_progan_config_errors(bad):
    with pytest.raises(BenchError):
        ProGAN.build({**GROW, **bad}, RGB16)


@pytest.mark.parametrize("bad", [{"style_mixing_prob": 1.5}, {"w_avg_decay": 1.0}, {"mapping_lrmul": 0.0},
                                 {"truncation_cutoff": -1}, {"unknown_key": 1}])
def test_stylegan_config_errors(bad):
    with pytest.raises(BenchError):
        StyleGAN.build({**TINY[StyleGAN], **bad}, RGB16)


def test_defaults_are_the_papers():
    p, s = ProGAN.Config(), StyleGAN.Config()
    assert (p.loss, p.gp_lambda, p.drift, p.lr_G, p.lr_D, p.beta1, p.beta2) == \
        ("wasserstein", 10.0, 0.001, 1e-3, 1e-3, 0.0, 0.99)
    assert (s.loss, s.r1_gamma, s.lr_G, s.beta1, s.beta2, s.mapping_layers, s.mapping_lrmul) == \
        ("nonsaturating", 10.0, 1e-3, 0.0, 0.99, 8, 0.01)
    assert (s.style_mixing_prob, s.w_avg_decay, s.truncation_cutoff, p.mbstd_group, p.gain) == (0.9, 0.995, 8, 4, SQRT2)


# -- figures -------------------------------------------------------------------------------------------------

def test_sampling_figures(tmp_path):
    m = build(StyleGAN)
    m.apply_phase(m.schedule.at(6))
    randomise_noise_scales(m.G)
    z = torch.randn(6, m.latent_dim, generator=torch.Generator().manual_seed(0))
    L = m.G.num_layers

    sweep = style_figures.truncation_sweep(m, z[:3], psis=(1.0, 0.0), cutoff=0)
    assert sweep.shape == (6, 3, 16, 16)
    assert torch.allclose(sweep[1], sweep[3], atol=1e-6) and torch.allclose(sweep[1], sweep[5], atol=1e-6)

    grid = style_figures.style_mixing_grid(m, z[:2], z[2:5], coarse_layers=4)
    assert grid.shape == (12, 3, 16, 16)
    assert torch.equal(grid[0], torch.ones(3, 16, 16))  # the blank corner
    all_coarse = style_figures.style_mixing_grid(m, z[:2], z[2:5], coarse_layers=L)
    all_fine = style_figures.style_mixing_grid(m, z[:2], z[2:5], coarse_layers=0)
    for i in (1, 2):  # a row is its left-hand source when it gives every style, its column's when none
        assert torch.allclose(all_coarse[4 * i + 1:4 * i + 4], all_coarse[4 * i].expand(3, -1, -1, -1), atol=1e-6)
        assert torch.allclose(all_fine[4 * i + 1:4 * i + 4], all_fine[1:4], atol=1e-6)

    var = style_figures.noise_resampling(m, z[0], n=4)
    assert var["images"].shape == (4, 3, 16, 16) and var["std"].shape == (1, 3, 16, 16)
    assert (var["images"][0] - var["images"][1]).abs().max() > 0

    path = style_figures.latent_interpolation(m, z[0], z[1], steps=5)
    first = m.synthesize(m.mapping(z[:1]), m.noise_maps(1, torch.Generator().manual_seed(0)))
    assert torch.allclose(path[:1], first, atol=1e-5)
    pg = build(ProGAN)
    ends = style_figures.latent_interpolation(pg, z[0], z[1], steps=3, space="z")
    assert torch.allclose(ends[[0, 2]], pg.generate(z[:2]), atol=1e-5)
    with pytest.raises(ValueError, match="no W space"):
        style_figures.latent_interpolation(pg, z[0], z[1])

    paths = style_figures.write_figures(m, tmp_path / "fig", n=2)
    assert set(paths) == {"truncation", "style_mixing", "noise", "interpolation"}
    for p in paths.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""Image-space metrics: SSIM, PSNR, LPIPS, cycle/identity error, LPIPS diversity, classifier accuracy.

LPIPS runs on a seeded random-init AlexNet backbone written to a temp file and handed to the metric
through the weights manifest's `resolve`, so the real file -> state dict -> slice mapping path is used
without any download (the session is offline with an empty TORCH_HOME).
"""

from __future__ import annotations

import math
import typing
from types import SimpleNamespace

import pytest
import torch
import torchvision
from skimage.metrics import structural_similarity

import bench.metrics.lpips as lpips_metric
from bench.features import weights as weights_manifest
from bench.metrics import KEY_DIRECTION, METRICS, MetricContext
from bench.metrics.base import MetricUnavailable, Needs


def _images(n, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1


def _batched(x, size=3):
    return [x[i:i + size] for i in range(0, len(x), size)]


def _ctx(seed=0, settings=None, **streams):
    return MetricContext(seed, settings or SimpleNamespace(), **streams)


def _paired(out, tgt, **kw):
    return _ctx(pairs=lambda: iter(zip(_batched(out), _batched(tgt))), **kw)


def _compute(name, ctx):
    return METRICS.get(name).compute(ctx)


@pytest.fixture(scope="module")
def alexnet_state():
    """A seeded random-init torchvision AlexNet state dict (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.alexnet(weights=None).state_dict()


@pytest.fixture
def alexnet_file(tmp_path, monkeypatch, alexnet_state):
    """Serve the random AlexNet through the manifest, as a real weights file would be."""
    path = tmp_path / "alexnet-random.pth"
    torch.save(alexnet_state, path)
    calls = []

    def fake_resolve(name, path_=None, sha256=None, allow_download=True):
        calls.append((name, allow_download))
        assert name == "alexnet"
        return path, "random-alexnet-seed0"

    monkeypatch.setattr(weights_manifest, "resolve", fake_resolve)
    monkeypatch.setattr(lpips_metric, "_CACHE", {})
    return calls


# --- SSIM -------------------------------------------------------------------------------------------------

def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    x = _images(5)
    assert _compute("ssim", _paired(x, x))["ssim"] == pytest.approx(1.0, abs=1e-12)
    g = torch.Generator().manual_seed(1)
    values = [_compute("ssim", _paired((x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1), x))["ssim"]
              for s in (0.05, 0.2, 0.5)]
    assert 1.0 > values[0] > values[1] > values[2]


def test_ssim_matches_a_direct_skimage_call_with_wang_settings():
    x, y = _images(1, seed=2), _images(1, seed=3)
    y = 0.5 * x + 0.5 * y  # correlated, so SSIM is far from 0 and 1
    a = ((x[0].permute(1, 2, 0).double().numpy() + 1) / 2)
    b = ((y[0].permute(1, 2, 0).double().numpy() + 1) / 2)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                K1=0.01, K2=0.03, data_range=1.0, channel_axis=-1)
    out = _compute("ssim", _paired(x, y))
    assert out["ssim"] == pytest.approx(ref, abs=1e-12)
    assert out["ssim/std"] == 0.0
    assert 0.1 < ref < 0.9
    # grayscale goes through the 2-D path
    ref_gray = structural_similarity(a[..., 0], b[..., 0], gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=1.0)
    assert _compute("ssim", _paired(x[:, :1], y[:, :1]))["ssim"] == pytest.approx(ref_gray, abs=1e-12)


def test_ssim_refuses_images_smaller_than_the_gaussian_window():
    x = _images(2, size=8)
    with pytest.raises(MetricUnavailable, match="11x11"):
        _compute("ssim", _paired(x, x))


# --- PSNR -------------------------------------------------------------------------------------------------

def test_psnr_is_inf_for_identical_images_and_matches_a_known_mse():
    x = _images(4)
    out = _compute("psnr", _paired(x, x))
    assert out["psnr"] == math.inf and out["psnr/inf_fraction"] == 1.0
    # A constant offset of 0.2 in [-1,1] units is 0.1 in [0,1]: MSE = 0.01, PSNR = 10·log10(1/0.01) = 20 dB.
    base = torch.zeros(4, 3, 16, 16, dtype=torch.float64)
    assert _compute("psnr", _paired(base + 0.2, base))["psnr"] == pytest.approx(20.0, abs=1e-9)
    # One identical image among finite ones makes the mean +inf, and the fraction says so.
    mixed = base.clone() + 0.2
    mixed[0] = base[0]
    out = _compute("psnr", _paired(mixed, base))
    assert out["psnr"] == math.inf and out["psnr/inf_fraction"] == 0.25


# --- LPIPS ------------------------------------------------------------------------------------------------

def test_lpips_loader_really_loads_the_given_backbone(alexnet_state):
    model = lpips_metric.build_lpips("alex", alexnet_state)
    conv_keys = [k for k in alexnet_state if k.startswith("features.")]
    assert len(conv_keys) == 10  # five convs, weight + bias
    own = model.net.state_dict()
    mapping = lpips_metric.backbone_key_map(model)
    assert sorted(mapping) == sorted(conv_keys) and sorted(mapping.values()) == sorted(own)
    for src, dst in mapping.items():
        assert torch.equal(own[dst], alexnet_state[src]), src
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    with pytest.raises(ValueError, match="lacks"):
        lpips_metric.build_lpips("alex", {k: v for k, v in alexnet_state.items() if k != "features.8.bias"})


def test_lpips_vgg_backbone_mapping_covers_every_conv():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = torchvision.models.vgg16(weights=None).state_dict()
    model = lpips_metric.build_lpips("vgg", state)
    mapping = lpips_metric.backbone_key_map(model)
    assert sorted(mapping) == sorted(k for k in state if k.startswith("features."))  # 13 convs
    own = model.net.state_dict()
    assert all(torch.equal(own[dst], state[src]) for src, dst in mapping.items())
    x = _images(2, size=16)
    assert lpips_metric.distances(model, x, x, torch.device("cpu")).max() == pytest.approx(0.0, abs=1e-7)


def test_lpips_is_zero_for_identical_images_and_positive_otherwise(alexnet_file):
    x, y = _images(4, seed=4), _images(4, seed=5)
    same = _compute("lpips", _paired(x, x))
    assert same["lpips"] == pytest.approx(0.0, abs=1e-7)
    diff = _compute("lpips", _paired(x, y))
    assert diff["lpips"] > 1e-3
    assert alexnet_file[0] == ("alexnet", False)  # offline session: never allowed to download
    assert len(lpips_metric._CACHE) == 1  # built once, reused by the second evaluation
    with pytest.raises(MetricUnavailable, match="31x31"):
        _compute("lpips", _paired(_images(2, size=28), _images(2, size=28)))


def test_lpips_heads_other_than_the_published_ones_make_lpips_unavailable(alexnet_file, monkeypatch):
    """The v0.1 linear heads come inside the lpips package; the installed files are the published ones (pinned
    sha256), and a package whose heads differ gives no LPIPS rather than another LPIPS under the same name."""
    import hashlib
    import os

    import lpips as lpips_pkg

    for net, pinned in weights_manifest.LPIPS_HEADS_SHA256.items():
        path = os.path.join(os.path.dirname(lpips_pkg.__file__), "weights", "v0.1", f"{net}.pth")
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == pinned, net
    monkeypatch.setattr(lpips_metric, "_CACHE", {})
    monkeypatch.setitem(weights_manifest.LPIPS_HEADS_SHA256, "alex", "0" * 64)
    x = _images(2)
    with pytest.raises(MetricUnavailable, match="linear heads .* not the published 0000"):
        _compute("lpips", _paired(x, x))


def test_lpips_is_unavailable_with_the_file_named_when_weights_are_missing(monkeypatch):
    monkeypatch.setattr(lpips_metric, "_CACHE", {})
    x = _images(2)
    with pytest.raises(MetricUnavailable) as info:
        _compute("lpips", _paired(x, x))
    assert weights_manifest.manifest().get("alexnet").file in str(info.value)
    with pytest.raises(MetricUnavailable, match="alexnet"):
        _compute("lpips_diversity", _ctx(fake_images=lambda: iter(_batched(x))))



def test_a_missing_weights_message_names_the_hub_folder_from_home_not_this_machine(monkeypatch, tmp_path):
    """The message is logged with the run and printed in committed reports: it must say ~/.cache/torch/hub,
    which is where the file goes on any machine, not the account of the one that ran the protocol."""
    home = tmp_path / "some-user"
    monkeypatch.setenv("HOME", str(home))
    for var in ("TORCH_HOME", "XDG_CACHE_HOME", "BENCH_WEIGHTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(lpips_metric, "_CACHE", {})
    x = _images(2)
    with pytest.raises(MetricUnavailable) as info:
        _compute("lpips", _paired(x, x))
    assert "not found in ~/.cache/torch/hub/checkpoints" in str(info.value), str(info.value)
    assert str(home) not in str(info.value)

# --- cycle / identity -------------------------------------------------------------------------------------

def _cycle_stream(a, b, g=lambda t: t, f=lambda t: t, fg=None, gf=None):
    def stream():
        for ab, bb in zip(_batched(a), _batched(b)):
            yield {"a": ab, "b": bb, "G(a)": g(ab), "F(b)": f(bb),
                   "F(G(a))": (fg or (lambda t: f(g(t))))(ab), "G(F(b))": (gf or (lambda t: g(f(t))))(bb),
                   "G(b)": g(bb), "F(a)": f(ab)}
    return stream


def test_cycle_and_identity_errors_are_zero_for_identity_generators():
    a, b = _images(7, seed=6), _images(7, seed=7)
    ctx = _ctx(cycle=_cycle_stream(a, b))
    assert _compute("cycle_error", ctx) == {"cycle_error": 0.0, "cycle_error/a": 0.0, "cycle_error/b": 0.0}
    assert _compute("identity_error", ctx) == {"identity_error": 0.0, "identity_error/a": 0.0,
                                               "identity_error/b": 0.0}


def test_cycle_and_identity_errors_match_hand_computed_values():
    a, b = _images(7, seed=6), _images(7, seed=7)
    # F(G(a)) = a + 0.1 and G(F(b)) = b − 0.3, over 7 images in batches of 3, 3, 1.
    ctx = _ctx(cycle=_cycle_stream(a, b, fg=lambda t: t + 0.1, gf=lambda t: t - 0.3))
    out = _compute("cycle_error", ctx)
    assert out["cycle_error/a"] == pytest.approx(0.1, abs=1e-7)
    assert out["cycle_error/b"] == pytest.approx(0.3, abs=1e-7)
    assert out["cycle_error"] == pytest.approx(0.2, abs=1e-7)
    # G adds 0.25 and F halves: identity compares G(b) with b (target domain; CycleGAN §5.2) and F(a) with a.
    ctx = _ctx(cycle=_cycle_stream(a, b, g=lambda t: t + 0.25, f=lambda t: t / 2))
    out = _compute("identity_error", ctx)
    assert out["identity_error/b"] == pytest.approx(0.25, abs=1e-7)
    assert out["identity_error/a"] == pytest.approx(float(a.double().abs().mean()) / 2, abs=1e-7)
    assert out["identity_error"] == pytest.approx((out["identity_error/a"] + 0.25) / 2, abs=1e-12)


# --- LPIPS diversity --------------------------------------------------------------------------------------

def test_lpips_diversity_is_seeded_and_near_zero_for_identical_images(alexnet_file):
    x = _images(12, seed=8)
    settings = SimpleNamespace(diversity_pairs=6, batch_size=4)
    fake = _ctx(seed=0, settings=settings, fake_images=lambda: iter(_batched(x)))
    d0 = _compute("lpips_diversity", fake)
    assert d0 == _compute("lpips_diversity", fake)
    assert d0["lpips_diversity/pairs"] == 6.0 and d0["lpips_diversity"] > 1e-3
    d1 = _compute("lpips_diversity", _ctx(seed=1, settings=settings, fake_images=lambda: iter(_batched(x))))
    assert d1["lpips_diversity"] != d0["lpips_diversity"]
    # a collapsed generator: one image repeated (grayscale, replicated to RGB by the metric)
    same = _images(1, c=1, seed=9).expand(12, -1, -1, -1)
    out = _compute("lpips_diversity", _ctx(settings=settings, fake_images=lambda: iter(_batched(same))))
    assert out["lpips_diversity"] == pytest.approx(0.0, abs=1e-7)


def test_diversity_pairs_are_distinct_uniform_and_reproducible():
    from bench.metrics.lpips_diversity import collect, draw_pairs

    i, j = draw_pairs(5, 20000, seed=3)
    assert bool((i != j).all())
    counts = torch.bincount(i * 5 + j, minlength=25).reshape(5, 5).double()
    assert bool((counts.diagonal() == 0).all())
    off = counts[~torch.eye(5, dtype=torch.bool)]
    assert float(off.min()) > 0.8 * 1000 and float(off.max()) < 1.2 * 1000  # 20000 / 20 ordered pairs
    assert all(torch.equal(u, v) for u, v in zip(draw_pairs(5, 50, 3), draw_pairs(5, 50, 3)))
    pulled = []

    def stream():
        for b in _batched(_images(20), 4):
            pulled.append(len(b))
            yield b
    assert len(collect(stream(), 10)) == 10 and len(pulled) == 3  # stops pulling once it has enough


# --- classifier accuracy ----------------------------------------------------------------------------------

def test_classifier_accuracy_on_hand_made_logits():
    # K = 3 real classes + a fake column (index 3) that wins every row: it must not count.
    logits = torch.tensor([[5.0, 1.0, 0.0, 9.0],   # -> 0, label 0: hit
                           [0.0, 2.0, 1.0, 9.0],   # -> 1, label 1: hit
                           [0.0, 2.0, 1.0, 9.0],   # -> 1, label 2: miss
                           [0.0, 0.0, 3.0, 9.0]])  # -> 2, label 2: hit
    labels = torch.tensor([0, 1, 2, 2])
    ctx = _ctx(classify=lambda: iter([(logits[:3], labels[:3]), (logits[3:], labels[3:])]))
    assert _compute("classifier_accuracy", ctx) == {"classifier_accuracy": 0.75, "classifier_accuracy/n": 4.0}
    # a plain 4-way classifier says so with num_classes; then the last column is a real class (argmax 3 everywhere)
    ctx = _ctx(settings=SimpleNamespace(num_classes=4), classify=lambda: iter([(logits, torch.tensor([3, 3, 0, 0]))]))
    assert _compute("classifier_accuracy", ctx)["classifier_accuracy"] == 0.5
    with pytest.raises(ValueError, match="labels must lie"):
        _compute("classifier_accuracy", _ctx(classify=lambda: iter([(logits, torch.tensor([0, 1, 2, 3]))])))


# --- contract ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ssim", "psnr", "lpips", "cycle_error", "identity_error", "lpips_diversity",
                                  "classifier_accuracy"])
def test_metrics_without_their_stream_are_unavailable(name):
    metric = METRICS.get(name)
    with pytest.raises(MetricUnavailable, match="needs"):
        metric.compute(_ctx())
    assert metric.description and metric.needs in typing.get_args(Needs)
    assert {k.name for k in metric.keys} <= set(KEY_DIRECTION)  # every declared key has its direction
    assert KEY_DIRECTION[metric.keys[0].name] == metric.keys[0].higher_is_better

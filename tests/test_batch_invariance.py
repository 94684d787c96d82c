"""Scores do not depend on `evaluation.batch_size`, which a protocol's fingerprint leaves out (DESIGN.md).

Every family of the shipped protocols (protocols/*.yaml) is built small, seeded and untrained, and scored
by `bench.evaluation.evaluate` with the metrics its protocol lists, at batch sizes 3 and 8 with n = 13 (a
multiple of neither, so every sample sits at another place in another batch). The image streams are
compared as uint8: float rounding of convolutions and matrix products run on batches of other sizes may move
a rare value by one quantisation step (at most 15 of 600k here), never more. Every score must agree to 1e-4
relative: those few one-step values move FID, KID and IS of 13 images by up to ~3e-5 with the tiny extractor
used here; PPL, which divides by eps^2, gets 1e-2 (see LOOSER). A different random draw moves them by 1e-3
to 1e0.

Controls re-create the old per-batch seeding (pix2pix's dropout on a global RNG seeded once per pass, PPL's
latents, t and noise drawn batch by batch from one generator, StyleGAN noise maps drawn per batch) and show
that it moves the same numbers far beyond these tolerances, so the comparisons can fail.

Untrained networks are re-initialised with fan-in scaled weights (and StyleGAN's noise strengths made non-zero):
DCGAN's N(0, 0.02) init through eval-mode BatchNorm gives near-constant images, in which a changed dropout mask
would not survive quantisation, and a zero noise strength would make any noise draw invisible. Features come
from a tiny deterministic extractor; LPIPS and PPL use randomly initialised AlexNet / VGG-16 backbones (never
downloaded); seg_agreement a tiny seeded segmenter.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import bench.metrics.lpips as lpips_metric
from bench.data.transforms import to_float, to_uint8
from bench.features import segmenter as semantic
from bench.features import weights as weights_manifest
from bench.features.extractors import Extractor
from bench.metrics import ppl
from bench.metrics.base import MetricContext
from bench.evaluation import evaluate
from bench.protocol.schema import EvaluationSpec
from bench.runner import sampling
from bench.runner.sampling import (cycle_batches, fake_batches, real_batches, sample_seeds, stream_features,
                                   translated_batches, translated_floats)
from zoo import ZOO
from zoo.base import DataSpec
from zoo.pix2pix import NoiseDropout
from zoo.style_layers import NoiseInjection

N = 13  # a multiple of neither batch size
BATCHES = (3, 8)
SEEDS = [3]  # one evaluation seed is enough: what is compared is two batchings of it
REL = 1e-4
# PPL divides LPIPS distances of images 1e-4 apart by eps^2 = 1e-8: float32 rounding of the images (convs and
# the mapping network on batches of other sizes) alone moves one pair's distance by up to ~1% and the mean of
# 13 pairs by up to ~1e-3 here; drawing the pairs per batch moves that mean by 14% to 200%.
LOOSER = {"ppl_z": 1e-2, "ppl_w": 1e-2}
SEG_CLASSES = 5

MNIST = DataSpec("mnist", 28, 1, 10)
CIFAR = DataSpec("cifar10", 32, 3, 10)
CELEBA = DataSpec("celeba", 32, 3)
# Translation data at 64 / 32 px (the protocols use 128 / 64; scoring is the same code at any size), but for
# unet_128, which needs 128 px.
FACADES = DataSpec("facades", 64, 3)
FACADES128 = DataSpec("facades", 128, 3)
APPLES = DataSpec("apple2orange", 32, 3)

MNIST_METRICS = ["is", "fid", "kid", "classifier_accuracy"]  # protocols/mnist-zoo.yaml
CIFAR_METRICS = ["is", "fid", "kid"]  # cifar10-zoo.yaml, quickstart.yaml
STYLE_METRICS = ["fid", "kid", "fid_truncation", "ppl", "precision_recall"]  # celeba-style.yaml
PIX_METRICS = ["fid", "kid", "ssim", "psnr", "lpips"]  # facades-pix2pix.yaml (facades-pix2pixhd: no lpips;
HD_METRICS = ["fid", "kid", "ssim", "psnr", "lpips"]  # cityscapes-pix2pixhd.yaml: ssim, psnr, lpips)
SR_METRICS = ["fid", "kid", "ssim", "psnr", "seg_agreement", "lpips"]  # facades-sr.yaml
CYCLE_METRICS = ["fid", "cycle_error", "identity_error"]  # apple2orange/horse2zebra-cyclegan.yaml

STYLE = dict(resolution=32, latent_dim=16, w_dim=16, fmap_base=64, fmap_max=16, fade_steps=1, stable_steps=1)
PRO = dict(resolution=32, latent_dim=16, fmap_base=64, fmap_max=16, fade_steps=1, stable_steps=1)
SMALL = dict(ngf=8, ndf=8)

# (id, zoo, config, data spec, fit, metrics)
UNCONDITIONAL = [
    ("mnist_gan", "mnist_gan", {}, MNIST, "resize", MNIST_METRICS),
    ("mlp_gan", "mlp_gan", {}, MNIST, "resize", MNIST_METRICS),
    ("dcgan_mnist", "dcgan", SMALL, MNIST, "pad", MNIST_METRICS),
    ("wgan", "wgan", SMALL, MNIST, "pad", MNIST_METRICS),
    ("wgan_gp", "wgan_gp", SMALL, MNIST, "pad", MNIST_METRICS),
    ("sgan", "sgan", {}, MNIST, "resize", MNIST_METRICS),
    ("dcgan_cifar", "dcgan", SMALL, CIFAR, "resize", CIFAR_METRICS),
    ("stylegan", "stylegan", STYLE, CELEBA, "resize", STYLE_METRICS),
    ("progan", "progan", PRO, CELEBA, "resize", STYLE_METRICS),
    ("dcgan_celeba", "dcgan", SMALL, CELEBA, "resize", STYLE_METRICS),
]
DCGAN_VARIANTS = [{"loss": "minimax"}, {"loss": "lsgan"}, {"loss": "hinge"}, {"r1_gamma": 10.0},
                  {"lr_D": 4e-4, "lr_G": 1e-4}]
PIX_SEED = dict(resolution=64, generator="unet_seed", ngf=4, ndf=4)
TRANSLATION = [  # (l1_only has unet_128's generator and no D: nothing else to score)
    ("pix2pix_unet128", "pix2pix", dict(resolution=128, generator="unet_128", ngf=4, ndf=4), FACADES128,
     PIX_METRICS),
    ("pix2pix_unet_seed", "pix2pix", PIX_SEED, FACADES, PIX_METRICS),
    ("pix2pixhd_global", "pix2pixhd", dict(resolution=64, ngf=4, ndf=4, n_blocks_global=1, lambda_vgg=0),
     FACADES, HD_METRICS),
    ("pix2pixhd_local", "pix2pixhd", dict(resolution=64, generator="local", ngf=4, ndf=4, n_blocks_global=1,
                                          lambda_vgg=0), FACADES, HD_METRICS),
    ("pix2pixhd_sem", "pix2pixhd_sem", dict(resolution=64, ngf=4, ndf=4, n_blocks=1, lambda_sem=10), FACADES,
     SR_METRICS),
    ("pix2pixhd_sem_bicubic", "pix2pixhd_sem", dict(resolution=64, generator="bicubic"), FACADES, SR_METRICS),
    ("cyclegan", "cyclegan", dict(resolution=32, ngf=4, ndf=4, n_blocks=2), APPLES, CYCLE_METRICS),
]


# -- building blocks ---------------------------------------------------------------------------------------

def lively(model) -> None:
    """Fan-in scaled N(0, 1/fan_in) conv and linear weights, and N(0, 1) StyleGAN noise strengths, seeded."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for net in model.modules().values():
            for m in net.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else m.weight.shape[0]
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(fan_in))
                elif isinstance(m, NoiseInjection):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g))


def build(zoo: str, spec: DataSpec, **cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ZOO.get(zoo).build(cfg, spec)
    lively(model)
    return model


def tiny_extractor(channels: int) -> Extractor:
    """Per-image features: 4x4 average pooling, a fixed random projection to 8 dims (pool) and 10 logits."""
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(channels * 16, 8, generator=g, dtype=torch.float64)
    head = torch.randn(8, 10, generator=g, dtype=torch.float64)

    def fn(images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = F.adaptive_avg_pool2d(images.double() / 127.5 - 1.0, 4).flatten(1)
        pool = torch.tanh(x @ proj)
        return {"pool": pool.float(), "logits": (2 * pool @ head).float()}

    return Extractor("tiny", f"tiny-{channels}", fn)


def smooth_images(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """uint8 images with structure (bilinear upsampled 8x8 noise), for SSIM/LPIPS to see something."""
    low = torch.rand(n, channels, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return to_uint8(F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False))


def unconditional_data(spec: DataSpec):
    labels = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(3)) if spec.num_classes else None
    return SimpleNamespace(eval_images=smooth_images(16, spec.channels, spec.resolution, 2), eval_labels=labels,
                           task="unconditional")


def translation_data(spec: DataSpec, task: str):
    maps = torch.randint(0, SEG_CLASSES, (N, spec.resolution, spec.resolution),
                         generator=torch.Generator().manual_seed(4))
    return SimpleNamespace(eval_inputs=smooth_images(N, spec.channels, spec.resolution, 1),
                           eval_images=smooth_images(N, spec.channels, spec.resolution, 2), eval_labels=None,
                           task=task, has_label_maps=True, eval_label_maps=maps)


def settings(batch_size: int, metrics: list[str]) -> EvaluationSpec:
    return EvaluationSpec(n_samples=N, seeds=SEEDS, batch_size=batch_size, metrics=metrics, is_splits=2,
                          kid_subsets=10, fid_interval_groups=4, fid_inf_points=3, ppl_samples=N,
                          truncation_psis=[0.5, 1.0])


def score(model, spec: DataSpec, metrics: list[str], batch_size: int, data, fit: str = "resize"):
    """Per-seed values of every key, and the metrics that were unavailable, at one batch size."""
    protocol = SimpleNamespace(evaluation=settings(batch_size, metrics),
                               dataset=SimpleNamespace(resolution=spec.resolution, channels=spec.channels,
                                                       frame=(spec.resolution, spec.resolution)))
    extractor = tiny_extractor(spec.channels)
    real, stats = stream_features(real_batches(data.eval_images, batch_size), extractor, "real",
                                  len(data.eval_images))
    unavailable: dict[str, str] = {}
    out = evaluate(model, extractor, real, stats.as_fid_stats(), protocol, fit, unavailable, data)
    return {k: v["per_seed"] for k, v in out.items()}, unavailable


def tolerance(key: str) -> float:
    return LOOSER.get(key, REL)


def assert_same_scores(a: dict, b: dict) -> None:
    """Every per-seed value equal to `tolerance(key)` relative. Spreads and other values that are ~0 up to
    rounding (kid/std when every subset is the whole sample) are held to it relative to the largest value
    of their metric, since a relative comparison of two rounding errors means nothing."""
    assert set(a) == set(b)
    for key in a:
        metric = key.split("/")[0]
        scale = max(abs(v) for k in a if k.split("/")[0] == metric for v in a[k] if math.isfinite(v))
        assert len(a[key]) == len(SEEDS)
        for x, y in zip(a[key], b[key]):
            assert x == pytest.approx(y, rel=tolerance(key), abs=tolerance(key) * scale), key


def assert_same_images(a: torch.Tensor, b: torch.Tensor) -> None:
    """uint8 streams equal up to rare one-step rounding differences (different conv batch sizes)."""
    assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape
    diff = (a.int() - b.int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).double().mean()) <= 1e-3, \
        f"max diff {int(diff.max())}, {float((diff > 0).double().mean()):.2%} of values differ"


def lively_enough(images: torch.Tensor) -> None:
    """The stream is not near-constant: a changed random draw would show after quantisation."""
    assert images.float().std() > 20, float(images.float().std())


@pytest.fixture(scope="module")
def backbone_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backbones")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        states = {"alexnet": torchvision.models.alexnet(weights=None).state_dict(),
                  "vgg16": torchvision.models.vgg16(weights=None).state_dict()}
    paths = {}
    for name, state in states.items():
        paths[name] = folder / f"{name}-random.pth"
        torch.save({k: v for k, v in state.items() if k.startswith("features.")}, paths[name])
    return paths


@pytest.fixture
def random_backbones(backbone_files, monkeypatch):
    """LPIPS (AlexNet) and PPL (VGG-16) on random backbones, resolved without any download."""
    def fake_resolve(name, path_=None, sha256=None, allow_download=True):
        assert name in backbone_files and not allow_download
        return backbone_files[name], f"random-{name}-seed0"

    monkeypatch.setattr(weights_manifest, "resolve", fake_resolve)
    monkeypatch.setattr(lpips_metric, "_CACHE", {})


@pytest.fixture
def tiny_segmenter(monkeypatch):
    """seg_agreement's S: a seeded 3x3 conv to SEG_CLASSES logits, frozen (no training, no cache)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        S = nn.Conv2d(3, SEG_CLASSES, 3, padding=1).eval().requires_grad_(False)
    monkeypatch.setattr(semantic, "for_data", lambda data, device="cpu", *, role: S)
    return S


# -- every family and metric of the shipped protocols --------------------------------------------------------

@pytest.mark.parametrize("case", UNCONDITIONAL, ids=[c[0] for c in UNCONDITIONAL])
def test_unconditional_scores_do_not_depend_on_the_batch_size(case, random_backbones):
    _, zoo, cfg, spec, fit, metrics = case
    model, data = build(zoo, spec, **cfg), unconditional_data(spec)
    streams = [torch.cat(list(fake_batches(model, N, 0, bs, spec.resolution, spec.channels, fit))) for bs in BATCHES]
    lively_enough(streams[0])
    assert_same_images(*streams)
    (a, gone_a), (b, gone_b) = (score(model, spec, metrics, bs, data, fit) for bs in BATCHES)
    # Every listed metric was computed, but for those this family has no input to: classifier_accuracy
    # needs sgan's classifier-style D, fid_truncation StyleGAN's w_avg.
    expected = {m for m, owner in (("classifier_accuracy", "sgan"), ("fid_truncation", "stylegan"))
                if m in metrics and zoo != owner}
    assert set(gone_a) == set(gone_b) == expected
    if "ppl" in metrics:
        assert {"ppl_z", "ppl_w"} & set(a) == ({"ppl_z", "ppl_w"} if zoo == "stylegan" else {"ppl_z"})
    assert_same_scores(a, b)


@pytest.mark.parametrize("variant", DCGAN_VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()))
def test_dcgan_loss_variants_generate_the_same_images_in_any_batch(variant):
    model = build("dcgan", MNIST, **SMALL, **variant)
    a, b = (torch.cat(list(fake_batches(model, N, 7, bs, 28, 1, "pad"))) for bs in BATCHES)
    lively_enough(a)
    assert_same_images(a, b)


@pytest.mark.parametrize("case", TRANSLATION, ids=[c[0] for c in TRANSLATION])
def test_translation_scores_do_not_depend_on_the_batch_size(case, random_backbones, tiny_segmenter):
    _, zoo, cfg, spec, metrics = case
    model = build(zoo, spec, **cfg)
    data = translation_data(spec, model.task)
    streams = [torch.cat(list(translated_batches(model, data.eval_inputs, N, 0, bs, spec.resolution,
                                                 spec.channels))) for bs in BATCHES]
    lively_enough(streams[0])
    assert_same_images(*streams)
    rng = torch.get_rng_state()
    (a, gone_a), (b, gone_b) = (score(model, spec, metrics, bs, data) for bs in BATCHES)
    assert torch.equal(torch.get_rng_state(), rng)  # evaluation neither reads nor advances the global RNG
    assert gone_a == gone_b == {}
    assert_same_scores(a, b)


def test_cycle_stream_does_not_depend_on_the_batch_size_and_matches_the_feature_pass():
    model = build("cyclegan", APPLES, **TRANSLATION[-1][2])
    data = translation_data(APPLES, "unpaired")
    a, b = ([batch for batch in cycle_batches(model, data.eval_inputs, data.eval_images, N, 0, bs)]
            for bs in BATCHES)
    for key in a[0]:  # two generators deep (F(G(a))), float rounding stays far below one uint8 step
        x, y = torch.cat([batch[key] for batch in a]), torch.cat([batch[key] for batch in b])
        assert len(x) == N and float((x - y).abs().max()) < 1e-4, key
    g_a = torch.cat(list(translated_floats(model, data.eval_inputs, N, 0, 3)))
    assert torch.equal(torch.cat([batch["G(a)"] for batch in a]), g_a)  # the feature pass's G(a)


# -- pix2pix: test-time dropout drawn per image ----------------------------------------------------------------

def pix2pix():
    return build("pix2pix", FACADES, **PIX_SEED)


def old_translated_floats(model, inputs, n, seed, batch_size, back=False):
    """The old `translated_floats`: the global RNG seeded once per pass, so each batch's dropout masks
    follow the previous batch's draws."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, n, batch_size):
            yield model.translate(to_float(inputs[i:min(i + batch_size, n)])).float()


def test_control_the_old_per_batch_dropout_would_fail_these_checks(random_backbones, monkeypatch):
    model, data = pix2pix(), translation_data(FACADES, "paired")
    old = [torch.cat([to_uint8(x) for x in old_translated_floats(model, data.eval_inputs, N, 0, bs)])
           for bs in BATCHES]
    with pytest.raises(AssertionError, match="values differ"):
        assert_same_images(*old)  # the images depend on the batch size ...
    monkeypatch.setattr(sampling, "translated_floats", old_translated_floats)
    a, b = (score(model, FACADES, PIX_METRICS, bs, data)[0] for bs in BATCHES)
    for key in ("fid", "kid/mean", "ssim", "psnr", "lpips"):  # ... and so does every score, far beyond tolerance
        assert abs(a[key][0] - b[key][0]) > 10 * tolerance(key) * abs(b[key][0]), key
    with pytest.raises(AssertionError):
        assert_same_scores(a, b)


def test_pix2pix_dropout_is_drawn_per_image_from_its_own_seed():
    model = pix2pix()
    x = to_float(translation_data(FACADES, "paired").eval_inputs[:5])
    seeds = sample_seeds(0, "G(a)", 0, 5)
    whole = model.translate(x, sample_seeds=seeds)
    for i in range(5):  # image i alone, or at another place in another batch: the same output
        assert torch.allclose(model.translate(x[i:i + 1], sample_seeds=seeds[i:i + 1]), whole[i:i + 1], atol=1e-5)
    flipped = model.translate(x.flip(0), sample_seeds=seeds[::-1]).flip(0)
    assert torch.allclose(flipped, whole, atol=1e-5)
    other = model.translate(x, sample_seeds=sample_seeds(1, "G(a)", 0, 5))
    assert (other - whole).abs().max() > 0.1  # the seed is the noise: another seed, other masks
    with pytest.raises(ValueError, match="sample seeds"):
        model.translate(x, sample_seeds=seeds[:4])


def test_one_eval_seed_gives_the_same_outputs_to_every_pass_and_other_seeds_differ():
    model, data = pix2pix(), translation_data(FACADES, "paired")
    first, again = (torch.cat(list(translated_batches(model, data.eval_inputs, N, 0, 3, 64, 3))) for _ in range(2))
    assert torch.equal(first, again)  # the feature pass and the SSIM/PSNR pass see the same images
    other = torch.cat(list(translated_batches(model, data.eval_inputs, N, 1, 3, 64, 3)))
    assert float((first != other).double().mean()) > 0.1


def test_training_dropout_still_draws_from_the_global_rng():
    """Trained weights do not change: in training mode NoiseDropout is F.dropout on the global RNG, also
    after a seeded translation (which leaves no per-sample generators behind)."""
    layer, x = NoiseDropout(0.5).train(), torch.randn(4, 8, 6, 6)
    model, ones = pix2pix(), torch.ones(2, 3, 64, 64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        out = layer(x)
        torch.manual_seed(11)
        assert torch.equal(out, F.dropout(x, 0.5, training=True))
        model.translate(ones, sample_seeds=[1, 2])
        layers = [m for m in model.G.modules() if isinstance(m, NoiseDropout)]
        assert layers and all(m.sample_generators is None and not m.always_on for m in layers)
        model.G.train()
        outs = []
        for seed in (3, 3, 4):
            torch.manual_seed(seed)
            outs.append(model.G(ones))
        model.G.eval()
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])  # masks from the global RNG


# -- PPL and StyleGAN noise ------------------------------------------------------------------------------------

def stylegan():
    return build("stylegan", CELEBA, **STYLE)


def test_ppl_pairs_are_drawn_per_pair_and_the_old_per_batch_draws_would_fail(random_backbones, monkeypatch):
    model = stylegan()
    net = lpips_metric.lpips_network(MetricContext(0, SimpleNamespace()), "ppl", net="vgg")
    # What makes PPL batch-size independent: every pair's z0, z1, t and noise maps, whatever the batching.
    whole = ppl.pair_draws(model, 9, 0, N, True)
    parts = [ppl.pair_draws(model, 9, i, min(i + 3, N), True) for i in range(0, N, 3)]
    for k, drawn in enumerate(whole[:3]):
        assert torch.equal(torch.cat([p[k] for p in parts]), drawn)
    for layer, maps in enumerate(whole[3]):
        assert torch.equal(torch.cat([p[3][layer] for p in parts]), maps)
    first5 = ppl.pair_draws(model, 9, 0, 5, True)  # pair i's draws are its own: a 5-pair run is a prefix
    assert all(torch.equal(x, y[:5]) for x, y in zip(first5[:3], whole[:3]))
    for space in ("z", "w"):
        d3, d8 = (ppl.path_lengths(model, net, N, bs, space, seed=9) for bs in BATCHES)
        assert ppl.filtered_mean(d3) == pytest.approx(ppl.filtered_mean(d8), rel=tolerance(f"ppl_{space}"))

    shared = {}

    def per_batch(model, seed, start, stop, styled):  # the old code: one generator, drawn batch by batch
        if start == 0:
            shared["g"] = torch.Generator().manual_seed(seed)
        g, b = shared["g"], stop - start
        z0, z1 = model.sample_latent(b, g), model.sample_latent(b, g)
        return z0, z1, torch.rand(b, generator=g, dtype=torch.float64), model.noise_maps(b, g)

    monkeypatch.setattr(ppl, "pair_draws", per_batch)
    for space in ("z", "w"):
        old3, old8 = (ppl.filtered_mean(ppl.path_lengths(model, net, N, bs, space, seed=9)) for bs in BATCHES)
        assert abs(old3 - old8) > 10 * tolerance(f"ppl_{space}") * abs(old8), space


def test_stylegan_noise_is_per_sample_and_per_batch_noise_would_fail():
    model = stylegan()
    z = model.sample_latent(N, torch.Generator().manual_seed(0))
    for psi in (0.5, None):  # fid_truncation scores the same latents (and noise) at each psi
        a, b = (torch.cat(list(fake_batches(model, N, 0, bs, 32, 3, psi=psi))) for bs in BATCHES)
        lively_enough(a)
        assert_same_images(a, b)
    no_noise = to_uint8(model.synthesize(model.mapping(z), None))
    assert float((no_noise != a).double().mean()) > 0.1  # the noise maps matter in these images (psi 1)

    def per_batch_noise(batch_size):
        g = torch.Generator().manual_seed(0)
        return torch.cat([to_uint8(model.synthesize(model.mapping(z[i:i + batch_size]),
                                                    model.noise_maps(len(z[i:i + batch_size]), g)))
                          for i in range(0, N, batch_size)])

    with pytest.raises(AssertionError, match="values differ"):
        assert_same_images(*(per_batch_noise(bs) for bs in BATCHES))

"""The unconditional families of issue 4: shapes and counts, the WGAN critic loop, WGAN-GP's critic,
R1, the semi-supervised GAN's K+1 losses, and the shared recipe (smoothing, instance noise, TTUR)."""

import pytest
import torch
from torch import nn

from bench.errors import BenchError
from bench.protocol.schema import TrainSpec
from bench.runner.train import Draw, labelled_subset, train_entry
from bench.runner.distributed import SINGLE
from zoo import ZOO
from zoo.base import DataSpec, count_params
from zoo.sgan import feature_matching_loss, supervised_loss, unsupervised_loss

MNIST = DataSpec("mnist", 28, 1, 10)
CIFAR = DataSpec("cifar10", 32, 3, 10)
SMALL = {"ngf": 8, "ndf": 8}


def build(name, data=MNIST, **cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ZOO.get(name).build(cfg, data)


def images(n=64, c=1, r=28):
    return (torch.rand(n, c, r, r, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)


class CountingDraw:
    def __init__(self, batch=8, res=32, c=1):
        self.calls, self.batch, self.res, self.c = 0, batch, res, c

    def __call__(self):
        self.calls += 1
        return torch.rand(self.batch, self.c, self.res, self.res) * 2 - 1


def count_steps(opt):
    calls = {"n": 0}
    original = opt.step

    def step(*a, **k):
        calls["n"] += 1
        return original(*a, **k)

    opt.step = step
    return calls


def test_mlp_gan_widths_and_counts():
    m = build("mlp_gan")
    lin_g = [l for l in m.G.body if isinstance(l, nn.Linear)]
    lin_d = [l for l in m.D.body if isinstance(l, nn.Linear)]
    assert [l.out_features for l in lin_g] == [256, 512, 1024, 784]  # widening hidden layers, 28x28x1 out
    assert [l.out_features for l in lin_d] == [512, 256, 1]  # narrowing, one logit
    assert lin_g[0].in_features == 100
    assert count_params(m.G) == 1_486_352 and count_params(m.D) == 533_505
    assert not [l for l in m.G.modules() if isinstance(l, nn.modules.batchnorm._BatchNorm)]
    x = m.generate(torch.randn(3, 100))
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1
    with pytest.raises(BenchError, match="increase"):
        build("mlp_gan", g_widths=[512, 256])
    with pytest.raises(BenchError, match="2 or 3"):
        build("mlp_gan", d_widths=[512])


def test_wgan_critic_has_no_sigmoid_and_stays_clipped():
    m = build("wgan", **SMALL)
    assert not [l for l in m.D.modules() if isinstance(l, (nn.Sigmoid, nn.Tanh))]
    assert count_params(m.D) == count_params(build("dcgan", **SMALL).D)  # the DCGAN backbone
    for p in m.D.parameters():  # make the clipping bite
        p.data.normal_(0, 1)
    draw = CountingDraw()
    for step in range(3):
        m.train_step(draw, step)
        assert all(p.abs().max() <= 0.01 for p in m.D.parameters())
    assert max(p.abs().max().item() for p in m.D.parameters()) == pytest.approx(0.01)


@pytest.mark.parametrize("name", ["wgan", "wgan_gp"])
def test_n_critic_5_means_5_critic_steps_each_on_a_fresh_batch(name):
    m = build(name, **SMALL)
    d, g = count_steps(m.opt_D), count_steps(m.opt_G)
    draw = CountingDraw()
    for step in range(2):
        m.train_step(draw, step)
    assert (d["n"], g["n"], draw.calls) == (10, 2, 10)
    reuse = build(name, fresh_batches=False, **SMALL)  # the course loop reuses one batch (fresh_batches: false)
    d2, draw2 = count_steps(reuse.opt_D), CountingDraw()
    reuse.train_step(draw2, 0)
    assert (d2["n"], draw2.calls) == (5, 1)


def test_wgan_gp_critic_has_no_batchnorm_and_defaults():
    m = build("wgan_gp", **SMALL)
    assert not [l for l in m.D.modules() if isinstance(l, nn.modules.batchnorm._BatchNorm)]
    assert m.cfg.gp_lambda == 10 and m.cfg.n_d == 5 and (m.cfg.beta1, m.cfg.beta2) == (0.0, 0.9)
    assert m.opt_D.defaults["lr"] == 1e-4 and m.opt_D.defaults["betas"] == (0.0, 0.9)
    assert isinstance(build("wgan", **SMALL).opt_D, torch.optim.RMSprop)
    losses = m.train_step(CountingDraw(), 0)
    assert "D/gp" in losses
    with pytest.raises(BenchError, match="without BatchNorm"):
        build("wgan_gp", d_norm="batch", **SMALL)
    layer = build("wgan_gp", d_norm="layer", **SMALL)
    assert [l for l in layer.D.modules() if isinstance(l, nn.LayerNorm)]


def test_ttur_sets_separate_learning_rates():
    m = build("dcgan", lr_D=4e-4, lr_G=1e-4, **SMALL)
    assert m.opt_D.param_groups[0]["lr"] == 4e-4 and m.opt_G.param_groups[0]["lr"] == 1e-4


def test_r1_option_applies_to_any_discriminator():
    m = build("dcgan", r1_gamma=10.0, **SMALL)
    assert "D/r1" in m.train_step(CountingDraw(), 0)
    assert "D/r1" in build("mlp_gan", r1_gamma=1.0).train_step(CountingDraw(res=28), 0)


def test_instance_noise_anneals_linearly_to_zero():
    m = build("dcgan", instance_noise=0.2, instance_noise_steps=100, **SMALL)
    assert [m.noise_sigma(s) for s in (0, 50, 100, 150)] == pytest.approx([0.2, 0.1, 0.0, 0.0])
    x = torch.zeros(4, 1, 32, 32)
    noisy = m.with_instance_noise(x, 0)
    assert 0.15 < noisy.std().item() < 0.25
    assert torch.equal(m.with_instance_noise(x, 100), x)


def test_label_smoothing_is_a_config_of_every_bce_family():
    assert build("mnist_gan").cfg.real_target == 0.9  # the seed loop's one-sided smoothing
    with pytest.raises(BenchError, match="no meaning for the hinge loss"):
        build("dcgan", loss="hinge", real_target=0.9, **SMALL)


def test_loss_variants_train_on_the_dcgan_backbone():
    for kind in ("minimax", "nonsaturating", "lsgan", "hinge", "wasserstein"):
        out = build("dcgan", loss=kind, **SMALL).train_step(CountingDraw(), 0)
        assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), kind


def test_sgan_has_k_plus_1_outputs_and_its_losses_vanish_in_the_ideal_cases():
    m = build("sgan")
    assert m.D(torch.zeros(2, 1, 28, 28)).shape == (2, 11)
    big = 50.0
    labels = torch.tensor([3, 7])
    perfect = torch.full((2, 11), -big)
    perfect[0, 3] = perfect[1, 7] = big
    assert supervised_loss(perfect, labels).item() < 1e-6
    fake = torch.full((2, 11), -big)
    fake[:, 10] = big  # every fake put in class K
    assert unsupervised_loss(perfect, fake).item() < 1e-6
    assert unsupervised_loss(fake, perfect).item() > 50  # and the reverse is maximally wrong
    f = torch.randn(4, 6)
    assert feature_matching_loss(f, f.clone()).item() == 0.0


def test_sgan_labelled_subset_has_10_per_class_and_trains():
    labels = torch.arange(300) % 10
    idx = labelled_subset(labels, 10, seed=3, num_classes=10)
    assert len(idx) == 100 and torch.bincount(labels[idx]).tolist() == [10] * 10
    assert torch.equal(idx, labelled_subset(labels, 10, seed=3, num_classes=10))
    m = build("sgan")
    draw = Draw(images(300), labels, 16, 0, m, "resize", SINGLE)
    x, y = draw.labelled()
    assert x.shape == (16, 1, 28, 28) and set(y.tolist()) <= set(range(10))
    out = m.train_step(draw, 0)
    assert {"D/sup", "D/unsup", "G"} <= set(out)
    base = build("sgan", unsupervised=False)
    g0 = [p.clone() for p in base.G.parameters()]
    out = base.train_step(Draw(images(300), labels, 16, 0, base, "resize", SINGLE), 0)
    assert "G" not in out and all(torch.equal(a, b) for a, b in zip(g0, base.G.parameters()))
    assert base.classify(torch.zeros(3, 1, 28, 28)).shape == (3, 11)


def test_sgan_and_its_labels_only_baseline_train_on_the_same_labels():
    """The labelled subset follows `seed_data` (the reference's --seed_data), not the entry: `sgan` and
    `sgan_labels_only` of one protocol (different entry names, so different training seeds) get the same 100
    labels, and a training seed changes only the training randomness."""
    from bench.runner.seeding import entry_seed

    labels = torch.arange(300) % 10
    semi, base = build("sgan"), build("sgan", unsupervised=False)
    subsets = [Draw(images(300), labels, 16, entry_seed(0, name, t), m, "resize", SINGLE).labelled_idx
               for name, m in (("sgan", semi), ("sgan_labels_only", base)) for t in (None, 1)]
    assert all(torch.equal(subsets[0], s) for s in subsets[1:])
    other = Draw(images(300), labels, 16, entry_seed(0, "sgan"), build("sgan", seed_data=2), "resize", SINGLE)
    assert not torch.equal(other.labelled_idx, subsets[0])
    assert torch.bincount(labels[other.labelled_idx]).tolist() == [10] * 10


def test_sgan_learning_rate_is_the_reference_one():
    """Salimans et al. 2016, train_mnist_feature_matching.py: Adam lr 0.003, beta1 0.5, for D and G (the seed's
    generic 2e-4 left D no better than its labels-only baseline after the mnist-zoo's 1,000 steps)."""
    m = build("sgan")
    for opt in (m.opt_D, m.opt_G):
        assert opt.param_groups[0]["lr"] == 3e-3 and opt.param_groups[0]["betas"] == (0.5, 0.999)


def test_ema_of_g_is_used_for_sampling(tmp_path):
    m = build("mlp_gan")
    spec = TrainSpec(steps=4, batch_size=8, ema=0.5, checkpoint_every=4)
    train_entry(m, images(), spec, tmp_path, 0, "fp", "e", lambda *a: None)
    live = next(m.G.parameters())
    shadow = next(m.ema.shadow.parameters())
    assert not torch.equal(live, shadow)
    z = torch.randn(2, 100)
    with torch.no_grad():
        assert torch.allclose(m.generate(z), m.ema.shadow.eval()(z))


def test_lr_schedules_and_grad_clipping(tmp_path):
    m = build("mlp_gan")
    spec = TrainSpec(steps=10, batch_size=8, lr_schedule={"kind": "linear", "start": 0.5}, checkpoint_every=10)
    seen = []
    original = m.train_step
    m.train_step = lambda draw, step: (seen.append(m.opt_G.param_groups[0]["lr"]), original(draw, step))[1]
    train_entry(m, images(), spec, tmp_path / "a", 0, "fp", "e", lambda *a: None)
    assert seen[:6] == [2e-4] * 6 and seen[6:] == pytest.approx([1.6e-4, 1.2e-4, 0.8e-4, 0.4e-4])
    assert m.opt_G.param_groups[0]["lr"] == 0.0
    m2 = build("mlp_gan")
    spec2 = TrainSpec(steps=5, batch_size=8, lr_schedule={"kind": "step", "every": 2, "gamma": 0.5})
    train_entry(m2, images(), spec2, tmp_path / "b", 0, "fp", "e", lambda *a: None)
    assert m2.opt_D.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.25)

    m3 = build("mlp_gan")
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        out = clip(params, max_norm, *a, **k)
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())
        return out

    torch.nn.utils.clip_grad_norm_ = spy
    try:
        train_entry(m3, images(), TrainSpec(steps=2, batch_size=8, grad_clip=0.01), tmp_path / "c", 0, "fp", "e",
                    lambda *a: None)
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    assert len(norms) == 4 and max(norms) <= 0.01 + 1e-6


def test_keep_last_k_snapshots(tmp_path):
    m = build("mlp_gan")
    spec = TrainSpec(steps=10, batch_size=8, checkpoint_every=2, keep_last=2)
    train_entry(m, images(), spec, tmp_path, 0, "fp", "e", lambda *a: None)
    names = sorted(p.name for p in tmp_path.glob("step-*.pt"))
    assert names == ["step-0000008.pt", "step-0000010.pt"]


def test_bf16_autocast_trains_on_cpu_and_fp16_is_refused(tmp_path):
    m = build("dcgan", **SMALL)
    out = train_entry(m, images(), TrainSpec(steps=2, batch_size=8, precision="bf16"), tmp_path, 0, "fp", "e",
                      lambda *a: None, fit="pad")
    assert out.steps == 2
    from bench.runner.train import EntryFailed

    with pytest.raises(EntryFailed, match="fp16 needs a CUDA device"):
        train_entry(build("dcgan", **SMALL), images(), TrainSpec(steps=1, batch_size=8, precision="fp16"),
                    tmp_path / "b", 0, "fp", "e", lambda *a: None, fit="pad")


def test_cifar_shapes_for_every_dcgan_variant():
    for name in ("dcgan", "wgan", "wgan_gp"):
        m = build(name, CIFAR, **SMALL)
        assert m.generate(torch.randn(2, 100)).shape == (2, 3, 32, 32)
        assert m.D(torch.zeros(2, 3, 32, 32)).shape == (2, 1)

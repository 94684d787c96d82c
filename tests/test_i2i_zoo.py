"""The image-to-image zoo (issue 6, networks and losses): PatchGAN receptive fields and grids, U-Net,
ResNet and pix2pixHD generators, reference parameter counts, the losses (cycle, identity, feature
matching, VGG), the image pool, pix2pix's test-time dropout and one training step of every family.

Big networks are built on the meta device (shapes and counts without storage or compute); anything
that runs uses a few channels and 32-64 px.
"""

import math

import pytest
import torch
from torch import nn

from bench.errors import BenchError
from zoo import losses as L
from zoo.base import DataSpec, count_params
from zoo.cyclegan import CycleGAN, ResnetGenerator
from zoo.image_pool import ImagePool
from zoo.patchgan import (NLayerDiscriminator, PixelDiscriminator, empirical_receptive_field, patch_discriminator,
                          receptive_field)
from zoo.pix2pix import NoiseDropout, Pix2Pix, UNetGenerator, unet
from zoo.pix2pixhd import GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator, Pix2PixHD
from zoo.translation import Inspection

META = torch.device("meta")


def meta(shape):
    return torch.zeros(shape, device=META)


def build(cls, res=64, channels=3, **cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cls.build(cfg, DataSpec("i2i", res, channels))


class PairDraw:
    """(x, y) or (a, b) batches in [-1, 1] from a seeded generator."""

    def __init__(self, batch=2, res=64, c=3, seed=1):
        self.g, self.shape = torch.Generator().manual_seed(seed), (batch, c, res, res)

    def __call__(self):
        return torch.rand(self.shape, generator=self.g) * 2 - 1, torch.rand(self.shape, generator=self.g) * 2 - 1


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(module, before):
    return all(not torch.equal(p, q) for p, q in zip(module.parameters(), before))


# -- PatchGAN: receptive fields, grids, counts ------------------------------------------------------

def test_receptive_field_back_recursion():
    stack = [(4, 2), (4, 2), (4, 2), (4, 1), (4, 1)]
    # back from the output: 4 -> 7 -> 16 -> 34 -> 70 (phillipi/pix2pix scripts/receptive_field_sizes.m)
    assert [receptive_field(stack[i:]) for i in range(4, -1, -1)] == [4, 7, 16, 34, 70]
    with torch.device(META):
        assert [patch_discriminator(6, 64, n).receptive_field for n in (0, 1, 2, 3, 4, 5)] == [1, 16, 34, 70, 142, 286]


@pytest.mark.parametrize("n_layers,size,rf,norm", [(0, 16, 1, "batch"), (1, 64, 16, "instance"),
                                                   (3, 256, 70, "batch"), (5, 512, 286, "instance")])
def test_receptive_field_by_gradient_probing(n_layers, size, rf, norm):
    net = patch_discriminator(1, 1, n_layers, norm)  # width does not change the field; keep it tiny
    assert empirical_receptive_field(net, size) == rf == net.receptive_field


@pytest.mark.parametrize("n_layers,grid", [(0, 256), (1, 126), (2, 62), (3, 30), (4, 14), (5, 6)])
def test_patch_grids_on_256(n_layers, grid):
    with torch.device(META):
        out = patch_discriminator(6, 64, n_layers)(meta((1, 6, 256, 256)))
    assert tuple(out.shape) == (1, 1, grid, grid)


@pytest.mark.parametrize("size,grid,grid_p2", [(128, 14, 19), (256, 30, 35), (512, 62, 67), (1024, 126, 131)])
def test_70x70_grids_by_input_size_and_padding(size, grid, grid_p2):
    with torch.device(META):
        assert NLayerDiscriminator(6)(meta((1, 6, size, size))).shape[-1] == grid
        assert NLayerDiscriminator(6, padding=2)(meta((1, 6, size, size))).shape[-1] == grid_p2  # pix2pixHD


def test_patchgan_parameter_counts():
    with torch.device(META):
        assert count_params(NLayerDiscriminator(6, norm="batch")) == 2_768_705  # pix2pix, (x, y) pair
        assert count_params(NLayerDiscriminator(3, norm="batch")) == 2_765_633
        # instance norm has no affine parameters, so every conv keeps its bias (CycleGAN's D)
        assert count_params(NLayerDiscriminator(3, norm="instance")) == 2_764_737
        assert count_params(PixelDiscriminator(6)) == 6 * 64 + 64 + 64 * 128 + 2 * 128 + 128
    d = NLayerDiscriminator(6)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.bias is not None for c in convs] == [True, False, False, False, True]  # no bias before BN
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert not isinstance(d.blocks[0][-1], nn.BatchNorm2d) and isinstance(d.blocks[1][1], nn.BatchNorm2d)


# -- generators: shapes and counts --------------------------------------------------------------------

def test_unet_reference_counts():
    with torch.device(META):
        assert count_params(unet("unet_256", 3, 3)) == 54_413_955
        # unet_128 is unet_256 without one 512-wide middle level (conv 512->512, tconv 1024->512, two BNs)
        assert count_params(unet("unet_128", 3, 3)) == 54_413_955 - (512 * 512 * 16 + 1024 * 512 * 16 + 2 * 1024)
        assert count_params(unet("unet_128", 3, 3)) == 41_828_995
        assert count_params(unet("unet_seed", 3, 3)) == 29_245_059


def test_unet_shapes_and_dropout_placement():
    with torch.device(META):
        g = unet("unet_seed", 3, 3)
        x = meta((1, 3, 256, 256))
        feats = []
        for level in g.down:
            x = level(x)
            feats.append(tuple(x.shape[1:]))
        assert feats == [(64, 128, 128), (128, 64, 64), (256, 32, 32), (512, 16, 16), (512, 8, 8), (512, 4, 4)]
        assert tuple(g(meta((1, 3, 256, 256))).shape) == (1, 3, 256, 256)
        ref = unet("unet_256", 3, 3)
        x = meta((2, 3, 256, 256))
        for level in ref.down:
            x = level(x)
        assert tuple(x.shape) == (2, 512, 1, 1)  # 8 levels to 1x1x512
        assert tuple(ref(meta((2, 3, 256, 256))).shape) == (2, 3, 256, 256)
        assert tuple(unet("unet_128", 3, 3)(meta((1, 3, 128, 128))).shape) == (1, 3, 128, 128)

    def dropout_levels(net):
        return [k for k, level in enumerate(net.up) if any(isinstance(m, NoiseDropout) for m in level)]

    assert dropout_levels(ref) == [1, 2, 3]  # reference placement (not on the innermost decoder level)
    assert dropout_levels(unet("unet_128", 3, 3, ngf=2)) == [1, 2]
    assert dropout_levels(g) == [0, 1, 2, 3, 4]  # the seed: every decoder step but the output
    assert not isinstance(ref.down[0][-1], nn.BatchNorm2d) and isinstance(g.down[-1][-1], nn.BatchNorm2d)
    assert isinstance(unet("unet_seed", 3, 3, ngf=2, first_norm=True).down[0][-1], nn.BatchNorm2d)
    assert isinstance(ref.up[-1][-1], nn.Tanh)


def test_resnet_generator_counts_and_shapes():
    with torch.device(META):
        g9, g6 = ResnetGenerator(3, 3, 64, 9), ResnetGenerator(3, 3, 64, 6)
        assert count_params(g9) == 11_378_179 and count_params(g6) == 7_837_699
        x = meta((1, 3, 256, 256))
        h = g9.model[:10](x)  # c7s1-64, d128, d256
        assert tuple(h.shape) == (1, 256, 64, 64)
        assert tuple(g9(x).shape) == (1, 3, 256, 256)
    kinds = {type(m) for m in g9.modules()}
    assert nn.BatchNorm2d not in kinds and nn.ReflectionPad2d in kinds
    assert all(not m.affine for m in g9.modules() if isinstance(m, nn.InstanceNorm2d))
    assert all(m.bias is not None for m in g9.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
    assert isinstance(g9.model[-1], nn.Tanh)
    assert CycleGAN.Config(resolution=256).blocks == 9 and CycleGAN.Config(resolution=128).blocks == 6


def official_pix2pixhd_global(in_ch, out_ch=3, ngf=64, n_down=4, n_blocks=9):
    """Reference count from the official GlobalGenerator stack (IN without affine, every conv biased)."""
    conv = lambda i, o, k: i * o * k * k + o  # noqa: E731
    n = conv(in_ch, ngf, 7)
    n += sum(conv(ngf * 2**i, ngf * 2**(i + 1), 3) for i in range(n_down))
    n += n_blocks * 2 * conv(ngf * 2**n_down, ngf * 2**n_down, 3)
    n += sum(conv(ngf * 2**i, ngf * 2**(i - 1), 3) for i in range(n_down, 0, -1))
    return n + conv(ngf, out_ch, 7)


def official_local_front_back(in_ch, out_ch=3, w=32, n_blocks=3):
    conv = lambda i, o, k: i * o * k * k + o  # noqa: E731
    return (conv(in_ch, w, 7) + conv(w, 2 * w, 3) + n_blocks * 2 * conv(2 * w, 2 * w, 3) + conv(2 * w, w, 3)
            + conv(w, out_ch, 7))


def official_multiscale_d(in_ch, num_D, ndf=64):
    conv = lambda i, o: i * o * 16 + o  # noqa: E731
    return num_D * (conv(in_ch, ndf) + conv(ndf, 2 * ndf) + conv(2 * ndf, 4 * ndf) + conv(4 * ndf, 8 * ndf)
                    + conv(8 * ndf, 1))


def test_pix2pixhd_counts_match_the_official_stack():
    with torch.device(META):
        assert count_params(GlobalGenerator(3, 3)) == official_pix2pixhd_global(3) == 182_443_267
        # cityscapes-style input: 35 label channels + 1 instance-boundary channel
        assert count_params(GlobalGenerator(36, 3)) == official_pix2pixhd_global(36) == 182_546_755
        local = LocalEnhancer(3, 3)  # global ngf 64 inside, enhancer c7s1-32, d64, R64x3, u32, c7s1-3
        assert count_params(local) == official_pix2pixhd_global(3) - (64 * 3 * 49 + 3) + official_local_front_back(3)
        assert count_params(local) == 182_701_827
        for in_ch, num_D, expected in [(6, 2, 5_535_618), (6, 3, 8_303_427), (39, 2, 5_603_202), (39, 3, 8_404_803)]:
            counted = count_params(MultiscaleDiscriminator(in_ch, num_D=num_D))
            assert counted == official_multiscale_d(in_ch, num_D) == expected
            # padding changes the grids, not the count
            assert count_params(MultiscaleDiscriminator(in_ch, num_D=num_D, padding=1)) == expected


def test_pix2pixhd_generator_shapes():
    with torch.device(META):
        g = GlobalGenerator(3, 3)
        x = meta((1, 3, 512, 512))
        assert tuple(g.model[:16](x).shape) == (1, 1024, 32, 32)  # c7s1-64 and 4 downs to 1024 channels
        assert tuple(g(x).shape) == (1, 3, 512, 512)
        local = LocalEnhancer(3, 3)
        y = meta((1, 3, 1024, 1024))
        # the front end at full size and G1's last features on the 2x downsampled input meet at 512 px, 64 channels
        assert tuple(local.front[0](y).shape) == (1, 64, 512, 512)
        assert tuple(local.global_features(local.downsample(y)).shape) == (1, 64, 512, 512)
        assert tuple(local(y).shape) == (1, 3, 1024, 1024)
        assert tuple(LocalEnhancer(3, 3, n_local_enhancers=2)(y).shape) == (1, 3, 1024, 1024)
    small = LocalEnhancer(3, 3, ngf=8, n_downsample_global=2, n_blocks_global=1, n_blocks_local=1)
    assert small(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)  # runs for real, too


# -- multi-scale D and feature matching --------------------------------------------------------------

def test_multiscale_d_returns_every_layer_of_every_scale():
    with torch.device(META):
        d = MultiscaleDiscriminator(6, num_D=3, n_layers=3)
        out = d(meta((1, 6, 256, 256)))
    assert len(out) == 3 and all(len(feats) == 3 + 2 for feats in out)
    assert [tuple(f[-1].shape[1:]) for f in out] == [(1, 35, 35), (1, 19, 19), (1, 11, 11)]
    assert [f.shape[1] for f in out[0]] == [64, 128, 256, 512, 1]
    assert d.receptive_fields == [70, 141, 283]
    assert 4 <= d.receptive_fields[2] / d.receptive_fields[0] < 4.1  # 1/4 scale: x4 per side (Wang et al. 2018, §3.2)
    small = MultiscaleDiscriminator(1, ndf=1, num_D=3)
    for k in range(3):
        assert empirical_receptive_field(small, 512, select=lambda o, k=k: o[k][-1]) == small.receptive_fields[k]


def test_feature_matching_zero_on_real_and_no_gradient_into_D():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(6, ndf=4, num_D=2)
    x = torch.rand(2, 6, 32, 32) * 2 - 1
    feats = d(x)
    assert L.feature_matching(feats, d(x), n_layers=3).item() == 0.0
    # Fake features from somewhere else: the loss must not reach D's parameters through the real side.
    fake = [[torch.randn_like(f, requires_grad=True) for f in fs] for fs in feats]
    loss = L.feature_matching(feats, fake, n_layers=3)
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is None for p in d.parameters())
    assert all(f.grad is not None for f in fake[0][:-1]) and fake[0][-1].grad is None  # logits excluded


def test_feature_matching_weights():
    real = [[torch.zeros(1, 2, 4, 4) for _ in range(5)] for _ in range(2)]
    fake = [[torch.full((1, 2, 4, 4), 1.0) for _ in range(5)] for _ in range(2)]
    # 2 D x 4 intermediate layers x |diff| 1, each weighted (1/2)·(4/(3+1)), times lambda 10
    assert L.feature_matching(real, fake, n_layers=3, lambda_feat=10.0).item() == pytest.approx(10 * 2 * 4 * 0.5)
    assert L.feature_matching(real, fake, n_layers=1, lambda_feat=1.0).item() == pytest.approx(2 * 4 * 0.5 * 2)


# -- losses ------------------------------------------------------------------------------------------

def test_adversarial_forms():
    z = torch.zeros(1, 1, 30, 30)
    assert L.adversarial("lsgan", z, 1.0).item() == 1.0  # MSE without the 1/2 (CycleGAN/reference)
    assert L.adversarial("nonsaturating", z, 1.0).item() == pytest.approx(math.log(2))
    assert L.d_adversarial("lsgan", z + 1, z).item() == 0.0
    assert L.d_adversarial("lsgan", z, z + 1).item() == pytest.approx(1.0)  # 0.5·(1 + 1)
    assert L.g_adversarial("lsgan", z + 1).item() == 0.0
    with pytest.raises(ValueError):
        L.adversarial("hinge", z, 1.0)


def test_cycle_error_zero_for_identity_generators():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    G = F = nn.Identity()
    assert L.cycle_loss(a, F(G(a)), b, G(F(b))).item() == 0.0
    assert L.cycle_loss(a, a + 0.5, b, b).item() == pytest.approx(10 * 0.5)  # λ = 10 per direction


def test_identity_loss_feeds_each_generator_its_target_domain():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g) + 2
    to_b = lambda t: b.expand_as(t)  # noqa: E731  a perfect G: A -> B that always outputs b
    to_a = lambda t: a.expand_as(t)  # noqa: E731
    # correct form |G(b) − b| + |F(a) − a| = 0; the seed's wrong |G(a) − a| + |F(b) − b| would be 2·|b − a|
    assert L.identity_loss(to_b, to_a, a, b).item() == 0.0
    assert L.identity_loss(nn.Identity(), nn.Identity(), a, b).item() == 0.0


@pytest.fixture(scope="module")
def vgg19_features():
    torchvision = pytest.importorskip("torchvision")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.vgg19(weights=None).features  # random weights: never downloaded


def test_vgg_perceptual_loss(vgg19_features):
    features = vgg19_features
    loss = L.VGGPerceptualLoss(features)
    assert len(loss.slices) == 5 and loss.weights == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    assert [type(s[-1]) for s in loss.slices] == [nn.ReLU] * 5  # ends at relu1_1 ... relu5_1
    y = torch.rand(1, 3, 32, 32) * 2 - 1
    fake = (y + 0.3 * torch.randn_like(y)).requires_grad_(True)
    assert loss(y, y).item() == 0.0
    value = loss(fake, y)
    value.backward()
    assert value.item() > 0 and fake.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in features.parameters())
    with pytest.raises(ValueError):
        L.VGGPerceptualLoss(nn.Sequential(nn.ReLU()))


# -- image pool --------------------------------------------------------------------------------------

def numbered(start, n):
    """Images whose pixel value is their id, so the pool's answers can be traced."""
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2)


def ids(batch):
    return batch[:, 0, 0, 0].long().tolist()


def test_image_pool_fills_first_then_swaps():
    pool = ImagePool(4, 0.5, torch.Generator().manual_seed(0))
    assert ids(pool.query(numbered(0, 3))) == [0, 1, 2]
    assert ids(pool.query(numbered(3, 1))) == [3] and len(pool) == 4
    stored = set(ids(torch.stack(pool.images)))
    assert stored == {0, 1, 2, 3}
    seen_old = seen_new = 0
    for start in range(4, 400):
        before = set(ids(torch.stack(pool.images)))
        (got,) = ids(pool.query(numbered(start, 1)))
        after = set(ids(torch.stack(pool.images)))
        if got == start:  # handed straight through: pool unchanged
            seen_new += 1
            assert after == before
        else:  # an old image comes back and the new one takes its slot
            seen_old += 1
            assert got in before and after == before - {got} | {start}
        assert len(pool) == 4
    assert seen_old and seen_new


def test_image_pool_is_seeded_and_swaps_half_the_time():
    def run(seed, n=4000):
        pool = ImagePool(50, 0.5, torch.Generator().manual_seed(seed))
        out = []
        for start in range(0, n, 4):
            out += ids(pool.query(numbered(start, 4)))
        return out

    first, again, other = run(7), run(7), run(8)
    assert first == again and first != other
    assert first[:50] == list(range(50))
    swapped = sum(got != i for i, got in enumerate(first[50:], start=50)) / (len(first) - 50)
    assert abs(swapped - 0.5) < 0.04  # 3950 draws: sd about 0.008


def test_image_pool_state_round_trip_and_size_zero():
    pool = ImagePool(5, 0.5, torch.Generator().manual_seed(3))
    pool.query(numbered(0, 8))
    state = pool.state_dict()
    expected = ids(pool.query(numbered(100, 6)))
    restored = ImagePool(1, 0.1, torch.Generator())
    restored.load_state_dict(state)
    assert restored.size == 5 and ids(restored.query(numbered(100, 6))) == expected
    x = numbered(0, 3)
    assert torch.equal(ImagePool(0).query(x), x)


# -- families ----------------------------------------------------------------------------------------

PIX_SMALL = {"generator": "unet_seed", "ngf": 8, "ndf": 8}


def test_pix2pix_translate_keeps_dropout_unless_configured_off():
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    m = build(Pix2Pix, **PIX_SMALL)
    y1, y2 = m.translate(x), m.translate(x)
    assert y1.shape == (1, 3, 64, 64) and not torch.equal(y1, y2)
    assert y1.abs().max() <= 1
    assert torch.equal(m.translate(x, sample_seeds=[5]), m.translate(x, sample_seeds=[5]))
    assert not torch.equal(m.translate(x, sample_seeds=[5]), m.translate(x, sample_seeds=[6]))
    assert not any(d.always_on or d.sample_generators for d in m.G.modules()
                   if isinstance(d, NoiseDropout))  # restored afterwards
    off = build(Pix2Pix, **PIX_SMALL, test_dropout=False)
    assert torch.equal(off.translate(x), off.translate(x))


def test_pix2pix_train_step_updates_both_networks():
    m = build(Pix2Pix, **PIX_SMALL, n_layers_D=1)
    assert m.D.blocks[0][0].in_channels == 6  # conditional: (input, output) pair
    g0, d0 = snapshot(m.G), snapshot(m.D)
    logs = m.train_step(PairDraw(), 0)
    assert {"D", "D/real", "D/fake", "G", "G/gan", "G/L1"} <= set(logs)
    assert logs["G"] == pytest.approx(logs["G/gan"] + 100 * logs["G/L1"], rel=1e-5)
    assert logs["D"] == pytest.approx(0.5 * (logs["D/real"] + logs["D/fake"]), rel=1e-5)
    assert changed(m.G, g0) and changed(m.D, d0)
    assert all(p.requires_grad for p in m.D.parameters())  # unfrozen after the G step


def test_pix2pix_l1_only_baseline_has_no_discriminator():
    m = build(Pix2Pix, **PIX_SMALL, l1_only=True)
    assert set(m.modules()) == {"G"} and set(m.optimizers()) == {"G"}
    g0 = snapshot(m.G)
    logs = m.train_step(PairDraw(), 0)
    assert set(logs) == {"G", "G/L1"} and changed(m.G, g0)


def test_pix2pix_config_checks_and_card():
    with pytest.raises(BenchError, match="multiple of 256"):
        build(Pix2Pix, res=128, resolution=128)
    with pytest.raises(BenchError, match="unknown config key"):
        build(Pix2Pix, lambda_l1=10)
    m = build(Pix2Pix, resolution=128, generator="unet_128", ngf=2, ndf=2, n_layers_D=5)
    assert m.resolution == 128 and m.latent_dim == 0 and m.task == "paired"
    assert m.card()["receptive_field"] == {"D": 286}
    with pytest.raises(NotImplementedError):
        m.generate(torch.zeros(1, 0))
    ins = m.inspect()
    assert isinstance(ins, Inspection) and set(ins) <= set(m.modules()) and ins.receptive_field == {"D": 286}
    assert ins["D"][-1][2] == (1, 2, 2)  # 128 -> 64 -> 32 -> 16 -> 8 -> 4 -> 3 -> 2


def test_cyclegan_train_step_pools_and_extra_state():
    cfg = {"resolution": 64, "ngf": 4, "ndf": 4, "n_blocks": 1, "pool_size": 3}
    m = build(CycleGAN, **cfg)
    assert m.task == "unpaired" and set(m.modules()) == {"G", "F", "D_A", "D_B"}
    before = {k: snapshot(v) for k, v in m.modules().items()}
    m.noise_rng.manual_seed(11)
    draw = PairDraw(batch=2)
    logs = m.train_step(draw, 0)
    assert {"G", "G/adv_G", "G/adv_F", "G/cycle", "G/identity", "D", "D/A", "D/B"} <= set(logs)
    assert logs["G"] == pytest.approx(logs["G/adv_G"] + logs["G/adv_F"] + logs["G/cycle"] + 5 * logs["G/identity"],
                                      rel=1e-5)
    assert all(changed(m.modules()[k], before[k]) for k in before)
    assert len(m.pool_A) == 2 and len(m.pool_B) == 2
    m.train_step(draw, 1)
    state = m.extra_state()
    probe = torch.rand(3, 3, 64, 64)
    expected = m.pool_A.query(probe.clone())
    other = build(CycleGAN, **cfg)
    other.load_extra_state(state)
    assert torch.equal(other.pool_A.query(probe.clone()), expected)
    a = torch.rand(1, 3, 64, 64) * 2 - 1
    assert m.translate(a).shape == (1, 3, 64, 64) and torch.equal(m.translate(a), m.translate(a))  # no test dropout
    assert m.translate_back(a).shape == (1, 3, 64, 64)
    assert m.receptive_fields() == {"D_A": 70, "D_B": 70}


def test_pix2pixhd_train_step_with_fm_and_vgg(vgg19_features):
    cfg = {"resolution": 32, "ngf": 4, "n_downsample_global": 2, "n_blocks_global": 1, "ndf": 4, "num_D": 2}
    m = build(Pix2PixHD, **cfg)
    with pytest.raises(RuntimeError, match="attach_vgg"):
        m.train_step(PairDraw(res=32), 0)
    m.attach_vgg(vgg19_features)
    g0, d0 = snapshot(m.G), snapshot(m.D)
    logs = m.train_step(PairDraw(res=32), 0)
    assert {"G", "G/gan", "G/feat", "G/vgg", "D", "D/real", "D/fake"} <= set(logs)
    assert logs["G"] == pytest.approx(logs["G/gan"] + logs["G/feat"] + logs["G/vgg"], rel=1e-5)
    assert changed(m.G, g0) and changed(m.D, d0)
    assert m.translate(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert m.receptive_fields() == {"D": [70, 141]}


def test_pix2pixhd_local_enhancer_trains_without_vgg():
    cfg = {"resolution": 32, "generator": "local", "ngf": 8, "n_downsample_global": 2, "n_blocks_global": 1,
           "n_blocks_local": 1, "ndf": 4, "num_D": 2, "lambda_vgg": 0, "pool_size": 2}
    m = build(Pix2PixHD, **cfg)
    g0 = snapshot(m.G)
    logs = m.train_step(PairDraw(res=32), 0)
    assert "G/vgg" not in logs and changed(m.G, g0)
    assert set(m.extra_state()) == {"pool", "pool_seeded"} and len(m.pool) == 2
    with pytest.raises(BenchError, match="multiple of 8"):
        build(Pix2PixHD, **{**cfg, "resolution": 36})

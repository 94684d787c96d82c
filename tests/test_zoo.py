import pytest
import torch
from torch import nn

from bench.cli import main
from bench.errors import BenchError
from zoo import ZOO
from zoo.base import DataSpec, buffer_count, count_params

MNIST = DataSpec("mnist", 28, 1, 10)


def test_mnist_gan_parameter_counts_match_the_seed():
    m = ZOO.get("mnist_gan").build({}, MNIST)
    assert count_params(m.G) == 840_065
    assert count_params(m.D) == 213_121
    # Keras counts BN moving mean/var as non-trainable: 128 in G, 256 in D.
    assert buffer_count(m.G) == 128 and buffer_count(m.D) == 256


def test_mnist_gan_shapes_follow_the_seed_table():
    m = ZOO.get("mnist_gan").build({}, MNIST)
    shapes = {path: shape for path, _, shape, _ in m.inspect()["G"]}
    assert shapes["project"] == (6272,)
    assert shapes["up1"] == (64, 14, 14)
    assert shapes["up2"] == (1, 28, 28)
    d = {path: shape for path, _, shape, _ in m.inspect()["D"]}
    assert d["conv1"] == (64, 14, 14) and d["conv2"] == (128, 7, 7) and d["fc"] == (1,)
    z = torch.randn(5, 100)
    x = m.generate(z)
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert m.D(x).shape == (5, 1)


def test_mnist_gan_bn_placement_and_no_activation_after_dense():
    m = ZOO.get("mnist_gan").build({}, MNIST)
    g_types = [type(l).__name__ for l in m.G.children()]
    assert g_types == ["Linear", "ConvTranspose2d", "BatchNorm2d", "ConvTranspose2d"]
    d_types = [type(l).__name__ for l in m.D.children()]
    assert d_types == ["Conv2d", "Conv2d", "BatchNorm2d", "Linear"]  # no BN on D's first layer


def test_mnist_gan_train_step_uses_smoothed_real_target_and_updates_both_nets():
    torch.manual_seed(0)
    m = ZOO.get("mnist_gan").build({}, MNIST)
    assert m.cfg.real_target == 0.9
    g0 = [p.clone() for p in m.G.parameters()]
    d0 = [p.clone() for p in m.D.parameters()]
    m.noise_rng.manual_seed(0)
    batch = torch.rand(8, 1, 28, 28) * 2 - 1
    losses = m.train_step(lambda: batch, 0)  # the family pulls its real batch from the runner
    assert set(losses) >= {"D", "D/real", "D/fake", "G"}
    assert any(not torch.equal(a, b) for a, b in zip(g0, m.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, m.D.parameters()))


@pytest.mark.parametrize("res,channels,g_widths", [(32, 3, [256, 128]), (64, 1, [256, 128, 64]),
                                                   (64, 3, [256, 128, 64])])
def test_dcgan_shapes(res, channels, g_widths):
    m = ZOO.get("dcgan").build({"resolution": res}, DataSpec("x", res, channels, 0))
    x = m.generate(torch.randn(2, 100))
    assert x.shape == (2, channels, res, res)
    convs = [l for l in m.G.body if isinstance(l, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == g_widths + [channels]
    assert m.G.start == 512
    dconvs = [l for l in m.D.body if isinstance(l, nn.Conv2d)]
    expect_d = [64, 128, 256] if res == 32 else [64, 128, 256, 512]
    assert [c.out_channels for c in dconvs] == expect_d
    assert m.D.fc.in_features == 4 * 4 * expect_d[-1]  # 8192 at 64 px, as the seed table says
    # no BN right after D's input conv, none after G's output conv
    assert isinstance(m.D.body[1], nn.LeakyReLU)
    assert isinstance(m.G.body[-1], nn.Tanh) and isinstance(m.G.body[-2], nn.ConvTranspose2d)


def test_dcgan_init_is_normal_0_02():
    torch.manual_seed(0)
    m = ZOO.get("dcgan").build({}, DataSpec("x", 32, 3, 0))
    w = torch.cat([l.weight.flatten() for l in m.G.body if isinstance(l, nn.ConvTranspose2d)])
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001


def test_unknown_config_key_lists_valid_ones():
    with pytest.raises(BenchError, match="unknown config key 'ngff'.*ngf"):
        ZOO.get("dcgan").build({"ngff": 3}, MNIST)
    with pytest.raises(BenchError, match="not one of 32, 64"):
        ZOO.get("dcgan").build({"resolution": 48}, MNIST)


def test_unknown_zoo_name_suggests():
    with pytest.raises(BenchError, match="did you mean 'dcgan'.*valid: cdcgan, cyclegan, dcgan, external, mlp_gan, mnist_gan, pix2pix"):
        ZOO.get("dcgann")


def test_zoo_cli_list_and_inspect(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist_gan" in out and "840,065" in out and "213,121" in out
    assert main(["zoo", "inspect", "dcgan", "resolution=64", "--channels", "3"]) == 0
    out = capsys.readouterr().out
    assert "3x64x64" in out and "8192" in out
    assert main(["zoo", "inspect", "dcgan", "resolution=63"]) == 2
    assert "not one of" in capsys.readouterr().err


# --- declared capabilities (zoo/base.py): what a family can do is inherited, never probed ---------------------

def test_each_family_declares_exactly_the_capabilities_it_has():
    from zoo.base import Classifier, CycleTranslator, ExternalWeights, StyleSampler, Translator

    declared = {name: {c.__name__ for c in (Translator, CycleTranslator, StyleSampler, Classifier, ExternalWeights)
                       if issubclass(ZOO.get(name), c)} for name in ZOO.names()}
    assert declared == {
        "cyclegan": {"Translator", "CycleTranslator"}, "pix2pix": {"Translator"}, "pix2pixhd": {"Translator"},
        "pix2pixhd_sem": {"Translator"}, "stylegan": {"StyleSampler"}, "sgan": {"Classifier"},
        "dcgan": set(), "mlp_gan": set(), "mnist_gan": set(), "progan": set(), "wgan": set(), "wgan_gp": set(),
        "external": {"ExternalWeights"}, "cdcgan": set()}
    # and each declared method is really there and callable (an abstract one would refuse to build)
    assert [n for n in ZOO.names() if getattr(ZOO.get(n), "__abstractmethods__", None)] == []
    assert {n for n in ZOO.names() if ZOO.get(n).uses_segmenter} == {"pix2pixhd_sem"}


def test_metric_inputs_follow_the_declared_capabilities():
    from bench.metrics.base import inputs_of

    def meta(name, data, **cfg):  # shapes only: nothing allocated, as preflight builds
        with torch.device("meta"):
            return ZOO.get(name).build(cfg, data, "meta")

    base = {"fake", "real+fake"}
    rgb = DataSpec("x", 256, 3)
    assert inputs_of(meta("dcgan", MNIST)) == base | {"generator"}
    assert inputs_of(meta("sgan", MNIST)) == base | {"generator", "labels"}
    assert inputs_of(meta("stylegan", rgb, resolution=256)) == base | {"generator", "style"}
    assert inputs_of(meta("progan", rgb, resolution=256)) == base | {"generator"}
    assert inputs_of(meta("pix2pix", rgb)) == base | {"paired"}
    assert inputs_of(meta("cyclegan", rgb)) == base | {"cycle"}


def test_extras_are_requested_by_config_not_probed():
    facades = DataSpec("facades", 256, 3)
    hd = ZOO.get("pix2pixhd")
    with torch.device("meta"):
        assert hd.build({"resolution": 256, "lambda_vgg": 10.0}, facades, "meta").requires() == {"vgg19"}
        assert hd.build({"resolution": 256, "lambda_vgg": 0.0}, facades, "meta").requires() == frozenset()
    assert ZOO.get("dcgan").build({}, MNIST).requires() == frozenset()
    assert ZOO.get("dcgan").build({}, MNIST).figures("unused") == {}  # no family figures, nothing written


def test_no_capability_sniffing_outside_the_zoo():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "bench"
    found = [f"{p.relative_to(root.parent)}:{i}" for p in root.rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\bhasattr\(|getattr\((model|built|m|self\.model)\b", line)]
    assert found == [], found


def test_the_mlflow_layout_is_spelled_in_one_place():
    """Tags are written and read only through bench/tracking/layout.py: a literal tag name anywhere else
    could drift from what the other side writes (the leaderboard once read a tag nothing wrote)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "bench"
    literal = re.compile(r"""["'`]bench\.[a-z_]+|["'`]?mlflow\.parentRunId""")
    found = [f"{p.relative_to(root.parent)}:{i}" for p in root.rglob("*.py") if p.name != "layout.py"
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if literal.search(line) and not line.lstrip().startswith(("#", "import", "from"))]
    assert found == [], found

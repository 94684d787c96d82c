"""pix2pixhd_sem, the 004 Pix2PixHD variant (issue 6): G/D shapes and parameter counts, the frozen semantic
network S (never updated, in no optimiser), L_sem and its weight, the super-resolution data (x is y
downscaled), S's seeded training and cache, the seg_agreement metric, hostile inputs and one protocol
end to end. Everything that runs uses a few channels and 32 px; big networks are built on the meta device.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bench import entries, evaluation
from bench.cli import main
from bench.data.superres import FACADES_PALETTE, degrade, label_ids, load_facades_sr, load_superres
from bench.data.transforms import to_float
from bench.errors import BenchError
from bench.features import segmenter as semantic
from bench.features.segmenter import FrozenSegmenter, SegmenterRecipe, SegNet, get_segmenter, train_segmenter
from bench.metrics import METRICS
from bench.metrics.base import MetricContext, MetricUnavailable
from bench.protocol.schema import DatasetSpec, EvaluationSpec
from bench.runner.distributed import SINGLE
from bench.runner.sampling import real_batches, stream_features
from bench.runner.seeding import derive
from bench.runner.train import Draw
from tests.conftest import write_protocol
from tests.test_batch_invariance import tiny_extractor
from zoo.base import DataSpec, count_params
from zoo.cyclegan import ResnetGenerator
from zoo.pix2pixhd import Pix2PixHD
from zoo.pix2pixhd_sem import Pix2PixHDSem, semantic_loss

META = torch.device("meta")
TINY = dict(resolution=32, ngf=4, ndf=4, n_blocks=1, num_D=2)
K = len(FACADES_PALETTE)


def build(res=32, **cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Pix2PixHDSem.build({"resolution": res, **cfg}, DataSpec("sr", res, 3))


def tiny_S(classes=K, seed=0):
    """A small SegNet with non-trivial BatchNorm statistics, frozen as the runner hands it over."""
    torch.manual_seed(seed)
    net = SegNet(3, classes, width=4, depth=2)
    with torch.no_grad():
        net.train()(torch.rand(4, 3, 32, 32) * 2 - 1)  # move the running statistics off their init
    return FrozenSegmenter(net, {"sha256": "test"})


class PairDraw:
    def __init__(self, batch=2, res=32, seed=1):
        self.g, self.shape = torch.Generator().manual_seed(seed), (batch, 3, res, res)

    def __call__(self):
        return torch.rand(self.shape, generator=self.g) * 2 - 1, torch.rand(self.shape, generator=self.g) * 2 - 1


def facades_like(root, counts=(("train", 6), ("val", 3), ("test", 3)), size=32, seed=0):
    """pix2pix-style AB files (photo | colour-coded label map), lossless PNG; returns {split: [ids, ...]}."""
    rng = np.random.default_rng(seed)
    palette = np.array(FACADES_PALETTE, dtype=np.uint8)
    out = {}
    for split, n in counts:
        (root / split).mkdir(parents=True, exist_ok=True)
        out[split] = []
        for i in range(n):
            ids = np.zeros((size, size), dtype=np.uint8)
            for _ in range(4):
                y, x = rng.integers(0, size - 8, 2)
                ids[y:y + 8, x:x + 8] = rng.integers(0, K)
            photo = (palette[ids].astype(int) // 2 + rng.integers(0, 100, (size, size, 3))).astype(np.uint8)
            Image.fromarray(np.concatenate([photo, palette[ids]], 1)).save(root / split / f"{i}.png")
            out[split].append(ids)
    return out


def sr_spec(folder, **kw):
    base = dict(name="facades_sr", root=str(folder), resolution=32, channels=3, train_size=6, eval_size=6, scale=4)
    return DatasetSpec(**{**base, **kw})


# -- G and D ------------------------------------------------------------------------------------------

def _grid(side: int, n_layers: int = 3) -> int:
    """Output side of one k4 PatchGAN with padding 2: n_layers stride-2 convs, then two stride-1."""
    for _ in range(n_layers):
        side = side // 2 + 1
    return side + 2


@pytest.mark.parametrize("res", [64, 128, 256])
def test_generator_and_multiscale_d_shapes(res):
    with torch.device(META):
        m = Pix2PixHDSem.build({"resolution": res}, DataSpec("sr", res, 3), META)
        out = m.G(torch.zeros(2, 3, res, res))
        feats = m.D(torch.zeros(2, 6, res, res))  # conditional: concat(x, image)
    assert tuple(out.shape) == (2, 3, res, res)
    assert len(feats) == 3 and all(len(f) == 5 for f in feats)  # 3 scales, n_layers + 2 blocks each
    assert [tuple(f[-1].shape) for f in feats] == [(2, 1, _grid(res >> k), _grid(res >> k)) for k in range(3)]


def test_parameter_counts():
    with torch.device(META):
        m = Pix2PixHDSem.build({}, DataSpec("sr", 256, 3), META)
        hd = Pix2PixHD.build({"resolution": 256}, DataSpec("sr", 256, 3), META)
        resnet = ResnetGenerator(3, 3, 64, 9)
        cpu = Pix2PixHDSem.build({"resolution": 128, "ngf": 16, "ndf": 16, "n_blocks": 6}, DataSpec("sr", 128, 3), META)
    # Additive encoder→decoder skips add no parameter: G is CycleGAN's resnet_9blocks (11,378,179 for RGB).
    assert count_params(m.G) == count_params(resnet) == 11_378_179
    # The multi-scale D is pix2pixHD's: 3 x 2,767,809 on the 6-channel conditional pair.
    assert count_params(m.D) == count_params(hd.D) == 8_303_427
    # The reduced networks of protocols/facades-sr.yaml.
    assert (count_params(cpu.G), count_params(cpu.D)) == (494_083, 527_571)
    assert m.card()["params"] == {"G": 11_378_179, "D": 8_303_427}


def test_encoder_decoder_skips_carry_the_input():
    m = build(**TINY)
    with torch.no_grad():
        for p in m.G.up[0].parameters():  # the first decoder block now outputs zeros whatever it is fed
            p.zero_()
        a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
        # Only the skips from the encoder can make the two outputs differ.
        assert not torch.allclose(m.G.eval()(a), m.G(b))


def test_config_errors_are_one_line():
    with pytest.raises(BenchError, match="multiple of 4"):
        build(res=30)
    with pytest.raises(BenchError, match="lambda_L1 and lambda_sem must be >= 0"):
        build(lambda_sem=-1.0)
    with pytest.raises(BenchError, match="unknown config key 'lambda_vgg'"):
        build(lambda_vgg=1.0)


def test_bicubic_baseline_returns_its_input_and_trains_nothing():
    m = build(generator="bicubic")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(m.translate(x), x)
    assert m.modules().keys() == {"G"} and m.optimizers() == {} and "segmenter" not in m.requires()
    assert m.card()["params"] == {"G": 0}
    with pytest.raises(BenchError, match="nothing to train"):
        m.train_step(PairDraw(), 0)


# -- S: frozen, never updated ---------------------------------------------------------------------------

def test_S_receives_no_gradient_updates():
    m = build(**TINY)
    S = tiny_S()
    m.attach_segmenter(S)
    before = {k: v.clone() for k, v in S.state_dict().items()}
    g_before = [p.detach().clone() for p in m.G.parameters()]
    draw = PairDraw()
    for step in range(3):
        logs = m.train_step(draw, step)
        assert logs["G/sem"] > 0
    after = S.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics, bit for bit
    assert all(p.grad is None and not p.requires_grad for p in S.parameters())
    in_optimisers = {id(p) for o in m.optimizers().values() for g in o.param_groups for p in g["params"]}
    assert not in_optimisers & {id(p) for p in S.parameters()}
    assert all(S is not mod for mod in m.modules().values()) and set(m.modules()) == {"G", "D"}
    assert not S.training and not S.train(True).training  # stays in eval mode whatever it is asked
    assert any(not torch.equal(a, b) for a, b in zip(g_before, m.G.parameters()))  # G did train
    assert m.card()["semantic_net"] == {"sha256": "test"}


def test_semantic_loss_is_zero_when_output_equals_target():
    S = tiny_S()
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    assert semantic_loss(S, y.clone(), y).item() == 0.0
    assert semantic_loss(S, y.clone(), y, "logits").item() == 0.0
    other = torch.rand(2, 3, 32, 32) * 2 - 1
    soft = semantic_loss(S, other, y).item()
    assert 0 < soft <= 2 / K  # probabilities: at most 2 per pixel summed over classes, averaged over K
    assert semantic_loss(S, other, y, "logits").item() > 0


def test_semantic_loss_gradient_reaches_the_output_not_S():
    S = tiny_S()
    fake = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    semantic_loss(S, fake, torch.rand(1, 3, 32, 32) * 2 - 1).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in S.parameters())


class Boom(nn.Module):
    def forward(self, x):
        raise AssertionError("S must not run when lambda_sem is 0")


def test_lambda_sem_zero_removes_the_term():
    m = build(**TINY, lambda_sem=0.0)
    assert "segmenter" not in m.requires()
    m.attach_segmenter(Boom())
    logs = m.train_step(PairDraw(), 0)
    assert "G/sem" not in logs and logs["G"] == pytest.approx(logs["G/gan"] + 100 * logs["G/L1"], rel=1e-5)
    with_sem = build(**TINY)
    with pytest.raises(RuntimeError, match="attach_segmenter"):
        with_sem.train_step(PairDraw(), 0)
    with_sem.attach_segmenter(tiny_S())
    logs = with_sem.train_step(PairDraw(), 0)
    assert logs["G"] == pytest.approx(logs["G/gan"] + 100 * logs["G/L1"] + 10 * logs["G/sem"], rel=1e-5)


# -- data ------------------------------------------------------------------------------------------------

def test_input_is_a_bicubic_downscaled_copy_of_the_target(tmp_path):
    facades_like(tmp_path)
    d = load_facades_sr(sr_spec(tmp_path), 0)
    assert d.task == "paired" and d.scale == 4 and d.eval_inputs.shape == d.eval_images.shape == (6, 3, 32, 32)
    for x, y in zip(d.eval_inputs, d.eval_images):
        # Independently: Pillow's bicubic down to 8 px and back up to 32 px.
        im = Image.fromarray(y.permute(1, 2, 0).numpy())
        ref = np.asarray(im.resize((8, 8), Image.BICUBIC).resize((32, 32), Image.BICUBIC)).astype(int)
        assert np.abs(x.permute(1, 2, 0).numpy().astype(int) - ref).max() <= 2
        assert np.abs(x.numpy().astype(int) - y.numpy().astype(int)).mean() > 5  # detail really was lost
    assert torch.equal(d.train_inputs, degrade(d.train_images, 4))


def test_facades_label_maps_and_S_data(tmp_path):
    ids = facades_like(tmp_path)
    d = load_facades_sr(sr_spec(tmp_path), 0)
    held = ids["test"] + ids["val"]  # the held-out pool is test/ then val/, every file taken here
    assert torch.equal(d.eval_label_maps, torch.from_numpy(np.stack(held)))
    assert d.has_label_maps and d.class_names[0] == "background" and len(d.class_names) == K
    assert torch.equal(d.seg_train[1], torch.from_numpy(np.stack(ids["train"])))  # S trains on all of train/
    assert torch.equal(d.seg_heldout[1], torch.from_numpy(np.stack(ids["val"])))  # and is measured on val/
    # JPEG-like noise on a colour still maps to its class
    noisy = np.array(FACADES_PALETTE, dtype=int)[[3, 7]].T.reshape(3, 1, 2) + np.array([[[9]], [[-8]], [[6]]])
    assert label_ids(noisy.clip(0, 255).astype(np.uint8)).tolist() == [[3, 7]]


def test_jitter_crops_input_and_target_at_the_same_offset(tmp_path):
    facades_like(tmp_path)
    d = load_facades_sr(sr_spec(tmp_path, load_size=40, flip=True), 0)
    d.flip = True
    assert d.train_images.shape[-1] == 40 and torch.equal(d.train_inputs, degrade(d.train_images, 4))

    class M:
        resolution, labelled_per_class, device = 32, 0, torch.device("cpu")

    draw = Draw(d.train_images, None, 4, 0, M(), "resize", SINGLE, inputs=d.train_inputs, paired=True, crop=32,
                flip=True)
    x, y = draw()
    to_u8 = lambda t: t.mul(127.5).add(127.5).round().to(torch.uint8)  # noqa: E731
    for xi, yi in zip(to_u8(x), to_u8(y)):
        found = [(img, oy, ox, f) for img in range(6) for oy in range(9) for ox in range(9) for f in (0, 1)
                 if torch.equal(yi, (lambda c: c.flip(-1) if f else c)(d.train_images[img, :, oy:oy + 32, ox:ox + 32]))]
        assert found
        img, oy, ox, f = found[0]
        crop = d.train_inputs[img, :, oy:oy + 32, ox:ox + 32]
        assert torch.equal(xi, crop.flip(-1) if f else crop)


def test_generic_superres_folder_and_ab_half(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(10):
        arr = np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)  # not square: centre-cropped
        Image.fromarray(arr).save(flat / f"{i}.png")
    d = load_superres(DatasetSpec(name="superres", root=str(flat), resolution=32, channels=3, train_size=6,
                                  eval_size=4), 0)
    assert d.train_images.shape == (6, 3, 32, 32) and d.eval_images.shape == (4, 3, 32, 32)
    assert not d.has_label_maps and d.scale == 4  # the stated default
    assert not semantic.available(d)
    ab = tmp_path / "ab"
    facades_like(ab)
    da = load_superres(sr_spec(ab, name="superres", ab_half="A"), 0)
    db = load_superres(sr_spec(ab, name="superres", ab_half="B"), 0)
    df = load_facades_sr(sr_spec(ab), 0)
    assert torch.equal(da.eval_images, df.eval_images) and not torch.equal(db.eval_images, df.eval_images)


@pytest.mark.parametrize("kw,msg", [
    (dict(resolution=30), "not a multiple of dataset.scale 4"),
    (dict(scale=3), "not a multiple of dataset.scale 3"),
    (dict(load_size=42), "load_size 42 is not a multiple"),
    (dict(ab_half="B"), "can only be A"),
    (dict(root="/nonexistent/facades"), "not found"),
    (dict(train_size=7), "train_size 7 exceeds"),
    (dict(name="superres", root=None), "needs dataset.root"),
    (dict(channels=1), "RGB"),
])
def test_hostile_data_inputs_are_bench_errors(tmp_path, kw, msg):
    facades_like(tmp_path)
    loader = load_superres if kw.get("name") == "superres" else load_facades_sr
    with pytest.raises(BenchError, match=msg):
        loader(sr_spec(tmp_path, **kw), 0)


def test_bad_scale_is_rejected_by_the_schema(tmp_path, capsys):
    p = write_protocol(tmp_path / "bad.yaml", PROTOCOL.format(
        root=tmp_path.as_posix(), scale=1, entries="  - {name: b, zoo: pix2pixhd_sem, config: {resolution: 32}, "
                                                   "train: {steps: 0}}", store=tmp_path.as_posix(),
        weights=("x.pth", "0" * 64)))
    assert main(["validate", str(p)]) == 2
    assert "scale" in capsys.readouterr().err


# -- S: seeded training, cache, scores ------------------------------------------------------------------

TINY_RECIPE = SegmenterRecipe(width=4, depth=2, steps=4, batch_size=2)


def _seg_data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 16, 16), generator=g, dtype=torch.uint8)
    maps = (images[:, 0] > 127).to(torch.uint8)  # a learnable rule: class = red channel above mid-grey
    return images, maps


def test_segmenter_training_is_seeded_and_deterministic():
    images, maps = _seg_data()
    a = train_segmenter(images, maps, 2, TINY_RECIPE).state_dict()
    b = train_segmenter(images, maps, 2, TINY_RECIPE).state_dict()
    c = train_segmenter(images, maps, 2, SegmenterRecipe(**{**TINY_RECIPE.__dict__, "seed": 1})).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_segmenter_cache_hits_the_second_time(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    images, maps = _seg_data()
    first = get_segmenter(images, maps, images[:2], maps[:2], 2, recipe=TINY_RECIPE)
    second = get_segmenter(images, maps, images[:2], maps[:2], 2, recipe=TINY_RECIPE)
    assert (first.info["cache"], second.info["cache"]) == ("miss", "hit")
    assert first.info["sha256"] == second.info["sha256"] and len(list((tmp_path / "segmenters").glob("*.pt"))) == 1
    assert 0 <= second.info["heldout_pixel_accuracy"] <= 1 and 0 <= second.info["heldout_miou"] <= 1
    assert not second.training and all(not p.requires_grad for p in second.parameters())


def test_confusion_scores():
    truth = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    s = semantic.scores(semantic.confusion(pred, truth, 3))  # class 2 never occurs: left out of the mean
    assert s["pixel_accuracy"] == 0.75 and s["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def seg_data_set():
    images, maps = _seg_data()
    return SimpleNamespace(has_label_maps=True, seg_train=(images, maps), seg_heldout=(images[:2], maps[:2]),
                           class_names=["dark", "red"], spec=SimpleNamespace(name="tiny"))


def test_the_judge_S_is_a_second_network_of_the_same_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(semantic, "RECIPE", TINY_RECIPE)
    monkeypatch.setattr(semantic, "_LOADED", {})
    data = seg_data_set()
    training, judge = (semantic.for_data(data, role=role) for role in ("training", "judge"))
    assert semantic.for_data(data, role="judge") is judge  # trained once per process, then shared
    assert (training.info["role"], judge.info["role"]) == ("training", "judge")
    assert training.info["seed"] == TINY_RECIPE.seed
    assert judge.info["seed"] == derive(TINY_RECIPE.seed, "segmenter", "judge")
    assert semantic.recipe_for("judge", TINY_RECIPE) == SegmenterRecipe(**{**TINY_RECIPE.__dict__,
                                                                          "seed": judge.info["seed"]})
    assert training.info["sha256"] != judge.info["sha256"]
    a, b = training.state_dict(), judge.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    assert len(list((tmp_path / "segmenters").glob("*.pt"))) == 2  # each under its own cache key
    with pytest.raises(ValueError, match="unknown segmenter role"):
        semantic.recipe_for("loss")
    protocol = SimpleNamespace(evaluation=SimpleNamespace(metrics=["seg_agreement"]))
    assert semantic.for_run(protocol, data, True) == {"training": training, "judge": judge}  # e.g. pix2pixhd_sem
    assert semantic.for_run(protocol, data, False) == {"judge": judge}  # e.g. pix2pix
    protocol.evaluation.metrics = ["psnr"]
    assert semantic.for_run(protocol, data, False) == {}


def test_seg_agreement_is_measured_by_the_judge_not_by_the_S_the_model_trained_against(monkeypatch):
    S_train = channel_S()
    S_judge = channel_S()
    with torch.no_grad():
        S_judge.net.weight.copy_(torch.eye(3)[[1, 2, 0]].view(3, 3, 1, 1))  # reads the channels in another order
    roles = {"training": S_train, "judge": S_judge}
    monkeypatch.setattr(semantic, "for_data", lambda data, device="cpu", *, role: roles[role])
    contexts = []

    def spy(*args, **kwargs):
        contexts.append(MetricContext(*args, **kwargs))
        return contexts[-1]

    monkeypatch.setattr(evaluation, "MetricContext", spy)
    g = torch.Generator().manual_seed(3)
    inputs, targets = (torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8) for _ in range(2))
    maps = S_train(to_float(targets)).argmax(1)  # the training S reads the targets perfectly, the judge does not
    data = SimpleNamespace(spec=DataSpec("sr", 32, 3), eval_inputs=inputs, eval_images=targets, eval_labels=None,
                           task="paired", has_label_maps=True, eval_label_maps=maps)
    entry = SimpleNamespace(name="sem", zoo="pix2pixhd_sem", config=TINY)
    model, _ = entries.build_entry(entry, SimpleNamespace(seed=0), data, torch.device("cpu"))
    assert model.S is S_train  # L_sem trains against the training S
    protocol = SimpleNamespace(evaluation=EvaluationSpec(n_samples=4, seeds=[0], batch_size=3,
                                                         metrics=["seg_agreement"]),
                               dataset=SimpleNamespace(resolution=32, channels=3, frame=(32, 32)))
    extractor = tiny_extractor(3)
    real, stats = stream_features(real_batches(targets, 3), extractor, "real", 4)
    out = evaluation.evaluate(model, extractor, real, stats.as_fid_stats(), protocol, "resize", {}, data)
    assert contexts[0].segmenter is S_judge
    with torch.no_grad():
        judge_ceiling = semantic.scores(semantic.confusion(S_judge(to_float(targets)).argmax(1), maps, 3))
    assert out["seg_agreement/ceiling"]["mean"] == judge_ceiling["pixel_accuracy"] < 1.0  # the training S gets 1


# -- the metric ------------------------------------------------------------------------------------------

def channel_S():
    """A segmenter whose class is the strongest colour channel: varied, known predictions on random images."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv.bias.zero_()
    return FrozenSegmenter(conv)


def test_seg_agreement_metric():
    S = channel_S()
    g = torch.Generator().manual_seed(3)
    targets = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    maps = S(targets).argmax(1)  # "true" labels that S gets exactly right on the targets
    metric = METRICS.get("seg_agreement")

    def ctx(outputs, segmenter=S):
        return MetricContext(0, None, pairs=lambda: iter([(outputs[:3], targets[:3]), (outputs[3:], targets[3:])]),
                             segmenter=segmenter, label_maps=maps)

    same = metric.compute(ctx(targets.clone()))
    assert same == {"seg_agreement": 1.0, "seg_agreement/label": 1.0, "seg_agreement/label_miou": 1.0,
                    "seg_agreement/ceiling": 1.0}
    noise = metric.compute(ctx(torch.rand(4, 3, 32, 32, generator=g) * 2 - 1))
    assert noise["seg_agreement"] < 1 and noise["seg_agreement"] == noise["seg_agreement/label"]
    with pytest.raises(MetricUnavailable, match="semantic network S"):
        metric.compute(ctx(targets, segmenter=None))


# -- end to end ------------------------------------------------------------------------------------------

PROTOCOL = """
name: sr
seed: 0
dataset: {{name: facades_sr, root: "{root}", resolution: 32, channels: 3, train_size: 6, eval_size: 6,
          scale: {scale}, flip: true}}
entries:
{entries}
evaluation: {{n_samples: 4, seeds: [0], batch_size: 2, extractor: inception-v3-compat,
              metrics: [ssim, psnr, seg_agreement], weights: {{path: "{weights[0]}", sha256: {weights[1]}}}}}
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


def test_protocol_end_to_end_with_S_and_the_bicubic_baseline(tmp_path, monkeypatch, inception_standin):
    monkeypatch.setattr(semantic, "RECIPE", TINY_RECIPE)
    data = tmp_path / "facades"
    facades_like(data)
    entries = ("  - {name: sem, zoo: pix2pixhd_sem, config: {resolution: 32, ngf: 4, ndf: 4, n_blocks: 1, num_D: 2},"
               " train: {steps: 2, batch_size: 2}}\n"
               "  - {name: bicubic, zoo: pix2pixhd_sem, config: {resolution: 32, generator: bicubic}, train: {steps: 0}}")
    p = write_protocol(tmp_path / "sr.yaml", PROTOCOL.format(root=data.as_posix(), scale=4, entries=entries,
                                                             store=tmp_path.as_posix(), weights=inception_standin))
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 0
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    # `identity` is the real-data row (evaluation.reference): the input, already the bicubic upsampling, as output
    assert set(rows) == {"sem", "bicubic", "identity"} and all(r["status"] == "FINISHED" for r in rows.values())
    nets = rows["sem"]["info"]["semantic_nets"]
    assert rows["bicubic"]["info"]["semantic_nets"] == nets  # one S per role for the whole run, in every result
    assert {role: info["role"] for role, info in nets.items()} == {"training": "training", "judge": "judge"}
    assert nets["training"]["seed"] == TINY_RECIPE.seed != nets["judge"]["seed"]
    assert nets["judge"]["seed"] == semantic.recipe_for("judge", TINY_RECIPE).seed
    assert nets["training"]["sha256"] != nets["judge"]["sha256"]  # the model is not measured by the S it trained on
    for r in rows.values():
        m = r["metrics"]
        assert 0 <= m["seg_agreement"]["mean"] <= 1 and -1 <= m["ssim"]["mean"] <= 1 and m["psnr"]["mean"] > 0
    assert rows["bicubic"]["metrics"]["seg_agreement/ceiling"] == rows["sem"]["metrics"]["seg_agreement/ceiling"]
    assert rows["identity"]["info"]["baseline"] == "identity"
    assert rows["identity"]["metrics"] == rows["bicubic"]["metrics"]  # G = nn.Identity(): the same outputs


def test_L_sem_on_data_without_label_maps_fails_before_anything_is_written(tmp_path, capsys, inception_standin):
    flat = tmp_path / "imgs"
    flat.mkdir()
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(flat / f"{i}.png")
    text = PROTOCOL.format(root=flat.as_posix(), scale=4, store=tmp_path.as_posix(), weights=inception_standin,
                           entries="  - {name: sem, zoo: pix2pixhd_sem, config: {resolution: 32}, train: {steps: 1}}")
    p = write_protocol(tmp_path / "bad.yaml", text.replace("facades_sr", "superres").replace("eval_size: 6",
                                                                                              "eval_size: 2"))
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 2
    assert "set lambda_sem: 0" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "w").exists()


def test_training_the_bicubic_baseline_is_refused_up_front(tmp_path, capsys, inception_standin):
    facades_like(tmp_path / "facades")
    p = write_protocol(tmp_path / "bad.yaml", PROTOCOL.format(
        root=(tmp_path / "facades").as_posix(), scale=4, store=tmp_path.as_posix(), weights=inception_standin,
        entries="  - {name: b, zoo: pix2pixhd_sem, config: {resolution: 32, generator: bicubic}, train: {steps: 5}}"))
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 2
    assert "has nothing to train with this config; use train: {steps: 0}" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()

"""pix2pixHD's instance-wise feature encoder (Wang et al. 2018, §3.4; `feat_num` > 0): E's output pooled per
instance, G's input widened by feat_num (D's not), the label-map loader's instance ids (aligned with the boundary
channel, flipped with the input), k-means centres per class fixed after training and drawn per evaluation seed,
resume, the multimodal figure, and feat_num 0 leaving everything as it was."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bench.cli import main
from bench.data import load_dataset
from bench.data.labelmap import LabelMapSpec, LabelMaps, boundary_map, render_inputs
from bench.data.transforms import to_float
from bench.protocol.load import canonical, load_protocol
from bench.protocol.schema import DatasetSpec, TrainSpec
from bench.runner import checkpoint
from bench.runner.distributed import SINGLE
from bench.runner.sampling import translate_inputs, translated_floats
from bench.runner.train import Draw, train_entry
from tests.conftest import REPO, needs_data
from zoo import ZOO
from zoo.base import LATER_CONFIG_KEYS, InstanceTranslator, config_record
from zoo.pix2pixhd import Config, Encoder, instance_mean, kmeans

NEW_KEYS = {"feat_num", "nef", "n_downsample_E", "n_clusters"}
TINY = dict(ngf=4, ndf=4, n_downsample_global=2, n_blocks_global=1, num_D=1, n_layers_D=1, lambda_vgg=0,
            nef=4, n_downsample_E=2)


def build(spec, **cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ZOO.get("pix2pixhd").build({"resolution": spec.resolution, **TINY, **cfg}, spec)
    model.noise_rng.manual_seed(0)
    return model


def first_conv(net):
    return next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def cityscapes(res=32):
    return load_dataset(DatasetSpec(name="cityscapes", resolution=res, channels=3, train_size=6, eval_size=2,
                                    flip=True), 0)


# -- (a) instance-wise average pooling -------------------------------------------------------------------------------

def test_instance_mean_is_each_instances_own_mean_per_image_and_channel():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    classes = torch.zeros(2, 8, 8, dtype=torch.long)
    classes[:, :, 4:] = 1
    inst = torch.zeros(2, 8, 8, dtype=torch.long)
    inst[:, :4, 4:] = 1  # two instances of class 1 (ids 1, 2) ...
    inst[:, 4:, 4:] = 2
    inst[1, :, :2] = 3  # ... and image 1 has an extra instance of class 0
    label_nc = 2
    units = inst * label_nc + classes  # what Pix2PixHD.units builds
    out = instance_mean(feats, units)
    for b in range(2):
        for u in units[b].unique():
            mask = units[b] == u
            want = feats[b][:, mask].mean(1)  # the direct per-instance mean, (C,)
            got = out[b][:, mask]
            assert torch.allclose(got, want[:, None].expand_as(got).float(), atol=1e-6)  # constant, equal to it
    # the two instances of the same class keep their own means
    assert not torch.allclose(out[0, :, 0, 4], out[0, :, 4, 4])
    # the same id in two images is two instances
    assert not torch.allclose(out[0, :, 0, 0], out[1, :, 0, 3])
    # differentiable: the gradient of sum(w * out) w.r.t. a pixel is the mean of w over its instance
    x = feats.clone().requires_grad_(True)
    w = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    (instance_mean(x, units).double() * w).sum().backward()
    mask = units[0] == units[0, 0, 4]
    assert torch.allclose(x.grad[0][:, mask], w[0][:, mask].mean(1, keepdim=True).expand(-1, int(mask.sum())),
                          atol=1e-6)


def test_units_split_an_instance_id_that_spans_two_classes():
    spec = LabelMapSpec("toy", 16, 3, 0, input_channels=4, label_nc=3)
    m = build(spec, feat_num=3)
    x = torch.full((1, 4, 16, 16), -1.0)
    x[:, 1, :, :8] = 1  # class 1 left, class 2 right, one instance id everywhere
    x[:, 2, :, 8:] = 1
    units = m.units(x, torch.zeros(1, 16, 16, dtype=torch.long))
    assert units.unique().numel() == 2 and len(units[0, :, :8].unique()) == 1


# -- (b) channels ----------------------------------------------------------------------------------------------------

def test_g_reads_feat_num_more_channels_and_d_does_not():
    spec = LabelMapSpec("cityscapes", 32, 3, 0, input_channels=36, label_nc=35)
    plain, feat = build(spec), build(spec, feat_num=3)
    assert first_conv(plain.G).in_channels == 36 and first_conv(feat.G).in_channels == 36 + 3
    assert first_conv(plain.D).in_channels == first_conv(feat.D).in_channels == 36 + 3  # concat(input, photo)
    assert isinstance(feat, InstanceTranslator) and feat.reads_instances() and not plain.reads_instances()
    assert set(plain.modules()) == {"G", "D"} and set(feat.modules()) == {"G", "D", "E"}
    # E reads the photo and writes feat_num channels; it trains in G's optimiser (the official optimizer_G)
    assert first_conv(feat.E).in_channels == 3 and feat.E.model[-2].out_channels == 3
    in_opt = {id(p) for group in feat.opt_G.param_groups for p in group["params"]}
    assert all(id(p) in in_opt for p in feat.E.parameters())
    # the official layout at the official widths (nef 16, 4 downsamples, feat_num 3) on RGB: 788,803 parameters
    # (c7s1-16 2,368; d32..d256 4,640 + 18,496 + 73,856 + 295,168; u128..u16 295,040 + 73,792 + 18,464 + 4,624;
    # c7s1-3 2,355)
    E = Encoder(3, 3, 16, 4, "instance", n_classes=35, n_clusters=10)
    assert sum(p.numel() for p in E.parameters()) == 788_803
    assert E.centres.shape == (35, 10, 3)
    assert E(torch.randn(1, 3, 32, 32), torch.zeros(1, 32, 32)).shape == (1, 3, 32, 32)


def test_inspect_shows_e_layers_and_parameter_count(capsys):
    assert main(["zoo", "inspect", "pix2pixhd", "feat_num=3", "resolution=64", "ngf=8", "ndf=8"]) == 0
    out = capsys.readouterr().out
    assert "\nE: 788,803 trainable parameters" in out and "ConvTranspose2d" in out.split("\nE:")[1]
    assert "'feat_num': 3" in out


# -- (c) the loader's instance ids -----------------------------------------------------------------------------------

@needs_data
def test_loader_keeps_instance_ids_aligned_with_labels_and_boundaries():
    d = cityscapes(64)
    for maps in (d.train_inputs, d.eval_inputs):
        assert maps.has_instances and maps.instances.shape == maps.ids.shape and maps.instances.dtype == torch.uint8
        ids = maps.instance_ids(slice(None))
        # the boundary map recomputed from the stored ids is the stored boundary channel, tile by tile
        assert torch.equal(boundary_map(ids), maps.edges)
        for t in range(len(maps)):
            k = ids[t].unique()
            assert torch.equal(k, torch.arange(len(k)))  # renumbered 0..K-1 per tile
            # cityscapes instance ids carry their class: each instance lies in one class
            pairs = torch.unique(ids[t] * 64 + maps.ids[t].long())
            assert len(pairs) == len(k)


@needs_data
def test_training_draw_flips_instance_ids_with_input_and_target():
    d = cityscapes(32)

    class Model:
        labelled_per_class, resolution, device = 0, 32, torch.device("cpu")

    def draw():
        return Draw(d.train_images, None, 12, 3, Model(), "resize", SINGLE, inputs=d.train_inputs, paired=True,
                    crop=32, flip=True)

    plain, with_ids = draw(), draw()
    stored_x, stored_y = to_float(d.train_inputs[:]), to_float(d.train_images)
    stored_ids = d.train_inputs.instance_ids(slice(None))
    seen = set()
    for _ in range(2):
        x0, y0 = plain()
        x, y, ids = with_ids.with_instances()
        assert torch.equal(x, x0) and torch.equal(y, y0)  # the same draw as draw()
        assert ids.dtype == torch.long and ids.shape == (12, 32, 32)
        for i in range(12):
            match = [(t, f) for t in range(12) for f in (False, True)
                     if torch.equal(x[i], stored_x[t].flip(-1) if f else stored_x[t])
                     and torch.equal(y[i], stored_y[t].flip(-1) if f else stored_y[t])]
            assert match, i
            t, f = match[0]
            assert torch.equal(ids[i], stored_ids[t].flip(-1) if f else stored_ids[t])
            seen.add(f)
    assert seen == {False, True}


def test_label_maps_without_instance_maps_say_so():
    ids = torch.zeros(2, 4, 4, dtype=torch.uint8)
    maps = LabelMaps(ids, None, 3)
    assert not maps.has_instances
    with pytest.raises(ValueError, match="without instance maps"):
        maps.instance_ids(0)


# -- (d) k-means centres per class, drawn per evaluation seed --------------------------------------------------------

def test_kmeans_is_seeded_deterministic_and_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 5.0]], dtype=torch.float64)
    points = torch.cat([m + 0.1 * torch.randn(30, 3, generator=g, dtype=torch.float64) for m in means])
    a, b = kmeans(points, 3, seed=4), kmeans(points, 3, seed=4)
    assert torch.equal(a, b)
    for blob in range(3):  # each centre is the mean of one blob (Lloyd's fixed point)
        want = points[30 * blob:30 * (blob + 1)].mean(0)
        assert torch.isclose(a, want).all(1).any()
    from sklearn.cluster import KMeans

    ref = KMeans(n_clusters=3, random_state=0, n_init=10).fit(points.numpy()).cluster_centers_
    assert np.allclose(np.sort(ref, 0), np.sort(a.numpy(), 0), atol=1e-9)
    assert torch.equal(kmeans(points[:2], 2), points[:2]) or torch.equal(kmeans(points[:2], 2), points[:2].flip(0))


def toy_scene():
    """One 16 px tile, label_nc 4: class 1 in two large instances, class 2 in four, class 0 only in a 2x2 instance
    (below the official area cut, 1/64 of the tile), class 3 nowhere."""
    cls = torch.full((16, 16), 2, dtype=torch.long)
    inst = torch.zeros(16, 16, dtype=torch.long)
    cls[:, :8] = 1
    inst[:8, :8], inst[8:, :8] = 1, 2
    inst[:8, 8:12], inst[8:, 8:12], inst[:8, 12:], inst[8:, 12:] = 3, 4, 5, 6
    cls[:2, :2], inst[:2, :2] = 0, 7
    x = torch.full((1, 5, 16, 16), -1.0)
    x[0, :4] = torch.nn.functional.one_hot(cls, 4).permute(2, 0, 1) * 2.0 - 1
    x[0, 4] = boundary_map(inst).float() * 2 - 1
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return x, y, inst[None], cls


def test_centres_are_per_class_and_fixed_and_evaluation_seeds_draw_them():
    spec = LabelMapSpec("toy", 16, 3, 0, input_channels=5, label_nc=4)
    m = build(spec, feat_num=3, n_clusters=3)
    x, y, inst, cls = toy_scene()
    m.fit_instance_features([(x, y, inst)])
    E = m.E
    assert E.n_centres.tolist() == [0, 2, 3, 0]  # class 0 only below the area cut, class 3 never seen
    with torch.no_grad():
        raw = E.model(y)[0]
    feature = {k: raw[:, inst[0] == k].mean(1) for k in range(1, 7)}
    # class 1 has 2 <= n_clusters instances: its centres are exactly their features
    got = sorted(E.centres[1, :2].tolist())
    assert np.allclose(got, sorted(torch.stack([feature[1], feature[2]]).tolist()), atol=1e-6)
    # class 2: 3 centres from its 4 instances, each the mean of the features nearest to it (Lloyd's fixed point)
    pts = torch.stack([feature[k] for k in (3, 4, 5, 6)])
    c2 = E.centres[2]
    nearest = torch.cdist(pts, c2).argmin(1)
    for j in range(3):
        assert torch.allclose(pts[nearest == j].mean(0), c2[j], atol=1e-5)
    # deterministic: fitting again gives the same buffers
    before = {k: v.clone() for k, v in E.state_dict().items() if k in ("centres", "n_centres")}
    m.fit_instance_features([(x, y, inst)])
    assert all(torch.equal(v, E.state_dict()[k]) for k, v in before.items())

    # test time: each instance one centre of its class, the same seed the same draw, zeros where no centre
    f0, f0b, f1 = (m.sampled_features(x, inst, [s]) for s in (10, 10, 11))
    assert torch.equal(f0, f0b) and not torch.equal(f0, f1)
    for k in range(1, 7):
        v = f0[0][:, inst[0] == k]
        assert (v == v[:, :1]).all()
        c = int(cls[inst[0] == k][0])
        assert any(torch.equal(v[:, 0], E.centres[c, j]) for j in range(int(E.n_centres[c])))
    assert (f0[0][:, inst[0] == 7] == 0).all()  # class 0: no centre -> zero feature
    out0, out0b, out1 = (m.translate(x, [s], instances=inst) for s in (10, 10, 11))
    assert torch.equal(out0, out0b) and not torch.equal(out0, out1)
    # an image's output does not depend on the batch it is translated in
    pair = m.translate(torch.cat([x, x.flip(-1)]), [10, 12], instances=torch.cat([inst, inst.flip(-1)]))
    assert torch.allclose(pair[:1], out0, atol=1e-6)
    with pytest.raises(ValueError, match="instance ids"):
        m.translate(x, [10])


# -- (e) resume ------------------------------------------------------------------------------------------------------

class Killed(Exception):
    pass


@needs_data
def test_train_checkpoint_resume_gives_the_weights_and_centres_of_one_go(tmp_path):
    d = cityscapes(32)

    def run(model, where, resume=False, kill_at=None):
        def log(losses, step):
            if step == kill_at:
                raise Killed
        return train_entry(model, d.train_images, TrainSpec(steps=4, batch_size=2, checkpoint_every=2, log_every=1),
                           where, 1, "fp", "e", log, resume=resume, data=d)

    straight = build(d.spec, feat_num=3)
    run(straight, tmp_path / "a")
    assert straight.E.n_centres.sum() > 0  # fitted after the last step
    with pytest.raises(Killed):
        run(build(d.spec, feat_num=3), tmp_path / "b", kill_at=3)
    interrupted = checkpoint.read(tmp_path / "b" / "latest.pt")
    assert interrupted["step"] == 2 and int(interrupted["modules"]["E"]["n_centres"].sum()) == 0  # not yet fitted
    resumed = build(d.spec, feat_num=3)
    assert run(resumed, tmp_path / "b", resume=True).resumed_from == 2
    for name, net in straight.modules().items():
        for (k, a), b in zip(net.state_dict().items(), resumed.modules()[name].state_dict().values()):
            assert torch.equal(a, b), (name, k)
    sa, sb = straight.opt_G.state_dict()["state"], resumed.opt_G.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    # the final checkpoint holds the centres: a model loaded from it samples like the trained one
    loaded = build(d.spec, feat_num=3)
    payload = checkpoint.read(tmp_path / "b" / "latest.pt")
    checkpoint.load_into(payload, loaded, tmp_path / "b" / "latest.pt", weights_only=True)
    assert torch.equal(loaded.E.centres, straight.E.centres)
    assert torch.equal(translate_inputs(loaded, d.eval_inputs, 0, 4, [1, 2, 3, 4]),
                       translate_inputs(straight, d.eval_inputs, 0, 4, [1, 2, 3, 4]))
    # the evaluation path: an evaluation seed fixes every centre draw, another seed draws others, and the
    # outputs do not depend on the evaluation batch size
    def evaluate(seed, batch_size):
        return torch.cat(list(translated_floats(loaded, d.eval_inputs, 4, seed, batch_size)))

    seed0 = evaluate(0, 4)
    assert torch.equal(seed0, evaluate(0, 4)) and not torch.equal(seed0, evaluate(1, 4))
    assert torch.allclose(seed0, evaluate(0, 1), atol=1e-5)


# -- (f) the multimodal figure ---------------------------------------------------------------------------------------

@needs_data
def test_multimodal_figure_is_a_png_of_the_map_and_five_draws(tmp_path):
    d = cityscapes(32)
    m = build(d.spec, feat_num=3)
    draw = Draw(d.train_images, None, 2, 0, m, "resize", SINGLE, inputs=d.train_inputs, paired=True, crop=32)
    m.fit_instance_features(draw.training_batches(4))
    assert m.figures(tmp_path) == {}  # no held-out input attached: nothing to draw
    m.attach_figure_input(to_float(d.eval_inputs[:1]), d.eval_inputs.instance_ids(slice(0, 1)))
    paths = m.figures(tmp_path / "fig", seed=7)
    assert set(paths) == {"multimodal"} and paths["multimodal"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = np.asarray(Image.open(paths["multimodal"]).convert("RGB"))
    assert img.shape == (32 + 4, 6 * (32 + 2) + 2, 3)  # one row: the label map and 5 outputs, 2 px padding
    panels = [img[2:34, 2 + 34 * k:34 + 34 * k] for k in range(6)]
    label = render_inputs(to_float(d.eval_inputs[:1]), d.spec)[0].add(1).div(2).mul(255).add(0.5).clamp(0, 255)
    assert np.array_equal(panels[0], label.to(torch.uint8).permute(1, 2, 0).numpy())
    assert len({p.tobytes() for p in panels[1:]}) > 1  # different centre draws, different outputs
    again = m.figures(tmp_path / "again", seed=7)["multimodal"].read_bytes()
    assert again == paths["multimodal"].read_bytes()
    assert build(d.spec).figures(tmp_path / "none") == {}  # feat_num 0: no figure


# -- (g) feat_num 0 is pix2pixHD as before ---------------------------------------------------------------------------

def test_feat_num_zero_keeps_configs_weights_and_checkpoints():
    assert NEW_KEYS <= LATER_CONFIG_KEYS
    assert not NEW_KEYS & set(config_record(Config(resolution=64)))
    assert config_record(Config(resolution=64, feat_num=3))["feat_num"] == 3
    proto = load_protocol(REPO / "protocols" / "cityscapes-pix2pixhd.yaml").protocol
    fields = {f.name for f in dataclasses.fields(Config)} - LATER_CONFIG_KEYS
    for raw, entry in zip(proto.entries, canonical(proto)["entries"]):
        # an entry that sets an encoder key records exactly the keys it set away from their defaults
        set_here = {k for k in NEW_KEYS if k in raw.config}
        assert set(entry["config"]) == fields | set_here
    assert sum(bool({k for k in NEW_KEYS if k in e.config}) for e in proto.entries) == 1  # global_feat only
    # initial weights of a feat_num-0 model at seed 0, as the code before the encoder made them (on AVX2/AVX-512:
    # torch's default-build normal_/uniform_ round their draws otherwise, docs/results.md)
    import hashlib

    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("the pinned hash is of torch's AVX2/AVX-512 init draws")

    spec = LabelMapSpec("cityscapes", 32, 3, 0, input_channels=36, label_nc=35)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = ZOO.get("pix2pixhd").build(dict(resolution=32, ngf=4, ndf=4, n_blocks_global=1, lambda_vgg=0), spec)
    h = hashlib.sha256()
    for name, mod in m.modules().items():
        for k, v in mod.state_dict().items():
            h.update(name.encode()), h.update(k.encode()), h.update(v.numpy().tobytes())
    assert h.hexdigest() == "d4dd59c5695bd9a631a192fa9b953dcf58adb51f117a79bf33a82e9f723ab617"


@needs_data
def test_the_cityscapes_data_fingerprint_and_inputs_are_unchanged():
    d = cityscapes(32)
    # the data fingerprint before the loader kept instance ids (cache layout 1): scores stay comparable
    assert d.fingerprint == "b1aedece405a472111f3c4d0cceb4d7690a0c5c073d60e10a9d8293a56d5e116"
    assert d.spec.input_channels == 36 and d.train_inputs.shape == (12, 36, 32, 32)


# -- through `bench run` ---------------------------------------------------------------------------------------------

@needs_data
def test_protocol_with_the_feature_encoder_runs_and_attaches_the_figure(tmp_path, inception_standin, capsys):
    p = yaml.safe_load((REPO / "protocols" / "cityscapes-pix2pixhd.yaml").read_text())
    p.pop("train_seeds")  # one training run: the figure's path is under test, not the seeds'
    p["dataset"]["resolution"] = 32
    p["entries"] = [{"name": "feat", "zoo": "pix2pixhd",
                     "config": {"resolution": 32, **TINY, "feat_num": 3},
                     "train": {"steps": 2, "batch_size": 2, "log_every": 1, "checkpoint_every": 2}}]
    p["evaluation"].update(extractor="inception-v3-compat", seeds=[0, 1], metrics=["ssim", "psnr"],
                           weights={"path": str(inception_standin[0]), "sha256": inception_standin[1]})
    p["tracking"] = {"uri": f"sqlite:///{tmp_path.as_posix()}/mlflow.db"}
    path = tmp_path / "feat.yaml"
    path.write_text(yaml.safe_dump(p))
    assert main(["run", str(path), "--workdir", str(tmp_path / "w")]) == 0
    (row,) = map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())
    assert row["status"] == "FINISHED"
    assert row["info"]["figures"]["multimodal"].endswith("multimodal.png")
    ssim = row["metrics"]["ssim"]["per_seed"]
    assert ssim[0] != ssim[1]  # two evaluation seeds, two draws of the centres
    # without instance maps the entry is refused before anything trains
    p["dataset"]["instance"] = False
    path.write_text(yaml.safe_dump(p))
    capsys.readouterr()
    assert main(["run", str(path), "--workdir", str(tmp_path / "w2")]) == 2
    assert "reads the inputs' instance ids" in capsys.readouterr().err
    assert not (tmp_path / "w2").exists()

"""Label-map data (cityscapes layout) for pix2pixHD: one-hot labels, instance boundary maps, 16-bit
instance ids, nearest resizing, square tiles of wide frames, one-line errors for broken folders, and the
cityscapes protocol end to end."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bench.cli import main
from bench.data import load_dataset
from bench.data.labelmap import LabelMaps, boundary_map, render_inputs, resize_nearest, tiles
from bench.data.transforms import to_float
from bench.errors import BenchError
from bench.protocol.schema import DatasetSpec
from bench.runner.distributed import SINGLE
from bench.runner.train import Draw
from tests.conftest import REPO, needs_data
from zoo import ZOO

NC = 5


def spec(root, **kw):
    base = dict(name="labelmap", root=str(root), resolution=16, channels=3, train_size=2, eval_size=2, label_nc=NC)
    return DatasetSpec(**{**base, **kw})


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_frames(root, n=4, h=16, w=32, split="train", cityscapes_names=True):
    """n frames with random labels 0..NC-1, instance ids label*1000 + (0 or 1) stored as 16-bit, random photos."""
    frames = []
    for i in range(n):
        rng = np.random.default_rng(i)
        label = rng.integers(0, NC, (h, w)).astype(np.uint8)
        inst = (label.astype(np.uint16) * 1000 + rng.integers(0, 2, (h, w))).astype(np.uint16)
        photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        stem = f"city_{i:06d}_000019" if cityscapes_names else f"frame {i}"
        names = (("_gtFine_labelIds", "_gtFine_instanceIds", "_leftImg8bit") if cityscapes_names else ("", "", ""))
        _save(root / f"{split}_label" / f"{stem}{names[0]}.png", label)
        _save(root / f"{split}_inst" / f"{stem}{names[1]}.png", inst)
        _save(root / f"{split}_img" / f"{stem}{names[2]}.png", photo)
        frames.append((label, inst, photo))
    return frames


def test_one_hot_has_exactly_one_channel_per_pixel_and_frames_become_square_tiles(tmp_path):
    frames = make_frames(tmp_path, n=2)
    make_frames(tmp_path, n=2, split="test")
    d = load_dataset(spec(tmp_path), 0)
    assert d.task == "paired" and d.spec.input_channels == NC + 1 and d.spec.channels == 3
    assert d.train_inputs.shape == (4, NC + 1, 16, 16) and d.train_images.shape == (4, 3, 16, 16)
    x = d.train_inputs[:]  # every tile, expanded
    assert x.dtype == torch.uint8 and set(x.unique().tolist()) == {0, 255}
    assert torch.equal((x[:, :NC] == 255).sum(1), torch.ones(4, 16, 16, dtype=torch.long))
    for f, (label, _, photo) in enumerate(frames):  # a 32x16 frame = its left and right 16x16 squares
        for t, cols in enumerate((slice(0, 16), slice(16, 32))):
            assert torch.equal(x[2 * f + t, :NC].argmax(0), torch.from_numpy(label[:, cols]).long())
            assert torch.equal(d.train_images[2 * f + t], torch.from_numpy(photo[:, cols]).permute(2, 0, 1))
    # indexing like a tensor: int, slice, index tensor
    assert torch.equal(d.train_inputs[1], x[1]) and torch.equal(d.train_inputs[torch.tensor([3, 0])], x[[3, 0]])
    assert to_float(x).unique().tolist() == [-1.0, 1.0]  # what the model reads
    # the fingerprint is the content, not the folder; label_nc and instance in force are part of it
    import shutil

    shutil.copytree(tmp_path, tmp_path.parent / f"{tmp_path.name}-copy")
    assert load_dataset(spec(tmp_path.parent / f"{tmp_path.name}-copy"), 0).fingerprint == d.fingerprint
    assert load_dataset(spec(tmp_path, instance=False), 0).fingerprint != d.fingerprint
    assert load_dataset(spec(tmp_path, label_nc=NC + 1), 0).fingerprint != d.fingerprint


def test_tiles_cover_wide_and_tall_frames_centred():
    assert tiles(1024, 2048) == [(0, 0, 1024), (0, 1024, 1024)]
    assert tiles(10, 25) == [(0, 2, 10), (0, 12, 10)]  # 5 px remainder: 2 left, 3 right
    assert tiles(30, 10) == [(0, 0, 10), (10, 0, 10), (20, 0, 10)]
    assert tiles(12, 12) == [(0, 0, 12)]


def test_boundary_map_marks_pixels_with_a_different_4_neighbour():
    inst = torch.zeros(6, 6, dtype=torch.int64)
    inst[2:4, 2:4] = 26001
    want = torch.zeros(6, 6, dtype=torch.bool)
    want[2:4, 2:4] = True  # the square itself (each of its pixels touches the background)
    for y, x in [(1, 2), (1, 3), (4, 2), (4, 3), (2, 1), (3, 1), (2, 4), (3, 4)]:
        want[y, x] = True  # background pixels beside it; diagonal neighbours such as (1, 1) are not
    assert torch.equal(boundary_map(inst), want)
    assert not boundary_map(torch.full((4, 5), 7)).any()
    stripes = torch.tensor([[1, 1, 2, 2]] * 3)
    assert boundary_map(stripes).tolist() == [[False, True, True, False]] * 3


def test_sixteen_bit_instance_ids_are_read_whole(tmp_path):
    # 26001 and 26257 share their low byte (0x91): a reader that kept 8 bits would see one instance.
    make_frames(tmp_path, n=4, h=8, w=8)
    inst = np.full((8, 8), 26001, dtype=np.uint16)
    inst[:, 4:] = 26257
    for p in (tmp_path / "train_inst").iterdir():
        _save(p, inst)
    assert Image.open(next((tmp_path / "train_inst").iterdir())).mode == "I;16"
    d = load_dataset(spec(tmp_path, resolution=8), 0)
    edges = d.train_inputs[:][:, NC]
    assert edges.shape == (2, 8, 8) and bool((edges[:, :, 3:5] == 255).all()) and not edges[:, :, :3].any()


def test_nearest_resizing_keeps_ids_valid_and_matches_pil():
    rng = np.random.default_rng(0)
    ids = rng.choice(np.array([3, 7, 33001], dtype=np.int64), size=(37, 53))
    for size in (16, 24, 64):
        out = resize_nearest(torch.from_numpy(ids), size)
        assert set(out.unique().tolist()) <= {3, 7, 33001}
        pil = np.asarray(Image.fromarray(ids.astype(np.int32), mode="I").resize((size, size), Image.NEAREST))
        assert torch.equal(out, torch.from_numpy(pil.astype(np.int64)))


def test_loader_resizes_labels_with_nearest_to_valid_one_hot(tmp_path):
    make_frames(tmp_path, n=4, h=40, w=80)
    d = load_dataset(spec(tmp_path, resolution=12), 0)  # 40 -> 12: no integer factor
    x = d.train_inputs[:]
    assert x.shape == (4, NC + 1, 12, 12)
    assert torch.equal((x[:, :NC] == 255).sum(1), torch.ones(4, 12, 12, dtype=torch.long))


def test_instance_false_needs_no_inst_folder_and_drops_the_boundary_channel(tmp_path):
    make_frames(tmp_path, n=4)
    for p in (tmp_path / "train_inst").iterdir():
        p.unlink()
    (tmp_path / "train_inst").rmdir()
    with pytest.raises(BenchError, match=r"no train_inst/ folder; instance boundary maps need"):
        load_dataset(spec(tmp_path), 0)
    d = load_dataset(spec(tmp_path, instance=False), 0)
    assert d.train_inputs.shape[1] == NC and d.spec.input_channels == NC


def test_seeded_hold_out_without_test_photos(tmp_path):
    frames = make_frames(tmp_path, n=5, h=8, w=8)
    d = load_dataset(spec(tmp_path, resolution=8, train_size=3), 0)
    photos = {bytes(f[2]) for f in frames}
    as_bytes = lambda t: {bytes(x.permute(1, 2, 0).contiguous().numpy()) for x in t}  # noqa: E731
    train, held = as_bytes(d.train_images), as_bytes(d.eval_images)
    assert len(train) == 3 and len(held) == 2 and not train & held and (train | held) <= photos
    assert torch.equal(load_dataset(spec(tmp_path, resolution=8, train_size=3), 0).eval_images, d.eval_images)
    assert not torch.equal(load_dataset(spec(tmp_path, resolution=8, train_size=3), 2).eval_images, d.eval_images)
    with pytest.raises(BenchError, match=r"train_size 4 \+ eval_size 2 exceed the 5 frames"):
        load_dataset(spec(tmp_path, resolution=8, train_size=4), 0)


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_hostile_folders_give_one_line_errors(tmp_path):
    make_frames(tmp_path / "ok", n=4, h=8, w=8, cityscapes_names=False)  # plain names match too
    load_dataset(spec(tmp_path / "ok", resolution=8), 0)

    bad = tmp_path / "big_id"
    make_frames(bad, n=4, h=8, w=8)
    label = np.zeros((8, 8), np.uint8)
    label[3, 3] = 7
    _save(next((bad / "train_label").iterdir()), label)
    with pytest.raises(BenchError) as e:
        load_dataset(spec(bad, resolution=8), 0)
    assert "label id 7 is outside 0..4 (dataset.label_nc is 5)" in _one_line(e)

    bad = tmp_path / "names"
    make_frames(bad, n=4, h=8, w=8)
    p = sorted((bad / "train_img").iterdir())[0]
    p.rename(p.with_name("other_000000_000019_leftImg8bit.png"))
    with pytest.raises(BenchError) as e:
        load_dataset(spec(bad, resolution=8), 0)
    assert "no photo for label map 'city_000000_000019_gtFine_labelIds.png'" in _one_line(e)

    bad = tmp_path / "garbage"
    make_frames(bad, n=4, h=8, w=8)
    sorted((bad / "train_inst").iterdir())[1].write_bytes(b"not a png at all")
    with pytest.raises(BenchError) as e:
        load_dataset(spec(bad, resolution=8), 0)
    assert "city_000001_000019_gtFine_instanceIds.png: not a readable image" in _one_line(e)

    bad = tmp_path / "rgb_label"
    make_frames(bad, n=4, h=8, w=8)
    _save(sorted((bad / "train_label").iterdir())[0], np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(BenchError) as e:
        load_dataset(spec(bad, resolution=8), 0)
    assert "not a one-channel id map (mode RGB)" in _one_line(e)

    bad = tmp_path / "sizes"
    make_frames(bad, n=4, h=8, w=8)
    _save(sorted((bad / "train_img").iterdir())[2], np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(BenchError) as e:
        load_dataset(spec(bad, resolution=8), 0)
    assert "16x8 px, but its label map city_000002_000019_gtFine_labelIds.png is 8x8" in _one_line(e)

    with pytest.raises(BenchError, match="set dataset.label_nc"):
        load_dataset(spec(tmp_path / "ok", label_nc=None), 0)
    with pytest.raises(BenchError, match="needs dataset.root"):
        load_dataset(DatasetSpec(name="labelmap", resolution=8, channels=3, train_size=2, eval_size=2, label_nc=NC), 0)


def test_bad_label_nc_in_a_protocol_is_one_line_exit_2(tmp_path, capsys):
    text = (REPO / "protocols" / "cityscapes-pix2pixhd.yaml").read_text()
    p = tmp_path / "bad.yaml"
    p.write_text(text.replace("flip: true}", "flip: true, label_nc: 1}"))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert "dataset.label_nc" in err and "greater than or equal to 2" in err and len(err.splitlines()) == 1


def test_draw_flips_one_hot_inputs_and_photos_together(tmp_path):
    """Photos that are a colouring of their label map stay that colouring after the training draw's flips."""
    colours = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, NC, (6, 8, 8))).to(torch.uint8)
    ids[:, :, :4] = 1  # asymmetric, so a flip of only one side would show
    inputs = LabelMaps(ids, boundary_map(ids), NC)
    photos = colours[ids.long()].permute(0, 3, 1, 2).contiguous()

    class Model:
        labelled_per_class, resolution, device = 0, 8, torch.device("cpu")

    draw = Draw(photos, None, 6, 0, Model(), "resize", SINGLE, inputs=inputs, paired=True, crop=8, flip=True)
    flipped = False
    for _ in range(4):
        x, y = draw()
        assert x.shape == (6, NC + 1, 8, 8)
        want = to_float(colours[x[:, :NC].argmax(1)].permute(0, 3, 1, 2))
        assert torch.equal(y, want)
        flipped |= bool((x[:, 1, :, 4:] > 0).all(-1).all(-1).any())
    assert flipped


def test_pix2pixhd_reads_label_map_channels_and_grids_render_colour(tmp_path):
    make_frames(tmp_path, n=4, h=32, w=64)
    d = load_dataset(spec(tmp_path, resolution=32), 0)
    m = ZOO.get("pix2pixhd").build(dict(resolution=32, ngf=4, ndf=4, n_blocks_global=1, lambda_vgg=0), d.spec)
    first = lambda net: next(mod for mod in net.modules() if isinstance(mod, torch.nn.Conv2d))  # noqa: E731
    assert first(m.G).in_channels == NC + 1 and first(m.G).out_channels == 4
    assert first(m.D).in_channels == NC + 1 + 3  # D sees concat(label map, photo)
    assert m.translate(to_float(d.eval_inputs[:2])).shape == (2, 3, 32, 32)
    rgb = render_inputs(to_float(d.eval_inputs[:2]), d.spec)
    assert rgb.shape == (2, 3, 32, 32) and rgb.min() >= -1 and rgb.max() <= 1
    edges = d.eval_inputs[:2][:, NC] > 0
    assert bool((rgb.permute(0, 2, 3, 1)[edges] == 1).all())  # boundaries drawn white
    rows = m.inspect()  # layer shapes traced with the 6-channel input
    assert rows["G"][-1][2] == (3, 32, 32) and rows["D"]


@needs_data
def test_real_cityscapes_frames():
    d = load_dataset(DatasetSpec(name="cityscapes", resolution=32, channels=3, train_size=6, eval_size=2), 0)
    assert d.spec.label_nc == 35 and d.spec.input_channels == 36 and d.source.endswith("cityscapes")
    assert d.train_inputs.shape == (12, 36, 32, 32) and d.eval_inputs.shape == (4, 36, 32, 32)
    assert d.train_images.shape == (12, 3, 32, 32) and d.eval_images.shape == (4, 3, 32, 32)
    x = d.train_inputs[:]
    assert torch.equal((x[:, :35] == 255).sum(1), torch.ones(12, 32, 32, dtype=torch.long))
    assert 0 < (x[:, 35] == 255).float().mean() < 0.5
    assert int(d.train_inputs.ids.max()) <= 33  # cityscapes labelIds
    # held-out frames never train
    train = {bytes(t.numpy()) for t in d.train_images}
    assert not train & {bytes(t.numpy()) for t in d.eval_images}


@needs_data
def test_cityscapes_protocol_end_to_end(tmp_path, inception_standin):
    """The shipped protocol, shrunk (32 px, 2 steps, tiny widths, stand-in Inception), through `bench run`."""
    p = yaml.safe_load((REPO / "protocols" / "cityscapes-pix2pixhd.yaml").read_text())
    p.pop("train_seeds")  # one training run: the label-map pipeline is under test, not the seeds'
    p["dataset"]["resolution"] = 32
    for e in p["entries"]:
        e["config"].update(resolution=32, ngf=4, ndf=4, n_blocks_global=1)
        if e["train"]["steps"]:
            e["train"].update(steps=2, log_every=1, checkpoint_every=2)
    p["evaluation"].update(extractor="inception-v3-compat",
                           weights={"path": str(inception_standin[0]), "sha256": inception_standin[1]})
    p["tracking"] = {"uri": f"sqlite:///{tmp_path.as_posix()}/mlflow.db"}
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(p))
    assert main(["run", str(path), "--workdir", str(tmp_path / "w")]) == 0
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    # every shipped entry ran: the plain global generator, the one with the instance-wise feature encoder, the floor
    assert set(rows) == {e["name"] for e in p["entries"]} == {"global", "global_feat", "untrained"}
    for r in rows.values():
        m = r["metrics"]
        assert r["status"] == "FINISHED" and 0 < m["ssim"]["mean"] < 1 and m["psnr"]["mean"] > 0
        assert "lpips" in r["info"]["unavailable"]  # no AlexNet weights offline: reported, never faked
    run_dir = next(q for q in (tmp_path / "w").iterdir() if q.is_dir())
    grid = np.asarray(Image.open(run_dir / "global" / "samples.png").convert("RGB"))
    assert grid.shape[1] > grid.shape[0] / 4 * 2.5  # 4 held-out rows of label map | output | photo
    # the first column is the label map in cityscapes colours: road (128, 64, 128) must be there
    assert ((grid[:, : grid.shape[1] // 3] == (128, 64, 128)).all(-1)).any()


@needs_data
def test_a_family_that_cannot_read_label_maps_is_refused_before_anything_is_written(tmp_path, capsys):
    p = yaml.safe_load((REPO / "protocols" / "cityscapes-pix2pixhd.yaml").read_text())
    p["dataset"]["resolution"] = 64
    p["entries"] = [{"name": "p2p", "zoo": "pix2pix", "config": {"resolution": 64, "generator": "unet_seed",
                                                                 "ngf": 4, "ndf": 4}, "train": {"steps": 1}}]
    p["tracking"] = {"uri": f"sqlite:///{tmp_path.as_posix()}/mlflow.db"}
    path = tmp_path / "p2p.yaml"
    path.write_text(yaml.safe_dump(p))
    assert main(["run", str(path), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("bench: error: entries[p2p]: zoo entry 'pix2pix' cannot read the 36-channel label-map inputs of "
                   "'cityscapes' (pix2pixhd reads label maps)")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "w").exists()

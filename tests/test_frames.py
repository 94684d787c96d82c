"""Whole non-square frames (`dataset.aspect`, label maps + pix2pixHD only): cityscapes read as 2:1 frames instead of
square tiles, frames split by the protocol seed, instance ids and boundaries at the frame's size, flips that move
input, target and ids together, a protocol end to end with wide sample grids, refusals of data sets and families
that cannot take frames, and fingerprints of protocols without the key left as they were."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bench.cli import main
from bench.data import load_dataset
from bench.data.base import decode_image, image_digests
from bench.data.labelmap import boundary_map, renumber, resize_nearest
from bench.data.transforms import fit_float, resize_uint8, to_float
from bench.errors import BenchError
from bench.protocol.load import canonical, load_protocol
from bench.protocol.schema import DatasetSpec
from bench.runner import checkpoint
from bench.runner.distributed import SINGLE
from bench.runner.train import Draw
from tests.conftest import DATA, REPO, needs_data
from zoo import ZOO
from zoo.base import FrameTranslator, frame_of

RES = 32  # 32 x 64 frames
TINY = dict(resolution=RES, ngf=4, ndf=4, n_downsample_global=2, n_blocks_global=1, num_D=2, lambda_vgg=0)
SHIPPED = REPO / "protocols" / "cityscapes-pix2pixhd.yaml"


def cityscapes(aspect=2, seed=0):
    return load_dataset(DatasetSpec(name="cityscapes", resolution=RES, channels=3, train_size=6, eval_size=2,
                                    aspect=aspect, flip=True), seed)


def _source_frames():
    """key -> (label, instance, photo) of every cityscapes training frame as stored (2048x1024)."""
    root = DATA / "cityscapes"
    out = {}
    for photo in sorted((root / "train_img").iterdir()):
        key = photo.name.removesuffix("_leftImg8bit.png")
        out[key] = (decode_image(root / "train_label" / f"{key}_gtFine_labelIds.png", "ids"),
                    decode_image(root / "train_inst" / f"{key}_gtFine_instanceIds.png", "ids"), decode_image(photo))
    return out


@needs_data
def test_cityscapes_frames_are_whole_split_by_seed_with_ids_and_boundaries_at_frame_size():
    d = cityscapes()
    assert d.spec.frame == (RES, 2 * RES) and d.spec.aspect == 2
    # one sample per frame (aspect 1 cuts each frame into two tiles: 12 and 4)
    assert d.train_inputs.shape == (6, 36, RES, 2 * RES) and d.train_images.shape == (6, 3, RES, 2 * RES)
    assert d.eval_inputs.shape == (2, 36, RES, 2 * RES) and d.eval_images.shape == (2, 3, RES, 2 * RES)
    assert d.train_inputs.instances.shape == (6, RES, 2 * RES)
    assert len(cityscapes(aspect=1).train_images) == 12

    # Every sample is one whole source frame resized to 64x32; the held-out ones are exactly the frames the
    # protocol seed holds out (the loader's permutation), and none of them is in the training part.
    source = _source_frames()
    keys = sorted(source)
    perm = torch.randperm(len(keys), generator=torch.Generator().manual_seed(0)).tolist()
    held_keys = {keys[i] for i in perm[:2]}
    size = (RES, 2 * RES)
    resized = {k: resize_uint8(torch.from_numpy(p).unsqueeze(0), size)[0] for k, (_, _, p) in source.items()}
    which = lambda imgs: [next(k for k, r in resized.items() if torch.equal(r, x)) for x in imgs]  # noqa: E731
    train_keys, eval_keys = which(d.train_images), which(d.eval_images)
    assert set(eval_keys) == held_keys and not set(train_keys) & held_keys and len(set(train_keys)) == 6
    assert not {bytes(x) for x in image_digests(d.train_images).numpy()} & {
        bytes(x) for x in image_digests(d.eval_images).numpy()}
    assert set(which(cityscapes(seed=3).eval_images)) != held_keys  # another seed, other held-out frames

    # label ids, instance ids and the boundary channel are those of the whole frame resized to 64x32 (nearest)
    x = d.train_inputs[:]
    ids = d.train_inputs.instance_ids(slice(None))
    for i, key in enumerate(train_keys):
        label, inst, _ = source[key]
        want_inst = resize_nearest(torch.from_numpy(inst), size)
        assert torch.equal(x[i, :35].argmax(0), resize_nearest(torch.from_numpy(label), size))
        assert torch.equal(ids[i], renumber(want_inst).long())
    assert torch.equal(x[:, 35] > 0, boundary_map(ids))
    assert 0 < (x[:, 35] > 0).float().mean() < 0.5


@needs_data
def test_training_flips_move_frame_target_and_instance_ids_together():
    d = cityscapes()
    model = ZOO.get("pix2pixhd").build(TINY, d.spec)
    assert isinstance(model, FrameTranslator) and frame_of(model) == (RES, 2 * RES)
    draw = Draw(d.train_images, None, 6, 0, model, "resize", SINGLE, inputs=d.train_inputs, paired=True,
                crop=d.spec.frame, flip=True)
    inputs, photos = to_float(d.train_inputs[:]), to_float(d.train_images)
    ids = d.train_inputs.instance_ids(slice(None))
    seen = set()
    for _ in range(3):
        x, y, inst = draw.with_instances()
        assert x.shape == (6, 36, RES, 2 * RES) and y.shape == (6, 3, RES, 2 * RES) and inst.shape == (6, RES, 2 * RES)
        for b in range(6):
            # which frame and whether it is mirrored, read off the input; target and ids must agree
            (j, flipped), = [(j, f) for j in range(6) for f in (False, True)
                             if torch.equal(x[b], inputs[j].flip(-1) if f else inputs[j])]
            assert torch.equal(y[b], photos[j].flip(-1) if flipped else photos[j])
            assert torch.equal(inst[b], ids[j].flip(-1) if flipped else ids[j])
            seen.add(flipped)
    assert seen == {False, True}
    # G, the multiscale D and the feature encoder run on the 2:1 frames
    feat = ZOO.get("pix2pixhd").build({**TINY, "feat_num": 3, "nef": 4, "n_downsample_E": 2}, d.spec)
    assert feat.translate(x[:2], [0, 1], inst[:2]).shape == (2, 3, RES, 2 * RES)
    local = ZOO.get("pix2pixhd").build({**TINY, "generator": "local", "ngf": 8}, d.spec)
    assert local.translate(x[:2]).shape == (2, 3, RES, 2 * RES)
    rows = feat.inspect()
    assert rows["G"][-1][2] == rows["E"][-1][2] == (3, RES, 2 * RES)


def test_fit_float_takes_height_and_width():
    x = torch.rand(1, 3, 8, 16) * 2 - 1
    assert fit_float(x, (16, 32)).shape == (1, 3, 16, 32)
    padded = fit_float(x, (12, 20), "pad")
    assert padded.shape == (1, 3, 12, 20) and torch.equal(padded[..., 2:10, 2:18], x)
    assert bool((padded[..., :2, :] == -1).all()) and bool((padded[..., :, :2] == -1).all())
    assert torch.equal(fit_float(padded, (8, 16), "pad"), x)


def _protocol(tmp_path, **dataset):
    p = yaml.safe_load(SHIPPED.read_text())
    p.pop("train_seeds")  # one training run: the frames' path is under test, not the seeds'
    p["dataset"].update(resolution=RES, **dataset)
    for e in p["entries"]:
        e["config"].update(TINY)
        if e["config"].get("feat_num"):
            e["config"].update(nef=4, n_downsample_E=2)
        if e["train"]["steps"]:
            e["train"].update(steps=2, log_every=1, checkpoint_every=2)
    p["evaluation"].update(n_samples=2, seeds=[0, 1], metrics=["ssim", "psnr", "swd"])
    p["tracking"] = {"uri": f"sqlite:///{tmp_path.as_posix()}/mlflow.db"}
    return p


def _write(tmp_path, p, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(p))
    return path


@needs_data
def test_aspect_2_protocol_runs_end_to_end_with_wide_grids(tmp_path):
    """The shipped cityscapes protocol at 32x64 frames (tiny widths, 2 steps) through `bench run`."""
    path = _write(tmp_path, _protocol(tmp_path, aspect=2))
    assert main(["run", str(path), "--workdir", str(tmp_path / "w")]) == 0
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    assert set(rows) == {"global", "global_feat", "untrained"}
    for r in rows.values():
        m = r["metrics"]
        assert r["status"] == "FINISHED"
        assert 0 < m["ssim"]["mean"] < 1 and 0 < m["psnr"]["mean"] < 100 and np.isfinite(m["swd"]["mean"])
        assert "swd/32px" in m and "swd/64px" not in m  # the pyramid starts at the short side
    run_dir = next(q for q in (tmp_path / "w").iterdir() if q.is_dir())
    # 2 held-out rows of label map | output | photo, each 64x32 with torchvision's 2 px padding
    assert Image.open(run_dir / "global" / "samples.png").size == (2 + 3 * (2 * RES + 2), 2 + 2 * (RES + 2))
    # the multimodal figure: the label map and five draws, all whole frames
    assert Image.open(run_dir / "global_feat" / "figures" / "multimodal.png").size == (2 + 6 * (2 * RES + 2),
                                                                                        2 + RES + 2)
    # the final checkpoint belongs to the frame run and loads into a model that translates frames
    payload = checkpoint.read(run_dir / "global" / "latest.pt")
    assert payload["fingerprint"] == rows["global"]["fingerprint"] and payload["step"] == 2
    d = cityscapes()
    model = ZOO.get("pix2pixhd").build(TINY, d.spec)
    checkpoint.load_into(payload, model, run_dir / "global" / "latest.pt", weights_only=True)
    assert model.translate(to_float(d.eval_inputs[:1])).shape == (1, 3, RES, 2 * RES)


def _refused(tmp_path, capsys, p) -> str:
    path = _write(tmp_path, p)
    assert main(["run", str(path), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "w").exists()
    return err


def test_aspect_with_another_data_set_is_refused_before_anything_is_written(tmp_path, capsys):
    p = {"name": "m", "dataset": {"name": "mnist", "resolution": 28, "aspect": 2, "train_size": 100, "eval_size": 100},
         "entries": [{"name": "g", "zoo": "dcgan", "config": {"resolution": 28}, "train": {"steps": 1}}],
         "evaluation": {"n_samples": 10, "seeds": [0]},
         "tracking": {"uri": f"sqlite:///{tmp_path.as_posix()}/mlflow.db"}}
    assert _refused(tmp_path, capsys, p).endswith("dataset.aspect applies to cityscapes, labelmap only, not 'mnist'")


def test_aspect_with_a_square_only_family_is_refused_before_anything_is_written(tmp_path, capsys):
    p = _protocol(tmp_path, aspect=2)
    p["dataset"]["resolution"] = 64
    p["entries"] = [{"name": "p2p", "zoo": "pix2pix", "config": {"resolution": 64, "generator": "unet_seed",
                                                                 "ngf": 4, "ndf": 4}, "train": {"steps": 1}}]
    err = _refused(tmp_path, capsys, p)
    assert err.endswith("entries[p2p]: zoo entry 'pix2pix' reads square images only, so it cannot take "
                        "dataset.aspect 2 (whole frames); pix2pixhd can")


def test_frames_of_another_shape_are_one_line(tmp_path):
    for split in ("train", "test"):
        for i in range(2):
            rng = np.random.default_rng(i)
            for folder, arr in (("label", rng.integers(0, 3, (8, 16)).astype(np.uint8)),
                                ("inst", rng.integers(0, 3, (8, 16)).astype(np.uint8)),
                                ("img", rng.integers(0, 256, (8, 16, 3), dtype=np.uint8))):
                (tmp_path / f"{split}_{folder}").mkdir(exist_ok=True)
                Image.fromarray(arr).save(tmp_path / f"{split}_{folder}" / f"f{i}.png")
    spec = lambda **kw: DatasetSpec(**{**dict(name="labelmap", root=str(tmp_path), resolution=4, channels=3,  # noqa: E731
                                              train_size=2, eval_size=2, label_nc=3), **kw})
    square, frames = load_dataset(spec(), 0), load_dataset(spec(aspect=2), 0)
    assert square.train_images.shape == (4, 3, 4, 4) and frames.train_images.shape == (2, 3, 4, 8)
    assert frames.fingerprint != square.fingerprint  # other inputs from the same files
    with pytest.raises(BenchError) as e:
        load_dataset(spec(aspect=3), 0)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith("f0.png: frame is 16x8 px (2:1) but dataset.aspect is 3 (whole frames "
                                            "3:1); use frames of that shape or the aspect they have")


def test_fingerprints_without_the_key_stand_and_aspect_2_changes_them(tmp_path):
    shipped = canonical(load_protocol(SHIPPED).protocol)
    assert "aspect" not in shipped["dataset"]
    p = yaml.safe_load(SHIPPED.read_text())
    p["dataset"]["aspect"] = 1
    assert canonical(load_protocol(_write(tmp_path, p, "one.yaml")).protocol) == shipped
    p["dataset"]["aspect"] = 2
    with_frames = canonical(load_protocol(_write(tmp_path, p, "two.yaml")).protocol)
    assert with_frames["dataset"]["aspect"] == 2 and with_frames != shipped


def test_zoo_inspect_pix2pixhd_still_works(capsys):
    assert main(["zoo", "inspect", "pix2pixhd", "resolution=64", "n_downsample_global=2", "ngf=8"]) == 0
    out = capsys.readouterr().out
    assert "G: 180,419 trainable parameters" in out and "Tanh               3x64x64" in out and "\nD: " in out

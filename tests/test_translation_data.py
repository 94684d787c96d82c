"""Image-to-image data (paired AB images, unpaired A/B folders) and the translation pipeline end to end:
identical jitter for both halves of a pair, held-out parts never trained on, seeded splits, one-line
errors, and pix2pix / CycleGAN protocols scored with FID, SSIM, PSNR and cycle error."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.data import load_dataset
from bench.errors import BenchError
from bench.protocol.schema import DatasetSpec
from bench.runner.distributed import SINGLE
from bench.runner.train import Draw
from tests.conftest import DATA, needs_data, write_protocol
from zoo import ZOO


def spec(**kw):
    base = dict(name="facades", resolution=64, channels=3, train_size=20, eval_size=8)
    return DatasetSpec(**{**base, **kw})


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _rgb(seed, h=16, w=16):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@needs_data
def test_facades_pairs_direction_and_held_out_split():
    ab = load_dataset(spec(direction="AtoB"), 0)
    ba = load_dataset(spec(direction="BtoA"), 0)
    assert ab.task == "paired" and ab.train_inputs.shape == (20, 3, 64, 64) and ab.eval_images.shape == (8, 3, 64, 64)
    # BtoA swaps input and target, nothing else
    assert torch.equal(ab.train_inputs, ba.train_images) and torch.equal(ab.eval_images, ba.eval_inputs)
    assert ab.fingerprint == ba.fingerprint  # same files
    assert load_dataset(spec(eval_size=9), 0).fingerprint != ab.fingerprint
    # facades photos (left, A) are colourful; label maps (right, B) use few flat colours
    colours = lambda x: len(torch.unique(x.flatten(1).T, dim=0))  # noqa: E731
    assert colours(ab.train_inputs[0]) > colours(ab.train_images[0])
    jit = load_dataset(spec(load_size=72), 0)
    assert jit.train_images.shape[-1] == 72 and jit.eval_images.shape[-1] == 64  # jitter only for training


def test_paired_folder_layouts_and_errors(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            _write(tmp_path / "ab" / split / f"pair {i}.png", np.concatenate([_rgb(i), _rgb(100 + i)], 1))
            _write(tmp_path / "par" / split / "A" / f"{i}.png", _rgb(i))
            _write(tmp_path / "par" / split / "B" / f"{i}.png", _rgb(100 + i))
    a = load_dataset(spec(name="paired", root=str(tmp_path / "ab"), resolution=16, train_size=3, eval_size=2), 0)
    b = load_dataset(spec(name="paired", root=str(tmp_path / "par"), resolution=16, train_size=3, eval_size=2), 0)
    assert torch.equal(a.train_inputs, b.train_inputs) and torch.equal(a.eval_images, b.eval_images)
    assert torch.equal(a.train_inputs[0], torch.from_numpy(_rgb(0)).permute(2, 0, 1))
    with pytest.raises(BenchError, match="exceeds the 2 pairs"):
        load_dataset(spec(name="paired", root=str(tmp_path / "ab"), resolution=16, train_size=3, eval_size=5), 0)
    (tmp_path / "ab" / "test" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(BenchError, match="broken.png: not a readable image"):
        load_dataset(spec(name="paired", root=str(tmp_path / "ab"), resolution=16, train_size=3, eval_size=3), 0)
    with pytest.raises(BenchError, match="needs dataset.root"):
        load_dataset(spec(name="paired"), 0)


def test_unpaired_test_only_folders_are_split_with_a_seed(tmp_path):
    for dom, n in (("A", 7), ("B", 9)):
        for i in range(n):
            _write(tmp_path / f"test{dom}" / f"img {dom} {i}.jpg", _rgb(10 * ord(dom) + i))  # spaces allowed
    s = spec(name="unpaired", root=str(tmp_path), resolution=16, train_size=4, eval_size=3)
    d = load_dataset(s, 0)
    assert d.task == "unpaired" and d.train_inputs.shape[0] == 4 and d.eval_inputs.shape[0] == 3
    assert d.train_images.shape[0] == 4 and d.eval_images.shape[0] == 3
    again, other = load_dataset(s, 0), load_dataset(s, 1)
    assert torch.equal(d.eval_inputs, again.eval_inputs) and not torch.equal(d.eval_inputs, other.eval_inputs)
    held = {tuple(x.flatten()[:12].tolist()) for x in d.eval_inputs}
    assert not held & {tuple(x.flatten()[:12].tolist()) for x in d.train_inputs}  # never trained on
    with pytest.raises(BenchError, match="exceeds the 4 domain-A"):
        load_dataset(spec(name="unpaired", root=str(tmp_path), resolution=16, train_size=7, eval_size=3), 0)


def _hashes(images):
    import hashlib
    return {hashlib.sha256(x.numpy().tobytes()).hexdigest() for x in images}


def test_paired_single_folder_is_split_with_a_seed_held_out_first(tmp_path):
    for i in range(10):  # only val/, as edges2shoes_swapped ships
        _write(tmp_path / "val" / f"{i}_AB.png", np.concatenate([_rgb(i), _rgb(100 + i)], 1))
    s = spec(name="paired", root=str(tmp_path), resolution=16, train_size=5, eval_size=3)
    d, again, other = load_dataset(s, 0), load_dataset(s, 0), load_dataset(s, 1)
    assert d.train_inputs.shape[0] == 5 and d.eval_inputs.shape[0] == 3
    assert torch.equal(d.eval_images, again.eval_images) and not torch.equal(d.eval_images, other.eval_images)
    assert not _hashes(d.eval_images) & _hashes(d.train_images)  # no held-out pair trains (content hash)
    # held-out first: a larger train_size keeps the same held-out pairs and only adds training pairs
    bigger = load_dataset(spec(name="paired", root=str(tmp_path), resolution=16, train_size=7, eval_size=3), 0)
    assert torch.equal(bigger.eval_images, d.eval_images) and _hashes(d.train_images) < _hashes(bigger.train_images)
    with pytest.raises(BenchError, match="train_size \\+ eval_size = 11 but .* one split of 10 pairs"):
        load_dataset(spec(name="paired", root=str(tmp_path), resolution=16, train_size=8, eval_size=3), 0)


@needs_data
def test_edges2shoes_swapped_sketch_to_shoe_from_its_one_folder():
    # the halves are reversed (left = photo, right = edges: ../shared/data/README.md), so sketch -> shoe is BtoA
    d = load_dataset(spec(name="edges2shoes_swapped", direction="BtoA", train_size=150, eval_size=50), 0)
    assert d.train_inputs.shape == (150, 3, 64, 64) and d.eval_images.shape == (50, 3, 64, 64)
    assert not _hashes(d.eval_images) & _hashes(d.train_images)
    # edge maps are near-binary line drawings (mostly white), photos are not
    white = lambda x: (x.float().mean(1) > 200).float().mean().item()  # noqa: E731
    assert white(d.train_inputs) > 0.6 and white(d.train_inputs) > white(d.train_images) + 0.2


class _Fake:
    labelled_per_class = 0
    resolution = 8
    device = torch.device("cpu")


def test_paired_jitter_crops_and_flips_both_halves_identically():
    imgs = torch.randint(0, 256, (10, 3, 12, 12), dtype=torch.uint8)
    draw = Draw(imgs, None, 6, 0, _Fake(), "resize", SINGLE, inputs=imgs.clone(), paired=True, crop=8, flip=True)
    seen_flip = False
    for _ in range(5):
        x, y = draw()
        assert x.shape == (6, 3, 8, 8) and torch.equal(x, y)
        seen_flip |= any(not any(torch.equal(xi, (c.float() - 127.5) / 127.5) for c in _crops(imgs)) for xi in x)
    assert seen_flip  # some crops only exist mirrored
    a, b = Draw(imgs, None, 6, 0, _Fake(), "resize", SINGLE, inputs=imgs.clone(), paired=False, crop=8)()
    assert not torch.equal(a, b)  # unpaired: drawn independently


def _crops(imgs):
    return [img[:, oy:oy + 8, ox:ox + 8] for img in imgs for oy in range(5) for ox in range(5)]


TRANSLATION = """
name: {name}
seed: 0
dataset: {dataset}
entries:
{entries}
evaluation: {{n_samples: 8, seeds: [0, 1], batch_size: 4, extractor: inception-v3-compat, metrics: {metrics},
              kid_subset_size: 4, kid_subsets: 5, weights: {{path: "{weights[0]}", sha256: {weights[1]}}}}}
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


def _run(tmp_path, name, dataset, entries, metrics, weights):
    p = write_protocol(tmp_path / f"{name}.yaml", TRANSLATION.format(name=name, dataset=dataset, entries=entries,
                                                                     metrics=metrics, store=tmp_path.as_posix(),
                                                                     weights=weights))
    code = main(["run", str(p), "--workdir", str(tmp_path / "w")])
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    return code, rows


@needs_data
def test_pix2pix_and_l1_only_protocol_end_to_end(tmp_path, inception_standin):
    code, rows = _run(
        tmp_path, "p2p", "{name: facades, resolution: 128, channels: 3, train_size: 16, eval_size: 8, "
                         "direction: BtoA, load_size: 143, flip: true}",
        "  - {name: p2p, zoo: pix2pix, config: {resolution: 128, generator: unet_128, ngf: 8, ndf: 8}, "
        "train: {steps: 2, batch_size: 2}}\n"
        "  - {name: l1, zoo: pix2pix, config: {resolution: 128, generator: unet_128, ngf: 8, ndf: 8, l1_only: true}, "
        "train: {steps: 2, batch_size: 2}}", "[fid, ssim, psnr, lpips]", inception_standin)
    assert code == 0
    for r in rows.values():
        m = r["metrics"]
        assert {"fid", "ssim", "psnr"} <= set(m) and 0 < m["ssim"]["mean"] < 1 and m["psnr"]["mean"] > 0
        assert "lpips" in r["info"]["unavailable"]  # no AlexNet weights here: reported, never faked
    grid = Image.open(tmp_path / "w" / next(p.name for p in (tmp_path / "w").iterdir() if p.is_dir()) / "p2p" /
                      "samples.png")
    assert grid.size[0] > grid.size[1] / 8 * 2.5  # 3 columns: input | output | target


@needs_data
def test_cyclegan_protocol_reports_cycle_and_identity_error(tmp_path, inception_standin):
    code, rows = _run(
        tmp_path, "cyc", "{name: horse2zebra, resolution: 32, channels: 3, train_size: 20, eval_size: 8}",
        "  - {name: cyc, zoo: cyclegan, config: {resolution: 32, ngf: 4, ndf: 4}, train: {steps: 2, batch_size: 2}}",
        "[fid, cycle_error, identity_error]", inception_standin)
    assert code == 0
    m = rows["cyc"]["metrics"]
    assert 0 < m["cycle_error"]["mean"] < 2 and 0 < m["identity_error"]["mean"] < 2 and m["fid"]["mean"] > 0


def test_task_mismatch_and_resolution_mismatch_are_one_line_errors(tmp_path, capsys, inception_standin):
    if DATA is None:
        pytest.skip("needs ../shared/data")
    p = write_protocol(tmp_path / "bad.yaml", TRANSLATION.format(
        name="bad", dataset="{name: mnist, resolution: 28, channels: 1, train_size: 20, eval_size: 8}",
        entries="  - {name: p, zoo: pix2pix, train: {steps: 1}}", metrics="[fid]", store=tmp_path.as_posix(), weights=inception_standin))
    assert main(["run", str(p)]) == 2
    assert "is a paired model but data set 'mnist' is unconditional" in capsys.readouterr().err
    p2 = write_protocol(tmp_path / "bad2.yaml", TRANSLATION.format(
        name="bad2", dataset="{name: facades, resolution: 64, channels: 3, train_size: 4, eval_size: 4}",
        entries="  - {name: p, zoo: pix2pix, train: {steps: 1}}", metrics="[fid]", store=tmp_path.as_posix(), weights=inception_standin))
    assert main(["run", str(p2)]) == 2
    assert "config.resolution is 256 but dataset.resolution is 64" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()  # nothing written


def test_cyclegan_resume_restores_image_pools(tmp_path):
    from tests.test_runner import Killed
    from bench.protocol.schema import TrainSpec
    from bench.runner.train import train_entry
    from bench.data.datasets import RealData
    from zoo.base import DataSpec

    imgs = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = RealData(DataSpec("x", 32, 3, 0), imgs, None, imgs[:4], None, "fp", "mem", imgs.flip(0), imgs[:4].flip(0),
                    "unpaired")

    def model():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return ZOO.get("cyclegan").build({"resolution": 32, "ngf": 4, "ndf": 4, "pool_size": 3}, data.spec)

    def run(m, where, resume=False, kill_at=None):
        def log(losses, step):
            if step == kill_at:
                raise Killed
        return train_entry(m, imgs, TrainSpec(steps=6, batch_size=2, checkpoint_every=2, log_every=1), where, 1,
                           "fp", "e", log, resume=resume, data=data)

    straight = model()
    run(straight, tmp_path / "a")
    with pytest.raises(Killed):
        run(model(), tmp_path / "b", kill_at=3)
    resumed = model()
    assert run(resumed, tmp_path / "b", resume=True).resumed_from == 2
    for name, net in straight.modules().items():
        for a, b in zip(net.state_dict().values(), resumed.modules()[name].state_dict().values()):
            assert torch.equal(a, b), name


@needs_data
def test_unpaired_domain_sizes_all_keeps_every_training_image_of_each_domain():
    from bench.data import load_dataset
    from bench.errors import BenchError
    from bench.protocol.schema import DatasetSpec

    base = dict(name="apple2orange", resolution=16, channels=3, train_size=150, eval_size=48)
    equal = load_dataset(DatasetSpec(**base), 0)
    every = load_dataset(DatasetSpec(**base, domain_sizes="all"), 0)
    assert len(equal.train_inputs) == len(equal.train_images) == 150
    # ../shared/data/apple2orange has 266 apples and 248 oranges; 48 of each are held out
    assert (len(every.train_inputs), len(every.train_images)) == (266 - 48, 248 - 48)
    assert torch.equal(every.eval_images, equal.eval_images) and every.fingerprint != equal.fingerprint
    with pytest.raises(BenchError, match="domain_sizes is for unpaired data"):
        load_dataset(DatasetSpec(name="mnist", resolution=28, channels=1, train_size=100, eval_size=50,
                                 domain_sizes="all"), 0)


@needs_data
def test_colourise_turns_any_rgb_set_into_grey_to_rgb_pairs():
    from bench.protocol.load import canonical
    from bench.protocol.schema import Protocol

    base = dict(name="celeba", resolution=32, channels=3, train_size=40, eval_size=10)
    plain, col = load_dataset(DatasetSpec(**base), 0), load_dataset(DatasetSpec(**base, colourise=True), 0)
    assert col.task == "paired" and col.train_labels is None
    # the targets are the set's own images and splits, untouched
    assert torch.equal(col.train_images, plain.train_images) and torch.equal(col.eval_images, plain.eval_images)
    x = col.eval_inputs
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey on all three channels
    # BT.601 luma as Pillow's convert("L") computes it (fixed point: at most 1 level apart, nearly always equal)
    pil = torch.stack([torch.from_numpy(np.asarray(Image.fromarray(y.permute(1, 2, 0).numpy()).convert("L")))
                       for y in col.eval_images])
    diff = (x[:, 0].int() - pil.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.97
    assert (x[:, 0].float() - col.eval_images.float().mean(1)).abs().mean() > 1  # not the plain channel mean
    # the protocol fingerprint sees the option only when set (earlier fingerprints are kept)
    entries = [{"name": "p", "zoo": "pix2pix", "config": {"resolution": 64, "generator": "unet_seed"}, "train": {"steps": 0}}]
    ev = {"n_samples": 10, "seeds": [0], "extractor": "judge:cifar10"}
    off = canonical(Protocol(name="c", dataset=base, entries=entries, evaluation=ev))
    on = canonical(Protocol(name="c", dataset={**base, "colourise": True}, entries=entries, evaluation=ev))
    assert "colourise" not in off["dataset"] and on["dataset"]["colourise"] is True
    with pytest.raises(BenchError, match="colourise needs RGB"):
        load_dataset(spec(name="mnist", channels=1, resolution=28, train_size=10, eval_size=10, colourise=True), 0)

"""Issue 7's evaluation side: CelebA / image-folder data, perceptual path length, the truncation-vs-FID
curve, and the style figures attached to runs.

PPL runs on a seeded random-init VGG-16 backbone served through the weights manifest's `resolve` (the real
file -> state dict -> lpips slices path, no download); a pretrained PPL number is never produced here.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import bench.metrics.lpips as lpips_metric
from bench.cli import main
from bench.errors import BenchError
from bench.features import weights as weights_manifest
from bench.metrics import KEY_DIRECTION, METRICS, MetricContext
from bench.metrics.base import MetricUnavailable
from bench.metrics.fid import frechet
from bench.metrics.ppl import filtered_mean, path_lengths, slerp_any
from bench.protocol.schema import DatasetSpec
from bench.data.datasets import load_dataset
from bench.data.transforms import resize_uint8
from tests.conftest import write_protocol
from zoo.base import DataSpec
from zoo.dcgan import DCGAN
from zoo.progan import ProGAN
from zoo.stylegan import StyleGAN

CELEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba" / "img_align_celeba_89x109"
needs_celeba = pytest.mark.skipif(not CELEBA.is_dir(), reason="../shared/data/celeba not present")
RGB16 = DataSpec("tiny", 16, 3)
GROW = {"resolution": 16, "fmap_base": 64, "fmap_max": 16, "latent_dim": 8, "fade_steps": 2, "stable_steps": 2}


def _style(seed=0, **over):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = StyleGAN.build({**GROW, "w_dim": 8, "mapping_layers": 2, **over}, RGB16)
    m.G.set_phase(m.schedule.final_stage, 1.0)
    return m


# -- CelebA and image folders ------------------------------------------------------------------------------

@needs_celeba
def test_celeba_is_a_centred_square_resized_and_the_held_out_part_is_disjoint():
    spec = DatasetSpec(name="celeba", resolution=32, channels=3, train_size=60, eval_size=20)
    d = load_dataset(spec, seed=0)
    assert d.train_images.shape == (60, 3, 32, 32) and d.eval_images.shape == (20, 3, 32, 32)
    assert d.train_images.dtype == torch.uint8 and d.train_labels is None and d.task == "unconditional"
    # Recompute one image by hand: the 89x89 square centred in the 89x109 face, then the antialiased resize.
    files = sorted(CELEBA.glob("*.jpg"))
    train_bytes = {bytes(img.numpy().tobytes()) for img in d.train_images}
    eval_bytes = {bytes(img.numpy().tobytes()) for img in d.eval_images}
    assert not train_bytes & eval_bytes
    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
    first_held = files[perm[0]]
    arr = np.asarray(Image.open(first_held).convert("RGB")).transpose(2, 0, 1)
    assert arr.shape == (3, 109, 89)
    top = (109 - 89) // 2
    ref = resize_uint8(torch.from_numpy(np.ascontiguousarray(arr[:, top:top + 89, :])).unsqueeze(0), 32)[0]
    assert torch.equal(d.eval_images[0], ref)
    # Same seed, same split and fingerprint; another seed, another held-out part.
    again = load_dataset(spec, seed=0)
    assert again.fingerprint == d.fingerprint and torch.equal(again.eval_images, d.eval_images)
    assert load_dataset(spec, seed=1).fingerprint != d.fingerprint


@needs_celeba
def test_celeba_errors_are_one_line():
    with pytest.raises(BenchError, match="channels: 3"):
        load_dataset(DatasetSpec(name="celeba", resolution=32, channels=1, train_size=5, eval_size=5), 0)
    with pytest.raises(BenchError, match="only 2000 images"):
        load_dataset(DatasetSpec(name="celeba", resolution=32, channels=3, train_size=2000, eval_size=5), 0)
    with pytest.raises(BenchError, match="smaller than dataset.center_crop 100"):
        load_dataset(DatasetSpec(name="celeba", resolution=32, channels=3, train_size=5, eval_size=5,
                                 center_crop=100), 0)


def _folder(tmp_path, n=12, size=(20, 14)):
    root = tmp_path / "imgs"
    (root / "sub dir").mkdir(parents=True)
    g = np.random.default_rng(0)
    for i in range(n):
        where = root / "sub dir" if i % 2 else root
        Image.fromarray(g.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(where / f"face {i}.png")
    return root


def test_image_folder_reads_any_folder_recursively_with_a_centre_crop(tmp_path):
    root = _folder(tmp_path)
    (root / ".hidden.png").write_bytes(b"not even an image")  # hidden files are not data
    spec = DatasetSpec(name="image_folder", root=str(root), resolution=8, channels=3, train_size=8, eval_size=4)
    d = load_dataset(spec, 0)
    assert d.train_images.shape == (8, 3, 8, 8) and d.eval_images.shape == (4, 3, 8, 8)
    crop = DatasetSpec(name="image_folder", root=str(root), resolution=8, channels=1, train_size=8, eval_size=4,
                       center_crop=10)
    g = load_dataset(crop, 0)
    assert g.train_images.shape == (8, 1, 8, 8) and g.fingerprint == d.fingerprint  # same files, same split


def test_image_folder_errors_name_the_problem(tmp_path):
    root = _folder(tmp_path, n=4)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    spec = DatasetSpec(name="image_folder", root=str(root), resolution=8, channels=3, train_size=3, eval_size=2)
    with pytest.raises(BenchError, match="broken.jpg: not a readable image"):
        load_dataset(spec, 0)
    with pytest.raises(BenchError, match="set dataset.root"):
        load_dataset(DatasetSpec(name="image_folder", resolution=8, train_size=3, eval_size=2), 0)
    with pytest.raises(BenchError, match="not found"):
        load_dataset(DatasetSpec(name="image_folder", root=str(tmp_path / "nope"), resolution=8, train_size=3,
                                 eval_size=2), 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no images"):
        load_dataset(DatasetSpec(name="image_folder", root=str(tmp_path / "empty"), resolution=8, train_size=3,
                                 eval_size=2), 0)


# -- PPL ---------------------------------------------------------------------------------------------------

@pytest.fixture
def vgg_file(tmp_path, monkeypatch):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path / "vgg16-random.pth"
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, path)

    def fake_resolve(name, path_=None, sha256=None, allow_download=True):
        assert name == "vgg16" and not allow_download
        return path, "random-vgg16-seed0"

    monkeypatch.setattr(weights_manifest, "resolve", fake_resolve)
    monkeypatch.setattr(lpips_metric, "_CACHE", {})
    return path


def test_slerp_any_walks_the_sphere_between_the_endpoints_and_lerps_the_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 16, generator=g, dtype=torch.float64), torch.randn(5, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 0.5, 0.25, 0.75], dtype=torch.float64)
    out = slerp_any(a, b, t)
    assert torch.allclose(out[0], a[0]) and torch.allclose(out[1], b[1])
    assert torch.allclose(out.norm(dim=1), torch.lerp(a.norm(dim=1), b.norm(dim=1), t))
    # Equal angles to both ends at t = 0.5.
    ua, ub, um = a[2] / a[2].norm(), b[2] / b[2].norm(), out[2] / out[2].norm()
    assert float(um @ ua) == pytest.approx(float(um @ ub), abs=1e-12)


def test_filtered_mean_drops_the_tails():
    # 1,000 distances, 5 wild ones at each end: below the 1st / above the 99th percentile, so dropped.
    d = np.concatenate([np.full(990, 1.0), np.full(5, 1e9), np.full(5, -1e9)])
    assert filtered_mean(d) == pytest.approx(1.0)
    assert filtered_mean(np.arange(1000.0)) == pytest.approx(np.arange(9.0, 991.0).mean())


def test_ppl_is_seeded_positive_and_zero_for_a_generator_that_ignores_its_latent(vgg_file):
    m = _style()
    ctx = MetricContext(0, SimpleNamespace(ppl_samples=6, batch_size=4), generator=m)
    first = METRICS.get("ppl").compute(ctx)
    assert set(first) == {"ppl_z", "ppl_w"} and all(np.isfinite(v) and v > 0 for v in first.values())
    assert METRICS.get("ppl").compute(ctx) == first  # the latents, t and noise come from the eval seed
    other = METRICS.get("ppl").compute(MetricContext(1, SimpleNamespace(ppl_samples=6, batch_size=4), generator=m))
    assert other != first
    # With psi 0 on every layer each image is the average face, whatever the latent: no path length.
    net = lpips_metric.lpips_network(MetricContext(0, SimpleNamespace()), "ppl", net="vgg")
    flat = _style(truncation_psi=0.0, truncation_cutoff=0)
    orig = flat.synthesize
    flat.synthesize = lambda ws, noise=None, psi=1.0, cutoff=None: orig(ws, noise, 0.0, 0)
    assert np.allclose(path_lengths(flat, net, 4, 4, "w", seed=0), 0.0, atol=1e-6)


def test_ppl_z_only_for_models_without_w_and_unavailable_without_weights(vgg_file, monkeypatch):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dc = DCGAN.build({"ngf": 4, "ndf": 4}, DataSpec("tiny", 32, 3))
        pg = ProGAN.build(GROW, RGB16)
    for model in (dc, pg):
        out = METRICS.get("ppl").compute(MetricContext(0, SimpleNamespace(ppl_samples=4, batch_size=4),
                                                        generator=model))
        assert set(out) == {"ppl_z"} and out["ppl_z"] > 0
    with pytest.raises(MetricUnavailable, match="unconditional generator"):
        METRICS.get("ppl").compute(MetricContext(0, SimpleNamespace()))

    def missing(name, path_=None, sha256=None, allow_download=True):
        raise BenchError(f"weights '{name}' missing: fetch it with bench weights fetch {name}")

    monkeypatch.setattr(weights_manifest, "resolve", missing)
    monkeypatch.setattr(lpips_metric, "_CACHE", {})
    with pytest.raises(MetricUnavailable, match="ppl: weights 'vgg16' missing"):
        METRICS.get("ppl").compute(MetricContext(0, SimpleNamespace(), generator=dc))
    assert KEY_DIRECTION["ppl_z"] is False and KEY_DIRECTION["ppl_w"] is False


# -- truncation curve --------------------------------------------------------------------------------------

def test_fid_truncation_scores_each_psi_and_is_unavailable_without_truncation():
    real = {"mu": np.zeros(2), "sigma": np.eye(2)}
    seen = []

    def stats(psi):
        return {"mu": np.full(2, psi), "sigma": np.eye(2)}

    def truncated(psi):
        seen.append(psi)
        return torch.zeros(10, 2), stats(psi)  # more points than dimensions: torch-fidelity's formula on the stats

    ctx = MetricContext(0, SimpleNamespace(truncation_psis=[0.5, 0.7, 1.0]), real_stats=real, truncated=truncated)
    out = METRICS.get("fid_truncation").compute(ctx)
    assert seen == [0.5, 0.7, 1.0]
    assert out == {f"fid_trunc/psi_{p:g}": pytest.approx(frechet(real, stats(p))) for p in (0.5, 0.7, 1.0)}
    assert KEY_DIRECTION["fid_trunc/psi_0.3"] is False and "fid_trunc/psi_0.3" in KEY_DIRECTION
    with pytest.raises(MetricUnavailable, match="truncation"):
        METRICS.get("fid_truncation").compute(MetricContext(0, SimpleNamespace(), real_stats=real))


# -- end to end --------------------------------------------------------------------------------------------

STYLE = """
name: {name}
seed: 0
dataset: {{name: celeba, resolution: 16, channels: 3, train_size: 40, eval_size: 12}}
entries:
  - {{name: sg, zoo: stylegan, config: {{resolution: 16, latent_dim: 8, w_dim: 8, mapping_layers: 2, fmap_base: 64,
      fmap_max: 16, fade_steps: 1, stable_steps: 1}}, train: {{steps: 6, batch_size: 4}}}}
  - {{name: pg, zoo: progan, config: {{resolution: 16, latent_dim: 8, fmap_base: 64, fmap_max: 16, fade_steps: 1,
      stable_steps: 1}}, train: {{steps: 2, batch_size: 4}}}}
evaluation: {{n_samples: 12, seeds: [0, 1], batch_size: 6, extractor: inception-v3-compat,
              metrics: [fid, fid_truncation, ppl], ppl_samples: 4, truncation_psis: [0.5, 1.0],
              weights: {{path: "{weights[0]}", sha256: {weights[1]}}}}}
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


@needs_celeba
def test_celeba_style_protocol_scores_the_curve_and_attaches_the_figures(tmp_path, inception_standin):
    p = write_protocol(tmp_path / "style.yaml", STYLE.format(name="style", store=tmp_path.as_posix(),
                                                             weights=inception_standin))
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 0
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    sg, pg = rows["sg"], rows["pg"]
    assert sg["status"] == pg["status"] == "FINISHED"
    # psi 1 is the untruncated FID of the same latents: the same number.
    assert sg["metrics"]["fid_trunc/psi_1"]["per_seed"] == pytest.approx(sg["metrics"]["fid"]["per_seed"], rel=1e-9)
    assert sg["metrics"]["fid_trunc/psi_0.5"]["mean"] != sg["metrics"]["fid"]["mean"]
    assert "ppl" in sg["info"]["unavailable"] and "vgg16" in sg["info"]["unavailable"]["ppl"]  # never faked
    assert "fid_truncation" in pg["info"]["unavailable"] and not any(k.startswith("fid_trunc") for k in pg["metrics"])
    assert set(sg["info"]["figures"]) == {"truncation", "style_mixing", "noise", "interpolation"}
    assert set(pg["info"]["figures"]) == {"interpolation"}
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path.as_posix()}/mlflow.db")
    runs = {r.data.tags["mlflow.runName"]: r for r in client.search_runs(
        [client.get_experiment_by_name("style").experiment_id])}
    names = {a.path for a in client.list_artifacts(runs["sg"].info.run_id, "figures")}
    assert names == {f"figures/{n}.png" for n in ("truncation", "style_mixing", "noise", "interpolation")}
    assert runs["sg"].data.metrics["fid_trunc/psi_0.5"] == pytest.approx(sg["metrics"]["fid_trunc/psi_0.5"]["mean"])
    # The report carries the truncation curve and every figure, captioned.
    out = tmp_path / "report"
    assert main(["report", str(p), "--out", str(out)]) == 0
    md = (out / "README.md").read_text()
    assert (out / "img" / "truncation-fid.png").stat().st_size > 1000 and "img/truncation-fid.png" in md
    for name in ("truncation", "style_mixing", "noise", "interpolation"):
        assert (out / "img" / f"{name}-sg.png").is_file() and f"img/{name}-sg.png" in md
    assert (out / "img" / "interpolation-pg.png").is_file() and "style mixing: top row" in md
    assert "- not computed: `ppl`: ppl: vgg16 weights missing" in md  # said in the report, never a number

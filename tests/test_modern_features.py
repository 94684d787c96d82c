"""CLIP ViT-L/14 and DINOv2 ViT-L/14 feature spaces (bench/features/pretrained.py), exercised with seeded
random-init weights files of the exact architectures (pretrained files cannot be had offline; no number here
means anything about images). CLIP goes through torch-fidelity's own extractor on the same file, so bench's
FID/KID equal torch-fidelity's; DINOv2's network is bench's own (torch-fidelity builds it from GitHub), so its
layout is checked against the official one and its features feed the same metric code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from tests.conftest import KID_VS_FIDELITY


def _folder(path, n, seed, shift):
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        x = rng.integers(0, 256, (32, 32, 3)).astype(np.float32) * (0.6 if shift else 1.0) + (60 if shift else 0)
        Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(path / f"{i}.png")
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("modern")
    return _folder(root / "a", 3, 0, False), _folder(root / "b", 3, 1, True)  # a ViT-L forward is ~1 s per image


def _score(a, b, extractor, weights, sha, capsys, metrics="fid,kid"):
    args = ["score", str(a), str(b), "--metrics", metrics, "--extractor", extractor, "--weights", weights,
            "--weights-sha256", sha, "--kid-subsets", "5", "--kid-subset-size", "3", "--batch-size", "3", "--json", "--no-log"]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_clip_scores_equal_torch_fidelitys_clip_on_the_same_file(folders, tmp_path, capsys):
    import torch_fidelity

    from bench.features.standin import build_test_clip_weights

    a, b = folders
    weights, sha = build_test_clip_weights(tmp_path / "clip.pt", seed=0)
    ours = _score(a, b, "clip-vit-l-14", weights, sha, capsys)
    assert ours["extractor"] == "clip-vit-l-14" and ours["extractor_sha256"] == sha
    ref = torch_fidelity.calculate_metrics(input1=str(a), input2=str(b), fid=True, kid=True, cuda=False,
                                           kid_subsets=5, kid_subset_size=3, verbose=False, cache=False,
                                           feature_extractor="clip-vit-l-14", feature_extractor_weights_path=weights)
    m = ours["metrics"]
    assert m["fid"] > 0 and m["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)
    assert m["kid/mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=KID_VS_FIDELITY)


def test_dinov2_network_has_the_official_layout():
    from bench.features.dinov2 import DinoV2ViTL14

    with torch.device("meta"):
        net = DinoV2ViTL14()
    state = net.state_dict()
    assert sum(v.numel() for v in state.values()) == 304_368_640  # ViT-L/14, 518 px position table, no registers
    assert state["pos_embed"].shape == (1, 37 * 37 + 1, 1024) and state["patch_embed.proj.weight"].shape == (1024, 3, 14, 14)
    per_block = {k.split(".", 2)[2] for k in state if k.startswith("blocks.0.")}
    assert per_block == {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                         "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                         "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"}
    assert {k for k in state if not k.startswith("blocks.")} == {
        "cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
        "norm.bias"}
    assert len({k.split(".")[1] for k in state if k.startswith("blocks.")}) == 24


def test_dinov2_positions_are_resampled_as_the_official_code_does():
    from bench.features.dinov2 import DinoV2ViTL14

    net = DinoV2ViTL14()
    net.init_random(torch.Generator().manual_seed(0))
    assert net.positions(518, 518) is net.pos_embed  # the native grid is used as is
    pos = net.positions(224, 224)
    assert pos.shape == (1, 16 * 16 + 1, 1024) and torch.equal(pos[:, 0], net.pos_embed[:, 0])
    grid = net.pos_embed[:, 1:].reshape(1, 37, 37, 1024).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic")
    assert torch.equal(pos[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 256, 1024))
    size_only = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic")
    assert not torch.allclose(ref, size_only)  # the offset matters: a size-based resample would be another space


def test_dinov2_scores_run_on_its_embedding(folders, tmp_path, capsys):
    from bench.features.pretrained import features_fn
    from bench.features.standin import build_test_dinov2_weights
    from bench.metrics.fid import frechet
    from bench.features.stats import RunningStats
    from bench.score import read_folder

    a, b = folders
    weights, sha = build_test_dinov2_weights(tmp_path / "dinov2.pth", seed=0)
    ours = _score(a, b, "dinov2-vit-l-14", weights, sha, capsys, metrics="fid")
    fn = features_fn("dinov2-vit-l-14", tmp_path / "dinov2.pth", torch.device("cpu"))
    stats = []
    for folder in (b, a):
        s = RunningStats(1024)
        s.update(fn(read_folder(folder))["pool"])
        stats.append(s.as_fid_stats())
    assert ours["metrics"]["fid"] > 0 and ours["metrics"]["fid"] == pytest.approx(frechet(*stats), rel=1e-6)


def test_is_is_unavailable_in_an_embedding_without_logits():
    from bench.metrics.base import MetricContext, MetricUnavailable
    from bench.metrics.inception_score import INCEPTION_SCORE

    with pytest.raises(MetricUnavailable, match="class logits"):
        INCEPTION_SCORE.compute(MetricContext(0, None, fake={"pool": torch.randn(8, 4)}))


def test_a_missing_file_names_it_and_where_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    a = _folder(tmp_path / "a", 2, 0, False)
    for name, file in [("dinov2-vit-l-14", "dinov2_vitl14_pretrain.pth"), ("clip-vit-l-14", "clip-vit-l-14-b8cca3fd")]:
        assert main(["score", str(a), str(a), "--extractor", name, "--no-log"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and file in err and "https://" in err and "BENCH_WEIGHTS_DIR" in err

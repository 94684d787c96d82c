"""Paired streams stay aligned at small N (issue #15, part 5).

A translation model is scored on its outputs for the first n = min(n_samples, eval_size) held-out inputs, each
paired with the target of the same index. The pairing must hold whatever n and the batch size are: n below the
held-out size and not a multiple of the batch size, n equal to it, a batch larger than n. Before the fix the
targets were sliced by batch number (`eval_images[k*bs:(k+1)*bs]`) while the outputs stopped at n, so the last
batch paired 1 output with 3 targets: PSNR and LPIPS raised, SSIM silently dropped the unpaired targets and
seg_agreement compared S on images of different batches.

The models: `pix2pixhd_sem` with `generator: bicubic`, built through the zoo, is the identity (G(x) = x), so
every score of a known pairing can be computed directly from the data; a small pix2pix with test-time dropout
(per-sample seeds) shows the scores do not depend on the batch size. Features come from the tiny extractor of
tests/test_batch_invariance.py, LPIPS uses a random AlexNet backbone (never downloaded), seg_agreement a fixed
"strongest colour channel" segmenter.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import bench.metrics.lpips as lpips_metric
from bench import evaluation
from bench.data.transforms import to_float
from bench.features import segmenter as semantic
from bench.features import weights as weights_manifest
from bench.features.segmenter import FrozenSegmenter, confusion, scores
from bench.metrics.base import MetricContext
from bench.metrics.psnr import mean_psnr, psnr_batch
from bench.metrics.ssim import ssim_batch
from bench.protocol.schema import EvaluationSpec
from bench.runner.sampling import cycle_batches, real_batches, stream_features
from tests.test_batch_invariance import build, smooth_images, tiny_extractor
from zoo.base import DataSpec

EVAL = 10  # held-out pairs in the data
RES = 32  # the smallest side LPIPS/AlexNet takes is 31
SPEC = DataSpec("facades", RES, 3)
CLASSES = 3
PAIRED = ["ssim", "psnr", "lpips", "seg_agreement"]
# (n_samples, batch_size): n < EVAL and not a multiple of the batch; a batch between n and EVAL; a batch larger
# than EVAL; n == EVAL (not a multiple, and a multiple); n < EVAL a multiple; n > EVAL (n becomes EVAL)
CASES = [(7, 3), (7, 8), (7, 16), (2, 4), (10, 3), (10, 5), (6, 3), (20, 3)]  # the old pairing broke the first 4


def case_id(case) -> str:
    return f"n{case[0]}-bs{case[1]}"


def identity():
    """pix2pixhd_sem's bicubic baseline: G is nn.Identity, so the output of input i is input i."""
    model = build("pix2pixhd_sem", SPEC, resolution=RES, generator="bicubic")
    assert torch.equal(model.translate(torch.zeros(1, 3, RES, RES) + 0.5), torch.zeros(1, 3, RES, RES) + 0.5)
    return model


def paired_data(inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None):
    targets = smooth_images(EVAL, 3, RES, 2) if targets is None else targets
    inputs = smooth_images(EVAL, 3, RES, 1) if inputs is None else inputs
    maps = torch.randint(0, CLASSES, (EVAL, RES, RES), generator=torch.Generator().manual_seed(4))
    return SimpleNamespace(eval_inputs=inputs, eval_images=targets, eval_labels=None, task="paired",
                           has_label_maps=True, eval_label_maps=maps)


def channel_S() -> FrozenSegmenter:
    """Class = the strongest colour channel: known, varied predictions."""
    conv = nn.Conv2d(3, CLASSES, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv.bias.zero_()
    return FrozenSegmenter(conv, {"sha256": "channel-S"})


@pytest.fixture
def segmenter(monkeypatch):
    S = channel_S()
    monkeypatch.setattr(semantic, "for_data", lambda data, device="cpu", **kw: S)
    return S


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path_factory.mktemp("backbones") / "alexnet-random.pth"
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, path)
    return path


@pytest.fixture
def random_alexnet(alexnet_file, monkeypatch):
    def fake_resolve(name, path_=None, sha256=None, allow_download=True):
        assert name == "alexnet" and not allow_download
        return alexnet_file, "random-alexnet-seed0"

    monkeypatch.setattr(weights_manifest, "resolve", fake_resolve)
    monkeypatch.setattr(lpips_metric, "_CACHE", {})


def run(model, data, n_samples: int, batch_size: int, metrics: list[str], monkeypatch=None):
    """evaluation.evaluate with one eval seed; returns (value per key, unavailable, the MetricContext it built)."""
    seen: list[MetricContext] = []
    if monkeypatch is not None:
        def spy(*args, **kwargs):
            seen.append(MetricContext(*args, **kwargs))
            return seen[-1]
        monkeypatch.setattr(evaluation, "MetricContext", spy)
    protocol = SimpleNamespace(evaluation=EvaluationSpec(n_samples=n_samples, seeds=[3], batch_size=batch_size,
                                                         metrics=metrics),
                               dataset=SimpleNamespace(resolution=RES, channels=3, frame=(RES, RES)))
    extractor = tiny_extractor(3)
    real, stats = stream_features(real_batches(data.eval_images, batch_size), extractor, "real", EVAL)
    unavailable: dict[str, str] = {}
    out = evaluation.evaluate(model, extractor, real, stats.as_fid_stats(), protocol, "resize", unavailable, data)
    return {k: v["per_seed"][0] for k, v in out.items()}, unavailable, (seen[0] if seen else None)


def direct(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """PSNR and SSIM of known (output i, target i) pairs, all at once, without the pipeline."""
    p, s = psnr_batch(outputs, targets), ssim_batch(outputs, targets)
    return {"psnr": mean_psnr(p), "psnr/inf_fraction": float(torch.isinf(p).double().mean()),
            "ssim": float(s.mean()), "ssim/std": float(s.std())}


# -- the pairing itself ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_output_i_is_paired_with_target_i_and_there_are_exactly_n_pairs(case, monkeypatch):
    n_samples, bs = case
    data, n = paired_data(), min(n_samples, EVAL)
    # ssim is listed so evaluate builds its context (the old pairing let SSIM through, silently truncated)
    _, _, ctx = run(identity(), data, n_samples, bs, ["ssim"], monkeypatch)
    pairs = list(ctx.pairs())
    assert all(len(out) == len(tgt) <= bs for out, tgt in pairs), [(len(o), len(t)) for o, t in pairs]
    outputs, targets = torch.cat([o for o, _ in pairs]), torch.cat([t for _, t in pairs])
    assert len(outputs) == len(targets) == n
    assert torch.equal(outputs, to_float(data.eval_inputs[:n]))  # the identity's output i is input i ...
    assert torch.equal(targets, to_float(data.eval_images[:n]))  # ... and it is paired with target i
    assert torch.equal(torch.cat([o for o, _ in ctx.pairs()]), outputs)  # every pass sees the same pairs


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_psnr_and_ssim_of_a_known_pairing_equal_the_values_computed_directly(case):
    n_samples, bs = case
    n = min(n_samples, EVAL)
    targets = smooth_images(EVAL + 1, 3, RES, 2)
    # The identity on inputs that are the targets shifted by one: output i is target i+1.
    shifted = paired_data(inputs=targets[1:], targets=targets[:EVAL])
    got, gone, _ = run(identity(), shifted, n_samples, bs, ["psnr", "ssim"])
    assert gone == {}
    want = direct(to_float(targets[1:n + 1]), to_float(targets[:n]))
    assert got == want  # exactly: per-image values in float64, averaged in index order
    assert math.isfinite(got["psnr"]) and got["psnr/inf_fraction"] == 0.0 and got["ssim"] < 0.9

    # The identity on the targets themselves: every pair identical, every image counted once.
    same = paired_data(inputs=targets[:EVAL], targets=targets[:EVAL])
    got, _, _ = run(identity(), same, n_samples, bs, ["psnr", "ssim"])
    assert got == {"psnr": math.inf, "psnr/inf_fraction": 1.0, "ssim": 1.0, "ssim/std": 0.0}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_lpips_and_seg_agreement_see_exactly_the_n_pairs(case, random_alexnet, segmenter):
    n_samples, bs = case
    n = min(n_samples, EVAL)
    data = paired_data()
    got, gone, _ = run(identity(), data, n_samples, bs, PAIRED)
    assert gone == {}
    outputs, targets = to_float(data.eval_inputs[:n]), to_float(data.eval_images[:n])
    assert {k: got[k] for k in ("psnr", "ssim")} == {k: v for k, v in direct(outputs, targets).items()
                                                     if k in ("psnr", "ssim")}
    ctx = MetricContext(0, SimpleNamespace(lpips_net="alex"))
    d = lpips_metric.distances(lpips_metric.lpips_network(ctx, "lpips"), outputs, targets, ctx.device)
    assert got["lpips"] == pytest.approx(float(d.mean()), rel=1e-5)
    with torch.no_grad():
        s_fake, s_real = segmenter(outputs).argmax(1), segmenter(targets).argmax(1)
    truth = data.eval_label_maps[:n]
    assert got["seg_agreement"] == float((s_fake == s_real).double().mean())
    assert got["seg_agreement/label"] == scores(confusion(s_fake, truth, CLASSES))["pixel_accuracy"]
    assert got["seg_agreement/ceiling"] == scores(confusion(s_real, truth, CLASSES))["pixel_accuracy"]


def test_ssim_refuses_batches_of_different_lengths():
    x = to_float(smooth_images(3, 3, RES, 1))
    with pytest.raises(ValueError, match="different"):
        ssim_batch(x, x[:2])  # zip() would have scored 2 pairs and dropped the third without a word


def test_the_cycle_stream_is_aligned_at_small_n():
    model = build("cyclegan", SPEC, resolution=RES, ngf=4, ndf=4, n_blocks=1)
    data = paired_data()
    for bs in (3, 8, 16):
        batches = list(cycle_batches(model, data.eval_inputs, data.eval_images, 7, 0, bs))
        assert torch.equal(torch.cat([b["a"] for b in batches]), to_float(data.eval_inputs[:7]))
        assert torch.equal(torch.cat([b["b"] for b in batches]), to_float(data.eval_images[:7]))


# -- batch-size independence with test-time noise ---------------------------------------------------------------

def test_pix2pix_scores_at_small_n_do_not_depend_on_the_batch_size(random_alexnet, segmenter):
    """pix2pix keeps its dropout at test time, drawn per image from its own seed: every batching of n = 7 of 10
    held-out pairs scores the same (to float rounding of convolutions run on batches of other sizes)."""
    model = build("pix2pix", DataSpec("facades", 64, 3), resolution=64, generator="unet_seed", ngf=4, ndf=4)
    data = SimpleNamespace(**{**vars(paired_data()), "eval_inputs": smooth_images(EVAL, 3, 64, 1),
                              "eval_images": smooth_images(EVAL, 3, 64, 2),
                              "eval_label_maps": torch.randint(0, CLASSES, (EVAL, 64, 64),
                                                               generator=torch.Generator().manual_seed(4))})
    protocol_res = 64

    def scores_at(bs):
        protocol = SimpleNamespace(evaluation=EvaluationSpec(n_samples=7, seeds=[3], batch_size=bs, metrics=PAIRED),
                                   dataset=SimpleNamespace(resolution=protocol_res, channels=3,
                                                           frame=(protocol_res, protocol_res)))
        extractor = tiny_extractor(3)
        real, stats = stream_features(real_batches(data.eval_images, bs), extractor, "real", EVAL)
        unavailable: dict[str, str] = {}
        out = evaluation.evaluate(model, extractor, real, stats.as_fid_stats(), protocol, "resize", unavailable, data)
        assert unavailable == {}
        return {k: v["per_seed"][0] for k, v in out.items()}

    results = {bs: scores_at(bs) for bs in (7, 2, 3, 8, 16)}
    base = results[7]  # one batch holding exactly the n images
    for bs, got in results.items():
        assert set(got) == set(base)
        for key, value in got.items():
            assert value == pytest.approx(base[key], rel=1e-4, abs=1e-6), (bs, key)
    assert np.isfinite(base["psnr"]) and 0 < base["seg_agreement"] < 1

"""Sliced Wasserstein distance on Laplacian-pyramid patches (ProGAN): each defining property, checked."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from bench.metrics import KEY_DIRECTION, METRICS, MetricContext
from bench.metrics.swd import laplacian_pyramid, levels_of, neighbourhoods, pyr_down, pyr_up, reconstruct, sliced_wasserstein
from bench.protocol.schema import EvaluationSpec
from tests.conftest import needs_data, tiny_protocol

BINOMIAL_5x5 = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def _images(n=24, res=32, seed=0, c=3):
    g = torch.Generator().manual_seed(seed)
    # smooth random fields plus fine noise: structure at every pyramid level
    coarse = torch.nn.functional.interpolate(torch.randn(n, c, res // 8, res // 8, generator=g), size=res,
                                             mode="bilinear", align_corners=False)
    return (0.6 * coarse + 0.3 * torch.randn(n, c, res, res, generator=g)).clamp(-1, 1)


def _stream(x, batch=10):
    return lambda: iter(x.split(batch))


def _swd(fake, real, seed=0, **settings):
    ev = EvaluationSpec(n_samples=len(fake), seeds=[seed], metrics=["swd"],
                        metric_settings={"swd_patches_per_image": 32, "swd_repeats": 2, "swd_directions": 64, **settings})
    return METRICS.get("swd").compute(MetricContext(seed, ev, fake_images=_stream(fake), real_images=_stream(real)))


def test_pyramid_filters_are_the_reference_binomial_with_mirrored_borders():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    ref = scipy.ndimage.convolve(x.numpy(), BINOMIAL_5x5[None, None], mode="mirror")
    assert torch.allclose(pyr_down(x), torch.from_numpy(ref[:, :, ::2, ::2]), atol=1e-12)
    up = np.zeros((2, 3, 32, 32))
    up[:, :, ::2, ::2] = x.numpy()
    ref_up = scipy.ndimage.convolve(up, 4 * BINOMIAL_5x5[None, None], mode="mirror")
    assert torch.allclose(pyr_up(x), torch.from_numpy(ref_up), atol=1e-12)


def test_laplacian_pyramid_is_exactly_invertible_and_stops_at_16_px():
    assert levels_of(128) == [128, 64, 32, 16] and levels_of(28) == [28] and levels_of(8) == []
    x = _images(4, 64).double()
    pyramid = laplacian_pyramid(x, 3)
    assert [p.shape[-1] for p in pyramid] == [64, 32, 16]
    assert torch.allclose(reconstruct(pyramid), x, atol=1e-12)
    # band-pass levels carry no mean; the residual carries all of it
    assert abs(float(pyramid[0].mean())) < 0.02 < abs(float(pyramid[-1].mean())) or abs(float(x.mean())) < 0.02


def test_neighbourhoods_are_the_patches_at_their_positions():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float64).view(2, 3, 16, 16)
    g = torch.Generator().manual_seed(5)
    d = neighbourhoods(x, 4, g)
    assert d.shape == (8, 3 * 49)
    g = torch.Generator().manual_seed(5)
    ys, xs = torch.randint(3, 13, (2, 4), generator=g), torch.randint(3, 13, (2, 4), generator=g)
    for i in range(2):
        for p in range(4):
            patch = x[i, :, ys[i, p] - 3:ys[i, p] + 4, xs[i, p] - 3:xs[i, p] + 4]
            assert torch.equal(d[i * 4 + p], patch.reshape(-1))


def test_sliced_wasserstein_matches_the_closed_form_for_gaussians():
    """Projections of N(0, I) and N(0, σ²I) on a unit direction are N(0, 1) and N(0, σ²), whose W1 distance is
    |σ - 1|·E|Z| = |σ - 1|·sqrt(2/π), for every direction."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40000, 12, generator=g), 2.0 * torch.randn(40000, 12, generator=g)
    sw = sliced_wasserstein(a, b, 2, 32, torch.Generator().manual_seed(1))
    assert sw == pytest.approx(math.sqrt(2 / math.pi), rel=0.02)
    assert sliced_wasserstein(a, a.clone(), 2, 32, torch.Generator().manual_seed(1)) == 0.0
    with pytest.raises(ValueError):
        sliced_wasserstein(a, b[:10], 1, 4, g)


def test_swd_sees_lost_detail_at_the_fine_level_and_ignores_a_global_contrast_change():
    real = _images(80, 32, seed=1)
    same = _swd(_images(80, 32, seed=2), real, swd_patches_per_image=64)
    other = _swd(_images(80, 32, seed=3), real, swd_patches_per_image=64)
    blurred = _swd(torch.nn.functional.avg_pool2d(_images(80, 32, seed=2), 3, 1, 1), real, swd_patches_per_image=64)
    assert set(same) == {"swd", "swd/32px", "swd/16px", "swd/images"} and same["swd/images"] == 80
    # blurring removes the finest band: the 32 px level doubles (two same-distribution draws agree within 10%),
    # while the 16 px residual barely moves
    assert abs(other["swd/32px"] - same["swd/32px"]) < 0.1 * same["swd/32px"]
    assert blurred["swd/32px"] > 1.8 * same["swd/32px"]
    assert abs(blurred["swd/16px"] - same["swd/16px"]) < 0.1 * same["swd/16px"]
    # each side is normalised by its own per-channel statistics (the reference code): a contrast change of the
    # whole generated set is invisible
    fake = _images(80, 32, seed=2)
    assert _swd(0.5 * fake, real)["swd"] == pytest.approx(_swd(fake, real)["swd"], rel=1e-5)
    assert KEY_DIRECTION["swd"] is False and KEY_DIRECTION["swd/32px"] is False


def test_swd_uses_equal_image_counts_and_is_seeded():
    real, fake = _images(30, 16, seed=3), _images(17, 16, seed=4)
    out = _swd(fake, real)
    assert out["swd/images"] == 17 and set(out) == {"swd", "swd/16px", "swd/images"}
    assert _swd(fake, real) == out  # same evaluation seed, same number
    assert _swd(fake, real, seed=1)["swd"] != out["swd"]
    assert _swd(fake, real, swd_images=8)["swd/images"] == 8


def test_swd_refuses_images_below_16_px():
    from bench.metrics.base import MetricUnavailable

    with pytest.raises(MetricUnavailable, match="16 px"):
        _swd(_images(4, 8), _images(4, 8))


@needs_data
def test_a_protocol_scores_swd_with_the_real_data_row(tmp_path):
    """Through `bench run`: the held-out real images reach the metric, per level, and the real-data row (the
    training images against the held-out ones) scores below an untrained generator."""
    import json

    from bench.cli import main
    proto = tiny_protocol(tmp_path, entries="  - {name: untrained, zoo: mnist_gan, train: {steps: 0}}\n",
                          n_samples=200, reference=True)
    text = proto.read_text().replace("metrics: [is, fid, kid]", "metrics: [swd]\n  swd_patches_per_image: 32")
    proto.write_text(text)
    assert main(["run", str(proto), "--workdir", str(tmp_path / "w")]) == 0
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    untrained, real = rows["untrained"]["metrics"], rows["real_data"]["metrics"]
    assert set(untrained) >= {"swd", "swd/28px", "swd/images"} and untrained["swd/images"]["mean"] == 200
    assert real["swd"]["mean"] < 0.5 * untrained["swd"]["mean"]

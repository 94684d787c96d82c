"""Density and coverage (Naeem et al. 2020): the blockwise code equals the paper's definition computed by
brute force, and it has the paper's expectations for equal distributions (density 1, coverage given by the
exchangeability of the k nearest neighbours)."""

import math

import numpy as np
import pytest
import torch

from bench.metrics.base import MetricContext
from bench.metrics.density_coverage import DENSITY_COVERAGE, density_coverage
from bench.protocol.schema import EvaluationSpec


def _brute(fake: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    radii = np.sort(rr, axis=1)[:, k]  # column 0 is the point itself
    rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # (real, fake)
    inside = rf < radii[:, None]
    return inside.sum() / (k * len(fake)), inside.any(axis=1).mean()


@pytest.mark.parametrize("k", [1, 3, 5])
def test_blockwise_equals_the_definition(k, monkeypatch):
    import bench.metrics.precision_recall as pr

    monkeypatch.setattr(pr, "BLOCK_ELEMENTS", 37 * 150)  # 37 rows against 150 columns: several blocks, one ragged
    g = torch.Generator().manual_seed(k)
    fake, real = torch.randn(150, 6, generator=g) * 1.3 + 0.2, torch.randn(120, 6, generator=g)
    density, cov = density_coverage(fake, real, k)
    ref_d, ref_c = _brute(fake.double().numpy(), real.double().numpy(), k)
    assert density == pytest.approx(ref_d, rel=1e-12) and cov == pytest.approx(ref_c, rel=1e-12)


def test_equal_distributions_have_the_expected_density_and_coverage():
    g = torch.Generator().manual_seed(0)
    n = m = 2000
    k = 5
    real, fake = torch.randn(n, 8, generator=g), torch.randn(m, 8, generator=g)
    density, cov = density_coverage(fake, real, k)
    # A real point's ball is empty of fakes iff its k nearest among the other n-1 reals and the m fakes are all
    # reals; by exchangeability that has probability prod_j (n-1-j)/(n-1+m-j).
    expected_cov = 1 - math.prod((n - 1 - j) / (n - 1 + m - j) for j in range(k))
    assert cov == pytest.approx(expected_cov, abs=0.015)
    assert density == pytest.approx(1.0, abs=0.06)  # E[density] = 1: a fake lands in a given ball with prob k/n


def test_mode_collapse_loses_coverage_and_outliers_lose_density():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(1000, 8, generator=g)
    good = torch.randn(1000, 8, generator=g)
    collapsed = real[:1].repeat(1000, 1) + 0.01 * torch.randn(1000, 8, generator=g)
    _, cov_good = density_coverage(good, real)
    _, cov_collapsed = density_coverage(collapsed, real)
    assert cov_good > 0.9 and cov_collapsed < 0.02
    half_outliers = torch.cat([good[:500], good[500:] + 50])
    d_good, _ = density_coverage(good, real)
    d_half, _ = density_coverage(half_outliers, real)
    assert d_half == pytest.approx(d_good / 2, rel=0.15)


def test_registered_metric_reads_its_setting():
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g)
    default = EvaluationSpec(n_samples=300, seeds=[0], metrics=["density_coverage"])
    k2 = default.model_copy(update={"metric_settings": {"dc_neighborhood": 2}})
    out5 = DENSITY_COVERAGE.compute(MetricContext(0, default, fake={"pool": fake}, real={"pool": real}))
    out2 = DENSITY_COVERAGE.compute(MetricContext(0, k2, fake={"pool": fake}, real={"pool": real}))
    assert (out5["density"], out5["coverage"]) == density_coverage(fake, real, 5)
    assert (out2["density"], out2["coverage"]) == density_coverage(fake, real, 2) != density_coverage(fake, real, 5)


def test_a_set_against_itself_has_density_and_coverage_exactly_one():
    # each ball holds its centre and the k - 1 nearest others; the k-th lies on the boundary, outside
    x = torch.randn(700, 16, generator=torch.Generator().manual_seed(3))
    assert density_coverage(x, x, 5) == (1.0, 1.0)

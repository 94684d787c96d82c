"""The FID and KID 95% intervals cover what they claim about 95% of the time (a small grid of
`bench perf coverage`; README quotes the full table), and the closed forms behind the check are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.coverage import Population, _expected_kernel, passes, simulate_cell, verdict
from bench.metrics.intervals import _Side, fid_interval, fid_value, mmd2_unbiased


def test_expected_kernel_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(0)
    d = 8
    pop = Population(d, 0.5, 1.5)
    lam_g = pop.scale ** 2 * pop.lam
    x = rng.standard_normal((400_000, d)) * np.sqrt(pop.lam)
    y = rng.standard_normal((400_000, d)) * np.sqrt(lam_g) + pop.delta
    mc = ((x * y).sum(1) / d + 1) ** 3
    cf = _expected_kernel(np.zeros(d), pop.lam, pop.delta, lam_g, d)
    assert abs(mc.mean() - cf) < 4 * mc.std() / np.sqrt(len(mc))
    # and a wrong formula (dropping the mean-covariance cross term) is caught by the same check
    assert abs(mc.mean() - (cf - 3 * (2 * (pop.delta * lam_g * pop.lam) @ pop.delta / d) / d ** 2 * 50)) > \
        4 * mc.std() / np.sqrt(len(mc))


def test_population_mmd_is_what_kid_estimates_without_bias():
    rng = np.random.default_rng(1)
    pop = Population(16, 0.5, 1.5)
    values = [mmd2_unbiased(*pop.draw(300, 300, rng)) for _ in range(300)]
    assert abs(np.mean(values) - pop.mmd2()) < 4 * np.std(values) / np.sqrt(len(values))
    assert Population(16, 0.0, 1.0).mmd2() == pytest.approx(0.0, abs=1e-12)


def test_replicate_fid_matches_torch_fidelity_in_both_forms():
    """The jackknife's replicate formula (Gram form below d, Cholesky form above) is the real FID."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    g = torch.Generator().manual_seed(3)
    real = torch.randn(500, 24, generator=g) @ torch.randn(24, 24, generator=g)
    for n in (12, 300):  # fewer and more generated vectors than dimensions
        fake = torch.randn(n, 24, generator=g) * 1.2 + 0.3
        stats = lambda f: {"mu": f.double().mean(0).numpy(), "sigma": np.cov(f.double().numpy(), rowvar=False)}
        ref = fid_statistics_to_metric(stats(real), stats(fake), verbose=False)[KEY_METRIC_FID]
        empty = np.array([], dtype=int)
        assert fid_value(_Side(real.numpy()), _Side(fake.numpy()), empty, empty) == pytest.approx(ref, rel=1e-7)
        # leaving rows out equals computing on the remaining rows
        drop_r, drop_f = np.arange(0, 500, 7), np.arange(0, n, 5)
        keep_r, keep_f = np.setdiff1d(np.arange(500), drop_r), np.setdiff1d(np.arange(n), drop_f)
        ref2 = fid_statistics_to_metric(stats(real[keep_r]), stats(fake[keep_f]), verbose=False)[KEY_METRIC_FID]
        assert fid_value(_Side(real.numpy()), _Side(fake.numpy()), drop_r, drop_f) == pytest.approx(ref2, rel=1e-7)


def test_fid_interval_contains_its_estimate_and_is_never_negative():
    rng = np.random.default_rng(2)
    real, fake = Population(16, 0.0, 1.0).draw(200, 1000, rng)
    est = fid_value(_Side(real), _Side(fake), np.array([], int), np.array([], int))
    lo, hi = fid_interval(est, real, fake, 10, 0)
    assert 0.0 <= lo < est < hi


@pytest.mark.parametrize("population,d,n_gen,n_real", [
    ("far", 32, 300, 2000),
    ("near", 32, 1000, 2000),
    ("far", 64, 40, 1000),  # fewer generated vectors than dimensions (the Gram form), like 500 at d = 2048
])
def test_coverage_on_a_small_grid(population, d, n_gen, n_real):
    cell = simulate_cell(population, d, n_gen, n_real, draws=200, kid_subsets=5, kid_subset_size=min(n_gen, 500))
    for metric in ("fid", "kid"):
        assert 0.90 <= cell[metric]["coverage"] <= 0.99, (metric, cell[metric])
        assert cell[metric]["estimate_inside"], (metric, cell[metric])
    assert passes(cell) and verdict(cell) == "ok"


@pytest.mark.parametrize("population,d,n_gen,n_real", [("same", 32, 300, 2000), ("near", 64, 40, 1000)])
def test_degenerate_cells_are_conservative_never_under_covering(population, d, n_gen, n_real):
    """The documented limit: when the generator equals the data (or the difference is small next to the
    noise) the intervals are too wide, never too narrow."""
    cell = simulate_cell(population, d, n_gen, n_real, draws=200, kid_subsets=5, kid_subset_size=min(n_gen, 300))
    for metric in ("fid", "kid"):
        assert cell[metric]["coverage"] >= 0.95 and cell[metric]["estimate_inside"], (metric, cell[metric])
    assert verdict(cell) in ("ok", "conservative")


def test_a_too_narrow_interval_would_fail_the_check():
    """The check can fail: halving the KID interval's width drops coverage well below 90%."""
    from bench import coverage
    from bench.metrics import intervals

    original = intervals.t_quantile
    try:
        coverage.kid_interval.__globals__["t_quantile"] = lambda df, level=0.95: original(df, level) / 3
        cell = simulate_cell("far", 32, 300, 2000, draws=200, kid_subsets=5, kid_subset_size=300, metrics=("kid",))
    finally:
        coverage.kid_interval.__globals__["t_quantile"] = original
    assert cell["kid"]["coverage"] < 0.90 and not passes(cell)

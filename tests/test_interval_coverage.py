"""The FID and KID 95% intervals cover what they claim about 95% of the time (a small grid of
`bench perf coverage`; docs/metrics.md quotes the full table), and the closed forms behind the check are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.coverage import POPULATIONS, Population, _expected_kernel, passes, simulate_cell, verdict
from bench.metrics.intervals import (_Side, fid_interval, fid_value, jackknife, kid_u_variance, kid_u_variance_parts,
                                     mmd2_unbiased)


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


def test_closed_form_fid_matches_the_plug_in_fid_of_large_draws():
    """`Population.fid` (the N = ∞ column of the coverage table): the plug-in FID of large draws converges to it;
    at d = 4 and 1,000,000 a side its finite-N bias is ~1e-5, and its sampling sd (~0.003 for `far`) is dominated by
    the mean-difference term's 2δᵀ(μ̂_g - μ̂_r): the tolerance is 4 of those sd."""
    rng = np.random.default_rng(2)
    plug_ins = {}
    for name, (shift, scale) in POPULATIONS.items():
        pop = Population(4, shift, scale)
        real, fake = pop.draw(1_000_000, 1_000_000, rng)
        plug_ins[name] = plug_in = fid_value(_Side(real), _Side(fake), np.array([], int), np.array([], int))
        # sd of 2δᵀ(μ̂_g - μ̂_r), plus the size of the second-order terms, (tr Σ_r + tr Σ_g)/N
        sd = 2 * np.sqrt((pop.delta ** 2 * pop.lam * (1 + scale ** 2)).sum() / len(real)) \
            + (1 + scale ** 2) * pop.lam.sum() / len(real)
        assert abs(plug_in - pop.fid()) < 4 * sd, (shift, scale, plug_in, pop.fid(), sd)
    # and a wrong closed form (the trace term without the square roots' cross term) is caught
    far = Population(4, *POPULATIONS["far"])
    wrong = float(far.delta @ far.delta + ((far.scale ** 2 - 1) * far.lam).sum())
    assert abs(plug_ins["far"] - wrong) > 0.1


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


@pytest.mark.parametrize("block", [5, 8, 24, 512])  # uneven, even, one block exactly, larger than d
def test_triangular_congruence_is_the_lower_triangle_of_the_dense_product(block, monkeypatch):
    """The covariance form's Lᵀ Σ L skips L's zero blocks and M's blocks above the diagonal: whatever the block
    size, the lower triangle (all that eigvalsh reads) equals the dense product's, and so do the eigenvalues."""
    from bench.metrics import intervals

    monkeypatch.setattr(intervals, "CONGRUENCE_BLOCK", block)
    g = torch.Generator().manual_seed(11)
    a, b = torch.randn(60, 24, generator=g, dtype=torch.float64), torch.randn(60, 24, generator=g, dtype=torch.float64)
    sigma, chol = b.T @ b / 59, torch.linalg.cholesky(a.T @ a / 59)
    m = intervals._lower_congruence(chol, sigma)
    dense = chol.T @ sigma @ chol
    assert torch.allclose(torch.tril(m), torch.tril(dense), rtol=1e-12, atol=1e-12)
    assert torch.allclose(torch.linalg.eigvalsh(m, UPLO="L"), torch.linalg.eigvalsh((dense + dense.T) / 2),
                          rtol=1e-12, atol=1e-12)
    # and the replicate through it is still the real FID
    real, fake = a.numpy() @ np.diag(np.linspace(0.5, 2, 24)), b.numpy() * 1.2 + 0.3
    stats = lambda f: {"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)}
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    ref = fid_statistics_to_metric(stats(real), stats(fake), verbose=False)[KEY_METRIC_FID]
    empty = np.array([], dtype=int)
    assert fid_value(_Side(real), _Side(fake), empty, empty) == pytest.approx(ref, rel=1e-9)


def test_cross_gram_replicates_match_torch_fidelity_with_groups_left_out():
    """Few points in many dimensions: the cross-Gram form (no d x d matrix), with whole groups left out through
    the precomputed group sums, is the real FID of the remaining rows."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    g = torch.Generator().manual_seed(4)
    real, fake = torch.randn(40, 64, generator=g), torch.randn(30, 64, generator=g) * 1.3 + 0.2
    stats = lambda f: {"mu": f.double().mean(0).numpy(), "sigma": np.cov(f.double().numpy(), rowvar=False)}
    rg, fg = np.array_split(np.arange(40), 5), np.array_split(np.arange(30), 5)
    r_side, f_side = _Side(real.numpy(), rg), _Side(fake.numpy(), fg)
    cross = f_side.x @ r_side.x.T
    for units in ((), (1,), (0, 3)):
        drop_r = np.concatenate([rg[k] for k in units]) if units else np.array([], int)
        drop_f = np.concatenate([fg[k] for k in units]) if units else np.array([], int)
        keep_r, keep_f = np.setdiff1d(np.arange(40), drop_r), np.setdiff1d(np.arange(30), drop_f)
        ref = fid_statistics_to_metric(stats(real[keep_r]), stats(fake[keep_f]), verbose=False)[KEY_METRIC_FID]
        assert fid_value(r_side, f_side, drop_r, drop_f, units, cross) == pytest.approx(ref, rel=1e-7)
        assert fid_value(r_side, f_side, drop_r, drop_f, units) == pytest.approx(ref, rel=1e-7)


def test_projected_replicates_match_torch_fidelity_with_groups_left_out():
    """Few generated points, more real points than dimensions: the projection of the real scatter onto the
    generated rows (no d x d matrix per replicate), with whole groups left out of both sides, and arbitrary
    generated rows left out as FID_inf does, is the real FID of the remaining rows."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    from bench.metrics.intervals import _Projection, gram_form

    g = torch.Generator().manual_seed(6)
    real = torch.randn(300, 48, generator=g) @ torch.randn(48, 48, generator=g) * 0.3
    fake = torch.randn(40, 48, generator=g) * 1.3 + 0.2
    stats = lambda f: {"mu": f.double().mean(0).numpy(), "sigma": np.cov(f.double().numpy(), rowvar=False)}
    ref = lambda kr, kf: fid_statistics_to_metric(stats(real[kr]), stats(fake[kf]), verbose=False)[KEY_METRIC_FID]
    rg, fg = np.array_split(np.arange(300), 5), np.array_split(np.arange(40), 5)
    r_side, f_side = _Side(real.numpy(), rg), _Side(fake.numpy(), fg)
    proj = gram_form(r_side, f_side)
    assert isinstance(proj, _Projection) and f_side.projection(r_side) is proj  # made once, then reused
    for units in ((), (1,), (0, 3)):
        drop_r = np.concatenate([rg[k] for k in units]) if units else np.array([], int)
        drop_f = np.concatenate([fg[k] for k in units]) if units else np.array([], int)
        keep_r, keep_f = np.setdiff1d(np.arange(300), drop_r), np.setdiff1d(np.arange(40), drop_f)
        assert fid_value(r_side, f_side, drop_r, drop_f, units, proj) == pytest.approx(ref(keep_r, keep_f), rel=1e-7)
    drop_f, none = np.arange(0, 40, 3), np.array([], int)
    expected = ref(np.arange(300), np.setdiff1d(np.arange(40), drop_f))
    assert fid_value(r_side, f_side, none, drop_f, None, proj) == pytest.approx(expected, rel=1e-7)
    with pytest.raises(ValueError, match="whole groups"):
        fid_value(r_side, f_side, np.array([0, 1]), none, None, proj)
    # small blocks give the same sums (the bound on X Yᵀ's block is memory, not arithmetic)
    small = _Projection(r_side, f_side)
    _Projection.CHUNK_ELEMENTS, saved = 40 * 7, _Projection.CHUNK_ELEMENTS
    try:
        chunked = _Projection(r_side, f_side)
    finally:
        _Projection.CHUNK_ELEMENTS = saved
    assert (chunked.q_total - small.q_total).abs().max() < 1e-12 * small.q_total.abs().max()


def test_fid_interval_contains_its_estimate_and_is_never_negative():
    rng = np.random.default_rng(2)
    real, fake = Population(16, 0.0, 1.0).draw(200, 1000, rng)
    est = fid_value(_Side(real), _Side(fake), np.array([], int), np.array([], int))
    lo, hi = fid_interval(est, real, fake, 10, 0)
    assert 0.0 <= lo < est < hi


def _jackknife_means(stat, g: int, p: int = 64, draws: int = 2000) -> tuple[float, float, float, float]:
    """Mean over draws of (corrected variance, plain jackknife variance, squared deviation of the statistic,
    uncapped second-order estimate) for a statistic of g units, each a p-vector of independent standard
    normals (like groups of feature vectors)."""
    rng = np.random.default_rng(5)
    corrected, plain, truth, v2_raw = [], [], [], []
    for _ in range(draws):
        u = rng.standard_normal((g, p))
        jk = jackknife(lambda deleted: stat(np.delete(u, list(deleted), axis=0)), g)
        corrected.append(jk["var"])
        plain.append(jk["v1"] + 2 * (g - 1) / (g - 2) * jk["v2"])  # what the uncorrected jackknife gives
        truth.append(stat(u) ** 2)
        v2_raw.append(jk["v2_raw"])
    return tuple(float(np.mean(v)) for v in (corrected, plain, truth, v2_raw))


def test_jackknife_correction_removes_the_second_order_bias():
    """A degenerate U-statistic (inner products of zero-mean units, the real-data row's situation) has
    variance 2/(G(G-1)), all of it second-order. The plain jackknife gives 2(G-1)/(G-2) = 2.25 times
    that; the delete-two estimate of the second-order part is unbiased; the corrected variance is within
    the documented ~20% above the truth that its cap costs. A linear statistic (a mean) is left alone."""
    g, p = 10, 64

    def pairwise(u):  # 2/(n(n-1)) Σ_{i<j} u_i·u_j / sqrt(p)
        s = u.sum(0)
        return (s @ s - (u * u).sum()) / (len(u) * (len(u) - 1)) / np.sqrt(p)

    corrected, plain, truth, v2_raw = _jackknife_means(pairwise, g, p)
    assert truth == pytest.approx(2 / (g * (g - 1)), rel=0.1)
    assert plain == pytest.approx(2 * (g - 1) / (g - 2) * truth, rel=0.1)
    assert v2_raw == pytest.approx(truth, rel=0.1)
    assert truth <= corrected <= 1.3 * truth
    corrected, plain, truth, v2_raw = _jackknife_means(lambda u: u.sum(1).mean() / np.sqrt(p), g, p)
    assert corrected == pytest.approx(1 / g, rel=0.1) and plain == pytest.approx(1 / g, rel=0.1)
    assert v2_raw < 0.05 / g


@pytest.mark.parametrize("population", ["far", "same"])
def test_kid_u_variance_matches_the_monte_carlo_variance(population):
    """The Hoeffding-decomposition variance of the unbiased MMD² is unbiased, both when the first-order part
    dominates (`far`) and when everything is second-order (`same`, the real-data row), and also at the full
    sizes when its parts are estimated on a subsample. The clamped variance the interval uses is never
    below the truth on average, and at most the documented 35% above it."""
    rng = np.random.default_rng(6)
    pop = Population(16, *POPULATIONS[population])
    values, parts, from_subsample, clamped = [], [], [], []
    for _ in range(400):
        real, fake = pop.draw(120, 200, rng)
        values.append(mmd2_unbiased(real, fake))
        parts.append(kid_u_variance_parts(real, fake, 200, 120))
        from_subsample.append(sum(kid_u_variance_parts(real[:100], fake[:60], 200, 120)))
        clamped.append(kid_u_variance(real, fake, 200, 120))
    truth = np.var(values, ddof=1)  # its Monte-Carlo error is ~7% at 400 draws
    first, second = np.mean(parts, axis=0)
    assert first + second == pytest.approx(truth, rel=0.2)
    assert np.mean(from_subsample) == pytest.approx(truth, rel=0.25)
    assert 0.85 * truth <= np.mean(clamped) <= 1.35 * truth
    # the second-order part is what the real-data row is made of, and a small share of a far model's
    assert (second / truth > 0.8) if population == "same" else (second / truth < 0.2)


@pytest.mark.parametrize("population,d,n_gen,n_real", [
    ("far", 32, 300, 2000),
    ("near", 32, 1000, 2000),
    ("far", 64, 40, 1000),  # fewer generated vectors than dimensions (the Gram form), like 500 at d = 2048
    ("same", 32, 300, 2000),  # degenerate: the real-data row (the plain jackknife covered ~100% here)
    ("near", 64, 40, 1000),  # a small difference next to the noise
])
def test_coverage_on_a_small_grid(population, d, n_gen, n_real):
    cell = simulate_cell(population, d, n_gen, n_real, draws=200, kid_subsets=5, kid_subset_size=min(n_gen, 500))
    for metric in ("fid", "kid"):
        assert 0.90 <= cell[metric]["coverage"] <= 0.99, (metric, cell[metric])
        assert cell[metric]["estimate_inside"], (metric, cell[metric])
    assert passes(cell) and verdict(cell) == "ok"
    # the candidate FID rule (`shares_df`) must hold the same band on the same draws before it can become the method
    candidate = cell["fid"]["candidate"]
    assert 0.90 <= candidate["coverage"] <= 0.99 and candidate["estimate_inside"], candidate


def test_a_too_narrow_interval_would_fail_the_check(monkeypatch):
    """The check can fail: a KID variance a tenth of the right one drops coverage well below 90%."""
    from bench.metrics import intervals

    right = intervals.kid_u_variance
    monkeypatch.setattr(intervals, "kid_u_variance", lambda *a: right(*a) / 10)
    cell = simulate_cell("far", 32, 300, 2000, draws=200, kid_subsets=5, kid_subset_size=300, metrics=("kid",))
    assert cell["kid"]["coverage"] < 0.90 and not passes(cell)


@pytest.mark.parametrize("population", ["near", "same"])
def test_kid_interval_on_a_subsample_still_covers(population, monkeypatch):
    """Above KID_VARIANCE_MAX points a side the variance parts come from a random subsample and are combined at
    the full sizes: coverage must hold through that too."""
    from bench.metrics import intervals

    monkeypatch.setattr(intervals, "KID_VARIANCE_MAX", 800)
    cell = simulate_cell(population, 32, 1000, 2000, draws=200, kid_subsets=5, kid_subset_size=500, metrics=("kid",))
    assert 0.90 <= cell["kid"]["coverage"] <= 0.99 and cell["kid"]["estimate_inside"], cell["kid"]


def test_an_interrupted_coverage_run_resumes_with_the_uninterrupted_numbers(tmp_path):
    """`--log`: each draw is appended as it finishes; a run cut short (here: after 3 draws, its 4th line cut
    mid-write) continues after the last whole record with the generator state it left, so the cell's numbers
    are those of a run that was never interrupted; another cell's records, or another method's, are not used."""
    import json

    from bench.coverage import _cell_key

    settings = dict(draws=6, kid_subsets=3, kid_subset_size=100)
    whole = simulate_cell("near", 16, 120, 400, **settings)
    log = tmp_path / "draws.jsonl"
    simulate_cell("near", 16, 120, 400, **settings, log=log)
    lines = log.read_text().splitlines()
    assert [json.loads(x)["draw"] for x in lines] == list(range(6))
    key = json.loads(lines[0])["cell"]
    other = json.loads(lines[3]) | {"cell": _cell_key("far", 16, 120, 400, 0, 10, 3, 100, ("fid", "kid"))}
    stale = json.loads(lines[3]) | {"cell": key.replace(json.loads(key)["method"], "an-older-method")}
    log.write_text("\n".join(lines[:3] + [json.dumps(other), json.dumps(stale), lines[3][:40]]) + "\n")
    resumed = simulate_cell("near", 16, 120, 400, **settings, log=log)
    assert resumed["resumed_draws"] == 3
    for metric in ("fid", "kid"):
        assert resumed[metric] == whole[metric]
    assert [json.loads(x)["draw"] for x in log.read_text().splitlines()[6:]] == [3, 4, 5]
    # the check can fail: resuming from a record whose state is not the one its draw left changes the numbers
    lines = log.read_text().splitlines()
    wrong = json.loads(lines[2]) | {"state": json.loads(lines[0])["state"]}
    log.write_text("\n".join(lines[:2] + [json.dumps(wrong)]) + "\n")
    assert simulate_cell("near", 16, 120, 400, **settings, log=log)["fid"] != whole["fid"]


def test_logged_variance_parts_give_each_draws_interval(tmp_path):
    """Each logged draw carries FID's jackknife variance parts, so another interval rule can be counted on logged
    draws: t(G - 1) * sqrt(v1 + v2) is the draw's upper half-width, and the parts are the jackknife's own (a
    second-order part that is not zero where it should matter: `same`, everything second-order)."""
    import json

    from bench.metrics.intervals import t_quantile

    log = tmp_path / "draws.jsonl"
    simulate_cell("same", 16, 120, 400, draws=4, kid_subsets=3, kid_subset_size=100, log=log)
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(records) == 4
    for rec in records:
        v1, v2 = rec["fid_var_parts"]
        est, _, hi = rec["fid"]
        assert v2 > 0 and v1 >= 0
        assert hi - est == pytest.approx(t_quantile(9) * np.sqrt(v1 + v2), rel=1e-12)
    # the check can fail: parts that are not the draw's (another draw's) give another half-width
    a, b = records[0], records[1]
    assert a["fid"][2] - a["fid"][0] != pytest.approx(t_quantile(9) * np.sqrt(sum(b["fid_var_parts"])), rel=1e-6)


def test_shares_df_of_known_parts():
    """Satterthwaite's df for the corrected variance (`shares_df`): G - 1 with no second-order part, the floor when it
    dominates, and (G-1)((v1 + v2)/(v1 + 2.25 v2))² between (G = 10)."""
    from bench.metrics.intervals import SHARES_DF_FLOOR, shares_df

    assert shares_df(1.0, 0.0, 10) == 9
    assert shares_df(0.0, 1.0, 10) == SHARES_DF_FLOOR == 5
    assert shares_df(3.0, 1.0, 10) == pytest.approx(9 * (4 / 5.25) ** 2)  # 5.22
    assert shares_df(1.0, 1.0, 10) == 5  # 9 (2 / 3.25)² = 3.4, below the floor
    assert shares_df(0.0, 0.0, 10) == 9
    assert shares_df(0.0, 1.0, 5) == 4  # never above G - 1, even at the floor
    assert shares_df(0.0, 0.0, 3) == 2  # no delete-two part below G = 4


def test_candidate_rule_is_counted_from_each_draws_parts(tmp_path, capsys):
    """The candidate rule's count is each draw's estimate ± t(shares_df) · sqrt(v1 + v2) against the cell's target,
    from the logged parts; a resumed cell counts it the same; a cell with a draw logged without parts (before they
    were logged) is not counted rather than counted on part of its draws."""
    import json

    from scipy import stats

    from bench.coverage import format_candidate
    from bench.metrics.intervals import shares_df

    log = tmp_path / "draws.jsonl"
    settings = dict(draws=8, kid_subsets=3, kid_subset_size=100, metrics=("fid",))
    cell = simulate_cell("same", 16, 120, 400, **settings, log=log)
    records = [json.loads(x) for x in log.read_text().splitlines()]
    est = np.array([r["fid"][0] for r in records])
    parts = np.array([r["fid_var_parts"] for r in records])
    half = np.array([stats.t.ppf(0.975, shares_df(*p, 10)) for p in parts]) * np.sqrt(parts.sum(1))
    truth = est.mean()
    lo, hi = np.maximum(est - half, 0), est + half
    candidate = cell["fid"]["candidate"]
    assert candidate["coverage"] == ((lo <= truth) & (truth <= hi)).mean()
    assert candidate["mean_half_width"] == pytest.approx(half.mean(), rel=1e-12)
    # wider than the current intervals here (`same`: df at the floor, 5 < 9), and the check can tell
    assert candidate["mean_half_width"] > cell["fid"]["mean_half_width"] * 1.1
    assert simulate_cell("same", 16, 120, 400, **settings, log=log)["fid"] == cell["fid"]  # resumed: the same
    records[2].pop("fid_var_parts")
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    resumed = simulate_cell("same", 16, 120, 400, **settings, log=log)
    assert resumed["resumed_draws"] == 8 and resumed["fid"]["candidate"] is None
    assert "not counted" in format_candidate(resumed)


def test_recounting_a_log_without_parts_gives_the_candidates_own_count(tmp_path):
    """reports/investigations/recount_logged_cell.py counts the candidate rule on a log written before the parts were
    logged by making again only the misses it could turn into hits. That shortcut must give exactly the count the
    coverage command makes from every draw's parts (`near` at N < d, where the rule widens many intervals)."""
    import importlib.util
    import json

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("recount", REPO / "reports" / "investigations" / "recount_logged_cell.py")
    recount = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recount)
    log = tmp_path / "draws.jsonl"
    cell = simulate_cell("near", 64, 40, 1000, draws=200, kid_subsets=3, kid_subset_size=40, log=log)
    candidate = cell["fid"]["candidate"]
    records = [json.loads(x) for x in log.read_text().splitlines()]
    for rec in records:
        rec.pop("fid_var_parts")  # as the logs before 2026-12-05
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps(r) + "\n" for r in records))
    counts = recount.recount(str(old))
    assert counts["current"] == round(cell["fid"]["coverage"] * 200)
    assert counts["candidate"] == round(candidate["coverage"] * 200)
    # the check can fail: this cell's candidate count differs from the current one, with draws actually remade
    assert counts["candidate"] > counts["current"] and counts["remade"]


@pytest.mark.parametrize("file,draws,current,candidate", [
    ("near-2048-5000", 200, 174, 181), ("near-2048-5000", 400, 363, 373), ("same-2048-1000", 200, 182, 187),
    ("same-2048-1000", 400, 372, 380), ("far-2048-5000", 200, 193, 193),
])
def test_committed_logs_and_remade_draws_give_the_documented_candidate_counts(file, draws, current, candidate):
    """docs/metrics.md's candidate counts on the committed d = 2,048 logs come from those logs and the draws made
    again with their variance parts (reports/coverage/*-remade.jsonl): re-read, nothing made again."""
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("recount", REPO / "reports" / "investigations" / "recount_logged_cell.py")
    recount = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recount)
    folder = REPO / "reports" / "coverage"
    counts = recount.recount(str(folder / f"{file}.jsonl"), draws, remade=str(folder / f"{file}-remade.jsonl"),
                             allow_remake=False)
    assert (counts["current"], counts["candidate"]) == (current, candidate)


def test_a_cell_split_into_pieces_makes_the_whole_cells_draws(tmp_path):
    """`--first-draw`: a piece computes only its own draws, yet the very draws a whole run makes there (the
    generator is replayed through the earlier ones); the pieces' logs concatenated resume as the whole cell."""
    import json

    settings = dict(draws=6, kid_subsets=3, kid_subset_size=100)
    whole_log, first, second = tmp_path / "whole.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    whole = simulate_cell("near", 16, 120, 400, **settings, log=whole_log)
    simulate_cell("near", 16, 120, 400, **(settings | {"draws": 2}), log=first)
    piece = simulate_cell("near", 16, 120, 400, **settings, log=second, first_draw=2)
    assert piece["draws"] == 4 and piece["first_draw"] == 2 and piece["resumed_draws"] == 0

    def records(path):
        return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in path.read_text().splitlines()]

    assert records(first) + records(second) == records(whole_log)
    assert piece["fid"]["half_widths"] == whole["fid"]["half_widths"][2:]
    merged = tmp_path / "merged.jsonl"
    merged.write_text(second.read_text() + first.read_text())  # order of the pieces does not matter
    resumed = simulate_cell("near", 16, 120, 400, **settings, log=merged)
    assert resumed["resumed_draws"] == 6
    for metric in ("fid", "kid"):
        assert resumed[metric] == whole[metric]
    # a piece that did not replay the earlier draws would start the cell over: its draws are not the whole's
    unreplayed = simulate_cell("near", 16, 120, 400, **(settings | {"draws": 4}))
    assert unreplayed["fid"]["half_widths"] != piece["fid"]["half_widths"]
    with pytest.raises(ValueError, match="first_draw"):
        simulate_cell("near", 16, 120, 400, **settings, first_draw=6)


def test_expected_coverage_of_known_widths():
    """2Φ(h/sd) - 1 averaged over the widths: 1.96 sd covers 95%, one sd 68.3%; a mix averages the two."""
    from bench.coverage import expected_coverage

    z = 1.959963984540054
    assert expected_coverage([z * 0.3] * 5, 0.3) == pytest.approx(0.95, abs=1e-12)
    assert expected_coverage([0.3], 0.3) == pytest.approx(0.6826894921370859, abs=1e-12)
    assert expected_coverage([z * 0.3, 0.3], 0.3) == pytest.approx((0.95 + 0.6826894921370859) / 2, abs=1e-12)
    assert expected_coverage([0.1], 0.0) == 1.0


def test_fid_spread_measures_the_cells_own_sampling_spread(tmp_path):
    """`--spread`: fresh draws from a stream of their own give the same FID distribution as the cell's draws (mean
    within Monte-Carlo error of FID@N, sd within sampling error of the cell's), with a chi-square interval around
    the sd; they are not the cell's draws."""
    import json

    from scipy import stats

    from bench.coverage import fid_spread, format_spread

    log = tmp_path / "draws.jsonl"
    cell = simulate_cell("near", 16, 200, 1000, draws=200, kid_subsets=3, kid_subset_size=100, metrics=("fid",),
                         log=log)
    spread = fid_spread("near", 16, 200, 1000, count=300)
    f = cell["fid"]
    mc = np.hypot(f["sd"] / np.sqrt(200), spread["sd"] / np.sqrt(300))
    assert abs(spread["mean"] - f["truth_at_n"]) < 4 * mc, (spread, f)
    assert 0.8 < spread["sd"] / f["sd"] < 1.25, (spread, f)
    df = 299
    assert spread["sd_low"] == pytest.approx(spread["sd"] * np.sqrt(df / stats.chi2.ppf(0.975, df)), rel=1e-10)
    assert spread["sd_high"] == pytest.approx(spread["sd"] * np.sqrt(df / stats.chi2.ppf(0.025, df)), rel=1e-10)
    assert len(f["half_widths"]) == 200 and min(f["half_widths"]) > 0
    cell_first = [json.loads(line)["fid"][0] for line in log.read_text().splitlines()[:3]]
    three = fid_spread("near", 16, 200, 1000, count=3)
    assert three["mean"] == pytest.approx(np.mean(three["estimates"]), rel=1e-12)
    assert not np.isclose(three["estimates"], cell_first).any()  # another stream, not the cell's draws again
    line = format_spread(cell, spread)
    assert "300 fresh draws" in line and f"counted {f['coverage']:.1%}" in line


def test_se_dispersion_reads_the_degrees_of_freedom_of_known_standard_errors():
    """Standard errors whose squares are σ² χ²_k / k: `se_dispersion` recovers k, and intervals with the t_9
    quantile cover P(|T_k| < t_9) on average at the rms standard error: 95% when k = 9, 92.7% when k = 5."""
    from scipy import stats

    from bench.coverage import format_se_dispersion, se_dispersion
    from bench.metrics.intervals import t_quantile

    rng = np.random.default_rng(3)
    q = t_quantile(9)
    for k in (9, 5):
        se = 0.02 * np.sqrt(rng.chisquare(k, 40_000) / k)
        disp = se_dispersion(q * se, se)
        assert disp["df"] == pytest.approx(k, rel=0.06), disp
        want = 1 - 2 * stats.t.sf(q, k)
        assert disp["expected_at_rms"] == pytest.approx(want, abs=0.003), (disp, want)
    assert 1 - 2 * stats.t.sf(q, 5) == pytest.approx(0.927, abs=5e-4)
    # one width for every draw: no dispersion, and the t_9 quantile is then a normal interval at 2.262 sd
    assert se_dispersion([0.1] * 5, [0.1 / q] * 5) == {"df": float("inf"), "expected_at_rms": pytest.approx(2 * stats.norm.cdf(q) - 1,
                                                                                                   abs=1e-12)}
    cell = simulate_cell("near", 16, 200, 1000, draws=20, kid_subsets=3, kid_subset_size=100, metrics=("fid",))
    assert cell["fid"]["t_df"] == 9
    line = format_se_dispersion(cell)
    assert "assumes 9" in line and f"counted {cell['fid']['coverage']:.1%}" in line
    small = simulate_cell("near", 16, 6, 1000, draws=3, metrics=("fid",))
    assert small["fid"]["t_df"] == 2  # three groups of two generated points


def test_coverage_command_refuses_a_spread_of_one_draw(capsys):
    from bench.cli import main

    assert main(["perf", "coverage", "--dims", "8", "--spread", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--spread" in err[0]


@pytest.mark.parametrize("file, population, n_gen, label, draws, first_draw", [
    ("near-2048-5000.jsonl", "near", 5000, "near", 200, 0),  # the first 200 draws, made again (the log was lost)
    ("near-2048-5000.jsonl", "near", 5000, "near, draws 200-399", 400, 200),
    ("near-2048-5000.jsonl", "near", 5000, "near, all 400 draws", 400, 0),
    ("far-2048-5000.jsonl", "far", 5000, "far", 200, 0),
    ("same-2048-1000.jsonl", "same", 1000, "same", 200, 0),  # made again too
    ("same-2048-1000.jsonl", "same", 1000, "same, draws 200-399", 400, 200),
    ("same-2048-1000.jsonl", "same", 1000, "same, all 400 draws", 400, 0),
    ("same-2048-500.jsonl", "same", 500, "same", 200, 0),  # made again 2026-12-06, with the variance parts
    ("near-2048-500.jsonl", "near", 500, "near", 200, 0),
    ("far-2048-500.jsonl", "far", 500, "far", 200, 0),
    ("near-2048-1000.jsonl", "near", 1000, "near", 200, 0),
    ("far-2048-1000.jsonl", "far", 1000, "far", 200, 0),
    ("near-2048-2000.jsonl", "near", 2000, "near", 200, 0),
    ("same-2048-2000.jsonl", "same", 2000, "same", 200, 0),
    ("same-2048-5000.jsonl", "same", 5000, "same", 200, 0),
    ("far-2048-2000.jsonl", "far", 2000, "far", 200, 0),
    ("same-2048-10000.jsonl", "same", 10000, "same", 200, 0),
    ("far-2048-10000.jsonl", "far", 10000, "far", 200, 0),
    ("near-2048-10000.jsonl", "near", 10000, "near", 200, 0),
])
def test_committed_coverage_logs_give_the_documented_rows(file, population, n_gen, label, draws, first_draw):
    """reports/coverage/ holds the per-draw logs behind docs/metrics.md's d = 2,048 rows measured since they were
    kept: re-read with the current code (every draw logged under the current method, so nothing is recomputed),
    each gives the coverage the docs print. A changed interval method or an edited log fails here."""
    from pathlib import Path

    from bench.coverage import _cell_key, _logged_draws

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "metrics.md").read_text()
    log = root / "reports" / "coverage" / file
    key = _cell_key(population, 2048, n_gen, 10000, 0, 10, 10, 1000, ("fid", "kid"))
    n = draws - first_draw
    logged = [r for r in _logged_draws(log, key, first_draw) if r["draw"] < draws]  # a row may read part of a log
    assert len(logged) == n, "the log no longer matches the cell (method changed?)"
    cell = simulate_cell(population, 2048, n_gen, 10000, draws=draws, first_draw=first_draw, log=log)
    assert cell["resumed_draws"] == n and cell["fid"]["estimate_inside"] and cell["kid"]["estimate_inside"]
    row = (f"| {label} | {n_gen:,} | {cell['fid']['population']:.3f} | {cell['fid']['truth_at_n']:.3f} | {cell['fid']['coverage']:.1%} | "
           f"{cell['fid']['mean_half_width']:.4f} | {cell['kid']['population']:.2e} | {cell['kid']['mean_estimate']:.2e} | "
           f"{cell['kid']['coverage']:.1%} | {cell['kid']['mean_half_width']:.1e} |")
    assert row in docs


def test_the_coverage_readme_states_the_draws_each_log_holds():
    """reports/coverage/README.md's table says which draws each d = 2,048 log holds, and for a cell under way that is
    where the next session continues from: the ranges it prints are exactly the log's draws, each logged once, whole,
    under the cell the file's name gives. A log appended to (or cut) without its row following fails here."""
    import re

    from bench.coverage import _cell_key, _log_records, _whole_record
    from tests.conftest import REPO

    folder = REPO / "reports" / "coverage"
    text = (folder / "README.md").read_text()
    table = text[text.index("| file | cell (d = 2,048, 10,000 real) | draws | status |"):].split("\n\n")[0]
    rows = re.findall(r"^\| `([a-z]+)-2048-(\d+)\.jsonl` \| [^|]+ \| ([^|]+) \|", table, re.M)
    assert len(rows) >= 13 and len({(p, n) for p, n, _ in rows}) == len(rows)
    for population, n_gen, column in rows:
        stated, total = re.fullmatch(r"(.+) of (\d+)", column.strip()).groups()
        assert re.fullmatch(r"\d+(-\d+)?((, | and )\d+(-\d+)?)*", stated), column
        want = set()
        for a, b in re.findall(r"(\d+)(?:-(\d+))?", stated):
            want |= set(range(int(a), int(b or a) + 1))
        assert max(want) < int(total)
        key = _cell_key(population, 2048, int(n_gen), 10000, 0, 10, 10, 1000, ("fid", "kid"))
        records = _log_records(folder / f"{population}-2048-{n_gen}.jsonl")
        assert records and all(r.get("cell") == key and _whole_record(r) for r in records), (population, n_gen)
        draws = [r["draw"] for r in records]
        assert len(draws) == len(set(draws)) and set(draws) == want, (population, n_gen, column)


def test_coverage_command_refuses_a_first_draw_that_leaves_too_few_draws(capsys):
    from bench.cli import main

    assert main(["perf", "coverage", "--dims", "8", "--draws", "10", "--first-draw", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--first-draw" in err[0]



def test_a_coverage_log_that_is_a_folder_or_holds_foreign_records(tmp_path, capsys):
    """--log DIR was an IsADirectoryError; a record of this cell with a non-integer draw or missing fields a
    ValueError/KeyError. A folder is one line; a foreign record is ignored like a torn line (the draw is made again)."""
    import json

    from bench.cli import main
    from bench.coverage import _cell_key, _logged_draws

    (tmp_path / "dir").mkdir()
    assert main(["perf", "coverage", "--dims", "8", "--n", "20", "--n-real", "20", "--draws", "2",
                 "--populations", "same", "--log", str(tmp_path / "dir")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder; give a JSONL file" in err[-1], err
    key = _cell_key("same", 8, 20, 20, 0, 10, 10, 1000, ("fid",))
    good = {"cell": key, "draw": 0, "state": {"s": 1}, "seconds": 1.0, "fid": [1.0, 0.5, 1.5]}
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in (good, {**good, "draw": "abc"}, {**good, "draw": 1, "seconds": None},
                                                      {"cell": key})) + "\n")
    assert _logged_draws(log, key) == [good]
    # a whole record whose generator state numpy cannot restore: one line naming the draw (was a traceback)
    from bench.coverage import simulate_cell
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="draw 0 of this cell has a generator state numpy cannot restore"):
        simulate_cell("same", 8, 20, 20, 2, metrics=("fid",), log=log)


@pytest.mark.parametrize("file, population, n_gen, current, candidate", [
    ("same-2048-500.jsonl", "same", 500, 196, 196),
    ("near-2048-500.jsonl", "near", 500, 190, 193),
    ("far-2048-500.jsonl", "far", 500, 187, 189),
    ("near-2048-1000.jsonl", "near", 1000, 190, 193),
    ("far-2048-1000.jsonl", "far", 1000, 190, 190),
    ("near-2048-2000.jsonl", "near", 2000, 192, 195),
    ("same-2048-2000.jsonl", "same", 2000, 189, 195),
    ("same-2048-5000.jsonl", "same", 5000, 194, 196),
    ("far-2048-2000.jsonl", "far", 2000, 188, 188),
    ("same-2048-10000.jsonl", "same", 10000, 189, 192),
    ("far-2048-10000.jsonl", "far", 10000, 194, 195),
    ("near-2048-10000.jsonl", "near", 10000, 191, 193),
])
def test_committed_logs_with_parts_give_the_documented_candidate_counts(file, population, n_gen, current, candidate):
    """The d = 2,048 logs written with the variance parts give the candidate rule's counts docs/metrics.md quotes,
    re-read by the coverage command itself (nothing recomputed)."""
    from tests.conftest import REPO

    log = REPO / "reports" / "coverage" / file
    cell = simulate_cell(population, 2048, n_gen, 10000, draws=200, log=log)
    assert cell["resumed_draws"] == 200
    assert round(cell["fid"]["coverage"] * 200) == current
    assert round(cell["fid"]["candidate"]["coverage"] * 200) == candidate and cell["fid"]["candidate"]["estimate_inside"]
    # and once the candidate is the method's rule, the same logs are its cells: re-read, nothing made again
    from bench.metrics.intervals import FID_CANDIDATE

    switched = simulate_cell(population, 2048, n_gen, 10000, draws=200, log=log, fid_rule=FID_CANDIDATE)
    assert switched["resumed_draws"] == switched["reformed_draws"] == 200
    assert round(switched["fid"]["coverage"] * 200) == candidate and switched["fid"]["estimate_inside"]
    assert round(switched["fid"]["candidate"]["coverage"] * 200) == current


def test_a_log_resumes_across_a_change_of_fid_rule(tmp_path):
    """Making FID_CANDIDATE the method's rule must not make the logged grid again: draws logged under one rule with
    their variance parts resume under another with exactly the intervals a fresh run under that rule makes, the rule
    they were logged under is then the one counted beside it, and a draw whose record has no parts is made again."""
    import json

    from bench.metrics.intervals import FID_CANDIDATE, FID_RULE

    settings = dict(kid_subsets=3, kid_subset_size=100)
    log = tmp_path / "draws.jsonl"
    old = simulate_cell("near", 16, 40, 400, 8, **settings, log=log)
    assert old["fid_rule"] == FID_RULE != FID_CANDIDATE
    fresh = simulate_cell("near", 16, 40, 400, 8, **settings, fid_rule=FID_CANDIDATE)
    resumed = simulate_cell("near", 16, 40, 400, 8, **settings, log=log, fid_rule=FID_CANDIDATE)
    assert resumed["resumed_draws"] == resumed["reformed_draws"] == 8 and "reformed_draws" not in fresh
    for key in ("coverage", "half_widths", "mean_half_width", "truth_at_n", "estimate_inside"):
        assert resumed["fid"][key] == fresh["fid"][key], key
    assert resumed["kid"] == fresh["kid"]
    # the intervals really are the other rule's (wider here: `near` at N = 40, the second-order part matters) ...
    assert resumed["fid"]["mean_half_width"] > old["fid"]["mean_half_width"] * 1.01
    # ... and the rule counted beside them is now the one the draws were logged under, giving the old run's count
    beside = resumed["fid"]["candidate"]
    assert beside["rule"] == FID_RULE and old["fid"]["candidate"]["rule"] == FID_CANDIDATE
    assert beside["coverage"] == old["fid"]["coverage"]
    assert beside["mean_half_width"] == pytest.approx(old["fid"]["mean_half_width"], rel=1e-12)
    # the standard errors (`se_dispersion`) are the draws', whatever the rule: t on G - 1 is 2.262 of them
    from bench.metrics.intervals import t_quantile
    assert resumed["fid"]["standard_errors"] == old["fid"]["standard_errors"] == pytest.approx(
        np.array(old["fid"]["half_widths"]) / t_quantile(9), rel=1e-12)
    assert resumed["fid"]["half_widths"] != pytest.approx(np.array(old["fid"]["standard_errors"]) * t_quantile(9))
    # more draws continue the stream under the new rule, logged under its own key
    more = simulate_cell("near", 16, 40, 400, 10, **settings, log=log, fid_rule=FID_CANDIDATE)
    assert more["resumed_draws"] == 8 and more["fid"]["half_widths"] == simulate_cell(
        "near", 16, 40, 400, 10, **settings, fid_rule=FID_CANDIDATE)["fid"]["half_widths"]
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [json.loads(r["cell"])["method"].startswith(f"fid:{FID_CANDIDATE};") for r in records] == [False] * 8 + [True] * 2
    # a rule's own record of a draw wins over another rule's, wherever it stands in the log
    own = {**records[0], "cell": records[8]["cell"], "fid": [1.0, 0.5, 1.5]}
    for lines in ([*records, own], [own, *records]):
        log.write_text("".join(json.dumps(r) + "\n" for r in lines))
        assert simulate_cell("near", 16, 40, 400, 8, **settings, log=log,
                             fid_rule=FID_CANDIDATE)["fid"]["half_widths"][0] == 0.5
    # another rule's record without its FID cannot stand in for a draw of a cell that has FID
    log.write_text("".join(json.dumps({**r, "fid": None} if r["draw"] == 2 else r) + "\n" for r in records[:8]))
    assert simulate_cell("near", 16, 40, 400, 8, **settings, log=log, fid_rule=FID_CANDIDATE)["resumed_draws"] == 2
    # another rule's record without the parts cannot give this rule's interval: that draw is made again
    records[3].pop("fid_var_parts")
    log.write_text("".join(json.dumps(r) + "\n" for r in records[:8]))
    partial = simulate_cell("near", 16, 40, 400, 8, **settings, log=log, fid_rule=FID_CANDIDATE)
    assert partial["resumed_draws"] == 3 and partial["fid"]["half_widths"] == fresh["fid"]["half_widths"]
    with pytest.raises(ValueError, match="unknown FID interval rule 'bogus'; known: group-jackknife"):
        simulate_cell("near", 16, 40, 400, 8, fid_rule="bogus")


def test_once_the_candidate_is_the_method_the_rule_it_replaced_is_counted_beside(tmp_path, monkeypatch):
    """The documented switch (FID_RULE = FID_CANDIDATE): a cell then runs under the candidate and counts the rule it
    replaced beside it, from the same draws, so the grid keeps showing both."""
    from bench import coverage
    from bench.coverage import format_candidate
    from bench.metrics.intervals import FID_CANDIDATE, FID_RULE

    log = tmp_path / "draws.jsonl"
    before = simulate_cell("near", 16, 40, 400, 8, kid_subsets=3, kid_subset_size=40, log=log)
    monkeypatch.setattr(coverage, "FID_RULE", FID_CANDIDATE)
    after = simulate_cell("near", 16, 40, 400, 8, kid_subsets=3, kid_subset_size=40, log=log)
    assert after["fid_rule"] == FID_CANDIDATE and after["reformed_draws"] == 8
    assert after["fid"]["candidate"]["rule"] == FID_RULE
    assert after["fid"]["coverage"] == before["fid"]["candidate"]["coverage"]
    assert after["fid"]["candidate"]["coverage"] == before["fid"]["coverage"]
    line = format_candidate(after)
    assert line.startswith("  FID rule (t on G - 1 df; not the method): covered") and "(current " in line


def test_coverage_jobs_split_each_cell_between_processes_with_one_processs_numbers(tmp_path, capsys, monkeypatch):
    """`bench perf coverage --jobs 2`: each cell's draws in two one-thread processes appending to one log, read back
    whole: the same cell as one process makes (only the timing and the resumed count differ), every draw logged once;
    a piece that fails is one line naming its draws."""
    import json
    import sys

    from bench.cli import main

    args = ["perf", "coverage", "--dims", "16", "--n", "40", "--n-real", "400", "--populations", "near", "--draws", "9"]
    log = tmp_path / "draws.jsonl"
    assert main([*args, "--json", str(tmp_path / "one.json")]) in (0, 1)
    assert main([*args, "--jobs", "2", "--log", str(log), "--json", str(tmp_path / "two.json")]) in (0, 1)
    one, two = (json.loads((tmp_path / f"{k}.json").read_text())[0] for k in ("one", "two"))
    assert two["resumed_draws"] == 9 and one["resumed_draws"] == 0
    assert {k: v for k, v in two.items() if k not in ("seconds", "resumed_draws")} == \
        {k: v for k, v in one.items() if k not in ("seconds", "resumed_draws")}
    assert sorted(json.loads(x)["draw"] for x in log.read_text().splitlines()) == list(range(9))
    capsys.readouterr()
    monkeypatch.setattr(sys, "executable", "/bin/false")  # every piece exits 1 without a word
    assert main([*args, "--draws", "12", "--jobs", "2", "--log", str(tmp_path / "other.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "coverage piece draws 0-5 (near, d = 16, N = 40) failed" in err[0]

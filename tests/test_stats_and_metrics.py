import numpy as np
import pytest
import scipy.linalg
import torch

from bench.features.stats import RunningStats
from bench.metrics import METRICS, MetricContext
from bench.protocol.schema import EvaluationSpec
from tests.conftest import KID_VS_FIDELITY


def test_running_stats_match_numpy_in_float64():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 7)) @ rng.normal(size=(7, 7)) + 3.0
    s = RunningStats(7)
    for i in range(0, 1000, 128):  # uneven batches
        s.update(torch.from_numpy(x[i:i + 128]).float())
    xf = x.astype(np.float32).astype(np.float64)
    assert np.allclose(s.mean, xf.mean(0), rtol=1e-12, atol=1e-12)
    assert np.allclose(s.cov, np.cov(xf, rowvar=False), rtol=1e-9, atol=1e-9)


def _ctx(fake, real, seed=0, **settings):
    def stats(f):
        s = RunningStats(f.shape[1])
        s.update(f)
        return s.as_fid_stats()
    spec = EvaluationSpec(n_samples=len(fake), seeds=[seed], **settings)
    return MetricContext(seed, spec, {"pool": fake, "logits": fake}, {"pool": real, "logits": real}, stats(fake),
                         stats(real))


def test_fid_matches_an_independent_scipy_sqrtm_computation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(800, 6, generator=g) @ torch.randn(6, 6, generator=g)
    b = torch.randn(800, 6, generator=g) @ torch.randn(6, 6, generator=g) + 0.5
    fid = METRICS.get("fid").compute(_ctx(a, b))["fid"]
    a64, b64 = a.double().numpy(), b.double().numpy()
    m1, m2 = a64.mean(0), b64.mean(0)
    s1, s2 = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    assert not np.allclose(s1 @ s2, s2 @ s1)  # covariances that do not commute
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert abs(fid - ref) / ref < 1e-6
    assert abs(METRICS.get("fid").compute(_ctx(a, a))["fid"]) < 1e-6


def test_kid_and_is_are_seeded_by_the_eval_seed():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(300, 5, generator=g), torch.randn(300, 5, generator=g) + 0.3
    kid = METRICS.get("kid")
    k0 = kid.compute(_ctx(a, b, seed=0, kid_subset_size=100, kid_subsets=10))
    assert k0 == kid.compute(_ctx(a, b, seed=0, kid_subset_size=100, kid_subsets=10))
    assert k0 != kid.compute(_ctx(a, b, seed=1, kid_subset_size=100, kid_subsets=10))
    assert k0["kid/subset_size"] == 100
    # subset size shrinks to the available samples
    assert kid.compute(_ctx(a[:50], b, seed=0, kid_subsets=3))["kid/subset_size"] == 50
    is_ = METRICS.get("is")
    logits = torch.randn(200, 10, generator=g)
    assert is_.compute(_ctx(logits, logits, seed=0))["is"] != is_.compute(_ctx(logits, logits, seed=5))["is"]


def test_inception_score_known_answers():
    is_ = METRICS.get("is")
    const = torch.zeros(100, 10)
    assert abs(is_.compute(_ctx(const, const))["is"] - 1.0) < 1e-9
    onehot = torch.full((100, 10), -1e4)
    onehot[torch.arange(100), torch.arange(100) % 10] = 0.0
    assert abs(is_.compute(_ctx(onehot, onehot, is_splits=1))["is"] - 10.0) < 1e-6


def test_fid_closed_form_for_known_gaussians_and_symmetry():
    from bench.metrics.fid import frechet

    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    a = {"mu": mu1, "sigma": np.diag(v1)}
    b = {"mu": mu2, "sigma": np.diag(v2)}
    closed = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert abs(frechet(a, b) - closed) < 1e-9
    assert abs(frechet(a, b) - frechet(b, a)) < 1e-9


def test_headline_fid_with_fewer_points_than_dimensions_is_exact_and_torch_fidelitys_otherwise():
    """With N <= d generated points (Inception at a few hundred images) the headline FID comes from an N x N
    form: the cross-Gram matrix when the real side is as small, the projection of the real scatter when it is
    larger. Both are checked against the same FID evaluated in 40-digit arithmetic, where torch-fidelity's sqrtm
    of the singular product is off in the 8th digit; with N > d it is torch-fidelity's number itself."""
    mpmath = pytest.importorskip("mpmath")
    from bench.metrics.fid import frechet, headline_fid

    rng = np.random.default_rng(1)
    d, n = 64, 24
    mix = rng.standard_normal((d, d)) * 0.3
    fake = np.maximum(rng.standard_normal((n, d)) @ mix * 1.1 + 1.05, 0)
    stats = lambda x: {"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)}
    mpmath.mp.dps = 40

    def centred(x):
        m = mpmath.matrix(x.tolist())
        mu = [mpmath.fsum(m[i, j] for i in range(len(x))) / len(x) for j in range(d)]
        return mu, mpmath.matrix([[m[i, j] - mu[j] for j in range(d)] for i in range(len(x))])

    def exact(real):
        (mu_r, c_r), (mu_g, c_g) = centred(real), centred(fake)
        n_r = len(real)
        cross = c_g * c_r.T  # n x n_r: Σ_r Σ_g's non-zero eigenvalues are those of cross crossᵀ / ((n_r-1)(n-1))
        eig = mpmath.eigsy(cross * cross.T / ((n_r - 1) * (n - 1)), eigvals_only=True)
        square = lambda c, k: mpmath.fsum(c[i, j] ** 2 for i in range(k) for j in range(d)) / (k - 1)
        return float(mpmath.fsum((a - b) ** 2 for a, b in zip(mu_r, mu_g)) + square(c_r, n_r) + square(c_g, n)
                     - 2 * mpmath.fsum(mpmath.sqrt(max(e, 0)) for e in eig))

    for n_real in (n, 3 * d):  # the cross-Gram form, then the projection (more real points than dimensions)
        real = np.maximum(rng.standard_normal((n_real, d)) @ mix + 1, 0)
        ours = headline_fid(stats(real), stats(fake), torch.tensor(real), torch.tensor(fake))
        truth = exact(real)
        assert ours == pytest.approx(truth, rel=1e-12)
        assert frechet(stats(real), stats(fake)) == pytest.approx(truth, rel=1e-6)  # torch-fidelity: close
    more = np.maximum(rng.standard_normal((3 * d, d)) @ mix * 1.1 + 1.05, 0)  # N > d: torch-fidelity's formula
    assert headline_fid(stats(real), stats(more), torch.tensor(real), torch.tensor(more)) == frechet(stats(real),
                                                                                                   stats(more))


@pytest.mark.parametrize("n_real,n_fake,d", [(500, 400, 8), (30, 40, 64)])
def test_fid_inf_is_the_intercept_of_torch_fidelity_fids_on_its_subsets(n_real, n_fake, d):
    """FID_inf's subset FIDs (the replicate formula: Cholesky form, and the cross-Gram form when neither side
    has more points than dimensions) are torch-fidelity's FIDs of the same subsets."""
    from bench.metrics.base import derive_seed
    from bench.metrics.fid import fid_infinity, frechet

    g = torch.Generator().manual_seed(4)
    real = torch.randn(n_real, d, generator=g) @ torch.randn(d, d, generator=g)
    fake = torch.randn(n_fake, d, generator=g) @ torch.randn(d, d, generator=g) + 0.3
    stats = lambda x: {"mu": x.double().mean(0).numpy(), "sigma": np.cov(x.double().numpy(), rowvar=False)}
    sizes = np.unique(np.linspace(max(n_fake // 4, 2), n_fake, 5).astype(int))
    rng = np.random.default_rng(derive_seed(7, "fid-inf"))
    values = [frechet(stats(real), stats(fake[rng.permutation(n_fake)[:k]])) for k in sizes]
    expected = float(np.polyfit(1.0 / sizes, values, 1)[1])
    assert fid_infinity(real, fake, 5, 7) == pytest.approx(expected, rel=1e-6)


def test_fid_interval_and_fid_inf():
    g = torch.Generator().manual_seed(5)
    real = torch.randn(2000, 4, generator=g)
    fake = torch.randn(400, 4, generator=g) * 1.3 + 0.2
    m = METRICS.get("fid")
    out = m.compute(_ctx(fake, real, seed=0, fid_interval_groups=10, fid_inf_points=5))
    assert out["fid/ci95_low"] < out["fid"] < out["fid/ci95_high"]
    # centred on the estimate (the old bootstrap interval sat above it)
    assert out["fid/ci95_high"] - out["fid"] == pytest.approx(out["fid"] - out["fid/ci95_low"], rel=1e-9)
    assert out == m.compute(_ctx(fake, real, seed=0, fid_interval_groups=10, fid_inf_points=5))
    assert out["fid/ci95_low"] != m.compute(_ctx(fake, real, seed=1, fid_interval_groups=10))["fid/ci95_low"]
    # Same distribution on both sides: finite-N FID is biased upward, FID_inf removes most of it.
    same = torch.randn(400, 4, generator=g)
    o2 = m.compute(_ctx(same, real, fid_inf_points=8, fid_interval_groups=0))
    assert o2["fid"] > 0 and abs(o2["fid_inf"]) < o2["fid"] and "fid/ci95_low" not in o2


def test_kid_near_zero_for_one_distribution_and_interval_brackets_the_mean():
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(600, 16, generator=g), torch.randn(600, 16, generator=g)
    out = METRICS.get("kid").compute(_ctx(a, b, kid_subset_size=200, kid_subsets=50))
    assert out["kid/ci95_low"] <= out["kid/mean"] <= out["kid/ci95_high"]
    # one subset = the whole set: the subsets' spread is 0, the interval is not (it measures sampling)
    whole = METRICS.get("kid").compute(_ctx(a, b, kid_subset_size=600, kid_subsets=5))
    assert whole["kid/std"] < 1e-9 < whole["kid/ci95_high"] - whole["kid/ci95_low"]
    far = METRICS.get("kid").compute(_ctx(a + 1.0, b, kid_subset_size=200, kid_subsets=50))
    assert abs(out["kid/mean"]) < 0.02 * far["kid/mean"]  # ~0 on the scale of a real difference


def test_kid_equals_torch_fidelity_for_the_same_seed():
    from torch_fidelity.metric_kid import kid_features_to_metric

    from bench.metrics.base import derive_seed

    g = torch.Generator().manual_seed(7)
    real, fake = torch.randn(300, 6, generator=g), torch.randn(300, 6, generator=g) + 0.2
    ours = METRICS.get("kid").compute(_ctx(fake, real, seed=3, kid_subset_size=100, kid_subsets=20))
    ref = kid_features_to_metric(real, fake, kid_subsets=20, kid_subset_size=100,
                                 rng_seed=derive_seed(3, "kid"), verbose=False)
    # torch-fidelity sums float32 kernels in float32, bench in float64: equal to its rounding (tests/conftest.py)
    assert ours["kid/mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=KID_VS_FIDELITY)
    assert ours["kid/std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=KID_VS_FIDELITY)
    # and to float64 rounding when torch-fidelity is given float64 features: the same estimator and subsets
    ref64 = kid_features_to_metric(real.double(), fake.double(), kid_subsets=20, kid_subset_size=100,
                                   rng_seed=derive_seed(3, "kid"), verbose=False)
    assert ours["kid/mean"] == pytest.approx(ref64["kernel_inception_distance_mean"], rel=1e-12)
    assert ours["kid/std"] == pytest.approx(ref64["kernel_inception_distance_std"], rel=1e-10)


def test_precision_recall_is_one_for_identical_sets():
    from bench.metrics.precision_recall import PRECISION_RECALL

    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(8))
    out = PRECISION_RECALL.compute(_ctx(x, x))
    assert out == {"precision": 1.0, "recall": 1.0}
    far = PRECISION_RECALL.compute(_ctx(x + 100, x))
    assert far["precision"] == 0.0 and far["recall"] == 0.0


def test_precision_recall_equals_torch_fidelity():
    from torch_fidelity.metric_prc import prc_features_to_metric

    from bench.metrics.precision_recall import precision_recall

    g = torch.Generator().manual_seed(9)
    fake, real = torch.randn(700, 12, generator=g) * 1.2 + 0.3, torch.randn(600, 12, generator=g)
    ref = prc_features_to_metric(fake, real, prc_neighborhood=3, verbose=False)
    p, r = precision_recall(fake, real, 3)
    assert p == pytest.approx(ref["precision"], abs=2e-3) and r == pytest.approx(ref["recall"], abs=2e-3)


def test_squared_thresholds_decide_exactly_as_square_roots_do():
    """precision/recall compares squared distances with `sq_threshold(r)` instead of square-rooting every block:
    every decision must be the one sqrt(max(d², 0)) <= r makes. Integer lattice points put many distances
    exactly on a radius (ties), where r² rounded alone would decide wrongly."""
    import bench.metrics.precision_recall as pr

    g = torch.Generator().manual_seed(11)
    for fake, real in [(torch.randint(-2, 3, (500, 6), generator=g).float(), torch.randint(-2, 3, (450, 6), generator=g).float()),
                       (torch.randn(500, 16, generator=g), torch.randn(450, 16, generator=g) * 1.1)]:
        fake_r, real_r = pr.knn_radii(fake, 3), pr.knn_radii(real, 3)
        d2 = pr._raw_sq_dist_block(fake, real, (real * real).sum(1))
        dist = d2.clamp_min(0).sqrt()
        assert torch.equal(d2 <= pr.sq_threshold(real_r)[None, :], dist <= real_r[None, :])
        assert torch.equal(d2 <= pr.sq_threshold(fake_r)[:, None], dist <= fake_r[:, None])
        p, r = pr.both_ways(fake, real, fake_r, real_r)
        assert (p, r) == ((dist <= real_r[None, :]).any(1).float().mean().item(),
                          (dist <= fake_r[:, None]).any(0).float().mean().item())
    radii = torch.cat([torch.tensor([0.0, 1.0, 2.0, 3.0]).sqrt(), torch.rand(20000, generator=g) * 50])
    t = pr.sq_threshold(radii)
    assert bool((t.sqrt() <= radii).all()) and bool((torch.nextafter(t, torch.tensor(float("inf"))).sqrt() > radii).all())


def test_precision_recall_blocks_bounded_in_elements_give_the_same_counts(monkeypatch):
    """Blocks of at most BLOCK_ELEMENTS distances (several ragged blocks here) give the one-block answer."""
    import bench.metrics.precision_recall as pr

    g = torch.Generator().manual_seed(10)
    fake, real = torch.randn(700, 12, generator=g) * 1.2 + 0.3, torch.randn(600, 12, generator=g)
    whole = pr.precision_recall(fake, real, 3)
    monkeypatch.setattr(pr, "BLOCK_ELEMENTS", 41 * 700)
    assert pr.block_rows(700) == 41 and pr.block_rows(600) == 47
    assert pr.precision_recall(fake, real, 3) == whole
    assert 0.1 < whole[0] < 0.95 and 0.1 < whole[1] < 0.95  # neither trivially 0 nor 1

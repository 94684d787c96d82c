import numpy as np
import scipy.linalg
import torch

from bench.features.stats import RunningStats
from bench.metrics import METRICS, MetricContext
from bench.protocol.schema import EvaluationSpec


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

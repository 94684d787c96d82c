"""KID's kernel sums: one pass shared by the subsets and the variance, equal to torch-fidelity's estimator.

bench/metrics/kernel_sums.py computes each KID subset's sums either from one blockwise pass over the full
kernel matrices (indicator products) or from the subset's own m x m matrices, whichever costs fewer flops.
Both must give torch-fidelity's per-subset MMD² (its estimator, its subset draws) to float64 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fidelity.metric_kid import kernel_mmd

from bench.metrics import kernel_sums as ks
from bench.metrics.intervals import kid_interval, kid_u_variance
from bench.metrics.kid import kid_subsets, kid_summary, subset_indices


def _features(n_r, n_f, d=16, shift=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_r, d, generator=g), torch.randn(n_f, d, generator=g) * 1.1 + shift


def _fidelity64(real, fake, subsets, size, seed):
    """torch-fidelity's own estimator and draw order, run on float64 features (no float32 rounding)."""
    r, f = real.double().numpy(), fake.double().numpy()
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(subsets):
        a, b = r[rng.choice(len(r), size, replace=False)], f[rng.choice(len(f), size, replace=False)]
        out.append(kernel_mmd(a, b, kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                              kid_kernel_poly_coef0=1))
    return np.array(out)


@pytest.mark.parametrize("n_r,n_f,size", [(120, 90, 40), (60, 60, 60), (300, 50, 25)])
def test_both_paths_equal_torch_fidelitys_estimator_in_float64(monkeypatch, n_r, n_f, size):
    real, fake = _features(n_r, n_f)
    ref = _fidelity64(real, fake, 7, size, 3)
    monkeypatch.setattr("bench.metrics.kid.shared_pass_is_cheaper", lambda *a: True)
    fused, parts = kid_subsets(real, fake, 7, size, 3, all_pairs=True)
    assert parts is not None
    np.testing.assert_allclose(fused, ref, rtol=1e-11, atol=1e-13)
    monkeypatch.setattr("bench.metrics.kid.fused_is_cheaper", lambda *a: False)
    direct, none = kid_subsets(real, fake, 7, size, 3)
    assert none is None
    np.testing.assert_allclose(direct, ref, rtol=1e-11, atol=1e-13)
    if size < min(n_r, n_f):  # a wrong draw order (fake subset first) is caught: it picks other rows
        assert not np.allclose(_fidelity64(fake, real, 7, size, 3), fused)


def test_blocks_bound_memory_and_do_not_change_the_sums(monkeypatch):
    real, fake = _features(200, 150)
    idx_r, idx_f = subset_indices(200, 150, 5, 30, 1)
    whole = ks.kernel_sums(real.double(), fake.double(), False, idx_r, idx_f)
    seen = []
    real_cubic = ks.cubic_kernel
    monkeypatch.setattr(ks, "BLOCK_ELEMENTS", 1000)
    monkeypatch.setattr(ks, "cubic_kernel", lambda a, b, *buf: seen.append(a.shape[0] * b.shape[0]) or real_cubic(a, b, *buf))
    blocked = ks.kernel_sums(real.double(), fake.double(), False, idx_r, idx_f)
    assert len(seen) == 34 and max(seen) <= 1000  # 6 rows of 150 per block: never the 200 x 150 matrix
    np.testing.assert_allclose(blocked.subsets, whole.subsets, rtol=1e-12)
    np.testing.assert_allclose(blocked.rows.numpy(), whole.rows.numpy(), rtol=1e-12)
    np.testing.assert_allclose(blocked.cols.numpy(), whole.cols.numpy(), rtol=1e-12)
    assert blocked.squares == pytest.approx(whole.squares, rel=1e-12)
    k = ks.kernel_matrix(real.double(), fake.double())
    assert whole.squares == pytest.approx(float((k * k).sum()), rel=1e-12)
    assert whole.rows.numpy() == pytest.approx(k.sum(1).numpy(), rel=1e-12)


def test_the_shared_pass_gives_the_same_interval_as_a_separate_variance_pass():
    real, fake = _features(150, 110, shift=0.05)
    values, parts = kid_subsets(real, fake, 10, 50, 2, all_pairs=True)
    shared = kid_interval(values.mean(), values, real.numpy(), fake.numpy(), 9, sums=parts)
    separate = kid_interval(values.mean(), values, real.numpy(), fake.numpy(), 9)
    np.testing.assert_allclose(shared, separate, rtol=1e-10)
    # and the variance really is the one kid_u_variance computes (a wrong part would move the interval)
    se = shared[2]
    var_s = values.var(ddof=1) / len(values)
    assert se ** 2 == pytest.approx(kid_u_variance(real.numpy(), fake.numpy(), 150, 110) + var_s, rel=1e-10)


def test_the_path_is_chosen_by_flops():
    # 2,000 points a side, 100 subsets of 1,000 (the default): one pass is ~14x fewer flops
    assert ks.fused_is_cheaper(2000, 2000, 100, 1000, 128)
    # 20,000 a side: the subsets' own matrices are cheaper; 2,000 reals x 20,000 fakes: still one pass for the
    # reals' own matrix, the subsets for the fakes'
    assert not ks.fused_is_cheaper(20000, 20000, 100, 1000, 128)
    assert ks.fused_is_cheaper(2000, 20000, 100, 1000, 128)  # the cross matrix: 4e7 entries, still one pass
    # the variance's all-points pass (at most 4,000 a side) is best shared with the subsets
    assert ks.shared_pass_is_cheaper(4000, 4000, 100, 1000, 128)
    assert ks.shared_pass_is_cheaper(300, 300, 10, 100, 16)


def test_mixed_paths_give_the_same_values(monkeypatch):
    """One matrix fused, the others direct (what unequal sizes pick) gives the same subset values."""
    real, fake = _features(300, 80)
    ref = _fidelity64(real, fake, 6, 40, 2)
    calls = iter([True, False, True])
    monkeypatch.setattr("bench.metrics.kid.shared_pass_is_cheaper", lambda *a: False)
    monkeypatch.setattr("bench.metrics.kid.fused_is_cheaper", lambda *a: next(calls))
    values, parts = kid_subsets(real, fake, 6, 40, 2, all_pairs=True)
    assert parts is None
    np.testing.assert_allclose(values, ref, rtol=1e-11, atol=1e-13)


def test_float32_torch_fidelity_agrees_to_its_rounding():
    """What `KID_VS_FIDELITY` in tests/conftest.py stands for: torch-fidelity on float32 features differs from the
    float64 sums by its float32 rounding of the kernel sums, a few 1e-7 of their size, not more."""
    real, fake = _features(400, 400, d=64, shift=0.0)
    ours = kid_summary(real, fake, 5, 400, 0, None)["kid/mean"]
    r, f = real.numpy(), fake.numpy()
    rng = np.random.RandomState(0)
    fidelity = np.mean([kernel_mmd(r[rng.choice(400, 400, replace=False)], f[rng.choice(400, 400, replace=False)],
                                   kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                   kid_kernel_poly_coef0=1) for _ in range(5)])
    scale = float(ks.kernel_matrix(real.double(), real.double()).mean())  # size of one kernel entry
    assert abs(ours - fidelity) < 1e-6 * scale


def test_the_kernel_base_is_the_product_then_divided_then_plus_one():
    """kernel_base folds "/d + 1" into the product (addmm, alpha = 1/d), so it must agree with the three-step form
    up to the rounding of adding the product's inner chunks onto the 1 one by one: bit for bit with MKL on the
    Intel CPUs of earlier machines at d = 128; up to 10 ulps on about half the entries with MKL on an AMD EPYC
    (2026-12-05), one rounding per chunk. 1e-14 (45 ulps at 1) allows that; a wrong divisor (d - 1) or a missing
    + 1 is off by 1e-4 or more, which the KID tests above also pin against torch-fidelity."""
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(70, 128, generator=g, dtype=torch.float64), torch.randn(50, 128, generator=g, dtype=torch.float64)
    three_step = (a @ b.T) / 128 + 1
    np.testing.assert_allclose(ks.kernel_base(a, b).numpy(), three_step.numpy(), rtol=1e-14, atol=0)
    wrong_divisor = (a @ b.T) / 127 + 1  # the tolerance still tells a wrong formula apart
    assert np.abs(ks.kernel_base(a, b).numpy() - wrong_divisor.numpy()).max() > 1e-4
    buffers = ks.kernel_buffers(70, 50)
    total, u = ks.cube_sum(a, b, *buffers)
    assert total == pytest.approx(float((three_step ** 3).sum()), rel=1e-13)

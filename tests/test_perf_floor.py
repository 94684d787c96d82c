"""`bench perf metrics` prints a floor under P1 (bench/perf_floor.py): the dense operations the metric definitions
need. A floor is only evidence if it lists what the metrics really compute, so each part is checked against the
operations the metric code performs: KID's kernel products (recorded at the kernel functions, path by path),
FID's eigendecompositions (counted), precision/recall's two distance products."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics import intervals, kernel_sums as ks, real_side
from bench.metrics.base import MetricContext
from bench.metrics.kid import kid_summary
from bench.perf_floor import Op, _fid_ops, _kid_ops, _pr_ops, floor_seconds, ops_for
from bench.protocol.schema import EvaluationSpec


def _features(n_r, n_f, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_r, d, generator=g), torch.randn(n_f, d, generator=g) * 1.1 + 0.1


def _kid_recorded(monkeypatch, tmp_path, real, fake, subsets, size) -> tuple[float, int]:
    """(flops of every kernel product, number of indicator passes) of one cached KID evaluation (the real-side
    cache warm, as in `bench perf metrics`)."""
    import bench.metrics.kid as kid

    monkeypatch.setattr(real_side, "ROOT", tmp_path)
    kid_summary(real, fake, subsets, size, 0, 1, cached=True)  # fills the real-side cache
    real_side.forget_memory()
    seen, passes = [], []
    cubic, cube_sum, sums = ks.cubic_kernel, ks.cube_sum, kid.kernel_sums
    monkeypatch.setattr(ks, "cubic_kernel", lambda l, r, *b: seen.append(2.0 * l.shape[0] * l.shape[1] * r.shape[0])
                        or cubic(l, r, *b))
    monkeypatch.setattr(ks, "cube_sum", lambda l, r, *b: seen.append(2.0 * l.shape[0] * l.shape[1] * r.shape[0])
                        or cube_sum(l, r, *b))
    monkeypatch.setattr(kid, "kernel_sums", lambda a, b, same, ia=None, ib=None: passes.append(ia is not None)
                        or sums(a, b, same, ia, ib))
    kid_summary(real, fake, subsets, size, 0, 1, cached=True)
    return sum(seen), sum(passes)


@pytest.mark.parametrize("n_r,n_f,d,subsets,size,cap", [
    (120, 120, 8, 20, 100, None),   # one shared pass: fused kernel matrices, the variance from the same sums
    (400, 400, 8, 3, 50, None),     # the subsets' own matrices, and a separate all-points variance pass
    (400, 300, 8, 3, 50, 100),      # ... whose points are subsampled above the cap
])
def test_the_kid_floor_lists_the_kernel_products_kid_computes(monkeypatch, tmp_path, n_r, n_f, d, subsets, size, cap):
    if cap:
        monkeypatch.setattr(intervals, "KID_VARIANCE_MAX", cap)
    real, fake = _features(n_r, n_f, d)
    ops = _kid_ops(n_f, n_r, d, subsets, size, True)
    flops, indicator_passes = _kid_recorded(monkeypatch, tmp_path, real, fake, subsets, size)
    assert sum(op.flops for op in ops if op.what == "kernel") == flops
    assert sum(op.what == "indicator" for op in ops) == indicator_passes  # subsets read out of a full matrix


def test_a_wrong_kid_floor_is_caught(monkeypatch, tmp_path):
    """The check above can fail: a floor that forgot the variance pass lists fewer flops than KID computes."""
    real, fake = _features(400, 400, 8)
    ops = [op for op in _kid_ops(400, 400, 8, 3, 50, False) if op.what == "kernel"]
    assert sum(op.flops for op in ops) < _kid_recorded(monkeypatch, tmp_path, real, fake, 3, 50)[0]


@pytest.mark.parametrize("n_r,n_f,d,groups", [
    (300, 200, 16, 10),  # every fit in the covariance form: 10 + 45 replicates and 5 FID_inf fits
    (300, 200, 16, 3),   # three groups: delete-one replicates only (the jackknife needs 4 for delete-two)
    (300, 60, 32, 10),   # FID_inf's smaller subsets (15, 26 rows) have fewer rows than dimensions
])
def test_the_fid_floor_counts_the_factorisations_fid_makes(monkeypatch, n_r, n_f, d, groups):
    from bench.metrics.fid import compute

    real, fake = _features(n_r, n_f, d)
    spec = EvaluationSpec(n_samples=n_f, seeds=[0], batch_size=10, metrics=["fid"], fid_interval_groups=groups)
    seen = {}
    for name in ("eigvalsh", "cholesky"):
        original = getattr(torch.linalg, name)

        def recording(x, *a, _name=name, _original=original, **k):
            key = (_name, x.shape[-1])
            seen[key] = seen.get(key, 0) + 1
            return _original(x, *a, **k)

        monkeypatch.setattr(torch.linalg, name, recording)
    stats = lambda x: {"mu": x.double().mean(0).numpy(), "sigma": np.cov(x.double().numpy(), rowvar=False)}  # noqa: E731
    compute(MetricContext(0, spec, {"pool": fake}, {"pool": real}, stats(fake), stats(real)))
    listed = {(op.kind, op.rows): op.count for op in _fid_ops(n_f, n_r, d, groups, spec.fid_inf_points)}
    assert listed == seen


def test_precision_recall_floor_and_the_evaluation_list():
    assert [(op.rows, op.inner, op.cols, op.dtype) for op in _pr_ops(500, 700, 64)] == [
        (500, 64, 500, torch.float32), (500, 64, 700, torch.float32)]
    spec = EvaluationSpec(n_samples=2000, seeds=[0], batch_size=100, metrics=["is", "fid", "kid", "precision_recall"])
    assert {op.metric for op in ops_for(2000, 2000, 128, spec)} == {"kid", "precision_recall", "fid"}
    # with no FID interval and no FID_inf there is nothing of FID's to count
    assert _fid_ops(2000, 2000, 128, 0, 0) == []


def test_floor_seconds_multiplies_by_count_and_sums_by_metric():
    ops = [Op("a", "kernel", "matmul", 8, 8, 8, torch.float64, 3), Op("b", "replicate", "eigvalsh", 8, 8, 8, torch.float64, 2)]
    out = floor_seconds(ops, repeats=1)
    assert set(out) == {"a", "b", "total"} and out["total"] == pytest.approx(out["a"] + out["b"])
    assert all(v > 0 for v in out.values())

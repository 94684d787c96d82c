"""The arithmetic floor under `bench perf metrics` P1: what the metric definitions cost on this machine even
with no overhead at all.

P1 divides one evaluation (generate, extract, all metrics) by its generate-and-extract part. Whatever an
implementation does around them, the exact metrics cannot skip their dense linear algebra: KID's kernel
products over its subsets (and its variance's all-pairs sums), precision/recall's generated k-NN radii and
generated x real distances, and FID's interval replicates (a Cholesky factor and an eigendecomposition each).
`ops_for` lists those operations for one evaluation, choosing each kernel matrix's path by the same functions
the metrics use (bench/metrics/kernel_sums.py, bench/metrics/intervals.py) and each FID fit's form as
`fid_value` picks it (tests/test_perf_floor.py records both from the metric code), in the metrics' dtypes,
with the real-only terms left out as the real-side cache leaves them out, and times them on random operands
of the same shapes: products through torch.matmul, factorisations through torch.linalg, nothing elementwise.
(bare + floor) / bare is then a lower bound on P1 for these definitions on this CPU, whatever the code
around them: where it exceeds a target, only other definitions (fewer KID subsets, another precision) or
other hardware reach it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from bench.metrics import intervals
from bench.metrics.fid import fid_inf_sizes
from bench.metrics.intervals import fid_groups, variance_uses_all_points
from bench.metrics.kernel_sums import fused_is_cheaper, shared_pass_is_cheaper
from bench.metrics.kid import subset_size


@dataclass(frozen=True)
class Op:
    """`count` times one dense operation: a (rows x inner) @ (inner x cols) product, or a factorisation of a
    `rows` x `rows` symmetric positive definite matrix (kind "cholesky" or "eigvalsh"); `what` names its part
    ("kernel", "indicator", "distance", "replicate")."""

    metric: str
    what: str
    kind: str
    rows: int
    inner: int
    cols: int
    dtype: torch.dtype
    count: int

    @property
    def flops(self) -> float:
        return 2.0 * self.rows * self.inner * self.cols * self.count if self.kind == "matmul" else 0.0


def _kid_ops(n: int, n_real: int, d: int, subsets: int, requested: int, interval: bool) -> list[Op]:
    """KID's generated-side products (the real-real sums come from the real-side cache), path by path as
    bench/metrics/kid.py `kid_subsets` and `kid_summary` choose them."""
    m = subset_size(requested, n, n_real)
    f64 = torch.float64
    shared = interval and variance_uses_all_points(n_real, n) and shared_pass_is_cheaper(n_real, n, subsets, m, d)
    ops = []
    for n_a, same in ((n, True), (n_real, False)):  # fake x fake, real x fake
        if shared or fused_is_cheaper(n_a, n, subsets, m, d):
            ops += [Op("kid", "kernel", "matmul", n_a, d, n, f64, 1),
                    Op("kid", "indicator", "matmul", subsets, n_a, n, f64, 1)]
        elif same:  # a subset's symmetric matrix as three half-size blocks (kernel_sums.direct_subset_sums)
            ops.append(Op("kid", "kernel", "matmul", m // 2, d, m - m // 2, f64, 3 * subsets))
        else:
            ops.append(Op("kid", "kernel", "matmul", m, d, m, f64, subsets))
    if interval and not shared:  # the variance's own all-pairs pass on at most KID_VARIANCE_MAX points a side
        p, q = min(n, intervals.KID_VARIANCE_MAX), min(n_real, intervals.KID_VARIANCE_MAX)
        ops += [Op("kid", "kernel", "matmul", p, d, p, f64, 1), Op("kid", "kernel", "matmul", q, d, p, f64, 1)]
    return ops


def _pr_ops(n: int, n_real: int, d: int) -> list[Op]:
    """Precision/recall: the generated k-NN radii (fake x fake) and the fake x real distances, float32; the
    real radii are cached."""
    return [Op("precision_recall", "distance", "matmul", n, d, n, torch.float32, 1),
            Op("precision_recall", "distance", "matmul", n, d, n_real, torch.float32, 1)]


def _fit_ops(kept: list[int], d: int) -> list[Op]:
    """One FID fit per entry of `kept` (generated rows it keeps), in the form bench/metrics/intervals.py
    `fid_value` takes for it in the covariance form: more rows than dimensions, a Cholesky factor of Σ_r and an
    eigendecomposition of Lᵀ Σ_g L (d x d); otherwise the eigenproblem of the rows' own (c-1) x (c-1) form
    (its products are not counted: the floor is only lower for them)."""
    counts: dict[tuple[str, int], int] = {}
    for c in kept:
        for kind, size in ((("cholesky", d), ("eigvalsh", d)) if c > d else (("eigvalsh", c - 1),)):
            counts[(kind, size)] = counts.get((kind, size), 0) + 1
    return [Op("fid", "replicate", kind, size, size, size, torch.float64, n) for (kind, size), n in counts.items()]


def _fid_ops(n: int, n_real: int, d: int, groups: int, inf_points: int) -> list[Op]:
    """FID's interval replicates (delete-one, and delete-two from 4 groups on, as bench/metrics/intervals.py
    `jackknife` makes them) and FID_inf's fits (`fid_inf_sizes`), each in the form `fid_value` takes for the
    rows it keeps (`_fit_ops`). The headline's own matrix square root is not counted (the floor is only lower
    for it). With no more generated points than dimensions in all, the replicates use the cross-Gram or
    projected forms instead (not modelled: nothing counted)."""
    if n <= d:
        return []
    g = fid_groups(groups, n_real, n) if groups else 0
    kept = []
    if g:
        sizes = [len(part) for part in np.array_split(np.arange(n), g)]
        kept += [n - sizes[k] for k in range(g)]
        if g >= 4:
            kept += [n - sizes[k] - sizes[j] for k, j in combinations(range(g), 2)]
    if inf_points and n >= 8:
        kept += [int(k) for k in fid_inf_sizes(n, inf_points)]
    return _fit_ops(kept, d)


def ops_for(n: int, n_real: int, d: int, settings) -> list[Op]:
    """Every dense operation one evaluation of IS, FID, KID and precision/recall needs (module doc)."""
    return (_kid_ops(n, n_real, d, settings.kid_subsets, settings.kid_subset_size, settings.kid_interval)
            + _pr_ops(n, n_real, d)
            + _fid_ops(n, n_real, d, settings.fid_interval_groups, settings.fid_inf_points))


def _seconds_once(op: Op, repeats: int) -> float:
    """Median time of one instance of `op` on random operands (after one untimed call)."""
    g = torch.Generator().manual_seed(0)
    if op.kind == "matmul":
        a = torch.randn(op.rows, op.inner, generator=g, dtype=op.dtype)
        b = torch.randn(op.cols, op.inner, generator=g, dtype=op.dtype)
        out = torch.empty(op.rows, op.cols, dtype=op.dtype)
        run = lambda: torch.matmul(a, b.T, out=out)  # noqa: E731
    else:
        x = torch.randn(op.rows, 2 * op.rows, generator=g, dtype=op.dtype)
        spd = x @ x.T / (2 * op.rows)
        run = (lambda: torch.linalg.cholesky(spd)) if op.kind == "cholesky" else (lambda: torch.linalg.eigvalsh(spd))
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floor_seconds(ops: list[Op], repeats: int = 5) -> dict[str, float]:
    """{metric: seconds, ..., "total": seconds}: each op timed once (median of `repeats`) and multiplied by its
    count (identical operations of one shape cost the same; timing all of them would only add noise)."""
    out: dict[str, float] = {}
    for op in ops:
        out[op.metric] = out.get(op.metric, 0.0) + op.count * _seconds_once(op, repeats)
    out["total"] = sum(out.values())
    return out

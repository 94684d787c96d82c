"""Sums of KID's cubic-kernel matrices, computed once and shared by every number KID reports.

KID (Bińkowski et al. 2018) is the mean of S unbiased MMD² estimates on random subsets of size m, and its
interval needs the row sums, column sums and sum of squares of the three kernel matrices on all points
(bench/metrics/intervals.py). Computing each subset's three m x m kernel matrices costs S·m²·(2d + 4)
flops per matrix pair; computing the full n_a x n_b matrix once and reading every subset's sum out of it
costs n_a·n_b·(2d + 4 + 2S), because a subset's sum over I x J is w_Iᵀ K w_J with 0/1 indicator vectors,
and all S of them are one matrix product. With S = 100 subsets of 1,000 from 2,000 points that is 14x
fewer flops, and the variance's sums come out of the same pass; with 10,000 points or more, the subsets
are cheaper, so each of the three matrices takes whichever path costs fewer flops (`fused_is_cheaper`). Both give the same sums up to
float64 rounding (~1e-13 relative; tests/test_kernel_sums.py).

Everything is float64 (torch-fidelity accumulates in float32: the two agree to its float32 rounding,
measured in docs/metrics.md), and the full matrix is walked in row blocks of at most `BLOCK_ELEMENTS`
entries, so memory stays flat in N: no N x N matrix is ever held.

The kernel is evaluated into two buffers allocated once per pass (`cubic_kernel`'s `out` and `scratch`):
the one-line (ab/d + 1)³ allocates three fresh 8 MB matrices per 1,000 x 1,000 subset, and on glibc each is
a fresh mmap whose pages the kernel zeroes on first touch; that made the elementwise part cost 2.4x the
matrix product (15.8 ms per subset against 5.2 ms with the buffers, 2 threads), for bit-identical values.

The elementwise part is further cut by letting the matrix product add the kernel's "/d + 1" itself: addmm
with alpha = 1/d onto a broadcast 1, with no copy of either operand, so only the cube is left elementwise, and
where only a subset's total is needed it is dot(u², u) without the cube stored (a 1,000 x 1,000 subset:
3.2-3.4 ms -> 2.4-2.9 ms, the product alone 1.7 ms). At the judges' d = 128 the base has the very bits of the
product followed by /d and + 1 with MKL on the Intel CPUs of earlier machines; at d = 2,048 there, and at d = 128
on an AMD EPYC (2026-12-05), MKL adds its inner-dimension chunks onto the 1 one by one, and about half the
entries differ by an ulp or several (up to 10 at d = 128 on the EPYC). With the dot's other summation order, KID moved by ~1e-13
relative at d = 128 and by up to ~2e-11 for a near-zero KID (1.9e-5) at d = 2,048, where the MMD²'s
cancellation magnifies it (a review measured it; tests/test_kernel_sums.py holds both paths to
torch-fidelity's float64 estimator at 1e-11).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BLOCK_ELEMENTS = 1 << 20  # 1M entries (8 MiB of float64) per block of kernel rows (two such buffers per pass)


_ONE = torch.ones(1, 1, dtype=torch.float64)


def cubic_kernel(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None,
                 scratch: torch.Tensor | None = None) -> torch.Tensor:
    """KID's kernel k(x, y) = (x·y/d + 1)³ (torch-fidelity's poly kernel with gamma = 1/d, coef0 = 1).

    `out`, `scratch`: len(a) x len(b) buffers to reuse (views of larger ones are fine); the result is in
    `scratch`, the base u = x·y/d + 1 stays in `out`."""
    u = kernel_base(a, b, out)
    return torch.mul(u, u, out=scratch).mul_(u)


def kernel_base(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """u = a·b/d + 1 in one addmm (module doc: the product, then /d, then + 1, up to a few ulps where MKL adds
    the product's chunks onto the 1 one by one)."""
    one = _ONE if a.dtype == torch.float64 else torch.ones(1, 1, dtype=a.dtype)
    return torch.addmm(one.expand(len(a), len(b)), a, b.T, beta=1.0, alpha=1.0 / a.shape[1], out=out)


def cube_sum(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, scratch: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(Σ k over the block, the base u) without materialising the cube: Σ u³ = dot(u², u)."""
    u = kernel_base(a, b, out)
    return float(torch.dot(torch.mul(u, u, out=scratch).view(-1), u.view(-1))), u


def _cube_trace(u: torch.Tensor) -> float:
    diagonal = u.diagonal()
    return float((diagonal * diagonal * diagonal).sum())


def kernel_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The whole kernel matrix (tests and small sets; the passes below never hold one)."""
    return cubic_kernel(as_float64(a), as_float64(b))


def kernel_buffers(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows x cols float64 buffers for `cubic_kernel` (a smaller block takes a contiguous front part:
    `buf.view(-1)[:r * c].view(r, c)`, since a strided slice as `out` makes matmul write a temporary)."""
    return torch.empty(rows, cols, dtype=torch.float64), torch.empty(rows, cols, dtype=torch.float64)


def as_float64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float64)


@dataclass
class KernelSums:
    """Sums over K = cubic_kernel(a, b), the diagonal dropped when a is b (`same`)."""

    rows: torch.Tensor  # Σ_j K_ij for every row i
    cols: torch.Tensor  # Σ_i K_ij for every column j
    squares: float  # Σ K_ij²
    subsets: np.ndarray | None  # Σ_{i∈I_s, j∈J_s} K_ij for each subset s, when subsets were asked for

    def as_dict(self) -> dict:  # for the real-side cache (bench/metrics/real_side.py)
        return {"rows": self.rows, "cols": self.cols, "squares": self.squares, "subsets": self.subsets}

    @classmethod
    def from_dict(cls, d: dict) -> "KernelSums":
        return cls(d["rows"], d["cols"], d["squares"], d["subsets"])


def _indicators(index: np.ndarray, n: int) -> torch.Tensor:
    w = torch.zeros(len(index), n, dtype=torch.float64)
    w.scatter_(1, torch.as_tensor(index, dtype=torch.long), 1.0)
    return w


def kernel_sums(a: torch.Tensor, b: torch.Tensor, same: bool, index_a: np.ndarray | None = None,
                index_b: np.ndarray | None = None) -> KernelSums:
    """One blockwise pass over K(a, b). `index_a`, `index_b` (S x m arrays of row numbers, no repeats within
    a row) ask for each subset's sum over I_s x J_s as well."""
    n_a, n_b = len(a), len(b)
    block = max(1, min(n_a, BLOCK_ELEMENTS // max(n_b, 1)))
    rows = torch.zeros(n_a, dtype=torch.float64)
    cols = torch.zeros(n_b, dtype=torch.float64)
    squares = 0.0
    want = index_a is not None
    if want:
        w_a, w_b = _indicators(index_a, n_a), _indicators(index_b, n_b)
        subsets = torch.zeros(len(index_a), dtype=torch.float64)
        picked = torch.empty(len(index_a), n_b, dtype=torch.float64)  # w_a[:, block] @ K, one buffer for all blocks
    out, scratch = kernel_buffers(block, n_b)
    for start in range(0, n_a, block):
        stop = min(start + block, n_a)
        k = cubic_kernel(a[start:stop], b, out[:stop - start], scratch[:stop - start])
        if same:
            i = torch.arange(start, stop)
            k[i - start, i] = 0.0
        rows[start:stop] = k.sum(1)
        cols += k.sum(0)
        squares += float(torch.dot(k.reshape(-1), k.reshape(-1)))
        if want:
            subsets += torch.matmul(w_a[:, start:stop], k, out=picked).mul_(w_b).sum(1)
    return KernelSums(rows, cols, squares, subsets.numpy() if want else None)


def direct_subset_sums(a: torch.Tensor, b: torch.Tensor, same: bool, index_a: np.ndarray,
                       index_b: np.ndarray) -> np.ndarray:
    """The same subset sums, each from its own m x m kernel matrix (cheaper when n_a·n_b > S·m²).

    Within one side (`same`, where the subset's matrix is symmetric) the subset is split in halves A and B and
    the sum is K(A,A) + K(B,B) + 2 K(A,B) without the diagonal: three quarter-size blocks instead of four, 25%
    fewer flops, the same sum up to float64 rounding (another summation order)."""
    out = np.zeros(len(index_a))
    buffers = kernel_buffers(index_a.shape[1], index_b.shape[1])
    for s in range(len(index_a)):
        rows = a[torch.as_tensor(index_a[s])]
        if not same:
            out[s] = cube_sum(rows, b[torch.as_tensor(index_b[s])], *buffers)[0]
            continue
        half = len(rows) // 2
        total = 0.0
        for p, q, weight in ((rows[:half], rows[:half], 1.0), (rows[half:], rows[half:], 1.0),
                             (rows[:half], rows[half:], 2.0)):
            block, u = cube_sum(p, q, *(buf.view(-1)[:len(p) * len(q)].view(len(p), len(q)) for buf in buffers))
            total += weight * block - (_cube_trace(u) if weight == 1.0 else 0.0)
        out[s] = total
    return out


def fused_is_cheaper(n_a: int, n_b: int, subsets: int, size: int, d: int) -> bool:
    """Flop counts of the two paths for one kernel matrix (module doc)."""
    return n_a * n_b * (2 * d + 4 + 2 * subsets) < subsets * size * size * (2 * d + 4)


def shared_pass_is_cheaper(n_a: int, n_b: int, subsets: int, size: int, d: int) -> bool:
    """When KID's variance needs all-points sums of the three matrices anyway: is one shared pass (adding only
    the 2S indicator term) cheaper than the variance pass plus the cheaper path for each matrix?"""
    shapes = ((n_a, n_a), (n_b, n_b), (n_a, n_b))
    shared = sum(p * q for p, q in shapes) * (2 * d + 4 + 2 * subsets)
    separate = sum(p * q * (2 * d + 4) + min(p * q * (2 * d + 4 + 2 * subsets), subsets * size * size * (2 * d + 4))
                   for p, q in shapes)
    return shared < separate

"""95% intervals for FID and KID whose coverage is checked by simulation (`bench perf coverage`).

What each interval covers:
- FID is biased upward at finite sample sizes (Chong & Forsyth 2020): no interval around a plug-in FID
  can cover the population distance at N = 500 in 2,048 dimensions, where the bias is many standard
  errors. The FID interval therefore covers FID *at this protocol's sample sizes* — the expected value
  of the estimate over fresh draws of both the generated and the real images. Rows of one fingerprint
  share those sizes, so that is the quantity they compare; `fid_inf` estimates the N -> infinity limit.
- KID is unbiased, so its interval covers the population MMD² itself.

Method for FID: a delete-a-group jackknife with its second-order bias removed.
- Both sides are split at random into G groups; unit k is (real group k, generated group k), so one
  deletion measures both sides' variance (they are independent). θ_(k) is the statistic without unit k,
  θ_(kl) without units k and l. The estimate itself is the centre of the interval, so it always lies
  inside it; FID's interval is clipped at 0.
- The plain jackknife variance v_J = (G-1)/G Σ (θ_(k) - mean)² is unbiased for the first-order (linear)
  part of the variance, but over-estimates the second-order (degenerate, pairwise-interaction) part
  V2 by the factor 2(G-1)/(G-2) (2.25 at G = 10; Efron & Stein 1981 show the jackknife is biased
  upward by exactly such higher-order terms). V2 dominates when the two distributions are close — the
  real-data row, a near-perfect generator, or any small difference at small N — and made those
  intervals cover ~100% instead of 95%.
- V2 is measured from the delete-two replicates: fitting θ_(kl) = m + r_k + r_l by least squares
  removes everything first-order, and the residual mean square estimates the variance of one
  pairwise-interaction term (C(G,2) - G degrees of freedom), which scales to the full sample's V2.
  Variance = v_J - G/(G-2) · V2, never below v_J (G-2)/(2(G-1)) (the value if everything were
  second-order). Interval = estimate ± t(G-1) · sqrt(variance).
Method for KID: KID's headline is the mean of S subset estimates of size s. E[subset value | data] is the unbiased
MMD² on all the data (U), so Var(headline) = Var(U) + Var(subset value | data)/S. Var(U) comes from U's
Hoeffding decomposition, each part estimated from all pairs of points (`kid_u_variance`), not from
groups: with the corrected group jackknife at G = 10, the variance estimate was so noisy (coefficient of
variation ~0.7, like 4 degrees of freedom) that a near-perfect generator at N = 500 was covered 88% of the
time. Above `KID_VARIANCE_MAX` points a side the parts are estimated on a random subsample (they are
population quantities) and combined at the full sizes. The subset term is the subsets' own spread / S;
the interval uses t with Satterthwaite's degrees of freedom for the sum. The subsets' spread alone (an
earlier interval) measured only which subsets were drawn, and was ~1e-7 wide when a subset was the whole
set.

Replicate FIDs use exact linear algebra on the statistics (no resampling with replacement): when neither side
has more points than dimensions, the non-zero eigenvalues of Σ_r Σ_g are those of an n_g x n_g product of the
re-centred cross-Gram matrix X Yᵀ (no d x d matrix at all); with only n_g ≤ d, those of X Σ_r Xᵀ/(n-1) (X the
centred generated features), built from each real group's projection onto the generated rows (`_Projection`,
again no d x d matrix); otherwise those of Lᵀ Σ_g L with Σ_r = L Lᵀ (Cholesky; an eigen square root if Σ_r is
singular). Leaving groups out subtracts their precomputed sums, scatters or projections. In the n x n forms the
centring puts an exact zero eigenvalue into the matrix, which is projected out before the square root
(`_centred_trace_sqrt`). A FID interval costs 1 + G + G(G-1)/2 such evaluations (56 at G = 10).
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable, NamedTuple

import numpy as np
import torch
# t and normal quantiles from scipy.special: the same functions scipy.stats' t.ppf and norm.ppf call (equal
# to the last bit), without the second or so that importing scipy.stats adds to every `bench` process.
from scipy.special import ndtri as _normal_quantile, stdtrit as _t_quantile

from bench.metrics.kernel_sums import KernelSums, as_float64, kernel_sums

# FID's interval rule, by the name METHOD carries (FID_RULES below lists them): t on G - 1 degrees of freedom.
# `bench perf coverage` counts FID_CANDIDATE beside it on the same draws; making the candidate the rule is this one
# assignment, and moves every fingerprint.
FID_RULE = "group-jackknife-2nd-order-corrected"
FID_CANDIDATE = "group-jackknife-2nd-order-corrected-t-shares-df5"


def method_for(fid_rule: str) -> str:
    """The interval method string with FID's rule `fid_rule` (KID's is fixed)."""
    return f"fid:{fid_rule};kid:hoeffding-all-pairs/1"


# Part of every protocol fingerprint (bench/protocol/load.py): an interval is a result, so a change of
# method must not share a fingerprint with runs made by the old one.
METHOD = method_for(FID_RULE)

KID_VARIANCE_MAX = 4000  # points a side behind KID's variance estimate (a random subsample above)


def t_quantile(df: int, level: float = 0.95) -> float:
    return float(_t_quantile(df, 0.5 + level / 2))


def _groups(n: int, g: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n), g)


def jackknife(value: Callable[[tuple[int, ...]], float], g: int) -> dict[str, float]:
    """Second-order corrected delete-a-group jackknife (module doc) of a statistic of g exchangeable units.

    `value(deleted)` is the statistic with the units in `deleted` left out. Returns the variance, its
    first-order part `v1` and second-order part `v2` (so callers can rescale them), `df`, and `v2_raw`,
    the unbiased delete-two estimate of V2 before the cap that keeps `v1` from going negative (the cap
    binds about half the time when everything is second-order, making `var` there ~20% larger than the
    truth: conservative, and measured by tests/test_interval_coverage.py)."""
    reps = np.array([value((k,)) for k in range(g)])
    v_j = (g - 1) / g * float(((reps - reps.mean()) ** 2).sum())
    v2_raw = 0.0
    if g >= 4:
        pairs = list(combinations(range(g), 2))
        y = np.array([value(p) for p in pairs])
        design = np.zeros((len(pairs), g))
        for row, (k, l) in enumerate(pairs):
            design[row, k] = design[row, l] = 1.0
        fit, *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ fit
        per_pair = float(resid @ resid) / (len(pairs) - g)  # variance of one interaction term at G-2 units
        # a U-statistic's pairwise term at n units is weighted 2/(n(n-1)): rescale from G-2 units to G.
        v2_raw = len(pairs) * per_pair * ((g - 2) * (g - 3) / (g * (g - 1))) ** 2
    v1, v2 = corrected_parts(v_j, v2_raw, g)
    return {"var": v1 + v2, "v1": v1, "v2": v2, "v2_raw": v2_raw, "df": g - 1}


def _inflation(g: int) -> float:
    """How much the delete-one jackknife over-counts the second-order variance: 2(G-1)/(G-2) (module doc)."""
    return 2 * (g - 1) / (g - 2) if g > 2 else 1.0


def corrected_parts(v_j: float, v2_raw: float, g: int) -> tuple[float, float]:
    """(v1, v2) from the delete-one variance v_J and the delete-two estimate of V2: v1 = v_J - c·v2 with v2 capped
    at v_J / c, so v1 is never negative (c = `_inflation`)."""
    c = _inflation(g)
    v2 = min(v2_raw, v_j / c)
    return v_j - c * v2, v2


# The candidate for FID's next interval rule (FID_CANDIDATE; protocols still use t on G - 1 df). `bench perf
# coverage` counts it beside the current rule on the very same draws (bench/coverage.py), so the switch, which
# moves every fingerprint and so needs every report re-run, is made only once it has passed the whole grid.
SHARES_DF_FLOOR = 5.0


def shares_df(v1: float, v2: float, g: int, floor: float = SHARES_DF_FLOOR) -> float:
    """Degrees of freedom for a t interval on the corrected jackknife's variance v1 + v2 (candidate rule, above).

    The t quantile on G - 1 df assumes the variance estimate varies like a chi-square on G - 1 df. Its noise comes
    mostly from the delete-one estimate v_J, which has G - 1 df but estimates V1 + c V2 (c = 2(G-1)/(G-2), 2.25 at
    G = 10) of which only V1 + V2 is kept: Satterthwaite's df for that is (G-1)((V1 + V2)/(V1 + c V2))². With no
    second-order part it is G - 1 (`far` cells' standard errors vary like 7.8-9.2 df at G = 10); where the
    second-order part dominates it would be (G-1)/c² = 1.8, but the cap that keeps v1 >= 0 holds the measured
    dispersion at 3.2-4.7 df there (d = 128 and 2,048, `same`) while making the variance run high, so the rule
    never goes below SHARES_DF_FLOOR. The floor was chosen on d = 128 draws from a seed stream of their own
    (docs/metrics.md, `floor`: for that comparison), not on the grid that validates it."""
    if g < 4:  # no delete-two part (`jackknife`): the plain jackknife's G - 1
        return float(g - 1)
    total = v1 + v2
    satterthwaite = (g - 1) * (total / (v1 + _inflation(g) * v2)) ** 2 if total > 0 else float(g - 1)
    return float(min(g - 1, max(min(floor, g - 1), satterthwaite)))


def shares_half_width(v1: float, v2: float, g: int) -> tuple[float, float]:
    """(half-width, df) of the candidate rule's 95% interval on the parts v1, v2: t(`shares_df`) · sqrt(v1 + v2)."""
    df = shares_df(v1, v2, g)
    return t_quantile(df) * float(np.sqrt(v1 + v2)), df


def t_g_minus_1_half_width(v1: float, v2: float, g: int) -> tuple[float, float]:
    """(half-width, df) of the 95% interval t(G - 1) · sqrt(v1 + v2): the jackknife's usual degrees of freedom."""
    return t_quantile(g - 1) * float(np.sqrt(v1 + v2)), float(g - 1)


class FidRule(NamedTuple):
    half_width: Callable[[float, float, int], tuple[float, float]]  # (v1, v2, G) -> (half-width, df)
    description: str


# Every FID interval rule by name. All of them read the same jackknife parts, so a draw computed under one rule gives
# its interval under any other without being made again (bench/coverage.py resumes a log across a change of rule
# that way, and counts FID_CANDIDATE beside FID_RULE).
FID_RULES: dict[str, FidRule] = {
    "group-jackknife-2nd-order-corrected": FidRule(t_g_minus_1_half_width, "t on G - 1 df"),
    "group-jackknife-2nd-order-corrected-t-shares-df5": FidRule(
        shares_half_width, f"t on df from the variance parts' shares, at least {SHARES_DF_FLOOR:g}"),
}


def _centred_trace_sqrt(m: torch.Tensor) -> float:
    """Σ sqrt(eig(H m H)) for a symmetric PSD m, H = I - 11ᵀ/n: the trace term of the points behind m re-centred on
    their own mean (m itself when its points are centred already, m 1 = 0).

    H m H has the exact zero eigenvalue of 1, which eigvalsh returns as ±ε·λ_max and its square root as
    ~1e-8·sqrt(λ_max): a 1e-9 relative error in FID, larger than every other rounding in it. A Householder
    reflection P (P e_1 = 1/√n) puts that direction in the first row and column of P m P; the eigenvalues of
    the rest are those of H m H on the complement of 1 (exact algebra, and H acts there as the identity), so
    the zero never reaches the square root."""
    n = m.shape[0]
    m = (m + m.T) / 2
    if n > 1:
        v = torch.full((n,), -1.0 / np.sqrt(n), dtype=m.dtype)
        v[0] += 1.0
        c = 2.0 / float(v @ v)
        w = m @ v
        m = m - c * torch.outer(v, w) - c * torch.outer(w, v) + c * c * float(v @ w) * torch.outer(v, v)
        m = (m[1:, 1:] + m[1:, 1:].T) / 2
    return float(torch.linalg.eigvalsh(m).clamp(min=0).sqrt().sum())


CONGRUENCE_BLOCK = 512  # column block of the triangular congruence below (d = 2,048: 4 x 4 blocks)


def _lower_congruence(chol: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Lᵀ Σ L for a lower-triangular L, correct in its lower triangle (all that eigvalsh with UPLO="L" reads):
    blocks above the diagonal blocks are left zero.

    Two dense products cost 4d³ flops. Only M's lower blocks are needed, M_ij = L[i:, I]ᵀ W[i:, J] for j ≤ i
    (I, J the column blocks starting at i, j; L[:, I] is zero above row i), and they read W = Σ L only in rows
    ≥ j of column block J, where W[j:, J] = Σ[j:, j:] L[j:, J]: ~d³ flops in all. The same sums of products in
    another order: the result agrees with the dense form to float64 rounding."""
    d, b = chol.shape[0], CONGRUENCE_BLOCK
    starts = list(range(0, d, b))
    w = [sigma[j:, j:] @ chol[j:, j:j + b] for j in starts]  # W[j:, J]
    m = torch.zeros_like(sigma)
    for i in starts:
        left = chol[i:, i:i + b].T
        for jb, j in enumerate(starts[:i // b + 1]):
            m[i:i + b, j:j + b] = left @ w[jb][i - j:]
    return m


def _trace_sqrt_product(sigma_r: torch.Tensor, gen_centred: torch.Tensor | None, sigma_g: torch.Tensor | None,
                        n_g: int) -> float:
    """Σ sqrt(eig(Σ_r Σ_g)) in float64, from the generated vectors (Gram form) or from Σ_g."""
    if gen_centred is not None:
        return _centred_trace_sqrt(gen_centred @ sigma_r @ gen_centred.T / (n_g - 1))
    try:
        # Σ_r = L Lᵀ: Σ_r Σ_g has the eigenvalues of the symmetric Lᵀ Σ_g L (~60% of a replicate at d = 2,048
        # was this product as two dense d x d multiplications)
        m = _lower_congruence(torch.linalg.cholesky(sigma_r), sigma_g)
        eig = torch.linalg.eigvalsh(m, UPLO="L")
    except RuntimeError:  # singular Σ_r (dead feature units): the symmetric square root instead
        w, v = torch.linalg.eigh(sigma_r)
        root = (v * w.clamp(min=0).sqrt()) @ v.T
        m = root @ sigma_g @ root
        eig = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(eig.clamp(min=0).sqrt().sum())


class _Side:
    """One side's features, centred once, with the running sums that a leave-group-out needs.

    With `groups` (the jackknife's), each group's sum (and, when a replicate needs the d x d covariance, its
    scatter) is computed once, so a replicate that leaves groups out subtracts them instead of re-multiplying
    the left-out rows (56 replicates at G = 10 would otherwise redo ~11 scatter products each side)."""

    def __init__(self, feats: np.ndarray, groups: list[np.ndarray] | None = None):
        # A private float64 copy, centred in place (the same numbers as x - mean, without a second N x d
        # temporary: at N = 20,000 the two temporaries were most of an evaluation's growth in peak memory).
        x = torch.as_tensor(np.asarray(feats)).to(torch.float64, copy=True)
        self.n, self.d = x.shape
        self.shift = x.mean(0)
        self.x = x.sub_(self.shift)  # centring first keeps the scatter sums well conditioned
        self.sum = self.x.sum(0)
        self._sq_norms = self._scatter = self._projection = None
        self.grouped(groups)

    def grouped(self, groups: list[np.ndarray] | None) -> "_Side":
        """Use these jackknife groups from now on (one side serves the interval and FID_inf, bench/metrics/fid.py)."""
        self.groups = groups
        self.group_sum = [self.x[torch.as_tensor(idx)].sum(0) for idx in groups] if groups is not None else None
        self._group_scatter = None
        return self

    def __len__(self) -> int:
        return self.n

    @property
    def sq_norms(self) -> torch.Tensor:  # squared norms of the centred rows: only the cross-Gram form needs them
        if self._sq_norms is None:
            self._sq_norms = (self.x * self.x).sum(1)
        return self._sq_norms

    @property
    def scatter(self) -> torch.Tensor:  # d x d: only computed when a replicate needs a covariance
        if self._scatter is None:
            self._scatter = self.x.T @ self.x
        return self._scatter

    @property
    def group_scatter(self) -> list[torch.Tensor]:
        if self._group_scatter is None:
            self._group_scatter = [rows.T @ rows for rows in (self.x[torch.as_tensor(idx)] for idx in self.groups)]
        return self._group_scatter

    def kept_sum(self, idx: np.ndarray, units: tuple[int, ...] | None = None) -> tuple[torch.Tensor, int]:
        """(sum of the centred rows kept, how many) with rows `idx` (`units`: the same rows as groups) left out."""
        if units is not None and self.groups is not None:
            return self.sum - sum((self.group_sum[k] for k in units), torch.zeros_like(self.sum)), self.n - len(idx)
        return self.sum - self.x[torch.as_tensor(idx)].sum(0), self.n - len(idx)

    def without(self, idx: np.ndarray, units: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(mean, covariance, n) of the features with rows `idx` left out (`units`: the same rows as groups)."""
        s, n = self.kept_sum(idx, units)
        # one d x d result, updated in place (the same arithmetic as chained subtractions; each fresh 32 MiB
        # matrix at d = 2,048 cost as much in page zeroing as the subtraction itself)
        if units is not None and self.groups is not None:
            cov = self.scatter.clone()
            for k in units:
                cov.sub_(self.group_scatter[k])
        else:
            part = self.x[torch.as_tensor(idx)]
            cov = self.scatter - part.T @ part
        mean = s / n
        cov.sub_(torch.outer(s, mean)).div_(n - 1)
        return mean + self.shift, cov, n

    def projection(self, real: "_Side") -> "_Projection":
        """`real`'s scatter seen through these (generated) rows, per real group (`_Projection`); made once and
        reused by every replicate, the headline and FID_inf while `real` keeps the same groups."""
        cached = self._projection
        if cached is None or cached.real is not real or cached.groups is not real.groups:
            self._projection = cached = _Projection(real, self)
        return cached

    def keep(self, idx: np.ndarray) -> torch.Tensor:
        mask = np.ones(self.n, bool)
        mask[idx] = False
        return torch.as_tensor(mask)

    def rows_without(self, idx: np.ndarray) -> torch.Tensor:
        return self.x[self.keep(idx)]


def as_side(feats) -> _Side:
    """Features as a `_Side` (an existing one is used as it is: its float64 copy and sums are reused)."""
    return feats if isinstance(feats, _Side) else _Side(feats)


def _fid_cross_gram(real: _Side, fake: _Side, real_idx: np.ndarray, fake_idx: np.ndarray,
                    units: tuple[int, ...] | None, cross: torch.Tensor) -> float:
    """FID when neither side has more points than dimensions, without any d x d matrix.

    With centred rows Y (real, n_r' x d) and X (generated, n_g' x d), Σ_r Σ_g has the non-zero eigenvalues of
    (X Yᵀ)(Y Xᵀ) / ((n_r'-1)(n_g'-1)), an n_g' x n_g' matrix; X Yᵀ comes from the full cross-Gram matrix
    `cross` (computed once per jackknife) by dropping the left-out rows and re-centring: exact, and at d = 2,048
    with a few hundred images per side it replaces 56 d x d covariance updates by small n x n products."""
    s_r, n_r = real.kept_sum(real_idx, units)
    s_g, n_g = fake.kept_sum(fake_idx, units)
    mean_r, mean_g = s_r / n_r, s_g / n_g  # means of the kept centred rows
    keep_r, keep_g = real.keep(real_idx), fake.keep(fake_idx)
    xg, yr = fake.x[keep_g], real.x[keep_r]
    c = cross[keep_g][:, keep_r] - (xg @ mean_r)[:, None] - (yr @ mean_g)[None, :] + mean_g @ mean_r
    m = c @ c.T / ((n_r - 1) * (n_g - 1)) if n_g <= n_r else c.T @ c / ((n_r - 1) * (n_g - 1))
    tr_cov = _centred_trace_sqrt(m)
    tr_r = float(real.sq_norms[keep_r].sum() - n_r * (mean_r @ mean_r)) / (n_r - 1)
    tr_g = float(fake.sq_norms[keep_g].sum() - n_g * (mean_g @ mean_g)) / (n_g - 1)
    diff = (mean_r + real.shift) - (mean_g + fake.shift)
    return float(diff @ diff) + tr_r + tr_g - 2 * tr_cov


class _Projection:
    """FID's replicates when the generated side has no more points than dimensions but the real side has more
    (Inception's 2,048 dimensions, a few hundred generated images, 10,000 real ones).

    With X the centred generated rows (n_g x d) and S_r the real scatter, Σ_r Σ_g has the non-zero eigenvalues
    of X S_r Xᵀ / ((n_r-1)(n_g-1)), an n_g x n_g matrix. For each real group j, Q_j = (X Y_jᵀ)(X Y_jᵀ)ᵀ and
    p_j = X Y_jᵀ 1 (Y_j that group's centred rows) are computed once; leaving real groups out subtracts them,
    S_r's re-centring is the rank-one term p pᵀ / n_r', and leaving generated rows out selects rows and columns
    (their re-centring, H A H, is what `_centred_trace_sqrt` applies). Exact algebra: no d x d covariance,
    Cholesky factor or d x d product per replicate, where the covariance form spent ~4 GFLOP on each of the 56
    (and ~170 GFLOP on the real scatters)."""

    CHUNK_ELEMENTS = 1 << 22  # bound on one n_g x rows block of X Yᵀ (32 MiB in float64)

    def __init__(self, real: _Side, fake: _Side):
        self.real, self.groups = real, real.groups
        groups = real.groups if real.groups is not None else [np.arange(real.n)]
        step = max(1, self.CHUNK_ELEMENTS // max(fake.n, 1))
        self.q, self.p, self.sq = [], [], []
        for idx in groups:
            q = torch.zeros(fake.n, fake.n, dtype=torch.float64)
            p = torch.zeros(fake.n, dtype=torch.float64)
            for start in range(0, len(idx), step):
                rows = torch.as_tensor(idx[start:start + step])
                block = fake.x @ real.x[rows].T
                q.addmm_(block, block.T)
                p += block.sum(1)
            self.q.append(q), self.p.append(p), self.sq.append(float(real.sq_norms[torch.as_tensor(idx)].sum()))
        self.q_total = self.q[0].clone()
        for q in self.q[1:]:
            self.q_total += q
        self.p_total, self.sq_total = sum(self.p[1:], self.p[0].clone()), sum(self.sq)

    def fid(self, real: _Side, fake: _Side, real_idx: np.ndarray, fake_idx: np.ndarray,
            units: tuple[int, ...] | None) -> float:
        if units is not None and self.groups is not None:
            q, p, sq = self.q_total.clone(), self.p_total.clone(), self.sq_total
            for k in units:
                q -= self.q[k]
                p -= self.p[k]
                sq -= self.sq[k]
        elif len(real_idx) == 0:
            q, p, sq = self.q_total, self.p_total, self.sq_total
        else:
            raise ValueError("the projected FID form leaves real rows out only as whole groups")
        s_r, n_r = real.kept_sum(real_idx, units)
        s_g, n_g = fake.kept_sum(fake_idx, units)
        keep_g = fake.keep(fake_idx)
        p = p[keep_g]
        a = q[keep_g][:, keep_g] - torch.outer(p, p) / n_r  # X S_r' Xᵀ on the kept rows
        # re-centring the kept rows on their own mean (H A H) is part of `_centred_trace_sqrt`
        tr_cov = _centred_trace_sqrt(a / ((n_r - 1) * (n_g - 1)))
        mean_r, mean_g = s_r / n_r, s_g / n_g
        tr_r = (sq - n_r * float(mean_r @ mean_r)) / (n_r - 1)
        tr_g = float(fake.sq_norms[keep_g].sum() - n_g * (mean_g @ mean_g)) / (n_g - 1)
        diff = (mean_r + real.shift) - (mean_g + fake.shift)
        return float(diff @ diff) + tr_r + tr_g - 2 * tr_cov


def gram_form(real: _Side, fake: _Side) -> "torch.Tensor | _Projection | None":
    """The exact replicate formula that avoids d x d matrices for these sides, if one does: the cross-Gram
    matrix when neither side has more points than dimensions, the projection when only the generated side
    has not, None (the covariance form) otherwise."""
    if max(real.n, fake.n) <= real.d:
        return fake.x @ real.x.T
    if fake.n <= real.d:
        return fake.projection(real)
    return None


def fid_value(real: _Side, fake: _Side, real_idx: np.ndarray, fake_idx: np.ndarray,
              units: tuple[int, ...] | None = None, cross: "torch.Tensor | _Projection | None" = None) -> float:
    """FID of the features with the given rows left out. `cross` selects a form without d x d matrices
    (`gram_form`): the cross-Gram matrix fake.x @ real.x.T, or a `_Projection`."""
    if isinstance(cross, _Projection):
        return cross.fid(real, fake, real_idx, fake_idx, units)
    if cross is not None:
        return _fid_cross_gram(real, fake, real_idx, fake_idx, units, cross)
    mu_r, sig_r, _ = real.without(real_idx, units)
    mu_g, sig_g, n_g = fake.without(fake_idx, units)
    d = sig_r.shape[0]
    if n_g <= d:
        rows = fake.rows_without(fake_idx)
        rows = rows - rows.mean(0)
        tr_cov = _trace_sqrt_product(sig_r, rows, None, n_g)
        tr_g = float((rows * rows).sum()) / (n_g - 1)
    else:
        tr_cov = _trace_sqrt_product(sig_r, None, sig_g, n_g)
        tr_g = float(torch.trace(sig_g))
    diff = mu_r - mu_g
    return float(diff @ diff + torch.trace(sig_r)) + tr_g - 2 * tr_cov


def _union(groups: list[np.ndarray], units: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([groups[k] for k in units]) if units else np.array([], dtype=int)


def fid_groups(groups: int, n_real: int, n_gen: int) -> int:
    """How many groups FID's jackknife uses: `groups`, fewer when a side has under two points a group. Its t
    quantile has one degree of freedom less (`jackknife`)."""
    return min(groups, n_gen // 2, n_real // 2)


def fid_jackknife(real_feats, fake_feats, groups: int, seed: int) -> dict[str, float]:
    """Corrected jackknife (module doc) of FID over paired groups of real and generated features."""
    rng = np.random.default_rng(seed)
    n_r, n_g = len(real_feats), len(fake_feats)
    g = fid_groups(groups, n_r, n_g)
    rg, fg = _groups(n_r, g, rng), _groups(n_g, g, rng)
    real, fake = as_side(real_feats).grouped(rg), as_side(fake_feats).grouped(fg)
    # few points in many dimensions (Inception's 2,048 with a few hundred images): no d x d matrices
    cross = gram_form(real, fake)
    jk = jackknife(lambda units: fid_value(real, fake, _union(rg, units), _union(fg, units), units, cross), g)
    return {"se": float(np.sqrt(jk["var"])), "groups": g, "v1": jk["v1"], "v2": jk["v2"]}


def fid_interval(estimate: float, real_feats, fake_feats, groups: int, seed: int) -> tuple[float, float]:
    return interval_from(estimate, fid_jackknife(real_feats, fake_feats, groups, seed))


def interval_from(estimate: float, jk: dict[str, float], rule: str | None = None) -> tuple[float, float]:
    """FID's 95% interval from its jackknife (`fid_jackknife`) under `rule` (default FID_RULE, the method's):
    centred on the estimate, clipped at 0."""
    return interval_from_parts(estimate, jk["v1"], jk["v2"], jk["groups"], rule)


def interval_from_parts(estimate: float, v1: float, v2: float, g: int, rule: str | None = None) -> tuple[float, float]:
    """`interval_from` on the jackknife's variance parts (what a coverage log keeps of each draw)."""
    half, _ = FID_RULES[rule or FID_RULE].half_width(v1, v2, g)
    return max(estimate - half, 0.0), estimate + half


def mmd2_unbiased(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD² with KID's kernel (x·y/d + 1)³ for any two sample sizes; with equal sizes it is
    torch-fidelity's estimator (diagonals dropped within a side, kept across sides)."""
    x, y = as_float64(real), as_float64(fake)
    m, n = len(x), len(y)
    return mmd2_from_sums(float(kernel_sums(x, x, True).rows.sum()), float(kernel_sums(y, y, True).rows.sum()),
                          float(kernel_sums(x, y, False).rows.sum()), m, n)


def mmd2_from_sums(within_x: float, within_y: float, across: float, m: int, n: int) -> float:
    """The unbiased MMD² from the three kernel sums (within-side sums without their diagonals)."""
    return within_x / (m * (m - 1)) + within_y / (n * (n - 1)) - 2 * across / (m * n)


def _within(rows: torch.Tensor, squares: float) -> tuple[np.ndarray, float]:
    """For one side's symmetric kernel matrix without its diagonal, fit k_ii' = μ + r_i + r_i' by least squares
    (closed form): returns the row effects r (first-order part plus noise) and the residual mean square,
    an unbiased estimate of E h² for the degenerate part h."""
    m = len(rows)
    s = rows.numpy()
    pairs = m * (m - 1) / 2
    mu = s.sum() / (m * (m - 1))
    r = (s - (m - 1) * mu) / (m - 2)
    ss = squares / 2 - pairs * mu ** 2 - (m - 2) * float(r @ r)
    return r, max(ss, 0.0) / (pairs - m)


def kid_u_variance_parts(real: np.ndarray, fake: np.ndarray, m_full: int, n_full: int,
                         real_sums: KernelSums | None = None) -> tuple[float, float]:
    """Variance of the unbiased MMD² U on m_full real and n_full generated points, estimated from the points
    given (a random subsample when the data are larger) through U's Hoeffding decomposition:

        Var U = 4 Var f / M + 4 Var g / N + 2 E h_xx² / (M(M-1)) + 2 E h_yy² / (N(N-1)) + 4 E h_xy² / (MN)

    f, g are the first-order parts of a real and a generated point, h_xx, h_yy, h_xy the degenerate
    (pairwise) parts of the three kernel blocks. Each E h² is the residual mean square of a two-way
    analysis of variance of its kernel matrix (m(m-1)/2 - m or (m-1)(n-1) degrees of freedom); Var f, Var g
    are the variance of each point's estimated first-order term minus the noise that the finite row
    averages add to it. Every part is estimated from all pairs of points, so the estimate is precise and
    unbiased also when everything is second-order (a generator equal to the data). `real_sums`: the real-real
    kernel sums of these real points, when a cache has them."""
    x, y = as_float64(real), as_float64(fake)
    return variance_parts_from_sums(real_sums or kernel_sums(x, x, True), kernel_sums(y, y, True),
                                    kernel_sums(x, y, False), m_full, n_full)


def variance_parts_from_sums(xx: KernelSums, yy: KernelSums, xy: KernelSums, m_full: int,
                             n_full: int) -> tuple[float, float]:
    """`kid_u_variance_parts` from the kernel sums of one pass (shared with KID's subsets, bench/metrics/kid.py)."""
    m, n = len(xx.rows), len(yy.rows)
    sx, qx, sy, qy, rxy, cxy, qxy = xx.rows, xx.squares, yy.rows, yy.squares, xy.rows, xy.cols, xy.squares
    r_x, hxx = _within(sx, qx)
    r_y, hyy = _within(sy, qy)
    grand = float(rxy.sum()) / (m * n)
    row, col = rxy.numpy() / n - grand, cxy.numpy() / m - grand
    ss = qxy - m * n * grand ** 2 - n * float(row @ row) - m * float(col @ col)
    hxy = max(ss, 0.0) / ((m - 1) * (n - 1))
    var_f = float(np.var(r_x - row, ddof=1)) - (m - 1) * hxx / (m - 2) ** 2 - hxy / n
    var_g = float(np.var(r_y - col, ddof=1)) - (n - 1) * hyy / (n - 2) ** 2 - hxy / m
    M, N = m_full, n_full
    return 4 * var_f / M + 4 * var_g / N, 2 * hxx / (M * (M - 1)) + 2 * hyy / (N * (N - 1)) + 4 * hxy / (M * N)


def kid_u_variance(real: np.ndarray, fake: np.ndarray, m_full: int, n_full: int,
                   real_sums: KernelSums | None = None) -> float:
    """Var U = first-order part + second-order part (`kid_u_variance_parts`, each unbiased). The first-order
    estimate is clamped at 0, so the variance is never below its second-order part; where the truth has no
    first-order part (a generator equal to the data) that clamp makes it conservative by 20-35% in variance
    at a few hundred points (measured by tests/test_interval_coverage.py), less with more points."""
    return _clamped(*kid_u_variance_parts(real, fake, m_full, n_full, real_sums))


def _clamped(first: float, second: float) -> float:
    """Var U from its parts, the noisy first-order estimate clamped at 0 (`kid_u_variance`)."""
    return max(0.0, first) + second


def variance_uses_all_points(n_r: int, n_g: int, max_points: int | None = None) -> bool:
    """Whether KID's variance is estimated on every point (then its kernel sums can come from the subsets' pass)."""
    cap = max_points or KID_VARIANCE_MAX
    return n_r <= cap and n_g <= cap


def kid_interval(estimate: float, subset_values: np.ndarray, real: np.ndarray, fake: np.ndarray, seed: int,
                 max_points: int | None = None,
                 sums: tuple[KernelSums, KernelSums, KernelSums] | None = None,
                 real_sums: Callable[[np.ndarray], KernelSums] | None = None) -> tuple[float, float, float]:
    """(low, high, se) for the mean of `subset_values` as an estimate of the population MMD² (module doc).
    `sums`: the (real-real, fake-fake, real-fake) kernel sums over all points, when a pass already made them.
    `real_sums(rows)`: the real-real sums of those real rows (ascending), when a cache has them."""
    n_r, n_g = len(real), len(fake)
    if sums is not None and variance_uses_all_points(n_r, n_g, max_points):
        var_u = _clamped(*variance_parts_from_sums(*sums, n_r, n_g))
    else:
        rng = np.random.default_rng(seed)
        cap = max_points or KID_VARIANCE_MAX
        rows_r = np.sort(rng.permutation(n_r)[:cap]) if n_r > cap else np.arange(n_r)
        sub_g = np.asarray(fake)[np.sort(rng.permutation(n_g)[:cap])] if n_g > cap else fake
        sub_r = np.asarray(real)[rows_r] if n_r > cap else real
        var_u = kid_u_variance(sub_r, sub_g, n_r, n_g, real_sums(rows_r) if real_sums else None)
    var_s = float(np.var(subset_values, ddof=1)) / len(subset_values) if len(subset_values) > 1 else 0.0
    se = float(np.sqrt(var_u + var_s))
    # Satterthwaite: U's part rests on all pairs of points (effectively infinite degrees of freedom), the
    # subset part on S - 1.
    df = (var_u + var_s) ** 2 / (var_s ** 2 / (len(subset_values) - 1)) if var_s > 0 else np.inf
    half = (float(_normal_quantile(0.975)) if not df < 10_000 else t_quantile(max(1, int(df)))) * se
    return estimate - half, estimate + half, se

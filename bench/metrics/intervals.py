"""95% intervals for FID and KID whose coverage is checked by simulation (`bench perf coverage`).

What each interval covers:
- FID is biased upward at finite sample sizes (Chong & Forsyth 2020): no interval around a plug-in FID
  can cover the population distance at N = 500 in 2,048 dimensions, where the bias is many standard
  errors. The FID interval therefore covers FID *at this protocol's sample sizes* — the expected value
  of the estimate over fresh draws of both the generated and the real images. Rows of one fingerprint
  share those sizes, so that is the quantity they compare; `fid_inf` estimates the N -> infinity limit.
- KID is unbiased, so its interval covers the population MMD² itself.

Method (both metrics): a delete-a-group jackknife with its second-order bias removed.
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
- KID's headline is the mean of S subset estimates of size s. E[subset value | data] is the unbiased
  MMD² on all the data (U), so Var(headline) = Var(U) + Var(subset value | data)/S: the jackknife
  above is run on U, computed exactly from per-group kernel sums (each deletion is a re-sum of a
  G x G table), and the subset term is the subsets' own spread / S. Above `KID_JACKKNIFE_MAX` points a
  side, U's jackknife runs on a proportional random subsample and its first- and second-order parts
  are scaled to the full sizes (by 1/N and 1/N²). The subsets' spread alone (an earlier interval)
  measured only which subsets were drawn, and was ~1e-7 wide when a subset was the whole set.

Replicate FIDs use exact linear algebra on the statistics (no resampling with replacement): with n_g < d
generated vectors, the non-zero eigenvalues of Σ_r Σ_g are those of the n_g x n_g matrix X Σ_r Xᵀ/(n-1)
(X the centred generated features), otherwise those of Lᵀ Σ_g L with Σ_r = L Lᵀ (Cholesky; an eigen
square root if Σ_r is singular). A FID interval costs 1 + G + G(G-1)/2 such evaluations (56 at G = 10).
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable

import numpy as np
import torch
from scipy import stats as _scipy_stats

# Part of every protocol fingerprint (bench/protocol/load.py): an interval is a result, so a change of
# method must not share a fingerprint with runs made by the old one.
METHOD = "jackknife-2nd-order-corrected/1"

KID_JACKKNIFE_MAX = 4000


def t_quantile(df: int, level: float = 0.95) -> float:
    return float(_scipy_stats.t.ppf(0.5 + level / 2, df))


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
    inflation = 2 * (g - 1) / (g - 2) if g > 2 else 1.0
    v2 = v2_raw = 0.0
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
        v2 = min(v2_raw, v_j / inflation)
    v1 = v_j - inflation * v2
    return {"var": v1 + v2, "v1": v1, "v2": v2, "v2_raw": v2_raw, "df": g - 1}


def _trace_sqrt_product(sigma_r: torch.Tensor, gen_centred: torch.Tensor | None, sigma_g: torch.Tensor | None,
                        n_g: int) -> float:
    """Σ sqrt(eig(Σ_r Σ_g)) in float64, from the generated vectors (Gram form) or from Σ_g."""
    if gen_centred is not None:
        m = gen_centred @ sigma_r @ gen_centred.T / (n_g - 1)
    else:
        try:
            chol = torch.linalg.cholesky(sigma_r)
            m = chol.T @ sigma_g @ chol
        except RuntimeError:  # singular Σ_r (dead feature units): the symmetric square root instead
            w, v = torch.linalg.eigh(sigma_r)
            root = (v * w.clamp(min=0).sqrt()) @ v.T
            m = root @ sigma_g @ root
    eig = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(eig.clamp(min=0).sqrt().sum())


class _Side:
    """One side's features, centred once, with the running sums that a leave-group-out needs."""

    def __init__(self, feats: np.ndarray):
        x = torch.as_tensor(np.asarray(feats), dtype=torch.float64)
        self.n = len(x)
        self.shift = x.mean(0)
        self.x = x - self.shift  # centring first keeps the scatter sums well conditioned
        self.sum = self.x.sum(0)
        self.scatter = self.x.T @ self.x

    def without(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(mean, covariance, n) of the features with rows `idx` left out."""
        part = self.x[torch.as_tensor(idx)]
        n = self.n - len(part)
        s = self.sum - part.sum(0)
        mean = s / n
        cov = (self.scatter - part.T @ part - torch.outer(s, mean)) / (n - 1)
        return mean + self.shift, cov, n

    def rows_without(self, idx: np.ndarray) -> torch.Tensor:
        keep = np.ones(self.n, bool)
        keep[idx] = False
        return self.x[torch.as_tensor(keep)]


def fid_value(real: _Side, fake: _Side, real_idx: np.ndarray, fake_idx: np.ndarray) -> float:
    mu_r, sig_r, _ = real.without(real_idx)
    mu_g, sig_g, n_g = fake.without(fake_idx)
    d = sig_r.shape[0]
    if n_g <= d:
        rows = fake.rows_without(fake_idx)
        rows = rows - rows.mean(0)
        tr_cov = _trace_sqrt_product(sig_r, rows, None, n_g)
    else:
        tr_cov = _trace_sqrt_product(sig_r, None, sig_g, n_g)
    diff = mu_r - mu_g
    return float(diff @ diff + torch.trace(sig_r) + torch.trace(sig_g) - 2 * tr_cov)


def _union(groups: list[np.ndarray], units: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([groups[k] for k in units]) if units else np.array([], dtype=int)


def fid_jackknife(real_feats, fake_feats, groups: int, seed: int) -> dict[str, float]:
    """Corrected jackknife (module doc) of FID over paired groups of real and generated features."""
    rng = np.random.default_rng(seed)
    real, fake = _Side(real_feats), _Side(fake_feats)
    g = min(groups, fake.n // 2, real.n // 2)
    rg, fg = _groups(real.n, g, rng), _groups(fake.n, g, rng)
    jk = jackknife(lambda units: fid_value(real, fake, _union(rg, units), _union(fg, units)), g)
    return {"se": float(np.sqrt(jk["var"])), "df": jk["df"], "v1": jk["v1"], "v2": jk["v2"]}


def fid_interval(estimate: float, real_feats, fake_feats, groups: int, seed: int) -> tuple[float, float]:
    jk = fid_jackknife(real_feats, fake_feats, groups, seed)
    half = t_quantile(jk["df"]) * jk["se"]
    return max(estimate - half, 0.0), estimate + half


def _cubic_kernel_sum(a: torch.Tensor, b: torch.Tensor, same: bool) -> float:
    k = (a @ b.T / a.shape[1] + 1) ** 3
    total = float(k.sum())
    return total - float(k.diagonal().sum()) if same else total


def mmd2_unbiased(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD² with KID's kernel (x·y/d + 1)³ for any two sample sizes; with equal sizes it is
    torch-fidelity's estimator (diagonals dropped within a side, kept across sides)."""
    x = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    m, n = len(x), len(y)
    within_x = _cubic_kernel_sum(x, x, True) / (m * (m - 1))
    within_y = _cubic_kernel_sum(y, y, True) / (n * (n - 1))
    return within_x + within_y - 2 * _cubic_kernel_sum(x, y, False) / (m * n)


class _KernelTable:
    """Per-group kernel sums of the real (x) and generated (y) features: the unbiased MMD² of any union of
    groups is a re-sum of these G x G tables, so a jackknife costs one pass over all pairs of points."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, gx: list[np.ndarray], gy: list[np.ndarray]):
        g = len(gx)
        xs = [x[torch.as_tensor(i)] for i in gx]
        ys = [y[torch.as_tensor(i)] for i in gy]
        self.nx = np.array([len(i) for i in gx], float)
        self.ny = np.array([len(i) for i in gy], float)
        self.xx, self.yy, self.xy = (np.zeros((g, g)) for _ in range(3))
        for a in range(g):
            for b in range(a, g):
                self.xx[a, b] = self.xx[b, a] = _cubic_kernel_sum(xs[a], xs[b], a == b)
                self.yy[a, b] = self.yy[b, a] = _cubic_kernel_sum(ys[a], ys[b], a == b)
            for b in range(g):
                self.xy[a, b] = _cubic_kernel_sum(xs[a], ys[b], False)

    def value(self, deleted: tuple[int, ...]) -> float:
        keep = np.ones(len(self.nx), bool)
        keep[list(deleted)] = False
        m, n = self.nx[keep].sum(), self.ny[keep].sum()
        sub = np.ix_(keep, keep)
        return float(self.xx[sub].sum() / (m * (m - 1)) + self.yy[sub].sum() / (n * (n - 1))
                     - 2 * self.xy[sub].sum() / (m * n))


def kid_interval(estimate: float, subset_values: np.ndarray, real: np.ndarray, fake: np.ndarray, groups: int,
                 seed: int) -> tuple[float, float, float]:
    """(low, high, se) for the mean of `subset_values` as an estimate of the population MMD² (module doc)."""
    rng = np.random.default_rng(seed)
    n_r, n_g = len(real), len(fake)
    # A proportional subsample above KID_JACKKNIFE_MAX points a side; scale = its fraction of the data.
    scale = min(1.0, KID_JACKKNIFE_MAX / max(n_r, n_g))
    m_r, m_g = max(2, round(n_r * scale)), max(2, round(n_g * scale))
    x = torch.as_tensor(np.asarray(real)[rng.permutation(n_r)[:m_r]], dtype=torch.float64)
    y = torch.as_tensor(np.asarray(fake)[rng.permutation(n_g)[:m_g]], dtype=torch.float64)
    g = max(2, min(groups, m_r // 2, m_g // 2))
    table = _KernelTable(x, y, _groups(m_r, g, rng), _groups(m_g, g, rng))
    jk = jackknife(table.value, g)
    # first-order variance falls as 1/N, the second-order part as 1/N²
    var = jk["v1"] * (m_r / n_r) + jk["v2"] * (m_r / n_r) ** 2
    if len(subset_values) > 1:
        var += float(np.var(subset_values, ddof=1)) / len(subset_values)
    se = float(np.sqrt(var))
    half = t_quantile(jk["df"]) * se
    return estimate - half, estimate + half, se

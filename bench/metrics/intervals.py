"""95% intervals for FID and KID whose coverage is checked by simulation (`bench perf coverage`).

What each interval covers:
- FID is biased upward at finite sample sizes (Chong & Forsyth 2020): no interval around a plug-in FID
  can cover the population distance at N = 500 in 2,048 dimensions, where the bias is many standard
  errors. The FID interval therefore covers FID *at this protocol's sample sizes* — the expected value
  of the estimate over fresh draws of both the generated and the real images. Rows of one fingerprint
  share those sizes, so that is the quantity they compare; `fid_inf` estimates the N -> infinity limit.
- KID is unbiased, so its interval covers the population MMD² itself.

Methods:
- FID: delete-a-group jackknife. Both sides are split at random into G groups; replicate k leaves group
  k out of the generated AND the real features (the two sides are independent, so one paired deletion
  measures both sides' variance). Variance = (G-1)/G Σ (θ_k - mean θ)², interval = estimate ± t(G-1) SE,
  clipped at 0. The estimate is the centre, so it always lies inside its own interval. The old percentile
  bootstrap resampled with replacement: duplicates lower the covariance rank and inflate every
  replicate, so its interval sat above the estimate.
- KID: the headline is the mean of S subset estimates. Its variance is that of the full-sample
  unbiased MMD² plus the subset-drawing noise, var(subset values)/S. The first part is measured on B
  disjoint blocks (block b = real block b vs generated block b), each an independent unbiased estimate:
  var(block values)/B. Interval = estimate ± t(B-1) SE. The subsets' own spread alone (the old interval)
  measured only which subsets were drawn, and was ~1e-7 wide when a subset was the whole set.

Replicate FIDs use exact linear algebra on the statistics (no resampling with replacement): with n_g < d
generated vectors, the non-zero eigenvalues of Σ_r Σ_g are those of the n_g x n_g matrix X Σ_r Xᵀ/(n-1)
(X the centred generated features), otherwise those of Lᵀ Σ_g L with Σ_r = L Lᵀ (Cholesky; an eigen
square root if Σ_r is singular).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats as _scipy_stats


def t_quantile(df: int, level: float = 0.95) -> float:
    return float(_scipy_stats.t.ppf(0.5 + level / 2, df))


def _groups(n: int, g: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n), g)


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


def fid_jackknife(real_feats, fake_feats, groups: int, seed: int) -> dict[str, float]:
    """Jackknife standard error of FID over paired leave-one-group-out replicates (see module doc)."""
    rng = np.random.default_rng(seed)
    real, fake = _Side(real_feats), _Side(fake_feats)
    g = min(groups, fake.n // 2, real.n // 2)
    rg, fg = _groups(real.n, g, rng), _groups(fake.n, g, rng)
    reps = np.array([fid_value(real, fake, rg[k], fg[k]) for k in range(g)])
    var = (g - 1) / g * ((reps - reps.mean()) ** 2).sum()
    return {"se": float(np.sqrt(var)), "df": g - 1}


def fid_interval(estimate: float, real_feats, fake_feats, groups: int, seed: int) -> tuple[float, float]:
    jk = fid_jackknife(real_feats, fake_feats, groups, seed)
    half = t_quantile(jk["df"]) * jk["se"]
    return max(estimate - half, 0.0), estimate + half


def mmd2_unbiased(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD² with KID's kernel (x·y/d + 1)³ for any two sample sizes; with equal sizes it is
    torch-fidelity's estimator (diagonals dropped within a side, kept across sides)."""
    x = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    d = x.shape[1]
    m, n = len(x), len(y)
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kid_interval(estimate: float, subset_values: np.ndarray, real: np.ndarray, fake: np.ndarray, blocks: int,
                 seed: int) -> tuple[float, float, float]:
    """(low, high, se) for the mean of `subset_values` as an estimate of the population MMD²."""
    rng = np.random.default_rng(seed)
    b = max(2, min(blocks, len(real) // 2, len(fake) // 2))
    rb, fb = _groups(len(real), b, rng), _groups(len(fake), b, rng)
    block_values = np.array([mmd2_unbiased(real[rb[k]], fake[fb[k]]) for k in range(b)])
    var = block_values.var(ddof=1) / b
    if len(subset_values) > 1:
        var += subset_values.var(ddof=1) / len(subset_values)
    se = float(np.sqrt(var))
    half = t_quantile(b - 1) * se
    return estimate - half, estimate + half, se

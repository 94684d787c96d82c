"""Is the difference between two neighbouring leaderboard rows more than seed noise?

The unit of the test is what was drawn independently for each entry:

- **One training seed per entry**: the evaluation seeds. Both entries were scored with the same
  evaluation seeds (the same latent draws), so value i of one and value i of the other form a pair: a
  paired sign-flip permutation test. Under "no difference" each pair's difference is as likely to have
  either sign; the p-value is the share of the 2^n sign patterns whose |mean difference| is at least the
  observed one (two-sided). With n pairs the smallest attainable p is 2 / 2^n: two seeds can never show
  a significant difference, six can (p = 0.031).
- **Several training seeds**: the training seeds, with the evaluation seeds nested in them (averaged
  within each training run first). Evaluation seeds of one trained model are not independent evidence
  about the entry: pooling them as units would call two entries different on the strength of a single
  lucky training run. Training seed t of one entry shares no random stream with training seed t of
  another (each entry's seed is derived from its name), so the runs are not pairs: an unpaired
  two-sample test on the per-run means. With two or more runs a side the verdict uses Welch's t-test
  (`welch_p`); the exact permutation p (the share of the C(a+b, a) ways to split the a+b means into
  groups of a and b whose |difference of group means| is at least the observed one) is printed beside it
  and decides alone when a side has one run. The permutation p is assumption-free but coarse: with n runs
  each its smallest value is 2 / C(2n, n), so 3 vs 3 gives 0.1 (never significant) and 4 vs 4 gives 0.029.

Exact up to EXACT_MAX patterns or splits, else DRAWS random ones from a generator seeded with SEED, so a
leaderboard is reproducible.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

ALPHA = 0.05
EXACT_MAX_PAIRS = 16
EXACT_MAX_SPLITS = 2 ** EXACT_MAX_PAIRS
DRAWS = 20_000
SEED = 0
METHOD = ("paired sign-flip permutation test on the per-evaluation-seed values when both rows have one training "
          "seed (it measures evaluation noise only; seeds with identical outputs are not tested), else Welch's "
          "t-test on the per-training-seed means (evaluation seeds averaged within each training run), with the "
          "exact permutation p beside it; two-sided, exact up to "
          f"{EXACT_MAX_SPLITS:,} patterns (else {DRAWS:,}, seed {SEED}); * = p < {ALPHA}")


def format_p(p: float) -> str:
    """p with two significant digits, or more when two would round it across ALPHA: 0.0496 printed as 0.05
    beside a "significant" star (p < 0.05) would contradict itself, so it reads 0.0496."""
    for digits in range(2, 7):
        text = f"{p:.{digits}g}"
        if (float(text) < ALPHA) == (p < ALPHA):
            return text
    return repr(p)


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); NaN for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1)) if v.size > 1 else math.nan


def min_attainable_p(n_pairs: int) -> float:
    """Smallest p the paired sign-flip test can give with n pairs."""
    return 1.0 if n_pairs < 1 else min(1.0, 2.0 / 2 ** n_pairs)


def min_attainable_p_unpaired(n_a: int, n_b: int) -> float:
    """Smallest p the unpaired permutation test can give with n_a vs n_b values (the observed split, and
    with equal sizes its mirror image, are the only splits as extreme)."""
    if n_a < 1 or n_b < 1:
        return 1.0
    return min(1.0, (2.0 if n_a == n_b else 1.0) / math.comb(n_a + n_b, n_a))


def paired_permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value for mean(a - b) != 0 over paired values."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.shape != (len(a),) or len(a) != len(b):
        raise ValueError("paired values must have the same length")
    n = len(d)
    if n == 0:
        return 1.0
    observed = abs(d.mean())
    # Sign patterns equal to the observed mean up to rounding count as "at least as extreme".
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if n <= EXACT_MAX_PAIRS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = np.abs(signs @ d) / n
        return float(np.mean(means >= observed - tol))
    rng = np.random.default_rng(SEED)
    signs = rng.choice((1.0, -1.0), size=(DRAWS, n))
    means = np.abs(signs @ d) / n
    return float((1 + np.sum(means >= observed - tol)) / (1 + DRAWS))


def unpaired_permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value for mean(a) != mean(b) over two independent samples (a two-sample permutation test)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError("unpaired values must be two flat sequences")
    na, nb = len(a), len(b)
    if na == 0 or nb == 0:
        return 1.0
    pooled = np.concatenate([a, b])
    n = na + nb
    observed = abs(a.mean() - b.mean())
    tol = 1e-12 * max(1.0, float(np.abs(pooled).max()))
    total = pooled.sum()
    if math.comb(n, na) <= EXACT_MAX_SPLITS:
        members = np.zeros((math.comb(n, na), n), dtype=bool)
        for row, idx in enumerate(itertools.combinations(range(n), na)):
            members[row, list(idx)] = True
        sum_a = members @ pooled
        diffs = np.abs(sum_a / na - (total - sum_a) / nb)
        return float(np.mean(diffs >= observed - tol))
    rng = np.random.default_rng(SEED)
    perms = np.argsort(rng.random((DRAWS, n)), axis=1)[:, :na]
    sum_a = pooled[perms].sum(axis=1)
    diffs = np.abs(sum_a / na - (total - sum_a) / nb)
    return float((1 + np.sum(diffs >= observed - tol)) / (1 + DRAWS))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value for mean(a) != mean(b) (unequal variances). With 3 training runs a
    side the exact permutation test cannot go below 0.1; Welch's test can, at the price of assuming that
    run means are roughly normal (each is an average over evaluation seeds). NaN when neither side varies
    (no spread to test against) or a side has fewer than 2 values."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979) of a family of tests; NaN entries (not tested) stay NaN
    and do not count towards the family size. Adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j))
    for the ascending order p_(1) <= ... <= p_(m), so comparing each adjusted p with ALPHA controls the
    family-wise error rate at ALPHA."""
    tested = sorted((p, i) for i, p in enumerate(ps) if not math.isnan(p))
    out = [math.nan] * len(ps)
    m, running = len(tested), 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out

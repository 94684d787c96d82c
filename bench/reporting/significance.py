"""Is the difference between two neighbouring leaderboard rows more than seed noise?

A paired sign-flip permutation test on the per-seed differences: the two entries were scored with the
same evaluation seeds (and, when a protocol has several, the same training seeds), so value i of one
and value i of the other form a pair. Under "no difference" each pair's difference is as likely to
have either sign; the p-value is the share of the 2^n sign patterns whose |mean difference| is at
least the observed one (two-sided). Exact for n <= 16 pairs, else 20,000 patterns drawn from a
generator seeded with 0, so a leaderboard is reproducible. With n pairs the smallest attainable p is
2 / 2^n: two seeds can never show a significant difference, six can (p = 0.031).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

ALPHA = 0.05
EXACT_MAX_PAIRS = 16
DRAWS = 20_000
SEED = 0
METHOD = (f"paired sign-flip permutation test on per-seed values, two-sided, exact up to {EXACT_MAX_PAIRS} "
          f"pairs (else {DRAWS:,} patterns, seed {SEED}); * = p < {ALPHA}")


def min_attainable_p(n_pairs: int) -> float:
    return 1.0 if n_pairs < 1 else min(1.0, 2.0 / 2 ** n_pairs)


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

"""How many degrees of freedom FID's corrected jackknife variance really has, and the floor of the candidate rule
`shares_df` (bench/metrics/intervals.py), chosen here on d = 128 draws before the d = 2,048 grid validates it
(docs/metrics.md, "Intervals and their coverage").

The populations are bench/coverage.py's `far`, `near` and `same` plus two between near and same (`mid`: shift 0.2,
scale 1.2; `tiny`: 0.03, 1.03), so the second-order share of the variance spans 0 to 1. The draws come from a
generator stream of their own (the cell's seed list ends in 777), never the coverage grid's, so the grid that
validates the rule is not the data it was chosen on. Each draw keeps only what any rule needs: the estimate, the
delete-one jackknife variance v_J and the unbiased delete-two estimate of V2 (before the cap).

    python reports/investigations/fid_df_calibration.py make OUT.jsonl POP N DRAWS   # append draws (one thread)
    python reports/investigations/fid_df_calibration.py table FILE.jsonl             # the rules' coverage

`table` prints, per cell and rule, the coverage expected from the cell's own spread (mean of 2Φ(h/sd) - 1: far less
noisy than counting) and the counted coverage against the mean of the draws, then each rule's range over the cells.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch
from scipy.special import ndtr, stdtrit

from bench.coverage import Population
from bench.metrics import intervals as iv

G = 10
POPULATIONS = {"far": (0.5, 1.5), "mid": (0.2, 1.2), "near": (0.1, 1.1), "tiny": (0.03, 1.03), "same": (0.0, 1.0)}
D, N_REAL = 128, 10_000


def make(out: str, pop: str, n: int, draws: int) -> None:
    torch.set_num_threads(1)
    shift, scale = POPULATIONS[pop]
    population = Population(D, shift, scale)
    rng = np.random.default_rng([1, D, n, int(shift * 1000), int(scale * 1000), 777])
    for draw in range(draws):
        real, fake = population.draw(n, N_REAL, rng)
        seed = int(rng.integers(2 ** 31))
        groups = np.random.default_rng(seed)
        rg, fg = iv._groups(N_REAL, G, groups), iv._groups(n, G, groups)
        rs, fs = iv._Side(real).grouped(rg), iv._Side(fake).grouped(fg)
        cross = iv.gram_form(rs, fs)
        value = lambda units: iv.fid_value(rs, fs, iv._union(rg, units), iv._union(fg, units), units, cross)  # noqa: E731
        jk = iv.jackknife(value, G)
        est = iv.fid_value(rs, fs, np.array([], int), np.array([], int), None, cross)
        v_j = jk["v1"] + iv._inflation(G) * jk["v2"]  # the delete-one variance, undone from the parts
        with open(out, "a") as f:
            f.write(json.dumps({"pop": pop, "n": n, "draw": draw, "est": est, "v_j": v_j, "v2_raw": jk["v2_raw"]}) + "\n")


def rule(v_j: np.ndarray, v2_raw: np.ndarray, floor: float | None):
    """The corrected variance (capped as `jackknife` caps it) and each draw's df: G - 1 (floor None, the method now)
    or `shares_df` with that floor."""
    v1, v2 = np.array([iv.corrected_parts(a, b, G) for a, b in zip(v_j, v2_raw)]).T
    if floor is None:
        return v1 + v2, np.full(len(v1), G - 1.0)
    return v1 + v2, np.array([iv.shares_df(a, b, G, floor) for a, b in zip(v1, v2)])


def table(path: str) -> None:
    rules = {"t on 9 (METHOD now)": None, "shares, floor 3": 3.0, "shares, floor 4": 4.0, "shares, floor 5": 5.0,
             "shares, floor 6": 6.0}
    cells: dict[tuple, list] = {}
    for line in open(path):
        r = json.loads(line)
        cells.setdefault((r["pop"], r["n"]), []).append(r)
    summary = {name: [] for name in rules}
    order = list(POPULATIONS)
    for (pop, n), rows in sorted(cells.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        est = np.array([r["est"] for r in rows])
        v_j, v2_raw = np.array([r["v_j"] for r in rows]), np.array([r["v2_raw"] for r in rows])
        sd = est.std(ddof=1)
        var0, _ = rule(v_j, v2_raw, None)
        line = (f"{pop:<5} N={n:<6} draws {len(est):<4} var/sd² {var0.mean() / sd ** 2:5.2f}  se² varies like "
                f"{2 * var0.mean() ** 2 / var0.var(ddof=1):4.1f} df |")
        for name, floor in rules.items():
            var, df = rule(v_j, v2_raw, floor)
            half = stdtrit(df, 0.975) * np.sqrt(var)
            expected = float((2 * ndtr(half / sd) - 1).mean())
            counted = float((np.abs(est - est.mean()) <= half).mean())
            summary[name].append((expected, counted, len(est)))
            line += f" {expected:.3f}/{counted:.3f}"
        print(line)
    print("\nrule                   expected coverage: min   max   mean | counted, all draws pooled")
    for name, rows in summary.items():
        a = np.array(rows)
        print(f"{name:<22} {a[:, 0].min():.3f} {a[:, 0].max():.3f} {a[:, 0].mean():.3f} | "
              f"{(a[:, 1] * a[:, 2]).sum() / a[:, 2].sum():.4f}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        table(sys.argv[2])

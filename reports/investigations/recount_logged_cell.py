"""Count the candidate FID rule (bench/metrics/intervals.py `shares_df`) exactly on a coverage log written before the
logs kept each draw's variance parts (reports/coverage/*.jsonl before 2026-12-05), making again only the draws whose
verdict the rule could change.

Why that is exact: a candidate interval is the current one widened (its df is never above G - 1 = 9), centred on the
same estimate, so every draw the current interval covers stays covered. Its df is never below the floor (5), so a
draw the current interval misses by more than t(5)/t(9) = 1.137 of its half-width stays missed. Only the misses
between those two need their own df, which needs the jackknife's parts: those draws are made again from the
generator state the log holds for the draw before (the cell's seeded stream, `bench/coverage.py` `_next_draw`), and
each remade estimate and interval must equal the logged one.

    python reports/investigations/recount_logged_cell.py reports/coverage/near-2048-5000.jsonl [--draws 200] [--out F]
        [--remade reports/coverage/near-2048-5000-remade.jsonl]

Prints the current and the candidate count over the first `--draws` draws (all by default) against the target the
coverage command uses there (the mean of those draws' estimates); `--out` appends the remade draws (with their parts);
`--remade` reads such a file instead of making its draws again (the committed ones: the counts in seconds).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.coverage import POPULATIONS, Population, _cell_rng, _fid_point, _next_draw
from bench.metrics.intervals import SHARES_DF_FLOOR, _Side, fid_jackknife, interval_from, shares_half_width, t_quantile


def recount(log: str, draws: int | None = None, out: str | None = None, part: str = "1/1",
            remade: str | None = None, allow_remake: bool = True) -> dict:
    """The current and the candidate counts over the log's first `draws` draws (module doc). `remade`: draws made
    again earlier (an `out` file), whose parts are read instead of making them once more."""
    recs = sorted((json.loads(line) for line in open(log)), key=lambda r: r["draw"])
    recs = recs[:draws] if draws else recs
    assert [r["draw"] for r in recs] == list(range(len(recs))), "the log must hold draws 0 .. K-1"
    assert len({r["cell"] for r in recs}) == 1, "the log must hold one cell under one interval method"
    cell = json.loads(recs[0]["cell"])
    g = cell["groups"]
    logged_rule = cell["method"].split(";")[0].removeprefix("fid:")  # the FID rule the log's intervals were made by
    est = np.array([r["fid"][0] for r in recs])
    hi = np.array([r["fid"][2] for r in recs])
    lo = np.array([r["fid"][1] for r in recs])
    truth = float(est.mean())
    current = (lo <= truth) & (truth <= hi)
    t9 = t_quantile(g - 1)
    ratio = np.abs(est - truth) / (hi - est)  # miss distance in upper half-widths (lower ones may be clipped at 0)
    widest = t_quantile(SHARES_DF_FLOOR) / t9
    todo = [i for i in range(len(recs)) if not current[i] and ratio[i] <= widest]
    k, m = map(int, part.split("/"))
    todo = todo[k - 1::m]
    print(f"{log}: {len(recs)} draws, target {truth:.6f}; current covers {current.sum()}; "
          f"{len(todo)} misses within {widest:.3f} half-widths to make again: {todo}", flush=True)
    shift, scale = POPULATIONS[cell["population"]]
    pop = Population(cell["d"], shift, scale)
    metrics = tuple(cell["metrics"])
    candidate = current.copy()
    known = {}
    if remade:
        for line in open(remade):
            rec = json.loads(line)
            known[rec["draw"]] = rec
    for i in todo:
        t0 = time.perf_counter()
        if i in known:  # made again before: its parts, once its interval is checked against the log's
            assert np.allclose(known[i]["fid"], recs[i]["fid"], rtol=1e-9, atol=0), (i, known[i]["fid"], recs[i]["fid"])
            candidate[i] = abs(est[i] - truth) <= shares_half_width(*known[i]["fid_var_parts"], g)[0]
            continue
        if not allow_remake:
            raise ValueError(f"draw {i} would have to be made again: it is not in {remade}")
        rng = _cell_rng(cell["d"], cell["n_gen"], cell["n_real"], cell["seed"], shift, scale)
        if i:
            rng.bit_generator.state = recs[i - 1]["state"]
        real, fake, fid_seed, _ = _next_draw(pop, cell["n_gen"], cell["n_real"], rng, metrics)
        assert rng.bit_generator.state == recs[i]["state"], f"draw {i}: the stream is not the logged one"
        real_side, fake_side = _Side(real), _Side(fake)
        jk = fid_jackknife(real_side, fake_side, g, fid_seed)
        e = _fid_point(real_side, fake_side)
        remade = [e, *interval_from(e, jk, logged_rule)]
        assert np.allclose(remade, recs[i]["fid"], rtol=1e-9, atol=0), (i, remade, recs[i]["fid"])
        half, df = shares_half_width(jk["v1"], jk["v2"], g)
        candidate[i] = abs(e - truth) <= half
        print(f"draw {i}: miss at {ratio[i]:.3f} half-widths; parts {jk['v1']:.3e} {jk['v2']:.3e}, df {df:.2f} "
              f"(x{t_quantile(df) / t9:.3f}): {'covered' if candidate[i] else 'still missed'} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if out:
            with open(out, "a") as f:
                f.write(json.dumps({"draw": i, "fid": remade, "fid_var_parts": [jk["v1"], jk["v2"]], "df": df}) + "\n")
    n = len(recs)
    print(f"current {current.sum()}/{n} = {current.mean():.1%}; candidate {candidate.sum()}/{n} = {candidate.mean():.1%}")
    return {"draws": n, "current": int(current.sum()), "candidate": int(candidate.sum()), "remade": todo}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--draws", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--remade", default=None, help="an --out file of an earlier run: its draws are not made again")
    ap.add_argument("--part", default="1/1", help="K/M: make only every M-th of the draws to remake, from the K-th "
                                                  "(to split them between processes; each counts only its own)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    recount(args.log, args.draws, args.out, args.part, args.remade)


if __name__ == "__main__":
    main()

"""`bench perf coverage`: do the FID and KID 95% intervals cover what they claim, as often as they claim?

Gaussian feature sets whose answers are known: the real side is N(0, diag λ) with a decaying spectrum
(λ_i = 1 / (1 + i/8), like the fast-decaying spectra of network features), the generated side is
N(δ, diag(s² λ)). Three populations:
- `far`: δ_i = 0.5 √λ_i, s = 1.5 (an untrained-looking model);
- `near`: δ_i = 0.1 √λ_i, s = 1.1 (a good model);
- `same`: δ = 0, s = 1 (the real-data row: a perfect generator).

For each cell (population, d, N generated vs N_real real) the simulation draws both sides afresh
`draws` times and computes each interval exactly as a protocol does (bench/metrics/intervals.py):
- KID targets the population MMD², which has a closed form for Gaussians and the cubic kernel
  (`kid_population`); KID is unbiased, so the mean over draws must match it (printed as a check).
- FID targets FID at this N (see intervals.py why not the N -> infinity distance, which is printed
  beside it in closed form): its true value is estimated by the mean of the point estimates over the
  draws; with R draws its Monte-Carlo error is sd/√R, a few percent of the interval half-width.
A cell passes when coverage is in [90%, 99%] and every point estimate lies inside its own interval.

With 200 draws a cell's coverage has a binomial error of ~1.5 points, and the spread of its 200 estimates (what
the intervals' widths must match) is itself known only to ~5%. `fid_spread` (`--spread K`) measures that spread
again on K fresh draws from a stream of their own, point estimates only (~1/17 of a draw's cost: no jackknife),
and `expected_coverage` says what the cell's intervals would cover at that spread. It tells a too-narrow
interval (the fresh spread agrees with the cell's, both wider than the standard errors) from a cell whose draws
happened to spread widely (the fresh spread matches the standard errors). It informs; the verdict stays the
cell's own coverage.

The level of the widths is one thing, their draw-to-draw variation another: the interval's t quantile on G - 1
degrees of freedom is exact only if its squared standard errors vary like a chi-square on G - 1 df.
`se_dispersion` reads the df they actually vary like from a cell's standard errors, and what coverage that alone
gives when the widths are right on average; every cell prints it. The corrected jackknife's variance subtracts a
delete-two term from the delete-one one, and that difference varies more than G - 1 df allow: at d = 2,048
`near` and `same` read 3-7 df, which puts their expected coverage near 93% (docs/metrics.md). The candidate rule
that gives each interval degrees of freedom from its variance's two parts (bench/metrics/intervals.py `shares_df`)
is counted on the same draws beside the current intervals (`_candidate`), so one grid run validates both.

The `same` population (a generator equal to the data) is the hard case: both statistics are degenerate
there — their first-order fluctuation vanishes and a second-order term is all that is left. A plain
delete-a-group jackknife over-estimates that term's variance by 2(G-1)/(G-2) and covered ~100%; the
intervals now remove that bias with a delete-two estimate (bench/metrics/intervals.py), and this
simulation is what shows the correction is right. A cell whose coverage is above 99% is marked
`conservative` (too wide, never too narrow), below 90% or with an estimate outside its own interval `FAIL`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.special import chdtri, ndtr
from bench.errors import BenchError

from bench.metrics.intervals import (FID_CANDIDATE, FID_RULE, FID_RULES, SHARES_DF_FLOOR, _Side, fid_groups,
                                    fid_jackknife, fid_value, gram_form, interval_from, interval_from_parts,
                                    kid_interval, method_for, mmd2_unbiased, t_quantile)

POPULATIONS = {"far": (0.5, 1.5), "near": (0.1, 1.1), "same": (0.0, 1.0)}


@dataclass(frozen=True)
class Population:
    d: int
    shift: float
    scale: float

    @property
    def lam(self) -> np.ndarray:
        return 1.0 / (1.0 + np.arange(self.d) / 8.0)

    @property
    def delta(self) -> np.ndarray:
        return self.shift * np.sqrt(self.lam)

    def draw(self, n_gen: int, n_real: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        root = np.sqrt(self.lam).astype(np.float32)
        real = rng.standard_normal((n_real, self.d), dtype=np.float32) * root
        fake = rng.standard_normal((n_gen, self.d), dtype=np.float32) * (root * self.scale) + self.delta.astype(
            np.float32)
        return real, fake

    def fid(self) -> float:
        """The Fréchet distance of the two Gaussians (diagonal covariances: closed form)."""
        lam_g = self.scale ** 2 * self.lam
        return float(self.delta @ self.delta + ((np.sqrt(self.lam) - np.sqrt(lam_g)) ** 2).sum())

    def mmd2(self) -> float:
        """Population MMD² for k(x, y) = (x·y/d + 1)³ (closed form, see _expected_kernel)."""
        lam_g = self.scale ** 2 * self.lam
        zero = np.zeros(self.d)
        k_rr = _expected_kernel(zero, self.lam, zero, self.lam, self.d)
        k_gg = _expected_kernel(self.delta, lam_g, self.delta, lam_g, self.d)
        k_rg = _expected_kernel(zero, self.lam, self.delta, lam_g, self.d)
        return float(k_rr + k_gg - 2 * k_rg)


def _expected_kernel(mu1, lam1, mu2, lam2, d: int) -> float:
    """E (xᵀy/d + 1)³ for independent x ~ N(μ1, diag λ1), y ~ N(μ2, diag λ2).

    Given y, a = xᵀy/d + 1 is Gaussian with mean m = 1 + μ1ᵀy/d and variance s² = yᵀΣ1y/d², so
    E[a³ | y] = m³ + 3 m s². Over y: m ~ N(c, v) with c = 1 + μ1ᵀμ2/d, v = μ1ᵀΣ2μ1/d², so E m³ = c³ + 3cv;
    and E[m s²] = (E[yᵀΣ1y] c + 2 μ1ᵀΣ2Σ1μ2/d) / d² with E[yᵀΣ1y] = μ2ᵀΣ1μ2 + tr Σ1Σ2.
    """
    c = 1 + mu1 @ mu2 / d
    v = (mu1 * lam2) @ mu1 / d ** 2
    q = (mu2 * lam1) @ mu2 + lam1 @ lam2
    ms2 = (q * c + 2 * (mu1 * lam2 * lam1) @ mu2 / d) / d ** 2
    return float(c ** 3 + 3 * c * v + 3 * ms2)


def _fid_point(real: _Side, fake: _Side) -> float:
    """The plug-in FID of two feature sets (float64; the same value torch-fidelity computes), by the formula a
    protocol's headline uses at these sizes (bench/metrics/fid.py `headline_fid`)."""
    empty = np.array([], dtype=int)
    return fid_value(real, fake, empty, empty, None, gram_form(real, fake))


def _kid_point(real: np.ndarray, fake: np.ndarray, subsets: int, size: int, rng: np.random.RandomState):
    values = np.zeros(subsets)
    for i in range(subsets):
        values[i] = mmd2_unbiased(real[rng.choice(len(real), size, replace=False)],
                                  fake[rng.choice(len(fake), size, replace=False)])
    return values


# A cell's settings as `bench perf coverage` runs it (the defaults of `simulate_cell`; `--jobs` pieces are that command)
SEED, GROUPS, KID_SUBSETS, KID_SUBSET_SIZE = 0, 10, 10, 1000


def simulate_cell(population: str, d: int, n_gen: int, n_real: int, draws: int, seed: int = SEED,
                  groups: int = GROUPS, kid_subsets: int = KID_SUBSETS, kid_subset_size: int = KID_SUBSET_SIZE,
                  metrics: tuple[str, ...] = ("fid", "kid"), log: Path | None = None, first_draw: int = 0,
                  fid_rule: str | None = None) -> dict:
    """One cell's coverage over `draws` simulated draws. `log`: a JSONL file each draw is appended to as it
    finishes; a cell found there continues after its last logged draw, with the generator state that draw
    left, so an interrupted grid (d = 2,048 at N = 10,000 is ~45 s a draw on one CPU thread) ends with exactly
    the numbers an uninterrupted run gives.

    `first_draw` K: only draws K .. draws - 1, the same draws a whole run makes there (the generator is replayed
    through draws 0 .. K - 1 without computing their intervals, under a second a draw at d = 2,048), so one cell can
    be split between processes or machines. Concatenating the pieces' logs gives the whole cell: a run with
    K = 0 over it resumes every draw.

    `fid_rule`: FID's interval rule (bench/metrics/intervals.py FID_RULES; default FID_RULE, the method's). Draws
    logged under another rule with their variance parts are resumed with this rule's intervals formed from those
    parts (the data, estimate and parts do not depend on the rule), so a change of rule does not make the grid
    again; the other rule of FID_RULE and FID_CANDIDATE is counted beside it (`candidate`)."""
    if not 0 <= first_draw < draws:
        raise ValueError(f"first_draw must be in [0, draws = {draws}), got {first_draw}")
    rule = fid_rule or FID_RULE
    if rule not in FID_RULES:
        raise ValueError(f"unknown FID interval rule {rule!r}; known: {', '.join(FID_RULES)}")
    with _threads_for(d):
        return _simulate(population, d, n_gen, n_real, draws, seed, groups, kid_subsets, kid_subset_size,
                         metrics, log, first_draw, rule)


def simulate_cell_in_pieces(population: str, d: int, n_gen: int, n_real: int, draws: int, jobs: int, log: Path,
                            first_draw: int = 0, metrics: tuple[str, ...] = ("fid", "kid"), progress=None) -> dict:
    """`simulate_cell` with its draws split between `jobs` one-thread processes side by side (`--jobs`).

    Each process is `bench perf coverage --first-draw` on one contiguous piece, appending its draws to `log` (one
    whole line per write, so the pieces' lines never mix); then this process reads the whole cell back from the
    log, so the result is exactly one process's. At d = 2,048 a draw's eigendecompositions do not run faster on a
    second thread (docs/metrics.md), so on a 2-core machine two one-thread pieces make about twice the draws an hour
    of one two-thread process. An interrupted run keeps every logged draw: the same command resumes each piece.
    `progress(done)`: called as the cell's logged draws grow."""
    jobs = max(1, min(jobs, (draws - first_draw) // 2))  # the command refuses a piece of under two draws
    key = _cell_key(population, d, n_gen, n_real, SEED, GROUPS, KID_SUBSETS, KID_SUBSET_SIZE, metrics)
    bounds = np.linspace(first_draw, draws, jobs + 1).round().astype(int)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running = []
    if _count_logged(log, key, first_draw, draws) == draws - first_draw:  # all logged: nothing to start
        bounds = bounds[:1]
    with tempfile.TemporaryDirectory(prefix="bench-coverage-") as tmp:
        try:
            for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                cmd = [sys.executable, "-m", "bench", "perf", "coverage", "--dims", str(d), "--n", str(n_gen),
                       "--n-real", str(n_real), "--populations", population, "--metrics", *metrics,
                       "--draws", str(b), "--first-draw", str(a), "--log", str(log)]
                err = open(Path(tmp) / f"piece-{k}.err", "w+")
                running.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env), err, (a, b)))
            while any(p.poll() is None for p, _, _ in running):
                if progress:
                    progress(_count_logged(log, key, first_draw, draws))
                time.sleep(2)
            for p, err, (a, b) in running:
                if p.returncode:
                    err.seek(0)
                    last = (err.read().strip().splitlines() or ["no message"])[-1]
                    raise BenchError(f"coverage piece draws {a}-{b - 1} ({population}, d = {d}, N = {n_gen}) failed: "
                                     f"{last}")
        finally:
            for p, err, _ in running:
                if p.poll() is None:
                    p.terminate()
                    p.wait()
                err.close()
    if progress:
        progress(_count_logged(log, key, first_draw, draws))
    return simulate_cell(population, d, n_gen, n_real, draws, metrics=metrics, log=log, first_draw=first_draw)


def _count_logged(log: Path, key: str, start: int, stop: int) -> int:
    """How many of draws start .. stop - 1 of the cell `key` the log holds (a progress count)."""
    seen = {rec["draw"] for rec in _log_records(log) if rec.get("cell") == key and _whole_record(rec)}
    return len([r for r in seen if start <= r < stop])


def _log_records(log: Path) -> list[dict]:
    """Every JSON object line of a coverage log (none when it does not exist); a line cut short by an interrupted
    write is skipped."""
    if not log.exists():
        return []
    if not log.is_file():
        raise BenchError(f"--log {log} is a folder; give a JSONL file")
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


@contextmanager
def _threads_for(d: int):
    """Small matrices: one thread (on a busy 2-core machine, torch's thread pool made them 40x slower)."""
    threads = torch.get_num_threads()
    if d < 512:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _cell_rng(d: int, n_gen: int, n_real: int, seed: int, shift: float, scale: float,
              *stream: int) -> np.random.Generator:
    """A cell's generator; `stream` entries give another, independent one for the same cell (`fid_spread`)."""
    return np.random.default_rng([seed, d, n_gen, n_real, int(shift * 1000), int(scale * 1000), *stream])


def _cell_key(population, d, n_gen, n_real, seed, groups, kid_subsets, kid_subset_size, metrics,
              fid_rule: str = FID_RULE) -> str:
    """What a logged draw belongs to: the cell, its settings and the interval method (a changed method must
    not resume from draws the old one made as if they were its own; a changed FID rule re-forms them, `_simulate`)."""
    return json.dumps({"population": population, "d": d, "n_gen": n_gen, "n_real": n_real, "seed": seed,
                       "groups": groups, "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size,
                       "metrics": sorted(metrics), "method": method_for(fid_rule)}, sort_keys=True)


def _whole_record(rec: dict) -> bool:
    """A draw record as _simulate writes it: an integer draw, the generator state, seconds, and each metric's
    (estimate, low, high) as numbers."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    return (isinstance(rec.get("draw"), int) and not isinstance(rec.get("draw"), bool)
            and isinstance(rec.get("state"), dict) and number(rec.get("seconds"))
            and all(rec.get(m) is None or (isinstance(rec[m], list) and len(rec[m]) == 3 and all(map(number, rec[m])))
                    for m in ("fid", "kid")))


def _logged_draws(log: Path | None, key: str, start: int = 0, others: tuple[str, ...] = ()) -> list[dict]:
    """This cell's draws start, start + 1, ... from the log, as far as they run unbroken. A line cut short by an
    interrupted write, and anything after a gap, is ignored: those draws are made again, from the state the last
    whole record left. `others`: the same cell's keys under other FID rules; their records fill in draws `key` has
    not logged when they carry the variance parts that re-form the interval (or the cell has no FID)."""
    if log is None:
        return []
    found: dict[int, dict] = {}
    own: set[int] = set()
    with_fid = "fid" in json.loads(key)["metrics"]  # another rule's record can stand in only with its FID's parts
    for rec in _log_records(log):
        if rec.get("cell") == key:
            if not _whole_record(rec):  # not what this module writes (an edit, another tool): made again
                continue
            found[rec["draw"]] = rec
            own.add(rec["draw"])
        elif rec.get("cell") in others and _whole_record(rec) and (
                (rec.get("fid") is not None and _parts(rec.get("fid_var_parts")) is not None) if with_fid
                else rec.get("fid") is None):
            if rec["draw"] not in own:  # this rule's own record of the draw, wherever it is, wins
                found[rec["draw"]] = rec
    out = []
    while start + len(out) in found:
        out.append(found[start + len(out)])
    return out


def _next_draw(pop: Population, n_gen: int, n_real: int, rng: np.random.Generator, metrics) -> tuple:
    """One draw's data and the seeds its intervals use, taken from the cell's generator in a fixed order: the one
    place that order lives, so replaying draws (`first_draw`) leaves the generator where computing them would."""
    real, fake = pop.draw(n_gen, n_real, rng)
    fid_seed = int(rng.integers(2 ** 31)) if "fid" in metrics else None
    kid_seeds = (int(rng.integers(2 ** 31)), int(rng.integers(2 ** 31))) if "kid" in metrics else None
    return real, fake, fid_seed, kid_seeds


def _simulate(population, d, n_gen, n_real, draws, seed, groups, kid_subsets, kid_subset_size, metrics,
              log: Path | None = None, first_draw: int = 0, rule: str = FID_RULE):
    shift, scale = POPULATIONS[population]
    pop = Population(d, shift, scale)
    rng = _cell_rng(d, n_gen, n_real, seed, shift, scale)
    fid_est, fid_lo, fid_hi, kid_est, kid_lo, kid_hi = ([] for _ in range(6))
    fid_parts = None  # this draw's FID variance parts (first-order, second-order), logged with it
    all_parts = []  # every draw's, logged or fresh (None for a draw logged before the parts were): the candidate rule
    cell = (population, d, n_gen, n_real, seed, groups, kid_subsets, kid_subset_size, metrics)
    key = _cell_key(*cell, rule)
    others = tuple(_cell_key(*cell, r) for r in FID_RULES if r != rule)
    g = fid_groups(groups, n_real, n_gen)
    done = _logged_draws(log, key, first_draw, others)[:draws - first_draw]
    earlier, reformed = 0.0, 0
    for rec in done:  # resume: the logged draws, then the generator exactly where the last one left it
        if rec.get("fid"):
            fid, parts = rec["fid"], _parts(rec.get("fid_var_parts"))
            if rec["cell"] != key:  # logged under another FID rule: this rule's interval from the draw's parts
                fid, reformed = [fid[0], *interval_from_parts(fid[0], *parts, g, rule)], reformed + 1
            for acc, v in zip((fid_est, fid_lo, fid_hi), fid):
                acc.append(v)
            all_parts.append(parts)
        if rec.get("kid"):
            for acc, v in zip((kid_est, kid_lo, kid_hi), rec["kid"]):
                acc.append(v)
        earlier += rec["seconds"]
    t0 = time.perf_counter()
    if done:
        try:
            rng.bit_generator.state = done[-1]["state"]
        except (TypeError, ValueError, KeyError) as exc:  # a hand-edited or foreign log: the draws cannot resume
            raise BenchError(f"--log {log}: draw {done[-1]['draw']} of this cell has a generator state numpy "
                             f"cannot restore ({exc}); remove that line to make the draw again") from None
    else:
        for _ in range(first_draw):  # the draws before this piece: their data only, no intervals
            _next_draw(pop, n_gen, n_real, rng, metrics)
    size = min(kid_subset_size, n_gen, n_real)
    for r in range(first_draw + len(done), draws):
        t_draw = time.perf_counter()
        real, fake, fid_seed, kid_seeds = _next_draw(pop, n_gen, n_real, rng, metrics)
        if "fid" in metrics:
            # as a protocol does it (bench/metrics/fid.py): one centred copy of each side, the jackknife first
            # (it groups the sides, and the estimate reuses whatever the grouped sides precomputed)
            real_side, fake_side = _Side(real), _Side(fake)
            jk = fid_jackknife(real_side, fake_side, groups, fid_seed)
            est = _fid_point(real_side, fake_side)
            lo, hi = interval_from(est, jk, rule)
            fid_est.append(est), fid_lo.append(lo), fid_hi.append(hi)
            fid_parts = [jk["v1"], jk["v2"]]
            all_parts.append(fid_parts)
        if "kid" in metrics:
            values = _kid_point(real, fake, kid_subsets, size, np.random.RandomState(kid_seeds[0]))
            est = float(values.mean())
            lo, hi, _ = kid_interval(est, values, real, fake, kid_seeds[1])
            kid_est.append(est), kid_lo.append(lo), kid_hi.append(hi)
        if log is not None:
            rec = {"cell": key, "draw": r, "state": rng.bit_generator.state,
                   "fid": [fid_est[-1], fid_lo[-1], fid_hi[-1]] if "fid" in metrics else None,
                   "kid": [kid_est[-1], kid_lo[-1], kid_hi[-1]] if "kid" in metrics else None,
                   # the jackknife's first- and second-order variance parts (se² = v1 + v2): an interval rule
                   # other than this one (bench/metrics/intervals.py FID_RULES) can be counted on logged draws, and
                   # a resume under another rule can re-form their intervals, without making them again
                   "fid_var_parts": fid_parts if "fid" in metrics else None,
                   "seconds": time.perf_counter() - t_draw}
            # one whole line per draw in one unbuffered append (a single write: lines of pieces appending side by
            # side, `--jobs`, never mix), synced: an interruption loses one draw at most
            with open(log, "ab", buffering=0) as f:
                f.write((json.dumps(rec) + "\n").encode())
                os.fsync(f.fileno())
    count = draws - first_draw
    out = {"population": population, "d": d, "n_gen": n_gen, "n_real": n_real, "draws": count,
           "seconds": earlier + time.perf_counter() - t0, "resumed_draws": len(done), "fid_rule": rule}
    if reformed:
        out["reformed_draws"] = reformed  # resumed from another FID rule's records
    if first_draw:
        out["first_draw"] = first_draw
    if fid_est:
        est, lo, hi = map(np.asarray, (fid_est, fid_lo, fid_hi))
        truth = float(est.mean())  # FID at this N, estimated by Monte Carlo over the draws
        out["fid"] = {"population": pop.fid(), "truth_at_n": truth, "mc_error": float(est.std(ddof=1) / np.sqrt(count)),
                      "coverage": float(((lo <= truth) & (truth <= hi)).mean()),
                      "estimate_inside": bool(((lo <= est) & (est <= hi)).all()),
                      "mean_half_width": float(((hi - lo) / 2).mean()), "sd": float(est.std(ddof=1)),
                      # upper half-widths: the lower ones are clipped at 0 (`interval_from`)
                      "half_widths": (hi - est).tolist(),
                      "t_df": g - 1,  # the jackknife's usual degrees of freedom (`se_dispersion`)
                      "standard_errors": _standard_errors(hi - est, all_parts, g),
                      "candidate": _candidate(est, all_parts, truth, g, _compared_rule(rule))}
    if kid_est:
        est, lo, hi = map(np.asarray, (kid_est, kid_lo, kid_hi))
        truth = pop.mmd2()
        out["kid"] = {"population": truth, "mean_estimate": float(est.mean()),
                      "mc_error": float(est.std(ddof=1) / np.sqrt(count)),
                      "coverage": float(((lo <= truth) & (truth <= hi)).mean()),
                      "estimate_inside": bool(((lo <= est) & (est <= hi)).all()),
                      "mean_half_width": float(((hi - lo) / 2).mean())}
    return out


def _parts(value) -> list[float] | None:
    """A logged draw's [v1, v2], or None when it has none (logged before 2026-12-05) or they are not two numbers."""
    if isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value):
        return [float(value[0]), float(value[1])]
    return None


def _standard_errors(half_widths: np.ndarray, parts: list, g: int) -> list[float]:
    """Each draw's FID standard error sqrt(v1 + v2), from its parts; a cell with draws logged before the parts were
    (all of them made under t on G - 1, the only rule then) reads them back from those half-widths instead."""
    if parts and all(p is not None for p in parts):
        return np.sqrt(np.sum(parts, axis=1)).tolist()
    return (half_widths / t_quantile(g - 1)).tolist()


def _compared_rule(rule: str) -> str | None:
    """The FID rule counted beside `rule` on the same draws: the candidate; when `rule` is the candidate, the method's
    own rule; once the candidate is the method's (FID_RULE = FID_CANDIDATE), the other registered rule, the one it
    replaced. None when there is no other."""
    return next((r for r in (FID_CANDIDATE, FID_RULE, *FID_RULES) if r != rule), None)


def _candidate(est: np.ndarray, parts: list, truth: float, g: int, rule: str | None) -> dict | None:
    """FID rule `rule` (the candidate, `_compared_rule`) counted on the cell's own draws: each draw's interval is its
    estimate ± the rule's half-width from its variance parts, clipped at 0 like the cell's own. None when a draw has
    no logged parts (its interval under the rule cannot be formed without making it again) or there is no rule."""
    if rule is None or not parts or any(p is None for p in parts):
        return None
    half, df = np.array([FID_RULES[rule].half_width(v1, v2, g) for v1, v2 in parts]).T
    lo, hi = np.maximum(est - half, 0.0), est + half
    return {"rule": rule, "coverage": float(((lo <= truth) & (truth <= hi)).mean()),
            "estimate_inside": bool(((lo <= est) & (est <= hi)).all()),
            "mean_half_width": float(half.mean()), "mean_df": float(df.mean()),
            "at_floor": float((df <= SHARES_DF_FLOOR).mean())}


def format_candidate(cell: dict) -> str:
    """The line for the FID rule counted beside the cell's own (`_compared_rule`); empty when there is none."""
    f, other = cell["fid"], _compared_rule(cell["fid_rule"])
    if other is None:
        return ""
    label = "candidate FID rule" if other == FID_CANDIDATE else "FID rule"
    status = "the method's" if other == FID_RULE else "not yet the method" if other == FID_CANDIDATE else "not the method"
    mine = "current" if cell["fid_rule"] == FID_RULE else "this run's rule"
    c = f.get("candidate")
    if c is None:
        return (f"  {label} ({FID_RULES[other].description}): not counted, some of the cell's draws were logged "
                "before their variance parts were")
    inside = "every estimate inside" if c["estimate_inside"] else "an estimate OUTSIDE its interval"
    return (f"  {label} ({FID_RULES[other].description}; {status}): covered {c['coverage']:.1%} ({mine} "
            f"{f['coverage']:.1%}), mean df {c['mean_df']:.1f} ({c['at_floor']:.0%} of draws at df "
            f"{SHARES_DF_FLOOR:g} or below), mean half-width {c['mean_half_width']:.4f} ({mine} "
            f"{f['mean_half_width']:.4f}), {inside}")


SPREAD_STREAM = 1  # appended to a cell's seed: `fid_spread`'s draws never repeat the cell's own


def fid_spread(population: str, d: int, n_gen: int, n_real: int, count: int, seed: int = 0, progress=None) -> dict:
    """FID's sampling spread at one cell, measured on `count` fresh draws (module doc): the plug-in estimates, their
    mean and sample sd, with the sd's 95% interval from the chi-square distribution (the estimates are close to
    normal: at d = 2,048, N = 5,000, |skewness| <= 0.06 and |excess kurtosis| <= 0.1 in two runs of
    1,000 draws)."""
    if count < 2:
        raise ValueError(f"a spread needs at least 2 draws, got {count}")
    shift, scale = POPULATIONS[population]
    pop = Population(d, shift, scale)
    rng = _cell_rng(d, n_gen, n_real, seed, shift, scale, SPREAD_STREAM)
    t0 = time.perf_counter()
    est = np.empty(count)
    with _threads_for(d):
        for i in range(count):
            real, fake = pop.draw(n_gen, n_real, rng)
            est[i] = _fid_point(_Side(real), _Side(fake))
            if progress:
                progress(i + 1)
    sd, df = float(est.std(ddof=1)), count - 1
    return {"count": count, "mean": float(est.mean()), "sd": sd, "estimates": est.tolist(),
            "sd_low": sd * float(np.sqrt(df / chdtri(df, 0.025))), "sd_high": sd * float(np.sqrt(df / chdtri(df, 0.975))),
            "seconds": time.perf_counter() - t0}


def expected_coverage(half_widths, sd: float) -> float:
    """How often intervals of these half-widths, centred on estimates spread N(truth, sd²), cover the truth: the
    mean of 2Φ(h/sd) - 1. It treats each width as independent of its estimate (their correlation was -0.2 to 0.1
    over the d = 2,048 cells), so it is a check on the widths, not a replacement for counting."""
    h = np.asarray(half_widths, dtype=np.float64)
    if sd <= 0:
        return 1.0
    return float((2 * ndtr(h / sd) - 1).mean())


def se_dispersion(half_widths, standard_errors) -> dict[str, float]:
    """How much a cell's FID standard errors vary from draw to draw, and what that alone costs its intervals of these
    half-widths in coverage. A t interval with k degrees of freedom is exact when the squared standard error is the
    true variance times a chi-square on k df over k, whose variance is 2/k of its squared mean: `df` =
    2 mean(se²)² / var(se²) is the k the cell's standard errors behave like (the quantile assumes G - 1).
    `expected_at_rms`: the mean coverage if the estimates spread exactly as the root-mean-square standard error
    says; below 95% when `df` is below the quantile's, whatever the widths' average level."""
    h = np.asarray(half_widths, dtype=np.float64)
    s2 = np.square(np.asarray(standard_errors, dtype=np.float64))
    var = float(s2.var(ddof=1))
    return {"df": float(2 * s2.mean() ** 2 / var) if var > 0 else float("inf"),
            "expected_at_rms": expected_coverage(h, float(np.sqrt(s2.mean())))}


def format_se_dispersion(cell: dict) -> str:
    f = cell["fid"]
    disp = se_dispersion(f["half_widths"], f["standard_errors"])
    return (f"  FID standard errors vary like a chi-square on {disp['df']:.1f} df (t on G - 1 assumes "
            f"{f['t_df']}); at their own rms the intervals would cover "
            f"{disp['expected_at_rms']:.1%} on average (counted {f['coverage']:.1%})")


def format_spread(cell: dict, spread: dict) -> str:
    f = cell["fid"]
    rms = float(np.sqrt(np.mean(np.square(f["half_widths"]))))
    return (f"  FID spread over {spread['count']} fresh draws: sd {spread['sd']:.4g} (95%: {spread['sd_low']:.4g}-"
            f"{spread['sd_high']:.4g}), mean {spread['mean']:.4f}; the cell's {cell['draws']} draws: sd {f['sd']:.4g}, "
            f"rms half-width {rms:.4g}; at the fresh sd its intervals would cover "
            f"{expected_coverage(f['half_widths'], spread['sd']):.1%} (at its own sd "
            f"{expected_coverage(f['half_widths'], f['sd']):.1%}, counted {f['coverage']:.1%})")


def passes(cell: dict, low: float = 0.90, high: float = 0.99) -> bool:
    return all(low <= cell[m]["coverage"] <= high and cell[m]["estimate_inside"] for m in ("fid", "kid") if m in cell)


def verdict(cell: dict) -> str:
    """ok: coverage in [90%, 99%]; conservative: above 99% (too wide, never too narrow); FAIL otherwise."""
    if passes(cell):
        return "ok"
    inside = all(cell[m]["estimate_inside"] and cell[m]["coverage"] >= 0.90 for m in ("fid", "kid") if m in cell)
    return "conservative" if inside else "FAIL"


def format_table(cells: list[dict]) -> str:
    lines = ["population  d     N_gen  N_real draws | FID(pop)  FID@N    cover  half-w  | MMD²(pop)  KID mean   "
             "cover  half-w  | verdict      s"]
    for c in cells:
        f, k = c.get("fid"), c.get("kid")
        fid = (f"{f['population']:8.4f} {f['truth_at_n']:8.4f} {f['coverage']:6.1%} {f['mean_half_width']:7.4f}"
               if f else " " * 32)
        kid = (f"{k['population']:9.2e} {k['mean_estimate']:9.2e} {k['coverage']:6.1%} {k['mean_half_width']:7.1e}"
               if k else " " * 34)
        lines.append(f"{c['population']:<11} {c['d']:<5} {c['n_gen']:<6} {c['n_real']:<6} {c['draws']:<5} | {fid} | "
                     f"{kid} | {verdict(c):<12} {c['seconds']:.0f}")
    return "\n".join(lines)

"""The leaderboard: MLflow entry runs -> one ranked table per protocol fingerprint (pandas).

Scores are only ever compared inside one fingerprint (same resolved protocol, data, extractor weights,
device and loaded checkpoints), so each fingerprint is its own group and no number crosses groups. The one
exception splits a fingerprint further: protocol runs that recorded different decoded pixels of the same files
(layout.DATA_PIXELS: another Pillow or libjpeg) were measured against different images, so each set of pixels
is a group of its own, and says so.
Within a group, the unit is (entry, training seed): when a protocol was run several times, the newest
finished run of each (entry, training seed) counts and the older ones are repeats, which on CPU are
bit-identical and would otherwise be counted twice as if they were independent evidence. The values
of an entry are then pooled over its training seeds x evaluation seeds (mean ± sample std, like the
comparison table), and neighbouring rows are compared with a permutation test whose unit is the
evaluation seed when both rows have one training seed and the training seed (evaluation seeds averaged
within it) when either has several (bench/reporting/significance.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.metrics import KEY_DIRECTION, TABLE_KEYS
from bench.reporting import significance
from bench.tracking import layout

PerSeed = Callable[[str, str], list[float]]  # (run_id, key) -> per-evaluation-seed values


@dataclass
class Group:
    """One fingerprint's leaderboard: `rows` is one row per entry, best first."""

    protocol: str
    experiment: str
    fingerprint: str
    parent_run_ids: list[str]  # newest first
    sort_key: Optional[str]
    keys: list[str]  # metric keys with a known direction, in display order
    rows: pd.DataFrame
    repeats: int = 0  # older runs of an (entry, training seed) that a newer run replaced
    latest_time: int = 0
    notes: list[str] = field(default_factory=list)
    extractor: str = ""  # the feature space of IS/FID/KID (one per fingerprint); "" = not recorded
    data_pixels: str = ""  # the decoded pixels' sha256 its protocol runs recorded; "" = not recorded
    pixels_split: bool = False  # the fingerprint's runs recorded several: this group is one of them


def interval_keys(key: str) -> tuple[str, str]:
    """`fid` -> fid/ci95_low|high; `kid/mean` -> kid/ci95_low|high (the 95% interval of that mean)."""
    base = key[: -len("/mean")] if key.endswith("/mean") else key
    return f"{base}/ci95_low", f"{base}/ci95_high"


def display_keys(metric_keys: set[str]) -> list[str]:
    known = [k for k in metric_keys if k in KEY_DIRECTION]
    return [k for k in TABLE_KEYS if k in known] + sorted(k for k in known if k not in TABLE_KEYS)


def default_sort_key(keys: list[str]) -> Optional[str]:
    return "fid" if "fid" in keys else (keys[0] if keys else None)


def build(runs: pd.DataFrame, per_seed: PerSeed, sort: Optional[str] = None) -> list[Group]:
    """Groups, newest fingerprint first. `runs` has store.CHILD_COLUMNS (one row per entry run)."""
    if sort is not None and sort not in KEY_DIRECTION:
        raise BenchError(f"cannot sort by '{sort}': not a metric with a known direction; valid: "
                         f"{', '.join(sorted(KEY_DIRECTION))}")
    groups = [_group(part, per_seed, sort, pixels, split)
              for _, g in runs.groupby("fingerprint", sort=False) for part, pixels, split in _by_pixels(g)]
    return sorted(groups, key=lambda g: -g.latest_time)


def _by_pixels(g: pd.DataFrame) -> list[tuple[pd.DataFrame, str, bool]]:
    """One fingerprint's runs as (runs, their decoded pixels' sha256, split?): one part while every run that
    recorded its pixels recorded the same ones (runs logged before the tag join it), else one part per digest
    and one for the runs that recorded none, since those cannot be placed."""
    pixels = (g["data_pixels"].fillna("").astype(str) if "data_pixels" in g
              else pd.Series("", index=g.index, dtype=str))
    known = sorted(set(pixels) - {""})
    if len(known) <= 1:
        return [(g, known[0] if known else "", False)]
    return [(g[pixels == digest], digest, True) for digest in known + [""] if (pixels == digest).any()]


def _newest_per_unit(g: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    g = g.assign(_finished=g["status"] == "FINISHED").sort_values(["_finished", "start_time"],
                                                                  ascending=[False, False])
    kept = g.drop_duplicates(["entry", "train_seed"], keep="first").drop(columns="_finished")
    return kept, len(g) - len(kept)


def _group(g: pd.DataFrame, per_seed: PerSeed, sort: Optional[str], pixels: str = "",
           pixels_split: bool = False) -> Group:
    kept, repeats = _newest_per_unit(g)
    finished = kept[kept["status"] == "FINISHED"]
    keys = display_keys({k for m in finished["metrics"] for k in m})
    sort_key = sort if sort is not None else default_sort_key(keys)
    notes = []
    if pixels_split:
        notes.append("the protocol runs of this fingerprint decoded its image files to different pixels (another "
                     f"Pillow, libjpeg-turbo, torch or CPU without AVX2: compare their `{layout.VERSION_PREFIX}*` and "
                     f"`{layout.CPU_DETAIL}` tags), so they were measured against different images and are not pooled: "
                     "this table holds only the runs "
                     + (f"whose pixels have sha256 {pixels[:12]}" if pixels else "that did not record their pixels"))
    if sort is not None and sort not in keys:
        notes.append(f"no entry has '{sort}'; rows are in entry order")
    rows = [_entry_row(entry, e_runs, keys, per_seed) for entry, e_runs in kept.groupby("entry", sort=True)]
    df = pd.DataFrame(rows)
    df = _rank(df, sort_key if sort_key in keys else None)
    parents = (g.sort_values("start_time", ascending=False)["parent_run_id"].drop_duplicates().tolist())
    first = g.iloc[0]
    extractors = [x for x in g.get("extractor", pd.Series(dtype=str)).tolist() if isinstance(x, str) and x]
    return Group(protocol=first["protocol"], experiment=first["experiment"], fingerprint=first["fingerprint"],
                 parent_run_ids=[p for p in parents if p], sort_key=sort_key if sort_key in keys else None,
                 keys=keys, rows=df, repeats=repeats, latest_time=int(g["start_time"].max()), notes=notes,
                 extractor=extractors[0] if extractors else "", data_pixels=pixels, pixels_split=pixels_split)


def _entry_row(entry: str, runs: pd.DataFrame, keys: list[str], per_seed: PerSeed) -> dict:
    runs = runs.sort_values("train_seed")
    failed = runs[runs["status"] != "FINISHED"]
    row = {"entry": entry, "zoo": runs["zoo"].iloc[0], "run_ids": runs["run_id"].tolist(),
           "train_seeds": runs["train_seed"].tolist(), "n_train": len(runs), "n_eval": 0,
           "status": "FINISHED", "failure": "", "baseline": _baseline(runs), "untrained": _untrained(runs),
           "eval_outputs": _eval_outputs(runs),
           "duration_s": float(np.nansum([(e - s) / 1000 for s, e in zip(runs["start_time"], runs["end_time"])
                                          if e and s]))}
    if len(failed):
        # A partial set of training seeds is not comparable with a full one: the row is not ranked.
        row["status"] = failed["status"].iloc[0]
        reason = failed["failure"].iloc[0]
        if len(runs) > 1:
            reason = f"{len(failed)} of {len(runs)} training runs {row['status']}" + (f": {reason}" if reason else "")
        row["failure"] = reason
        return row
    for key in keys:
        _add_metric(row, key, runs, per_seed)
    return row


def _baseline(runs: pd.DataFrame) -> str:
    """'real_data' / 'identity' for the real-data row (bench/runner/reference.py), '' for an entry."""
    value = runs["baseline"].iloc[0]
    return value if isinstance(value, str) else ""  # NaN: a frame whose runs carry no such value


def _eval_outputs(runs: pd.DataFrame) -> str:
    """'identical' when every training run's evaluation seeds gave bit-identical generated features
    (layout.EVAL_OUTPUTS), 'varying' when any run's differed, '' when a run did not record it."""
    values = [v if isinstance(v, str) else "" for v in runs.get("eval_outputs", pd.Series([""] * len(runs)))]
    if "varying" in values:
        return "varying"
    return "identical" if values and all(v == "identical" for v in values) else ""


def _untrained(runs: pd.DataFrame) -> bool:
    """Every training run of the entry was scored at its initialisation (layout.UNTRAINED)."""
    return bool(runs["untrained"].eq(True).all())  # NaN: a frame whose runs carry no such value


def _add_metric(row: dict, key: str, runs: pd.DataFrame, per_seed: PerSeed) -> None:
    means = [m.get(key) for m in runs["metrics"]]
    if any(v is None for v in means):
        return  # some training seed lacks the key (unavailable metric): no partial average
    seeds = [per_seed(rid, key) for rid in runs["run_id"]]
    if all(seeds):
        values = [v for s in seeds for v in s]
        by_seed = {str(ts): [float(v) for v in s] for ts, s in zip(runs["train_seed"], seeds)}
        mean, std = float(np.mean(values)), significance.sample_std(values)
        row["n_eval"] = max(row["n_eval"], max(len(s) for s in seeds))
    else:
        # Runs logged before per-seed histories existed: only the run-level mean and seed std are known.
        by_seed = {str(ts): [float(m)] for ts, m in zip(runs["train_seed"], means)}
        mean = float(np.mean(means))
        std = (float(runs["metrics"].iloc[0].get(f"{key}/seed_std", math.nan)) if len(runs) == 1
               else significance.sample_std(means))
    # by_seed: training seed -> its evaluation seeds' values (the units of the test in _rank)
    row[f"{key}/mean"], row[f"{key}/std"], row[f"{key}/by_seed"] = mean, std, by_seed
    lo_key, hi_key = interval_keys(key)
    lows = [m.get(lo_key) for m in runs["metrics"]]
    highs = [m.get(hi_key) for m in runs["metrics"]]
    if all(v is not None for v in lows + highs):
        # The 95% interval of each evaluation seed, averaged over the runs' seeds (its typical width).
        row[f"{key}/ci95_low"], row[f"{key}/ci95_high"] = float(np.mean(lows)), float(np.mean(highs))


def _rank(df: pd.DataFrame, key: Optional[str]) -> pd.DataFrame:
    df = df.copy()
    df["rank"], df["p_next"], df["n_pairs_next"], df["test_next"] = pd.NA, math.nan, 0, ""
    # The real-data row heads the table, unranked: it is what a perfect model scores, not a competitor. Untrained
    # entries are ranked by their scores like any other row (they usually close the table; an entry that ranks
    # below its untrained floor is a finding the table must show, not hide).
    head, df = df[df["baseline"] != ""].sort_values("entry"), df[df["baseline"] == ""]
    if key is None or f"{key}/mean" not in df:
        return pd.concat([head, df.sort_values("entry")]).reset_index(drop=True)
    ranked = df["status"].eq("FINISHED") & df[f"{key}/mean"].notna()
    better_high = KEY_DIRECTION[key]
    top = df[ranked].sort_values([f"{key}/mean", "entry"], ascending=[not better_high, True])
    rest = df[~ranked].sort_values("entry")
    df = pd.concat([head, top, rest]).reset_index(drop=True)
    first = len(head)
    if len(top):
        df.loc[first: first + len(top) - 1, "rank"] = list(range(1, len(top) + 1))
    for i in range(first, first + len(top) - 1):
        a, b = df.at[i, f"{key}/by_seed"], df.at[i + 1, f"{key}/by_seed"]
        _compare(df, i, a, b)
    return df


def _compare(df: pd.DataFrame, i: int, a: dict[str, list[float]], b: dict[str, list[float]]) -> None:
    """Row i vs row i + 1 (two_sample's test)."""
    p, test, n = two_sample(a, b, identical=_both_identical(df.loc[i], df.loc[i + 1]))
    df.at[i, "p_next"], df.at[i, "test_next"], df.at[i, "n_pairs_next"] = p, test, n


def _both_identical(x: pd.Series, y: pd.Series) -> bool:
    return x.get("eval_outputs") == "identical" and y.get("eval_outputs") == "identical"


NO_TEST_DETERMINISTIC = "no test: evaluation seeds identical (deterministic)"


def two_sample(a: dict[str, list[float]], b: dict[str, list[float]],
               identical: bool = False) -> tuple[float, str, int]:
    """(p, test, n pairs) for two rows' values by training seed. One training seed each: pair their
    evaluation seeds (the same latent draws). Several: the training runs are the units, each its evaluation
    seeds' mean, compared unpaired (run t of one entry and run t of another share no random stream).
    `identical`: both rows' evaluation seeds generated bit-identical outputs (layout.EVAL_OUTPUTS).
    p is NaN when nothing can be tested; `test` then says why, or is empty."""
    if not all(math.isfinite(v) for side in (a, b) for values in side.values() for v in values):
        # A NaN difference makes every permutation look "less extreme" (p = 0): refuse instead.
        return math.nan, "no test: a value is not finite", 0
    if len(a) == 1 and len(b) == 1:
        (va,), (vb,) = a.values(), b.values()
        # One value each is a single evaluation seed, or a run logged before per-seed values: nothing to test.
        n = min(len(va), len(vb)) if len(va) > 1 and len(vb) > 1 else 0
        if not n:
            return math.nan, "", 0
        d = np.asarray(va[:n], dtype=np.float64) - np.asarray(vb[:n], dtype=np.float64)
        if identical or np.ptp(d) <= 1e-9 * max(1.0, float(np.abs(d).max())):
            # Both models generated the same outputs on every seed (a deterministic translator on the fixed
            # held-out inputs), or every seed gave the same difference (runs logged before outputs were
            # compared): the evaluation seeds are not replicates. What still varies between them (KID's subsets,
            # fid_inf's subsamples) is the metric's own randomness, and a sign-flip test over it would call
            # almost any gap significant. Only training seeds can decide this comparison.
            return math.nan, NO_TEST_DETERMINISTIC, 0
        return significance.paired_permutation_p(va[:n], vb[:n]), "paired", n
    ma, mb = [float(np.mean(v)) for v in a.values()], [float(np.mean(v)) for v in b.values()]
    units = f"{len(ma)} vs {len(mb)} training seeds"
    perm = significance.unpaired_permutation_p(ma, mb)
    if len(ma) >= 2 and len(mb) >= 2:
        # Welch's t-test on the run means; the exact permutation p is shown beside it (assumption-free, but
        # it cannot go below 0.1 with 3 runs a side).
        p = significance.welch_p(ma, mb)
        if math.isnan(p):
            # No run-to-run spread on either side: Welch's t is undefined, the permutation p still holds.
            return perm, units + ", exact permutation (Welch t undefined: no spread)", 0
        return p, units + f", Welch t; exact permutation p={significance.format_p(perm)}", 0
    return perm, units, 0


@dataclass
class ControlTest:
    """One entry against the protocol's control entry on one metric."""

    entry: str
    key: str
    mean: float
    control_mean: float
    better: bool  # in the metric's direction (KEY_DIRECTION)
    p: float  # NaN: not testable (see test)
    p_holm: float  # Holm-adjusted over the treatments tested against the control on this metric; NaN for a floor
    test: str
    floor: bool = False  # an untrained entry: a check that the control learned anything, not a treatment


def against_control(g: Group, control: str) -> list[ControlTest]:
    """Every ranked entry (not a baseline row, not the control) against `control`, on every metric of the
    table. A protocol that compares k treatments with one control makes k tests per metric, so each p is
    also given Holm-adjusted over those k (Holm 1979: family-wise error <= ALPHA for any dependence); a
    verdict of "beats the control" uses the adjusted p. Untrained entries (layout.UNTRAINED) are tested too,
    as floors: whether the control beats its own initialisation is a different question from which treatment
    beats the control, so they stay out of the family (counting them would inflate every treatment's adjusted
    p) and their verdict is the unadjusted p."""
    rows = g.rows.set_index("entry", drop=False)
    if control not in rows.index:
        raise BenchError(f"control entry '{control}' is not in the table; entries: {', '.join(rows.index)}")
    ref = rows.loc[control]
    if ref["status"] != "FINISHED":
        return []
    others = [r for _, r in g.rows.iterrows()
              if r["entry"] != control and not r["baseline"] and r["status"] == "FINISHED"]
    out: list[ControlTest] = []
    for key in g.keys:
        col = f"{key}/by_seed"
        if col not in rows or not isinstance(ref.get(col), dict):
            continue
        tests = []
        for r in others:
            if not isinstance(r.get(col), dict):
                continue
            p, test, _ = two_sample(r[col], ref[col], identical=_both_identical(r, ref))
            mean, cmean = float(r[f"{key}/mean"]), float(ref[f"{key}/mean"])
            better = mean > cmean if KEY_DIRECTION[key] else mean < cmean
            tests.append(ControlTest(r["entry"], key, mean, cmean, better, p, math.nan, test,
                                     floor=bool(r["untrained"])))
        family = [t for t in tests if not t.floor]
        for t, adj in zip(family, significance.holm([t.p for t in family])):
            t.p_holm = adj
        out += tests
    return out


@dataclass
class LiteratureCheck:
    """One literature claim (bench/protocol/schema.py: LiteratureClaim) against the measured scores."""

    claim: Any
    better_mean: float = math.nan  # the entry the source reports ahead
    than_mean: float = math.nan
    agrees: Optional[bool] = None  # None: not checked (see missing) or a tie
    tie: bool = False  # the two means are equal: neither row is ahead
    p: float = math.nan  # the leaderboard's test between the two rows (two_sample); NaN: not testable
    p_holm: float = math.nan  # p Holm-adjusted over the tested claims of the report
    test: str = ""
    n_pairs: int = 0  # paired evaluation seeds when each row has one training run
    missing: str = ""  # why the claim could not be checked


NO_TEST_BASELINE = "no test: a baseline row (one evaluation, no training runs) against several training runs"


def against_literature(g: Group, claims: list[Any]) -> list[LiteratureCheck]:
    """Each claim "`better` ahead of `than` on `metric`" against this table: the measured means, whether they
    point the claimed way, and the `vs next` test between the two rows (the same units: training seeds when
    either row has several, else paired evaluation seeds), so a report can say whether a disagreement with
    the paper is beyond noise. A report that checks k claims makes k tests, so each p is also given
    Holm-adjusted over the tested ones (as the control's k treatments are), and verdicts use that."""
    rows = g.rows.set_index("entry", drop=False)
    out = []
    for claim in claims:
        check = LiteratureCheck(claim)
        out.append(check)
        col = f"{claim.metric}/by_seed"
        if claim.metric not in KEY_DIRECTION:
            check.missing = f"{claim.metric} has no known direction"
            continue
        absent = [n for n in (claim.better, claim.than) if n not in rows.index]
        if absent:
            check.missing = f"no row `{absent[0]}` in this run"
            continue
        a, b = rows.loc[claim.better], rows.loc[claim.than]
        unfinished = [r["entry"] for r in (a, b) if r["status"] != "FINISHED"]
        if unfinished:
            check.missing = f"`{unfinished[0]}` did not finish"
            continue
        if not (isinstance(a.get(col), dict) and isinstance(b.get(col), dict)):
            check.missing = f"{claim.metric} was not measured for both rows"
            continue
        check.better_mean, check.than_mean = float(a[f"{claim.metric}/mean"]), float(b[f"{claim.metric}/mean"])
        if not (math.isfinite(check.better_mean) and math.isfinite(check.than_mean)):
            # NaN compares unequal and not greater: it would "agree" with a claim and with its opposite
            check.missing = f"a mean of {claim.metric} is not finite"
            continue
        if check.better_mean == check.than_mean:
            check.tie = True  # neither bears the claim out nor contradicts it
        else:
            ahead = check.better_mean > check.than_mean
            check.agrees = ahead if KEY_DIRECTION[claim.metric] else not ahead
        if (a["baseline"] or b["baseline"]) and max(len(a[col]), len(b[col])) > 1:
            # The real-data/identity row is one evaluation; against several training runs the exact permutation
            # test cannot go below 1/(k+1) and Welch's t has no spread on the baseline side: not a test.
            check.test = NO_TEST_BASELINE
            continue
        check.p, check.test, check.n_pairs = two_sample(a[col], b[col], identical=_both_identical(a, b))
    tested = [c for c in out if not math.isnan(c.p)]
    for c, adj in zip(tested, significance.holm([c.p for c in tested])):
        c.p_holm = adj
    return out


def load(uri: str, experiments: Optional[list[str]] = None, fingerprint: Optional[str] = None,
         parent_run_id: Optional[str] = None, sort: Optional[str] = None) -> list[Group]:
    """Leaderboards straight from a tracking store. `fingerprint` may be a prefix (as printed by bench run)."""
    from bench.reporting import store

    c = store.client(uri)
    exps = store.experiment_ids(c, experiments)
    runs = store.child_runs(c, exps, parent_run_id=parent_run_id)
    if fingerprint:
        runs = runs[runs["fingerprint"].str.startswith(fingerprint)]
    if runs.empty:
        what = f" with fingerprint {fingerprint}" if fingerprint else ""
        raise BenchError(f"no entry runs{what} in {uri}" + (f" (experiments: {', '.join(experiments)})"
                                                            if experiments else ""))
    return build(runs, lambda run_id, key: store.per_seed(c, run_id, key), sort)

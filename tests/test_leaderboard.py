"""`bench leaderboard`: grouping strictly by fingerprint, ranking by direction, pooling over training
and evaluation seeds, the paired permutation test, and the outputs (terminal, CSV, Markdown, HTML,
MLflow artifact)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.reporting import leaderboard, render, significance
from bench.reporting.store import CHILD_COLUMNS
from tests.conftest import needs_data
from tests.report_runs import shared_runs

# --- the permutation test ---------------------------------------------------------------------------


def test_two_seeds_can_never_be_significant():
    assert significance.paired_permutation_p([1.0, 2.0], [10.0, 20.0]) == 0.5
    assert significance.min_attainable_p(2) == 0.5


def test_six_consistent_pairs_are_significant_and_exact():
    a, b = [1.0, 1.1, 0.9, 1.2, 1.0, 1.05], [2.0] * 6
    assert significance.paired_permutation_p(a, b) == pytest.approx(2 / 64)
    assert significance.paired_permutation_p(b, a) == pytest.approx(2 / 64)


def test_identical_values_give_p_one_and_mixed_signs_are_not_significant():
    assert significance.paired_permutation_p([3.0, 4.0, 5.0], [3.0, 4.0, 5.0]) == 1.0
    assert significance.paired_permutation_p([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]) == 1.0


def test_many_pairs_use_seeded_draws_reproducibly():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 40), rng.normal(0.3, 1, 40)
    p1, p2 = significance.paired_permutation_p(a, b), significance.paired_permutation_p(a, b)
    assert p1 == p2 and 0 < p1 < 1


# --- grouping and ranking on synthetic runs -----------------------------------------------------------

def _run(fp, entry, parent, start, metrics, status="FINISHED", train_seed="", failure="", untrained=False,
         eval_outputs=""):
    return {"run_id": f"{parent}-{entry}-{train_seed}", "parent_run_id": parent, "experiment": "exp",
            "protocol": "p", "fingerprint": fp, "entry": entry, "zoo": "mnist_gan", "train_seed": train_seed,
            "status": status, "failure": failure, "start_time": start, "end_time": start + 1000,
            "metrics": metrics, "untrained": untrained, "eval_outputs": eval_outputs}


def _build(rows, per_seed, sort=None):
    df = pd.DataFrame(rows, columns=CHILD_COLUMNS)
    return leaderboard.build(df, lambda rid, key: per_seed.get((rid, key), []), sort)


def test_fingerprints_are_separate_groups_and_repeats_are_not_double_counted():
    rows = [_run("A" * 64, "g", "r1", 1, {"fid": 10.0, "is": 2.0}), _run("A" * 64, "g", "r2", 2, {"fid": 12.0}),
            _run("B" * 64, "g", "r3", 3, {"fid": 99.0})]
    seeds = {("r1-g-", "fid"): [9.0, 11.0], ("r2-g-", "fid"): [11.0, 13.0], ("r3-g-", "fid"): [98.0, 100.0]}
    groups = _build(rows, seeds)
    assert [g.fingerprint[0] for g in groups] == ["B", "A"]  # newest fingerprint first
    a = groups[1]
    assert a.repeats == 1 and a.parent_run_ids == ["r2", "r1"]
    row = a.rows.iloc[0]
    assert row["fid/mean"] == 12.0 and row["n_train"] == 1 and row["n_eval"] == 2  # the newest run only
    assert groups[0].rows.iloc[0]["fid/mean"] == 99.0


def test_rank_follows_each_metrics_direction_and_failed_rows_go_last():
    rows = [_run("F" * 64, "a", "r", 1, {"fid": 30.0, "is": 3.0}), _run("F" * 64, "b", "r", 1, {"fid": 10.0, "is": 1.5}),
            _run("F" * 64, "c", "r", 1, {}, status="FAILED", failure="NaN loss at step 3")]
    g = _build(rows, {})[0]
    assert list(g.rows["entry"]) == ["b", "a", "c"] and g.sort_key == "fid"
    assert list(g.rows["rank"][:2]) == [1, 2] and pd.isna(g.rows["rank"].iloc[2])
    g_is = _build(rows, {}, sort="is")[0]
    assert list(g_is.rows["entry"]) == ["a", "b", "c"]
    text = render.terminal([g])
    assert "FAILED: NaN loss at step 3" in text
    with pytest.raises(Exception, match="cannot sort by 'nope'"):
        _build(rows, {}, sort="nope")


def test_training_seeds_pool_with_eval_seeds_and_are_the_units_of_the_test():
    fp, rows, seeds = "C" * 64, [], {}
    good = {0: [10.0, 11.0, 12.0], 1: [10.5, 11.5, 12.5]}
    for ts in (0, 1):
        for entry, vals in (("good", good[ts]), ("bad", [v + 5 for v in good[ts]])):
            m = {"fid": float(np.mean(vals)), "fid/ci95_low": np.mean(vals) - 1, "fid/ci95_high": np.mean(vals) + 1}
            rows.append(_run(fp, entry, "r", 1, m, train_seed=str(ts)))
            seeds[(f"r-{entry}-{ts}", "fid")] = vals
    g = _build(rows, seeds)[0]
    best = g.rows.iloc[0]
    pooled = good[0] + good[1]
    assert best["entry"] == "good" and best["n_train"] == 2 and best["n_eval"] == 3
    assert best["fid/mean"] == pytest.approx(np.mean(pooled))
    assert best["fid/std"] == pytest.approx(np.std(pooled, ddof=1))  # sample std, not population
    assert best["fid/ci95_low"] == pytest.approx(np.mean(pooled) - 1)
    # The unit is the training run (its 3 evaluation seeds averaged): Welch's t on 2 vs 2 run means, with the
    # exact permutation p (never below 2 / C(4, 2) = 1/3 here) beside it.
    from scipy import stats
    welch = stats.ttest_ind([11.0, 11.5], [16.0, 16.5], equal_var=False).pvalue
    assert best["test_next"] == "2 vs 2 training seeds, Welch t; exact permutation p=0.33"
    assert best["p_next"] == pytest.approx(welch) and welch < 0.05
    assert "exact permutation p=0.33)" in render.markdown([g])
    assert "2×3" in render.terminal([g])


def test_a_partially_failed_set_of_training_seeds_is_not_ranked():
    fp = "D" * 64
    rows = [_run(fp, "x", "r", 1, {"fid": 5.0}, train_seed="0"),
            _run(fp, "x", "r", 1, {}, status="FAILED", train_seed="1", failure="diverged"),
            _run(fp, "y", "r", 1, {"fid": 9.0})]
    g = _build(rows, {})[0]
    x = g.rows.set_index("entry").loc["x"]
    assert x["status"] == "FAILED" and x["failure"] == "1 of 2 training runs FAILED: diverged"
    assert list(g.rows["entry"]) == ["y", "x"]


def test_csv_markdown_and_html_carry_every_group():
    rows = [_run("A" * 64, "g", "r1", 1, {"fid": 10.0, "fid/ci95_low": 9.0, "fid/ci95_high": 11.5}),
            _run("B" * 64, "g", "r2", 2, {"fid": 20.0})]
    groups = _build(rows, {("r1-g-", "fid"): [9.0, 11.0]})
    table = list(csv.DictReader(io.StringIO(render.to_csv(groups))))
    assert {(r["fingerprint"][0], float(r["fid/mean"])) for r in table} == {("A", 10.0), ("B", 20.0)}
    md = render.markdown(groups)
    assert md.count("fingerprint AAAAAAAAAAAA") == 1 and "10.00 ± 1.41 [9.00, 11.50]" in md  # sample std of 9, 11
    page = render.to_html(groups)
    assert page.count('<table class="leaderboard"') == 2 and "paired sign-flip permutation test" in page


# --- end to end: two runs of one protocol + one run of a changed protocol ------------------------------

@needs_data
def test_two_protocols_two_groups_never_mixed(tmp_path_factory, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    runs = shared_runs(tmp_path_factory)
    out = tmp_path / "lb"
    assert main(["leaderboard", str(runs.protocol), "--csv", str(out) + ".csv", "--markdown", str(out) + ".md",
                 "--html", str(out) + ".html"]) == 0
    printed = capsys.readouterr().out
    fps = {w: {r["fingerprint"] for r in res} for w, res in runs.results.items()}
    assert fps["work-1"] == fps["work-2"] and fps["work-1"] != fps["work-3"]
    fp_same, fp_changed = fps["work-1"].pop(), fps["work-3"].pop()
    assert printed.count("regression-tiny · fingerprint") == 2
    assert (f"fingerprint {fp_same[:12]} · features judge:mnist · experiment regression-tiny · 2 runs, "
            "2 older repeats superseded") in printed
    # each group states its neighbouring comparison in words, in the terminal and in the Markdown file; the
    # feature space is named wherever a feature-space score is (the judge is not Inception)
    assert printed.count("trained ahead of untrained on FID (judge:mnist)") == 2 and "not significant" in printed
    md = (out.parent / "lb.md").read_text()
    assert md.count("- `trained` ahead of `untrained` on FID (judge:mnist)") == 2
    assert "| FID (judge:mnist) ↓ |" in md and "| KID (judge:mnist) ↓ |" in md

    table = list(csv.DictReader(open(str(out) + ".csv")))
    assert len(table) == 4
    for row in table:
        work = "work-1" if row["fingerprint"] == fp_same else "work-3"
        assert row["fingerprint"] in (fp_same, fp_changed)
        expected = next(r for r in runs.results[work] if r["entry"] == row["entry"])
        # Each group holds exactly its own protocol's numbers, from the per-seed values MLflow kept.
        assert float(row["fid/mean"]) == pytest.approx(expected["metrics"]["fid"]["mean"], rel=1e-12)
        assert float(row["fid/std"]) == pytest.approx(expected["metrics"]["fid"]["std"], rel=1e-9, abs=1e-12)
        assert row["n_train"] == "1" and row["n_eval"] == "2"
    ranked = [r for r in table if r["fingerprint"] == fp_same]
    assert [r["entry"] for r in sorted(ranked, key=lambda r: r["rank"])] == ["trained", "untrained"]
    assert ranked[0]["p_next"] == "0.5"  # two evaluation seeds: the test cannot reach significance
    assert (out.with_suffix(".html")).read_text().count('<table class="leaderboard"') == 2

    client = MlflowClient(tracking_uri=runs.uri)
    exp = client.get_experiment_by_name("regression-tiny")
    parents = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    newest = {}
    for p in sorted(parents, key=lambda r: r.info.start_time):
        newest[p.data.tags["bench.fingerprint"]] = p.info.run_id
    for fp, run_id in newest.items():
        names = {a.path for a in client.list_artifacts(run_id, "leaderboard")}
        assert names == {f"leaderboard/leaderboard.{x}" for x in ("md", "csv", "html")}
        logged = client.download_artifacts(run_id, "leaderboard/leaderboard.md", str(tmp_path / fp[:6]))
        assert fp[:12] in open(logged).read()


@needs_data
def test_fingerprint_filter_and_unknown_experiment(tmp_path_factory, capsys):
    runs = shared_runs(tmp_path_factory)
    fp = runs.results["work-3"][0]["fingerprint"]
    assert main(["leaderboard", "--uri", runs.uri, "--fingerprint", fp[:8], "--no-log"]) == 0
    out = capsys.readouterr().out
    assert out.count("· fingerprint") == 1 and fp[:12] in out
    assert main(["leaderboard", "no-such-experiment", "--uri", runs.uri]) == 2
    assert "no MLflow experiment 'no-such-experiment'" in capsys.readouterr().err


def test_missing_sqlite_store_is_one_line(tmp_path, capsys):
    assert main(["leaderboard", "--uri", f"sqlite:///{tmp_path.as_posix()}/none.db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: MLflow store") and "no such database file" in err
    assert not (tmp_path / "none.db").exists()


def test_identical_evaluation_seeds_are_not_replicates():
    """A deterministic translator scored on a fixed held-out set gives the same value for every evaluation
    seed: six 'pairs' would otherwise make any gap significant (p = 2/64)."""
    fp = "D" * 64
    rows = [_run(fp, "a", "r", 1, {"ssim": 0.60}), _run(fp, "b", "r", 1, {"ssim": 0.50}),
            _run(fp, "c", "r", 1, {"ssim": 0.40})]
    per_seed = {("r-a-", "ssim"): [0.60] * 6, ("r-b-", "ssim"): [0.50] * 6,
                ("r-c-", "ssim"): [0.40, 0.41, 0.39, 0.40, 0.42, 0.38]}
    (g,) = _build(rows, per_seed, sort="ssim")
    top, mid = g.rows.iloc[0], g.rows.iloc[1]
    assert pd.isna(top["p_next"]) and top["test_next"].startswith("no test")
    assert render.p_cell(top).startswith("no test")
    # one row that varies: a real paired test over its evaluation noise
    assert mid["test_next"] == "paired" and mid["p_next"] == pytest.approx(2 / 64)


def test_a_metrics_own_randomness_over_identical_outputs_is_not_a_replicate():
    """Two deterministic translators (the same outputs on every evaluation seed) still get a different KID per
    seed, from KID's subset draws alone. Six consistent per-seed differences would be 'significant' (p = 2/64)
    although nothing about either model was re-drawn: the recorded outputs fact (layout.EVAL_OUTPUTS) stops the
    test, on the neighbour test and against a control. One row with varying outputs is a real paired test."""
    fp = "E" * 64
    kid_a = [0.300, 0.302, 0.299, 0.301, 0.303, 0.300]
    kid_b = [v + 0.002 + 0.0004 * i for i, v in enumerate(kid_a)]  # consistently worse, by varying amounts
    rows = [_run(fp, "a", "r", 1, {"kid/mean": float(np.mean(kid_a))}, eval_outputs="identical"),
            _run(fp, "b", "r", 1, {"kid/mean": float(np.mean(kid_b))}, eval_outputs="identical")]
    seeds = {("r-a-", "kid/mean"): kid_a, ("r-b-", "kid/mean"): kid_b}
    (g,) = _build(rows, seeds, sort="kid/mean")
    top = g.rows.iloc[0]
    assert top["entry"] == "a" and pd.isna(top["p_next"]), top["p_next"]
    assert top["test_next"] == leaderboard.NO_TEST_DETERMINISTIC
    (t,) = leaderboard.against_control(g, "b")
    assert np.isnan(t.p) and t.test == leaderboard.NO_TEST_DETERMINISTIC
    # the same values from runs that did not record the fact: the paired test runs (the old behaviour) ...
    (old,) = _build([{**r, "eval_outputs": ""} for r in rows], seeds, sort="kid/mean")
    assert old.rows.iloc[0]["p_next"] == pytest.approx(2 / 64)
    # ... and so it does when one of the two generated different outputs per seed
    mixed = [rows[0], {**rows[1], "eval_outputs": "varying"}]
    (m,) = _build(mixed, seeds, sort="kid/mean")
    assert m.rows.iloc[0]["test_next"] == "paired" and m.rows.iloc[0]["p_next"] == pytest.approx(2 / 64)
    # several training runs, one of which varied: the entry's row reads "varying"
    assert leaderboard._eval_outputs(pd.DataFrame({"eval_outputs": ["identical", "varying"]})) == "varying"
    assert leaderboard._eval_outputs(pd.DataFrame({"eval_outputs": ["identical", ""]})) == ""


def test_a_non_finite_value_is_not_tested():
    """A NaN difference compares False with every permuted mean, so the permutation p came out 0 ('significant')."""
    a = {"0": [1.0, 2.0, float("nan"), 4.0, 5.0, 6.0]}
    b = {"0": [1.1, 2.1, 3.1, 4.1, 5.1, 6.1]}
    p, test, _ = leaderboard.two_sample(a, b)
    assert np.isnan(p) and test.startswith("no test")
    p, test, _ = leaderboard.two_sample({"0": [1.0, 1.1], "1": [float("nan")]}, {"0": [2.0], "1": [2.2]})
    assert np.isnan(p) and test.startswith("no test")


def test_without_run_to_run_spread_the_permutation_p_decides():
    """Welch's t is undefined when neither row varies between its training runs; the exact permutation p is
    still a valid test and must be the cell's verdict, not a blank."""
    p, test, _ = leaderboard.two_sample({"0": [10.0], "1": [10.0]}, {"0": [20.0], "1": [20.0]})
    assert p == pytest.approx(1 / 3) and "Welch t undefined" in test
    row = pd.Series({"p_next": p, "test_next": test, "n_pairs_next": 0})
    assert render.p_cell(row).startswith("p=0.33 (2 vs 2 training seeds")
    # with spread, Welch's p is the verdict and the permutation p is printed beside it
    p, test, _ = leaderboard.two_sample({"0": [10.0], "1": [11.0]}, {"0": [20.0], "1": [21.0]})
    assert "Welch t; exact permutation p=0.33" in test and p == pytest.approx(
        significance.welch_p([10.0, 11.0], [20.0, 21.0]))


def test_an_infinite_score_reads_back_from_mlflow_as_logged(tmp_path):
    """MLflow's SQL store keeps +inf (PSNR of an output identical to its target) as the largest float64; the
    readers restore it, so a table shows inf rather than 1.80e+308 and the test refuses it rather than
    ranking on it."""
    import math

    from bench.reporting import store
    from bench.tracking import layout
    from bench.tracking.mlflow_tracker import Tracker

    uri = f"sqlite:///{(tmp_path / 'm.db').as_posix()}"
    t = Tracker(uri, "inf")
    parent = t.start_run("p", {layout.PROTOCOL: "p", layout.FINGERPRINT: "F" * 64})
    child = t.start_run("a", layout.child_tags("p", "F" * 64, "a", "pix2pix"), parent=parent)
    t.log_metrics(child, {"psnr": math.inf, "ssim": 0.5})
    for i, v in enumerate([math.inf, 30.0]):
        t.log_metrics(child, {"per_seed/psnr": v}, step=i)
    t.end(child)
    c = store.client(uri)
    (row,) = store.child_runs(c, store.experiment_ids(c, ["inf"])).to_dict("records")
    assert row["metrics"]["psnr"] == math.inf and row["metrics"]["ssim"] == 0.5
    assert store.per_seed(c, row["run_id"], "psnr") == [math.inf, 30.0]
    assert store.logged_value(-1.7976931348623157e308) == -math.inf and store.logged_value(1e308) == 1e308


def test_p_is_never_rounded_across_the_significance_line():
    assert significance.format_p(0.0496) == "0.0496" and significance.format_p(0.0504) == "0.05"
    assert significance.format_p(0.031) == "0.031" and significance.format_p(0.12345) == "0.12"
    assert significance.format_p(0.04999996) != "0.05"
    row = pd.Series({"p_next": 0.0496, "test_next": "paired", "n_pairs_next": 6})
    assert render.p_cell(row) == "p=0.0496 * (n=6)"


# --- every entry against a control -------------------------------------------------------------------

def test_holm_adjustment_matches_its_definition():
    # ascending 0.01, 0.02, 0.04 of a family of 3 (NaN untested): 3*0.01, max(., 2*0.02), max(., 1*0.04)
    adj = significance.holm([0.04, float("nan"), 0.01, 0.02])
    assert adj[2] == pytest.approx(0.03) and adj[3] == pytest.approx(0.04) and adj[0] == pytest.approx(0.04)
    assert np.isnan(adj[1])
    assert significance.holm([0.5, 0.6]) == [pytest.approx(1.0), pytest.approx(1.0)]  # capped at 1, monotone


def test_entries_against_the_control_use_training_seeds_and_holm():
    fp, rows, seeds = "D" * 64, [], {}
    rng = np.random.default_rng(0)
    # three training seeds x four evaluation seeds; 'strong' is far below the control, 'weak' a hair below
    # (inside the run-to-run spread), 'worse' far above
    offsets = {"plain": 0.0, "strong": -6.0, "weak": -0.2, "worse": 6.0}
    for entry, off in offsets.items():
        for ts in range(3):
            vals = list(20 + off + rng.normal(0, 1.0) + rng.normal(0, 0.1, 4))
            rows.append(_run(fp, entry, "r", 1, {"fid": float(np.mean(vals))}, train_seed=str(ts)))
            seeds[(f"r-{entry}-{ts}", "fid")] = vals
    (g,) = _build(rows, seeds)
    tests = {t.entry: t for t in leaderboard.against_control(g, "plain")}
    assert set(tests) == {"strong", "weak", "worse"}  # never the control against itself
    assert tests["strong"].better and not tests["worse"].better
    assert tests["strong"].test.startswith("3 vs 3 training seeds, Welch t")
    # Holm: the smallest raw p times 3, the next times 2, the largest times 1, kept monotone
    raw = sorted(t.p for t in tests.values())
    assert min(t.p_holm for t in tests.values()) == pytest.approx(min(1.0, 3 * raw[0]))
    assert all(t.p_holm >= t.p for t in tests.values())
    head, lines = render.control_lines(g, "plain")
    assert head == ["FID: beat `plain` with significance: `strong`; significantly worse: `worse`"]
    assert any(line.startswith("`weak` ") and "**not significant**" in line for line in lines)
    with pytest.raises(Exception, match="control entry 'nope' is not in the table"):
        leaderboard.against_control(g, "nope")


# --- literature claims against the table ------------------------------------------------------------

def _claim(better, than, metric="fid", **kw):
    from bench.protocol.schema import LiteratureClaim

    return LiteratureClaim(better=better, than=than, metric=metric, source="Someone et al. 2020, Table 1", **kw)


def test_literature_claims_use_the_metric_direction_and_the_training_seed_test():
    fp, rows, seeds = "E" * 64, [], {}
    rng = np.random.default_rng(2)
    # FID is lower-better, IS higher-better: 'good' is far better than 'base' on both, 'close' inside the noise
    offsets = {"base": 0.0, "good": -6.0, "close": -0.1}
    for entry, off in offsets.items():
        for ts in range(3):
            fid = list(20 + off + rng.normal(0, 1.0) + rng.normal(0, 0.1, 4))
            is_ = list(5 - off + rng.normal(0, 0.1, 4))
            rows.append(_run(fp, entry, "r", 1, {"fid": float(np.mean(fid)), "is": float(np.mean(is_))},
                             train_seed=str(ts)))
            seeds[(f"r-{entry}-{ts}", "fid")], seeds[(f"r-{entry}-{ts}", "is")] = fid, is_
    (g,) = _build(rows, seeds)
    checks = leaderboard.against_literature(g, [
        _claim("good", "base"), _claim("base", "good"), _claim("good", "base", "is"), _claim("base", "good", "is"),
        _claim("close", "base"), _claim("nope", "base"), _claim("good", "base", "ssim")])
    agrees = [c.agrees for c in checks]
    assert agrees[:4] == [True, False, True, False]  # lower FID is ahead, higher IS is ahead
    assert checks[0].p < 0.05 and checks[1].p == checks[0].p and checks[0].test.startswith("3 vs 3 training seeds, Welch t")
    assert checks[4].p > 0.05  # a lead inside the run-to-run spread
    assert agrees[5:] == [None, None] and "no row `nope`" in checks[5].missing and "ssim" in checks[6].missing
    # Holm over the five tested claims: the smallest p times 5, ..., monotone; verdicts on the adjusted p
    tested = [c for c in checks if not np.isnan(c.p)]
    assert len(tested) == 5 and all(c.p_holm >= c.p for c in tested)
    assert min(c.p_holm for c in tested) == pytest.approx(min(1.0, 5 * min(c.p for c in tested)))
    lines = render.literature_lines(g, checks)
    assert "agrees; significant, p=" in lines[0] and "**contradicts the source**; significant, p=" in lines[1]
    assert "Holm-adjusted over the 5 claims tested" in lines[0]
    assert "Why: not investigated" in lines[1] and "Why:" not in lines[0]
    assert lines[5].endswith("Not checked: no row `nope` in this run.")
    # evidence under an agreeing claim is on record, not a "why" of a contradiction that is not there
    (line,) = render.literature_lines(g, leaderboard.against_literature(g, [_claim("good", "base", evidence="E.")]))
    assert line.endswith("Evidence on record: E.") and "Why" not in line
    (line,) = render.literature_lines(g, leaderboard.against_literature(g, [_claim("base", "good", evidence="E.")]))
    assert line.endswith("Why: E.")


def test_a_lead_significant_only_before_adjustment_is_not_called_significant():
    """Raw p under 0.05 but Holm-adjusted over the claims above it: the verdict is the adjusted one."""
    fp, rows, seeds = "F" * 64, [], {}
    for entry, vals in {"a": [10.0, 10.5, 11.0], "b": [11.5, 12.0, 12.5], "c": [10.0, 14.0, 12.0]}.items():
        for ts, v in enumerate(vals):
            rows.append(_run(fp, entry, "r", 1, {"fid": v}, train_seed=str(ts)))
            seeds[(f"r-{entry}-{ts}", "fid")] = [v - 0.01, v + 0.01]
    (g,) = _build(rows, seeds)
    checks = leaderboard.against_literature(g, [_claim("a", "b"), _claim("a", "c"), _claim("c", "b")])
    assert checks[0].p < 0.05 <= checks[0].p_holm  # Welch on 10.5 ± 0.5 vs 12 ± 0.5 (p = 0.021), times 3
    line = render.literature_lines(g, checks)[0]
    assert "agrees; **not significant**, p=0.021 (3 vs 3" in line and "p=0.021 *" not in line  # no star: not the verdict
    assert "Holm-adjusted over the 3 claims tested, p=0.064." in line


def test_literature_ties_nan_means_and_baseline_rows_are_not_verdicts():
    fp, rows, seeds = "G" * 64, [], {}
    for entry, v in {"x": 5.0, "y": 5.0}.items():  # identical means: a tie
        rows.append(_run(fp, entry, "r", 1, {"fid": v, "is": v}))
        seeds[(f"r-{entry}-", "fid")] = [v, v]
    rows.append(_run(fp, "z", "r", 1, {"fid": float("nan")}))
    seeds[("r-z-", "fid")] = [float("nan"), float("nan")]
    real = _run(fp, "real_data", "r", 1, {"fid": 1.0})
    real["baseline"] = "real_data"
    rows.append(real)
    seeds[("r-real_data-", "fid")] = [1.0, 1.0]
    for ts in range(3):
        rows.append(_run(fp, "w", "r", 1, {"fid": 9.0 + ts}, train_seed=str(ts)))
        seeds[(f"r-w-{ts}", "fid")] = [9.0 + ts, 9.0 + ts]
    (g,) = _build(rows, seeds)
    tie, nan_a, nan_b, base = leaderboard.against_literature(g, [
        _claim("x", "y"), _claim("z", "x"), _claim("x", "z"), _claim("real_data", "w")])
    assert tie.tie and tie.agrees is None and not tie.missing
    lines = render.literature_lines(g, [tie])
    assert "a tie, neither row ahead" in lines[0] and "contradicts" not in lines[0] and "Why" not in lines[0]
    # NaN would otherwise "agree" with a claim and with its opposite
    assert nan_a.agrees is None and nan_b.agrees is None and "not finite" in nan_a.missing
    assert base.agrees is True and base.test == leaderboard.NO_TEST_BASELINE and np.isnan(base.p)


def test_a_literature_claim_names_entries_and_a_metric_with_a_direction():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="compares two entries"):
        _claim("a", "a")
    # an unknown metric is refused by `bench validate` (tests/test_protocol.py); a table cannot check it either
    fp = "H" * 64
    (g,) = _build([_run(fp, "a", "r", 1, {"fid": 1.0}), _run(fp, "b", "r", 1, {"fid": 2.0})], {})
    (check,) = leaderboard.against_literature(g, [_claim("a", "b", "fdi")])
    assert check.agrees is None and check.missing == "fdi has no known direction"


def test_an_untrained_floor_is_tested_against_the_control_but_stays_out_of_the_holm_family():
    """A protocol compares k treatments with a control; its untrained entry answers another question (did the
    control learn anything?), and counting it would multiply every treatment's p by k + 1 instead of k."""
    fp, rows, seeds = "D" * 64, [], {}
    rng = np.random.default_rng(1)
    offsets = {"plain": 0.0, "a": -3.0, "b": 0.5, "untrained": 40.0}
    for entry, off in offsets.items():
        for ts in range(3):
            vals = list(20 + off + rng.normal(0, 1.0) + rng.normal(0, 0.1, 4))
            rows.append(_run(fp, entry, "r", 1, {"fid": float(np.mean(vals))}, train_seed=str(ts),
                             untrained=entry == "untrained"))
            seeds[(f"r-{entry}-{ts}", "fid")] = vals
    (g,) = _build(rows, seeds)
    tests = {t.entry: t for t in leaderboard.against_control(g, "plain")}
    assert set(tests) == {"a", "b", "untrained"}
    assert tests["untrained"].floor and not tests["a"].floor and np.isnan(tests["untrained"].p_holm)
    # the family is {a, b}: the smaller p doubled, never tripled
    pa, pb = tests["a"].p, tests["b"].p
    assert min(tests["a"].p_holm, tests["b"].p_holm) == pytest.approx(min(1.0, 2 * min(pa, pb)))
    assert [tests["a"].p_holm, tests["b"].p_holm] == pytest.approx(significance.holm([pa, pb]))
    # the same rows without the mark: three in the family, as before the tag existed
    unmarked = [{**r, "untrained": False} for r in rows]
    (g3,) = _build(unmarked, seeds)
    t3 = {t.entry: t for t in leaderboard.against_control(g3, "plain")}
    pu = tests["untrained"].p
    assert [t3["a"].p_holm, t3["b"].p_holm] == pytest.approx(significance.holm([pa, pb, pu])[:2])
    assert not np.isnan(t3["untrained"].p_holm)
    head, lines = render.control_lines(g, "plain")
    assert head[0].endswith("; `plain` beats the untrained floor `untrained` with significance")
    # a floor significantly AHEAD of the control is said so, not read as "not significant"
    flipped = [{**r, "metrics": {"fid": r["metrics"]["fid"] - (80.0 if r["entry"] == "untrained" else 0.0)}}
               for r in rows]
    shifted = {k: [v - 80.0 for v in vals] if k[0].startswith("r-untrained-") else vals for k, vals in seeds.items()}
    (gf,) = _build(flipped, shifted)
    head_f, _ = render.control_lines(gf, "plain")
    assert head_f[0].endswith("; `plain` is **significantly worse** than the untrained floor `untrained`"), head_f
    line = next(x for x in lines if x.startswith("`untrained` worse than `plain`"))
    assert "the untrained floor, outside the Holm family" in line and "Holm-adjusted" not in line


def test_a_protocol_control_must_name_an_entry_and_stays_out_of_the_fingerprint():
    from bench.protocol.load import canonical
    from bench.protocol.schema import Protocol

    base = dict(name="c", dataset={"name": "mnist", "resolution": 28, "train_size": 10, "eval_size": 10},
                entries=[{"name": "a", "zoo": "mnist_gan", "train": {"steps": 1}},
                         {"name": "b", "zoo": "mnist_gan", "train": {"steps": 1}}],
                evaluation={"n_samples": 10, "seeds": [0]})
    assert canonical(Protocol(**base, control="a")) == canonical(Protocol(**base))
    with pytest.raises(ValueError, match="control 'z' is not an entry; entries: a, b"):
        Protocol(**base, control="z")


# --- a database file that is not an MLflow store is refused before MLflow opens it ---------------------

def _sqlite_with(path, *tables):
    import sqlite3

    con = sqlite3.connect(path)
    with con:
        for t in tables:
            con.execute(f"CREATE TABLE {t} (x INTEGER)")
    con.close()


@pytest.mark.parametrize("make,what", [
    (lambda p: p.write_bytes(b""), "is not an MLflow store"),
    (lambda p: p.write_bytes(b"a text file, not a database\n" * 50), "is not an SQLite database"),
    (lambda p: _sqlite_with(p, "foo"), "is not an MLflow store"),
    # MLflow's own tables but not all of them: opening it, MLflow would create the rest (a store of an older MLflow)
    (lambda p: _sqlite_with(p, "alembic_version", "runs", "experiments"), "opening it would migrate"),
], ids=["empty", "text", "other-sqlite", "partial"])
def test_readers_never_change_a_database_that_is_not_an_mlflow_store(tmp_path, capfd, make, what):
    """`bench leaderboard` and `bench check` only read: MLflow, handed an empty or foreign SQLite file, builds
    its schema in it (a 0-byte file became a 954 KB store, a user's database gained MLflow's tables)."""
    from tests.report_runs import BASELINE, write_protocol

    db = tmp_path / "store" / "x.db"
    db.parent.mkdir()
    make(db)
    before = db.read_bytes()
    uri = f"sqlite:///{db.as_posix()}"
    protocol = write_protocol(tmp_path / "p")
    for argv in (["leaderboard", "--no-log", "--uri", uri],
                 ["check", str(protocol), "--baseline", str(BASELINE), "--uri", uri]):
        assert main(argv) == 2
        err = capfd.readouterr().err
        assert err.startswith("bench: error: MLflow ") and err.count("\n") == 1, err
        assert what in err and "left as it is" in err
        assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["x.db"]  # no journal, no mlruns/


def test_a_sqlite_uri_naming_a_folder_is_one_line_at_once(tmp_path, capfd, monkeypatch):
    """MLflow's own attempt on a folder retries its connection for minutes: the refusal must come before MLflow
    opens any database, which is counted here (no engine is created), not timed."""
    import sqlalchemy

    engines = []
    real = sqlalchemy.create_engine
    monkeypatch.setattr(sqlalchemy, "create_engine", lambda *a, **k: engines.append(a) or real(*a, **k))
    assert main(["leaderboard", "--no-log", "--uri", f"sqlite:///{tmp_path.as_posix()}"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("bench: error: MLflow ") and err.count("\n") == 1 and "is a folder" in err, err
    assert engines == []
    assert list(tmp_path.iterdir()) == []

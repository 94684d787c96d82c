"""Training seeds (`train_seeds`): each entry is trained once per seed, the fingerprint covers the set,
results / MLflow / the leaderboard carry the seed, cells are mean ± sample std, and the test between
neighbouring rows treats the training run as the unit (evaluation seeds nested in it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.errors import BenchError
from bench.protocol.load import canonical, fingerprint, load_protocol
from bench.protocol.schema import Protocol
from bench.reporting import leaderboard, render, significance, table
from bench.reporting.store import CHILD_COLUMNS
from bench.runner.seeding import derive, entry_seed
from bench.tracking import results as results_mod
from tests.conftest import needs_data, tiny_protocol, write_protocol

BASE = {
    "name": "seeds", "seed": 0,
    "dataset": {"name": "mnist", "resolution": 28, "train_size": 100, "eval_size": 50},
    "entries": [{"name": "a", "zoo": "mnist_gan", "train": {"steps": 10}},
                {"name": "b", "zoo": "mnist_gan", "train": {"steps": 10}},
                {"name": "loaded", "zoo": "mnist_gan", "checkpoint": "x.pt"}],
    "evaluation": {"n_samples": 10, "seeds": [0, 1]},
}


def _protocol(**top) -> Protocol:
    raw = json.loads(json.dumps(BASE))
    entry_overrides = top.pop("entry_seeds", {})
    for e in raw["entries"]:
        if e["name"] in entry_overrides:
            e["train_seeds"] = entry_overrides[e["name"]]
    raw.update(top)
    return Protocol.model_validate(raw)


# --- schema, fingerprint, seeds --------------------------------------------------------------------------

def test_training_seeds_resolve_per_entry_and_are_validated():
    p = _protocol(train_seeds=[2, 0, 1], entry_seeds={"b": [5]})
    a, b, loaded = p.entries
    assert p.train_seeds_of(a) == [2, 0, 1] and p.train_seeds_of(b) == [5]
    assert p.train_seeds_of(loaded) == [None]  # a loaded checkpoint is not trained: one run
    assert _protocol().train_seeds_of(a) == [None]  # default: the single untagged run
    for bad, msg in (([0, 0], "distinct"), ([-1], r"\[0, 2\*\*62\)"), ([], "at least 1")):
        with pytest.raises(Exception, match=msg):
            _protocol(train_seeds=bad)
    with pytest.raises(Exception, match="not to a loaded checkpoint"):
        _protocol(entry_seeds={"loaded": [0, 1]})


def test_default_protocols_keep_their_canonical_form_and_the_set_enters_the_fingerprint():
    default = canonical(_protocol())
    blob = json.dumps(default)
    assert "train_seeds" not in blob  # unset: the canonical form (so every earlier fingerprint) is unchanged
    seeded = canonical(_protocol(train_seeds=[0, 1, 2]))
    assert "train_seeds" not in seeded  # resolved into the entries that train
    assert [e.get("train_seeds") for e in seeded["entries"]] == [[0, 1, 2], [0, 1, 2], None]
    for e in seeded["entries"]:
        e.pop("train_seeds", None)
    assert seeded == default  # nothing else moved

    fp = lambda p: fingerprint(p, "data", "extractor", {"loaded": "c" * 64})  # noqa: E731
    assert fp(_protocol(train_seeds=[0, 1, 2])) != fp(_protocol())
    assert fp(_protocol(train_seeds=[2, 1, 0])) == fp(_protocol(train_seeds=[0, 1, 2]))  # a set: order is free
    assert fp(_protocol(train_seeds=[0, 1])) != fp(_protocol(train_seeds=[0, 1, 2]))
    # The protocol's list written into every training entry is the same protocol.
    assert fp(_protocol(entry_seeds={"a": [0, 1, 2], "b": [0, 1, 2]})) == fp(_protocol(train_seeds=[0, 1, 2]))
    assert fp(_protocol(train_seeds=[0, 1, 2], entry_seeds={"b": [0, 1]})) != fp(_protocol(train_seeds=[0, 1, 2]))


def test_shipped_protocols_have_no_training_seeds_in_their_canonical_form():
    from tests.conftest import REPO

    for path in sorted((REPO / "protocols").glob("*.yaml")):
        p = load_protocol(path).protocol
        if p.train_seeds is None and all(e.train_seeds is None for e in p.entries):
            assert "train_seeds" not in json.dumps(canonical(p)), path.name


def test_default_seed_derivation_is_unchanged_and_training_seeds_are_distinct():
    # Computed before training seeds existed: the seed every earlier run of entry 'mnist_gan' trained from.
    assert derive(0, "entry", "mnist_gan") == 3484026373045770702
    assert entry_seed(0, "mnist_gan") == 3484026373045770702
    assert entry_seed(0, "mnist_gan", 0) == entry_seed(0, "mnist_gan")  # training seed 0 = the default run
    seeds = {entry_seed(0, name, t) for name in ("mnist_gan", "dcgan") for t in range(5)}
    assert len(seeds) == 10  # distinct per training seed and per entry
    assert entry_seed(1, "mnist_gan", 1) != entry_seed(0, "mnist_gan", 1)


def test_resume_knows_runs_by_entry_and_training_seed(tmp_path):
    path = tmp_path / "results.jsonl"
    for seed, status in ((0, "FINISHED"), (1, "FAILED"), (2, "FINISHED")):
        results_mod.append(path, results_mod.EvalResult("p", "f" * 64, "a", "mnist_gan", status, train_seed=seed))
    results_mod.append(path, results_mod.EvalResult("p", "f" * 64, "b", "mnist_gan", "FINISHED"))
    done = results_mod.finished_rows(path, "f" * 64)
    assert set(done) == {("a", 0), ("a", 2), ("b", None)}
    assert done[("a", 2)]["train_seed"] == 2


# --- statistics ------------------------------------------------------------------------------------------

def test_smallest_attainable_p_values_stated_in_the_readme():
    assert significance.min_attainable_p(2) == pytest.approx(0.5)
    assert significance.min_attainable_p(5) == pytest.approx(0.0625)
    assert significance.min_attainable_p(6) == pytest.approx(0.03125)
    assert significance.min_attainable_p_unpaired(3, 3) == pytest.approx(0.1)
    assert significance.min_attainable_p_unpaired(4, 4) == pytest.approx(2 / 70)
    assert significance.min_attainable_p_unpaired(3, 5) == pytest.approx(1 / 56)
    assert significance.min_attainable_p_unpaired(2, 2) == pytest.approx(1 / 3)
    assert significance.min_attainable_p_unpaired(5, 5) == pytest.approx(2 / 252)  # 0.0079 in the table
    # ... and the tests reach them on perfectly separated values
    assert significance.unpaired_permutation_p([1, 2, 3], [10, 11, 12]) == pytest.approx(0.1)
    assert significance.unpaired_permutation_p([1, 2, 3, 4], [10, 11, 12, 13]) == pytest.approx(2 / 70)
    assert significance.unpaired_permutation_p([1, 2, 3], [10, 11, 12, 13, 14]) == pytest.approx(1 / 56)
    assert significance.unpaired_permutation_p([1, 2, 3], [1, 2, 3]) == 1.0


def test_unpaired_permutation_p_matches_brute_force_and_is_reproducible_when_sampled():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 4), rng.normal(0.8, 1, 3)
    pooled = np.concatenate([a, b])
    import itertools

    obs = abs(a.mean() - b.mean())
    hits = [abs(pooled[list(i)].mean() - np.delete(pooled, list(i)).mean()) >= obs - 1e-12
            for i in itertools.combinations(range(7), 4)]
    assert significance.unpaired_permutation_p(a, b) == pytest.approx(np.mean(hits))
    big_a, big_b = rng.normal(0, 1, 12), rng.normal(1.5, 1, 12)  # C(24, 12) splits: sampled
    p = significance.unpaired_permutation_p(big_a, big_b)
    assert p == significance.unpaired_permutation_p(big_a, big_b) and 0 < p < 0.05


def _run(entry, train_seed, fid):
    return {"run_id": f"{entry}-{train_seed}", "parent_run_id": "r", "experiment": "exp", "protocol": "p",
            "fingerprint": "E" * 64, "entry": entry, "zoo": "mnist_gan", "train_seed": train_seed,
            "status": "FINISHED", "failure": "", "start_time": 1, "end_time": 2, "metrics": {"fid": fid}}


def _board(per_entry: dict[str, dict[str, list[float]]]):
    """entry -> training seed -> per-evaluation-seed FID values -> one leaderboard group."""
    rows, seeds = [], {}
    for entry, by_seed in per_entry.items():
        for ts, vals in by_seed.items():
            rows.append(_run(entry, ts, float(np.mean(vals))))
            seeds[(f"{entry}-{ts}", "fid")] = vals
    df = pd.DataFrame(rows, columns=CHILD_COLUMNS)
    return leaderboard.build(df, lambda rid, key: seeds.get((rid, key), []))[0]


def _seeded(n_train: int, n_eval: int, offset: float) -> dict[str, list[float]]:
    # Training runs spread far more than evaluation seeds within a run: the realistic GAN picture.
    return {str(t): [offset + 3.0 * t + 0.01 * i for i in range(n_eval)] for t in range(n_train)}


def test_cells_are_mean_and_sample_std_over_training_times_evaluation_seeds():
    g = _board({"good": _seeded(3, 4, 10.0), "bad": _seeded(3, 4, 20.0)})
    good = g.rows.set_index("entry").loc["good"]
    pooled = [v for vals in _seeded(3, 4, 10.0).values() for v in vals]
    assert good["n_train"] == 3 and good["n_eval"] == 4
    assert good["fid/mean"] == pytest.approx(np.mean(pooled))
    assert good["fid/std"] == pytest.approx(np.std(pooled, ddof=1))
    assert good["fid/std"] != pytest.approx(np.std(pooled))  # not the population std
    text = render.terminal([g])
    assert "3×4" in text and f"{np.mean(pooled):.2f} ± {np.std(pooled, ddof=1):.2f}" in text
    assert "sample std" in render.LEGEND and "population std" not in render.LEGEND


def _welch(a: dict, b: dict) -> float:
    from scipy import stats

    return stats.ttest_ind([np.mean(v) for v in a.values()], [np.mean(v) for v in b.values()], equal_var=False).pvalue


def test_three_training_seeds_can_reach_p_005_and_the_run_is_the_unit():
    # Perfectly separated, 3 runs x 20 evaluation seeds each. The unit is the training run (its evaluation
    # seeds averaged): Welch's t on 3 vs 3 run means gives p ~ 0.001, not the ~1e-30 that pooling 60
    # evaluation values as if independent would claim; the exact permutation p (never below 0.1) is shown.
    good, bad = _seeded(3, 20, 10.0), _seeded(3, 20, 30.0)
    g = _board({"good": good, "bad": bad})
    best = g.rows.iloc[0]
    assert best["entry"] == "good" and best["test_next"].startswith("3 vs 3 training seeds, Welch t")
    assert best["p_next"] == pytest.approx(_welch(good, bad)) and best["p_next"] < significance.ALPHA
    pooled = [v for vals in good.values() for v in vals], [v for vals in bad.values() for v in vals]
    from scipy import stats
    assert best["p_next"] > 1e6 * stats.ttest_ind(*pooled, equal_var=False).pvalue
    assert "exact permutation p=0.1" in render.markdown([g])


def test_four_training_seeds_are_significant_and_overlapping_runs_are_not():
    good, bad = _seeded(4, 2, 10.0), _seeded(4, 2, 30.0)
    g = _board({"good": good, "bad": bad})
    best = g.rows.iloc[0]
    assert best["p_next"] == pytest.approx(_welch(good, bad)) and best["p_next"] < significance.ALPHA
    assert " * (4 vs 4 training seeds, Welch t; exact permutation p=0.029)" in render.terminal([g])
    # Runs that interleave (the entries' training spreads overlap) are not called different.
    g = _board({"good": _seeded(4, 2, 10.0), "bad": _seeded(4, 2, 11.0)})
    assert g.rows.iloc[0]["p_next"] > 0.5


def test_unequal_training_seed_sets_compare_unpaired_and_one_seed_keeps_the_paired_eval_test():
    g = _board({"good": _seeded(3, 2, 10.0), "bad": _seeded(5, 2, 30.0)})
    assert g.rows.iloc[0]["p_next"] == pytest.approx(_welch(_seeded(3, 2, 10.0), _seeded(5, 2, 30.0)))
    assert g.rows.iloc[0]["test_next"] == "3 vs 5 training seeds, Welch t; exact permutation p=0.018"
    # One training seed each: the evaluation seeds (same latent draws) pair up, as before.
    one = {"good": {"": [1.0, 1.1, 0.9, 1.2, 1.0, 1.05]}, "bad": {"": [2.0] * 6}}
    g = _board(one)
    best = g.rows.iloc[0]
    assert best["test_next"] == "paired" and best["n_pairs_next"] == 6 and best["p_next"] == pytest.approx(2 / 64)
    assert "p=0.031 * (n=6)" in render.markdown([g])
    assert best["fid/std"] == pytest.approx(np.std(one["good"][""], ddof=1))


def test_comparison_table_shows_training_seeds_and_an_undefined_std():
    rows = [{"entry": "a", "status": "FINISHED", "train_seed": 1,
             "metrics": {"fid": {"mean": 12.0, "std": None, "per_seed": [12.0]}}},
            {"entry": "b", "status": "FINISHED", "metrics": {"fid": {"mean": 10.0, "std": 0.5, "per_seed": [1, 2]}}}]
    md = table.markdown(rows)
    assert "a (training seed 1)" in md and "12.00 ± —" in md and "| b | 10.00 ± 0.50" in md
    assert table.to_csv(rows).splitlines()[:2] == ["entry,train_seed,status,fid/mean,fid/std", "a,1,FINISHED,12.0,"]
    assert "train_seed" not in table.to_csv(rows[1:])  # protocols without training seeds: the old columns
    assert "| FID ↓ |" in md  # no extractor recorded: the plain label
    rows[0]["info"] = {"extractor": "judge:cifar10"}
    assert "| FID (judge:cifar10) ↓ |" in table.markdown(rows)  # a judge: the feature space is named


# --- end to end on real MNIST ---------------------------------------------------------------------------

ENTRIES = """  - name: trained
    zoo: mnist_gan
    train: {steps: 100, batch_size: 32, checkpoint_every: 100, log_every: 50}
  - name: untrained
    zoo: mnist_gan
    train: {steps: 0}
    train_seeds: [0, 1, 2, 3, 4]
"""


def _rows(workdir):
    """results.jsonl rows of the entries (not the protocol's real-data reference row)."""
    rows = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
    return [r for r in rows if r["entry"] in ("trained", "untrained")]


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train-seeds")
    proto = tiny_protocol(tmp, name="tiny-seeds", entries=ENTRIES, n_samples=200)
    write_protocol(proto, proto.read_text() + "train_seeds: [0, 1, 2]\n")
    assert main(["run", str(proto), "--workdir", str(tmp / "work")]) == 0
    return tmp, proto


@needs_data
def test_three_training_seeds_end_to_end_results_and_checkpoints(seeded_run):
    tmp, _ = seeded_run
    rows = _rows(tmp / "work")
    by_entry = {e: sorted((r for r in rows if r["entry"] == e), key=lambda r: r["train_seed"])
                for e in ("trained", "untrained")}
    assert [r["train_seed"] for r in by_entry["trained"]] == [0, 1, 2]
    assert [r["train_seed"] for r in by_entry["untrained"]] == [0, 1, 2, 3, 4]
    assert len(rows) == 8 and all(r["status"] == "FINISHED" for r in rows)
    assert len({r["fingerprint"] for r in rows}) == 1
    trained = by_entry["trained"]
    # One checkpoint folder per training seed, different weights in each.
    assert [r["checkpoint"].split("/")[-3:] for r in trained] == [["trained", f"seed-{t}", "latest.pt"]
                                                                   for t in (0, 1, 2)]
    assert len({r["checkpoint_sha256"] for r in trained}) == 3
    assert len({r["metrics"]["fid"]["mean"] for r in trained}) == 3
    for r in rows:  # sample std over the evaluation seeds
        for m in r["metrics"].values():
            assert m["std"] == pytest.approx(float(np.std(m["per_seed"], ddof=1)), rel=1e-12, abs=1e-15)


@needs_data
def test_three_training_seeds_end_to_end_mlflow_tags(seeded_run):
    from mlflow.tracking import MlflowClient

    tmp, _ = seeded_run
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp.as_posix()}/mlflow.db")
    exp = client.get_experiment_by_name("tiny-seeds")
    children = [r for r in client.search_runs([exp.experiment_id])  # entry runs, not the real-data row
                if "mlflow.parentRunId" in r.data.tags and not r.data.tags.get("bench.baseline")]
    tags = sorted((c.data.tags["bench.entry"], int(c.data.tags["bench.train_seed"])) for c in children)
    assert tags == [("trained", t) for t in range(3)] + [("untrained", t) for t in range(5)]
    rows = {(r["entry"], r["train_seed"]): r for r in _rows(tmp / "work")}
    for c in children:
        row = rows[(c.data.tags["bench.entry"], int(c.data.tags["bench.train_seed"]))]
        assert c.data.metrics["fid"] == pytest.approx(row["metrics"]["fid"]["mean"], rel=1e-12)
        assert c.data.metrics["fid/seed_std"] == pytest.approx(row["metrics"]["fid"]["std"], rel=1e-12)


@needs_data
def test_three_training_seeds_end_to_end_leaderboard(seeded_run, capsys):
    tmp, proto = seeded_run
    capsys.readouterr()
    assert main(["leaderboard", str(proto), "--no-log", "--csv", str(tmp / "lb.csv")]) == 0
    out = capsys.readouterr().out
    assert "3×2" in out and "5×2" in out  # n = training seeds × evaluation seeds
    lb = pd.read_csv(tmp / "lb.csv").set_index("entry")
    assert lb.loc["trained", "n_train"] == 3 and lb.loc["untrained", "n_train"] == 5
    rows = _rows(tmp / "work")
    pooled = [v for r in rows if r["entry"] == "trained" for v in r["metrics"]["fid"]["per_seed"]]
    assert lb.loc["trained", "fid/mean"] == pytest.approx(np.mean(pooled), rel=1e-12)
    assert lb.loc["trained", "fid/std"] == pytest.approx(np.std(pooled, ddof=1), rel=1e-9)
    # 100 steps beat no training in every run: 3 vs 5 training runs, Welch's t on the run means (every
    # permutation split but the observed one is less extreme: exact p = 1 / C(8, 3) = 0.018).
    assert lb.loc["trained", "rank"] == 1
    means = {e: [np.mean(r["metrics"]["fid"]["per_seed"]) for r in rows if r["entry"] == e]
             for e in ("trained", "untrained")}
    from scipy import stats
    welch = stats.ttest_ind(means["trained"], means["untrained"], equal_var=False).pvalue
    assert lb.loc["trained", "p_next"] == pytest.approx(welch)  # how small depends on the runs: not asserted
    assert "(3 vs 5 training seeds, Welch t; exact permutation p=0.018)" in out


@needs_data
def test_resume_skips_every_finished_training_seed(seeded_run, capsys):
    tmp, proto = seeded_run
    before = (tmp / "work" / "results.jsonl").read_text()
    capsys.readouterr()
    assert main(["run", str(proto), "--workdir", str(tmp / "work"), "--resume"]) == 0
    err = capsys.readouterr().err
    assert (tmp / "work" / "results.jsonl").read_text() == before  # nothing retrained, nothing appended
    skipped = [line for line in err.splitlines() if line.startswith("[bench] entry ") and "finished earlier" in line]
    assert len(skipped) == 8
    assert "entry trained (training seed 2): finished earlier" in err


@needs_data
def test_training_seed_zero_is_the_default_run(seeded_run, tmp_path):
    """A protocol without train_seeds trains exactly what training seed 0 trains (same weights)."""
    from bench.runner import checkpoint

    tmp, _ = seeded_run
    entries = """  - name: trained
    zoo: mnist_gan
    train: {steps: 100, batch_size: 32, checkpoint_every: 100, log_every: 50}
"""
    proto = tiny_protocol(tmp_path, name="tiny-default", entries=entries, n_samples=200)
    assert main(["run", str(proto), "--workdir", str(tmp_path / "work")]) == 0
    (row,) = [r for r in _rows(tmp_path / "work") if r["entry"] == "trained"]
    assert row["train_seed"] is None and row["checkpoint"].split("/")[-2:] == ["trained", "latest.pt"]
    seeded = {r["train_seed"]: r for r in _rows(tmp / "work") if r["entry"] == "trained"}
    default = checkpoint.read(Path(row["checkpoint"]))["modules"]
    for t, same in ((0, True), (1, False)):
        other = checkpoint.read(Path(seeded[t]["checkpoint"]))["modules"]
        equal = all(torch.equal(default[n][k], other[n][k]) for n in default for k in default[n])
        assert equal is same, t


def test_bad_training_seeds_in_a_file_are_one_line(tmp_path):
    path = write_protocol(tmp_path / "p.yaml", """
name: p
dataset: {name: mnist, resolution: 28, train_size: 100, eval_size: 50}
entries: [{name: a, zoo: mnist_gan, train: {steps: 1}}]
evaluation: {n_samples: 10, seeds: [0]}
train_seeds: [1, 1]
""")
    with pytest.raises(BenchError, match="training seeds must be distinct"):
        load_protocol(path)
    assert math.isfinite(significance.sample_std([1.0, 2.0])) and math.isnan(significance.sample_std([1.0]))


@pytest.mark.parametrize("line, msg", [("5", "a JSON int, not an object"), ("null", "a JSON NoneType"),
                                       ('{"fingerprint": "F", "status": "FINISHED"}', "no entry name"),
                                       ('{"fingerprint": "F", "status": "FINISHED", "entry": "a", "metrics": 5}',
                                        "'metrics' is not a mapping"),
                                       ('{"fingerprint": "F", "status": "FINISHED", "entry": "a", '
                                        '"metrics": {"fid": {"mean": "abc"}}}', "metric 'fid' has no numeric mean"),
                                       ("[" * 100000 + "]" * 100000, "nested too deeply")])  # a RecursionError
def test_a_results_row_that_is_valid_json_but_not_a_result_is_one_clear_error(tmp_path, line, msg):
    """A torn line (a kill mid-append) is skipped wherever it sits; valid JSON of the wrong shape was a traceback
    in --resume (AttributeError, KeyError) after the MLflow parent run had been opened."""
    from bench.errors import BenchError
    from bench.tracking.results import finished_rows

    good = '{"fingerprint": "F", "status": "FINISHED", "entry": "b", "train_seed": null, "metrics": {"fid": {"mean": 1.0}}}'
    path = tmp_path / "results.jsonl"
    path.write_text(f'{good}\n{{"torn": \n{good}\n')
    assert set(finished_rows(path, "F")) == {("b", None)}
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(BenchError, match=f"line 2: not a ganbench result row \\({msg}"):
        finished_rows(path, "F")
    path.write_text(f'{good}\n{line.replace(chr(34) + "F" + chr(34), chr(34) + "G" + chr(34))}\n')
    if line.startswith("{"):  # another fingerprint's rows are not this run's business
        assert set(finished_rows(path, "F")) == {("b", None)}

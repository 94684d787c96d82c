"""The regression gate: `bench check` / `bench baseline update`, and the pytest plugin doing the same."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import regression
from bench.cli import main
from bench.errors import BenchError
from bench.pytest_plugin import bench_regression  # noqa: F401 - the plugin's fixture, used below
from tests.conftest import needs_data, tiny_protocol, write_protocol
from tests.report_runs import BASELINE, shared_runs

pytest_plugins = ["pytester"]


def _scores(**entries):
    return regression.RunScores("sqlite:///x.db", "run1", "p", "f" * 64, "abc", {
        e: {"status": "FINISHED", "failure": "", "metrics": {k: {"mean": v, "std": 0.0, "n": 2} for k, v in m.items()}}
        for e, m in entries.items()})


def _baseline(**kw):
    return regression.make_baseline(_scores(g={"fid": 100.0, "is": 2.0}), {"default": {"rel": 0.05, "abs": 0.0},
                                                                           **kw})


def _with(keys: str, value) -> dict:
    """The sound `_baseline()` with the value at the dotted path `keys` set to `value`."""
    baseline = _baseline()
    *parents, last = keys.split(".")
    node = baseline
    for key in parents:
        node = node[key]
    node[last] = value
    return baseline


def test_direction_and_tolerance_decide_the_verdict():
    base = _baseline()
    r = regression.compare(base, _scores(g={"fid": 104.9, "is": 1.91}))
    assert [ln.verdict for ln in r.lines] == ["ok", "ok"] and not r.failed
    r = regression.compare(base, _scores(g={"fid": 95.1, "is": 2.09}))  # better, but within tolerance
    assert [ln.verdict for ln in r.lines] == ["ok", "ok"] and not r.failed
    r = regression.compare(base, _scores(g={"fid": 105.1, "is": 2.5}))
    assert [(ln.key, ln.verdict) for ln in r.lines] == [("fid", "WORSE"), ("is", "SUSPICIOUS")] and r.failed
    r = regression.compare(base, _scores(g={"fid": 50.0, "is": 1.0}))
    assert [ln.verdict for ln in r.lines] == ["SUSPICIOUS", "WORSE"] and r.failed
    loose = _baseline(fid={"abs": 10.0})
    assert not regression.compare(loose, _scores(g={"fid": 109.0, "is": 2.0})).failed
    assert not regression.compare(loose, _scores(g={"fid": 91.0, "is": 2.0})).failed  # the same tolerance both ways
    assert regression.compare(loose, _scores(g={"fid": 89.0, "is": 2.0})).failed


def test_an_improvement_beyond_tolerance_fails_unless_allowed():
    base = _baseline()
    collapsed = _scores(g={"fid": 0.0, "is": 2.0})  # broken features: FID 0 is an "improvement"
    r = regression.compare(base, collapsed)
    assert [(ln.key, ln.verdict) for ln in r.lines] == [("fid", "SUSPICIOUS"), ("is", "ok")] and r.failed
    assert regression.format_check(r).splitlines()[-1] == (
        "FAIL: 1 of 2 checks improved suspiciously beyond tolerance (pass --allow-improvement if expected)")

    r = regression.compare(base, collapsed, allow_improvement=True)
    assert [(ln.key, ln.verdict) for ln in r.lines] == [("fid", "better (allowed)"), ("is", "ok")] and not r.failed
    assert regression.format_check(r).splitlines()[-1] == (
        "ok: 1 of 2 checks within tolerance, 1 improved beyond it (allowed)")

    both = _scores(g={"fid": 0.0, "is": 1.0})
    assert regression.format_check(regression.compare(base, both)).splitlines()[-1] == (
        "FAIL: 1 of 2 checks regressed beyond tolerance, 1 improved suspiciously "
        "(pass --allow-improvement if expected)")
    r = regression.compare(base, both, allow_improvement=True)  # allowing improvements never excuses a regression
    assert [ln.verdict for ln in r.lines] == ["better (allowed)", "WORSE"] and r.failed
    assert regression.format_check(r).splitlines()[-1] == "FAIL: 1 of 2 checks regressed beyond tolerance"


def test_a_changed_fingerprint_is_shown_under_the_title_and_in_the_summary():
    base = {**_baseline(), "fingerprint": "d" * 64}
    r = regression.compare(base, _scores(g={"fid": 100.0, "is": 2.0}), "b.json")
    assert r.fingerprint_changed and not r.failed  # shown, but not a failure by itself
    lines = regression.format_check(r).splitlines()
    assert lines[0].startswith("p: run run1 (fingerprint ffffffffffff")
    assert lines[1] == ("FINGERPRINT CHANGED: run ffffffffffff… vs baseline dddddddddddd… — scores are from a "
                        "different instrument/protocol (checkpoint, family default, data, extractor or device); "
                        "compared anyway")
    assert lines[2].split()[:2] == ["entry", "metric"]
    assert lines[-1] == ("ok: 2 checks within tolerance; FINGERPRINT CHANGED "
                         "(run ffffffffffff… vs baseline dddddddddddd…)")
    worse = regression.format_check(regression.compare(base, _scores(g={"fid": 120.0, "is": 2.0})))
    assert worse.splitlines()[-1] == ("FAIL: 1 of 2 checks regressed beyond tolerance; FINGERPRINT CHANGED "
                                      "(run ffffffffffff… vs baseline dddddddddddd…)")
    same = regression.format_check(regression.compare(_baseline(), _scores(g={"fid": 100.0, "is": 2.0})))
    assert "FINGERPRINT" not in same and not regression.compare(_baseline(), _scores(g={})).fingerprint_changed


@pytest.fixture
def fake_store(tmp_path, monkeypatch):
    """A protocol named like the `_scores` runs, its baseline file, and `bench check` reading `scores.now`
    instead of an MLflow store (the gate's wiring without a training run)."""
    proto = tiny_protocol(tmp_path, name="p")
    baseline = tmp_path / "p.json"
    baseline.write_text(json.dumps(_baseline()))

    class Store:
        now = _scores(g={"fid": 100.0, "is": 2.0})

    monkeypatch.setattr(regression, "find_parent", lambda protocol, uri, run_id: (None, "sqlite:///x.db", None))
    monkeypatch.setattr(regression, "scores", lambda c, uri, parent: Store.now)
    return proto, baseline, Store


def test_check_cli_fails_a_suspicious_improvement_unless_allowed(fake_store, capsys):
    proto, baseline, store = fake_store
    assert main(["check", str(proto), "--baseline", str(baseline)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "ok: 2 checks within tolerance"
    store.now = _scores(g={"fid": 0.0, "is": 2.0})
    assert main(["check", str(proto), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert any(ln.split()[:2] == ["g", "fid"] and ln.endswith("SUSPICIOUS") for ln in out.splitlines()), out
    assert "pass --allow-improvement if expected" in out.splitlines()[-1]
    assert main(["check", str(proto), "--baseline", str(baseline), "--allow-improvement"]) == 0
    out = capsys.readouterr().out
    assert any(ln.split()[:2] == ["g", "fid"] and ln.endswith("better (allowed)") for ln in out.splitlines()), out
    store.now = _scores(g={"fid": 0.0, "is": 1.0})
    assert main(["check", str(proto), "--baseline", str(baseline), "--allow-improvement"]) == 1


def test_pytest_plugin_fails_a_suspicious_improvement_unless_allowed(fake_store, pytester):
    proto, baseline, store = fake_store
    store.now = _scores(g={"fid": 0.0, "is": 2.0})
    pytester.makepyfile(f"""
        def test_not_allowed(bench_regression):
            bench_regression.check({str(proto)!r}, baseline={str(baseline)!r})

        def test_allowed(bench_regression):
            result = bench_regression.check({str(proto)!r}, baseline={str(baseline)!r}, allow_improvement=True)
            assert [ln.verdict for ln in result.lines] == ["better (allowed)", "ok"]
    """)
    result = pytester.runpytest_inprocess("-p", "bench.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*bench regression gate failed*", "*g*fid*SUSPICIOUS*",
                                 "FAIL: 1 of 2 checks improved suspiciously*", "*allow_improvement=True*"])


def test_per_entry_tolerance_is_the_most_specific():
    base = regression.make_baseline(_scores(g={"fid": 100.0, "is": 2.0}, floor={"fid": 100.0}), {
        "default": {"rel": 1e-6}, "entries": {"g": {"default": {"rel": 0.1}, "is": {"rel": 0.5}}}})
    r = regression.compare(base, _scores(g={"fid": 109.0, "is": 1.2}, floor={"fid": 100.001}))
    assert {(ln.entry, ln.key): ln.verdict for ln in r.lines} == {
        ("g", "fid"): "ok", ("g", "is"): "ok", ("floor", "fid"): "WORSE"}
    assert regression.tolerance_for(base, "fid", "g") == (0.1, 0.0)
    assert regression.tolerance_for(base, "fid", "floor") == (1e-6, 0.0)


def test_missing_failed_and_new_entries():
    base = regression.make_baseline(_scores(g={"fid": 1.0}, h={"fid": 2.0}), {"default": {"rel": 0.1}})
    s = _scores(g={"is": 3.0}, k={"fid": 1.0})
    s.entries["h"] = {"status": "FAILED", "failure": "NaN loss", "metrics": {}}
    r = regression.compare(base, s)
    assert {(ln.entry, ln.verdict) for ln in r.lines} == {("g", "MISSING"), ("h", "FAILED"), ("k", "new (not gated)")}
    text = regression.format_check(r)
    assert "NaN loss" in text and "FAIL: 2 of 2 checks regressed" in text


def test_readable_diff_table():
    r = regression.compare(_baseline(), _scores(g={"fid": 120.0, "is": 2.0}), "b.json")
    text = regression.format_check(r)
    lines = text.splitlines()
    assert lines[1].split() == ["entry", "metric", "baseline", "current", "change", "allowed", "(either", "way)",
                                "verdict"]
    assert any(ln.split()[:2] == ["g", "fid"] and "+20 (+20.0%)" in ln and ln.endswith("WORSE") for ln in lines)
    assert lines[-1] == "FAIL: 1 of 2 checks regressed beyond tolerance"


def test_baseline_file_errors(tmp_path):
    with pytest.raises(BenchError, match="no baseline at .*bench baseline update"):
        regression.read_baseline(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"entries": 3}')
    with pytest.raises(BenchError, match="not a ganbench baseline"):
        regression.read_baseline(tmp_path / "bad.json")
    with pytest.raises(BenchError, match="is for protocol 'other'"):
        regression.compare({**_baseline(), "protocol": "other"}, _scores(g={}))


def test_a_tolerance_that_is_not_a_finite_non_negative_number_is_refused(tmp_path):
    """NaN as a tolerance made every comparison 'ok' (x > NaN is False): FID 1 -> 1730 passed the gate."""
    worse = _scores(g={"fid": 1730.0})
    for bad in (float("nan"), -1.0, "abc", float("inf")):
        (tmp_path / "nan.json").write_text(json.dumps(_with("tolerance.default.abs", bad)))
        with pytest.raises(BenchError, match=r"nan.json: tolerance.default.abs must be a finite number >= 0"):
            regression.read_baseline(tmp_path / "nan.json")
    assert regression.compare(_baseline(), worse).failed  # the same run fails a sound baseline
    with pytest.raises(BenchError, match="--abs must be a finite number >= 0"):
        regression.write_baseline(tmp_path / "b.json", worse, abs_=float("nan"))
    assert not (tmp_path / "b.json").exists()
    for text, msg in (('{"format": %d, "entries": {"g": {"fid": {"value": "x"}}}}', "needs a numeric 'value'"),
                      ('{"format": %d, "entries": {"g": {"fid": {}}}}', "needs a numeric 'value'"),
                      ('{"format": %d, "entries": {"g": {"fid": {"value": NaN}}}}', "needs a numeric 'value'"),
                      ('{"format": %d, "entries": {}, "tolerance": 5}', "'tolerance' must be a mapping")):
        (tmp_path / "t.json").write_text(text % regression.FORMAT)
        with pytest.raises(BenchError, match=msg):
            regression.read_baseline(tmp_path / "t.json")


# Baseline files a user (or a reviewer) can hand the gate, each with what its one error line must name. Every one
# crashed `bench check` or `bench baseline update` with a traceback, passed as "ok: 0 checks", or was copied into
# a new baseline that `bench check` then refused.
HOSTILE = [
    pytest.param("[" * 100_000 + "]" * 100_000, "not a readable baseline JSON", id="nested-100k-deep"),
    pytest.param("[1, 2]", "not a ganbench baseline", id="a-list"),
    pytest.param(_with("fingerprint", 12345), "'fingerprint'", id="fingerprint-number"),
    pytest.param(_with("fingerprint", {"a": 1}), "'fingerprint'", id="fingerprint-mapping"),
    pytest.param(_with("protocol", ["p"]), "'protocol'", id="protocol-list"),
    pytest.param(_with("entries", {}), "'entries'", id="no-entries"),
    pytest.param(_with("entries", {"g": {}}), "'entries'", id="no-metrics"),
    pytest.param(_with("entries.g", [1]), "entries.g", id="entry-list"),
    pytest.param(_with("entries.g.fid", 3.0), "entries.g.fid must be a mapping", id="metric-number"),
    pytest.param(_with("entries.g.fid.value", 10 ** 400), "entries.g.fid", id="value-beyond-float"),
    pytest.param(_with("entries.g.fid.value", True), "entries.g.fid", id="value-bool"),
    pytest.param(_with("entries.g.fid.higher_is_better", "no"), "entries.g.fid.higher_is_better", id="direction"),
    pytest.param(_with("tolerance", "x"), "'tolerance'", id="tolerance-string"),
    pytest.param(_with("tolerance.default", [0.1]), "tolerance.default", id="default-list"),
    pytest.param(_with("tolerance.default.rel", "abc"), "tolerance.default.rel", id="rel-string"),
    pytest.param(_with("tolerance.default.rel", "0.1"), "tolerance.default.rel", id="rel-numeric-string"),
    pytest.param(_with("tolerance.default.rel", 10 ** 400), "tolerance.default.rel", id="rel-beyond-float"),
    pytest.param(_with("tolerance.fid", {"abs": -1}), "tolerance.fid.abs", id="metric-abs-negative"),
    pytest.param(_with("tolerance.entries", [1]), "tolerance.entries", id="entries-tolerance-list"),
    pytest.param(_with("tolerance.entries", {"g": [1]}), "tolerance.entries.g", id="entry-tolerance-list"),
    pytest.param(_with("tolerance.entries", {"g": {"is": {"rel": float("nan")}}}), "tolerance.entries.g.is.rel",
                 id="entry-metric-rel-nan"),
]


def _file_text(content) -> str:
    return content if isinstance(content, str) else json.dumps(content)


def _refused(capsys, folder, before: dict) -> str:
    """The one `bench: error:` line of a refused input (no traceback, no table on stdout), after checking that
    the folder holds exactly what it held (no file changed, no temp file left)."""
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("bench: error: "), (out, err)
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    return err


@pytest.mark.parametrize("content, names", HOSTILE)
def test_check_refuses_a_hostile_baseline_in_one_line(fake_store, capsys, content, names):
    proto, baseline, _ = fake_store
    baseline.write_text(_file_text(content))
    before = {f.name: f.read_bytes() for f in baseline.parent.iterdir()}
    assert main(["check", str(proto), "--baseline", str(baseline)]) == 2
    err = _refused(capsys, baseline.parent, before)
    assert str(baseline) in err and names in err, err


@pytest.mark.parametrize("flags", [[], ["--rel", "0.1"]], ids=["kept", "rel"])
@pytest.mark.parametrize("content, names", HOSTILE)
def test_baseline_update_refuses_a_hostile_existing_file_and_leaves_it(fake_store, capsys, content, names, flags):
    """The file --out replaces hands its tolerance on, so it is read as `bench check` reads it, before anything is
    written: its tolerance copied unchecked gave tracebacks, or a new baseline that `bench check` refused."""
    proto, baseline, _ = fake_store
    baseline.write_text(_file_text(content))
    before = {f.name: f.read_bytes() for f in baseline.parent.iterdir()}
    assert main(["baseline", "update", str(proto), "--out", str(baseline), *flags]) == 2
    err = _refused(capsys, baseline.parent, before)
    assert str(baseline) in err and names in err and "fix the file or remove it" in err, err


def test_baseline_update_never_writes_a_baseline_that_check_refuses(fake_store, capsys):
    proto, baseline, store = fake_store
    # Sound for the one metric it gates; its tolerance for `is`, which it does not gate, is not a number, and the
    # run has `is`: the new baseline would read that tolerance.
    old = _with("tolerance.is", {"rel": "abc"})
    del old["entries"]["g"]["is"]
    baseline.write_text(json.dumps(old))
    regression.read_baseline(baseline)
    before = {f.name: f.read_bytes() for f in baseline.parent.iterdir()}
    assert main(["baseline", "update", str(proto), "--out", str(baseline)]) == 2
    err = _refused(capsys, baseline.parent, before)
    assert str(baseline) in err and "tolerance.is.rel" in err, err
    # A run without a single score: its baseline would check nothing.
    baseline.unlink()
    store.now = _scores(g={})
    before = {f.name: f.read_bytes() for f in baseline.parent.iterdir()}
    assert main(["baseline", "update", str(proto), "--out", str(baseline)]) == 2
    assert "'entries'" in _refused(capsys, baseline.parent, before)


def test_baseline_update_keeps_a_sound_files_tolerance(fake_store, capsys):
    """Validation refuses only what the gate cannot use: keys it does not read (a note) stay, as before."""
    proto, baseline, _ = fake_store
    baseline.write_text(json.dumps(_baseline(fid={"abs": 3.0}, note="why", entries={"g": {"is": {"rel": 0.2}}})))
    assert main(["baseline", "update", str(proto), "--out", str(baseline), "--rel", "0.1"]) == 0
    assert json.loads(baseline.read_text())["tolerance"] == {
        "default": {"rel": 0.1, "abs": 0.0}, "fid": {"abs": 3.0}, "note": "why", "entries": {"g": {"is": {"rel": 0.2}}}}
    capsys.readouterr()
    assert main(["check", str(proto), "--baseline", str(baseline)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "ok: 2 checks within tolerance"
    assert regression.read_baseline(BASELINE)["tolerance"]["note"]  # the committed baseline reads, note and all


# --- end to end on real runs ------------------------------------------------------------------------

CKPT_PROTOCOL = """
name: ckpt-gate
seed: 0
dataset: {{name: mnist, resolution: 28, channels: 1, train_size: 2000, eval_size: 500}}
entries:
  - name: model
    zoo: mnist_gan
    config: {{lr_G: 0.002, lr_D: 0.002}}
    checkpoint: model.pt
evaluation: {{n_samples: 200, seeds: [0, 1], batch_size: 100, extractor: judge, metrics: [is, fid, kid],
             kid_subset_size: 200, kid_subsets: 20, reference: false}}
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    """A protocol scoring model.pt; a run with the trained weights, then one with the untrained weights."""
    runs = shared_runs(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("gate")
    proto = write_protocol(tmp / "ckpt-gate.yaml", CKPT_PROTOCOL.format(store=tmp.as_posix()))
    shutil.copyfile(runs.checkpoint("trained"), tmp / "model.pt")
    assert main(["run", str(proto), "--workdir", str(tmp / "work")]) == 0
    return tmp, proto, runs


@needs_data
def test_check_passes_unchanged_and_fails_on_a_worse_checkpoint(gate, capsys):
    tmp, proto, runs = gate
    baseline = tmp / "baselines" / "ckpt-gate.json"
    assert main(["baseline", "update", str(proto), "--out", str(baseline)]) == 0
    data = json.loads(baseline.read_text())
    assert data["protocol"] == "ckpt-gate" and set(data["entries"]["model"]) >= {"fid", "is", "kid/mean"}
    capsys.readouterr()
    assert main(["check", str(proto), "--baseline", str(baseline)]) == 0
    assert "ok: 4 checks within tolerance" in capsys.readouterr().out

    shutil.copyfile(runs.checkpoint("untrained"), tmp / "model.pt")  # deliberately worse weights
    code = main(["check", str(proto), "--baseline", str(baseline), "--rerun", "--workdir", str(tmp / "work")])
    out = capsys.readouterr().out
    assert code == 1, out
    fid_line = next(ln for ln in out.splitlines() if ln.startswith("model") and " fid ↓" in ln)
    assert fid_line.endswith("WORSE")
    lines = out.rstrip().splitlines()
    assert lines[1].startswith("FINGERPRINT CHANGED: run ")  # the checkpoint's sha256 changed
    assert lines[-1].startswith("FAIL: ") and "FINGERPRINT CHANGED" in lines[-1]
    # The good run is still in the store: checking it by id passes.
    good = data["source"]["parent_run_id"]
    assert main(["check", str(proto), "--baseline", str(baseline), "--run", good]) == 0

    # The other way round: against a baseline of the untrained weights the trained run is a big
    # "improvement", which fails as SUSPICIOUS unless improvements are allowed.
    untrained = tmp / "baselines" / "untrained.json"
    assert main(["baseline", "update", str(proto), "--out", str(untrained)]) == 0  # the newest run: untrained
    assert json.loads(untrained.read_text())["source"]["parent_run_id"] != good
    capsys.readouterr()
    assert main(["check", str(proto), "--baseline", str(untrained), "--run", good]) == 1
    out = capsys.readouterr().out
    fid_line = next(ln for ln in out.splitlines() if ln.startswith("model") and " fid ↓" in ln)
    assert fid_line.endswith("SUSPICIOUS"), out
    assert "WORSE" not in out and "pass --allow-improvement if expected" in out.rstrip().splitlines()[-1]
    assert main(["check", str(proto), "--baseline", str(untrained), "--run", good, "--allow-improvement"]) == 0
    out = capsys.readouterr().out
    fid_line = next(ln for ln in out.splitlines() if ln.startswith("model") and " fid ↓" in ln)
    assert fid_line.endswith("better (allowed)") and out.rstrip().splitlines()[-1].startswith("ok: "), out


@needs_data
def test_pytest_plugin_passes_and_fails_inside_pytest(gate, pytester):
    tmp, proto, _ = gate
    baseline = tmp / "baselines" / "ckpt-gate.json"
    if not baseline.is_file():
        assert main(["baseline", "update", str(proto), "--out", str(baseline)]) == 0
    good = json.loads(baseline.read_text())["source"]["parent_run_id"]
    pytester.makepyfile(f"""
        def test_good_run(bench_regression):
            bench_regression.check({str(proto)!r}, baseline={str(baseline)!r}, run={good!r})

        def test_newest_run(bench_regression):
            bench_regression.check({str(proto)!r}, baseline={str(baseline)!r})
    """)
    if main(["check", str(proto), "--baseline", str(baseline)]) == 0:
        # Order-independent: make sure the newest run is the worse one.
        shutil.copyfile(gate[2].checkpoint("untrained"), tmp / "model.pt")
        assert main(["run", str(proto), "--workdir", str(tmp / "work")]) == 0
    result = pytester.runpytest("-p", "bench.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*bench regression gate failed*", "*model*fid*WORSE*", "FAIL: *"])


@needs_data
def test_committed_baseline_holds_for_the_tiny_protocol(tmp_path_factory, bench_regression):
    """The project's own use of the gate: this session's run of regression-tiny (empty cache, pinned judge)
    against the committed baseline. The shared store's newest run of that name is its changed copy (another
    fingerprint), so the run is picked by the committed protocol's fingerprint."""
    from bench.reporting import store

    runs = shared_runs(tmp_path_factory)
    c = store.client(runs.uri)
    parents = store.parent_runs(c, store.experiment_ids(c, ["regression-tiny"]), "regression-tiny")

    def run_of(work: str) -> str:
        fp = runs.results[work][0]["fingerprint"]
        return next(r.info.run_id for r in parents
                    if r.data.tags.get("bench.fingerprint") == fp and r.info.status == "FINISHED")

    result = bench_regression.check(runs.protocol, baseline=BASELINE, run=run_of("work-2"))
    assert {ln.entry for ln in result.lines} == {"trained", "untrained"}
    assert all(ln.verdict == "ok" for ln in result.lines), regression.format_check(result)
    # The fingerprint is the committed one: the same protocol, data and pinned judge on any machine.
    assert not result.fingerprint_changed, regression.format_check(result)
    # The untrained floor is gated exactly: on the changed copy (150 samples) it is WORSE by 0.7% FID.
    other = regression.check(str(runs.protocol), str(BASELINE), run_of("work-3"), runs.uri)
    assert any(ln.entry == "untrained" and ln.verdict != "ok" for ln in other.lines)


def test_an_infinite_score_round_trips_through_a_baseline(tmp_path):
    """PSNR is +inf when an output equals its target (bench/metrics/psnr.py): a baseline written from it must read
    back, and an unchanged +inf is ok, not MISSING."""
    run = _scores(g={"psnr": float("inf"), "fid": 3.0})
    regression.write_baseline(tmp_path / "b.json", run)
    baseline = regression.read_baseline(tmp_path / "b.json")
    verdicts = {line.key: line.verdict for line in regression.compare(baseline, run).lines}
    assert verdicts == {"fid": "ok", "psnr": "ok"}
    dropped = _scores(g={"psnr": 30.0, "fid": 3.0})
    assert {line.key: line.verdict for line in regression.compare(baseline, dropped).lines}["psnr"] == "WORSE"

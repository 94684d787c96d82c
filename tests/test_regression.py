"""The regression gate: `bench check` / `bench baseline update`, and the pytest plugin doing the same."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import regression
from bench.cli import main
from bench.errors import BenchError
from bench.pytest_plugin import bench_regression  # noqa: F401 - the plugin's fixture, used below
from tests.conftest import needs_data, write_protocol
from tests.report_runs import BASELINE, shared_runs

pytest_plugins = ["pytester"]


def _scores(**entries):
    return regression.RunScores("sqlite:///x.db", "run1", "p", "f" * 64, "abc", {
        e: {"status": "FINISHED", "failure": "", "metrics": {k: {"mean": v, "std": 0.0, "n": 2} for k, v in m.items()}}
        for e, m in entries.items()})


def _baseline(**kw):
    return regression.make_baseline(_scores(g={"fid": 100.0, "is": 2.0}), {"default": {"rel": 0.05, "abs": 0.0},
                                                                           **kw})


def test_direction_and_tolerance_decide_the_verdict():
    base = _baseline()
    r = regression.compare(base, _scores(g={"fid": 104.9, "is": 1.91}))
    assert [ln.verdict for ln in r.lines] == ["ok", "ok"] and not r.failed
    r = regression.compare(base, _scores(g={"fid": 105.1, "is": 2.5}))
    assert [(ln.key, ln.verdict) for ln in r.lines] == [("fid", "WORSE"), ("is", "better")] and r.failed
    r = regression.compare(base, _scores(g={"fid": 50.0, "is": 1.0}))
    assert [ln.verdict for ln in r.lines] == ["better", "WORSE"]
    loose = _baseline(fid={"abs": 10.0})
    assert not regression.compare(loose, _scores(g={"fid": 109.0, "is": 2.0})).failed


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
    assert lines[1].split() == ["entry", "metric", "baseline", "current", "change", "allowed", "(bad", "way)",
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
             kid_subset_size: 200, kid_subsets: 20}}
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
    assert "fingerprint" in out and "differs from the baseline's" in out  # the checkpoint's sha256 changed
    assert out.rstrip().splitlines()[-1].startswith("FAIL: ")
    # The good run is still in the store: checking it by id passes.
    good = data["source"]["parent_run_id"]
    assert main(["check", str(proto), "--baseline", str(baseline), "--run", good]) == 0


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
    """The project's own use of the gate: regression-tiny's newest run against the committed baseline."""
    runs = shared_runs(tmp_path_factory)
    result = bench_regression.check(runs.protocol, baseline=BASELINE)
    assert {ln.entry for ln in result.lines} == {"trained", "untrained"}
    assert all(ln.verdict == "ok" for ln in result.lines), regression.format_check(result)

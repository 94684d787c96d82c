"""`bench report`: index.html + README.md + figures from MLflow, by protocol file or run id, and the
reports/README.md index it keeps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from bench import machine
from bench.cli import main
from bench.reporting.report import INDEX_BEGIN, INDEX_END
from tests.conftest import needs_data
from tests.report_runs import NAME, shared_runs


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    runs = shared_runs(tmp_path_factory)
    reports = tmp_path_factory.mktemp("reports")
    (reports / "README.md").write_text(f"# Reports\n\n{INDEX_BEGIN}\n(old)\n{INDEX_END}\n\ntail text\n")
    out = reports / "regression-tiny"
    assert main(["report", str(runs.changed), "--out", str(out)]) == 0
    return runs, reports, out


@needs_data
def test_report_has_leaderboard_figures_protocol_and_environment(report):
    runs, _, out = report
    meta = json.loads((out / "report.json").read_text())
    fp = runs.results["work-3"][0]["fingerprint"]
    assert meta["fingerprint"] == fp and meta["protocol"] == "regression-tiny"  # the newest run: the changed one
    readme = (out / "README.md").read_text()
    page = (out / "index.html").read_text()
    for text in (readme, page):
        assert fp in text and "n_samples: 150" in text and "bench report" in text
        assert "trained" in text and "untrained" in text and "package torch" in text
        # the machine facts that make training differ in its last bits, as this machine reports them
        assert machine.cpu_detail() in text and f"torch threads | {torch.get_num_threads()}" in readme
    # a judge is not Inception: every feature-space column and the header say which features these are
    assert "| # | entry | zoo | IS (judge:mnist) ↑ | FID (judge:mnist) ↓ | KID (judge:mnist) ↓ |" in readme
    assert "Features: `judge:mnist`, not Inception" in readme and "never with published numbers" in page
    assert "![FID (judge:mnist) ↓](img/bar-fid.png)" in readme
    assert page.count('<table class="leaderboard"') == 1
    linked = set(re.findall(r"\]\((img/[^)]+)\)", readme))
    assert linked == set(re.findall(r"src='(img/[^']+)'", page))
    assert {"img/samples-trained.png", "img/samples-untrained.png", "img/curves-trained.png",
            "img/bar-fid.png", "img/bar-is.png", "img/bar-kid_mean.png"} <= linked
    for name in linked:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert "8×8 grid of samples from fixed noise" in readme and "whiskers: 95% interval" in page
    # the comparison in words: two evaluation seeds can never give p < 0.05, and the report says so
    assert "## Comparisons" in readme and "<h2>Comparisons</h2>" in page
    line = next(x for x in readme.splitlines() if x.startswith("- `trained` ahead of `untrained` on FID"))
    assert "**not significant**, p=0.5 (n=2)" in line
    assert "<code>trained</code> ahead of <code>untrained</code>" in page and "<strong>not significant</strong>" in page
    assert set(meta["files"]) == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def _report_with_control(report, tmp_path, monkeypatch, control: str) -> Path:
    """The report of the changed run as if its logged protocol text had named `control` (it changes no score and
    no fingerprint)."""
    return _report_with(report, tmp_path, f"control: {control}\n", f"control-{control}")


def _report_with(report, tmp_path, addition: str, name: str) -> Path:
    """The report of the changed run from its protocol file with `addition` written after the run: keys that
    change no score (control, literature), so the report reads the file, as a user's edit would be read."""
    runs, _, _ = report
    edited = tmp_path / name / "regression-tiny.yaml"
    edited.parent.mkdir()
    edited.write_text(runs.changed.read_text() + addition)
    out = tmp_path / name / "report"
    assert main(["report", str(edited), "--uri", runs.uri, "--out", str(out)]) == 0
    return out


@needs_data
def test_a_protocol_control_adds_the_against_control_section(report, tmp_path, monkeypatch):
    out = _report_with_control(report, tmp_path, monkeypatch, "untrained")
    readme, page = (out / "README.md").read_text(), (out / "index.html").read_text()
    assert "## Against the control `untrained`" in readme and "<h2>Against the control <code>untrained</code>" in page
    assert "Holm-adjusted" in readme
    line = next(x for x in readme.splitlines() if x.startswith("- `trained` better than `untrained` on FID"))
    assert "p=0.5, Holm-adjusted p=0.5 (paired)" in line  # two evaluation seeds, one comparison
    assert json.loads((out / "report.json").read_text())["control"] == "untrained"


@needs_data
def test_with_a_trained_control_the_untrained_entry_is_a_floor_outside_the_holm_family(report, tmp_path, monkeypatch):
    """The runner tags the steps-0 entry (layout.UNTRAINED) and the report reads it back from MLflow: its test
    against the control is shown unadjusted and labelled, not counted among the treatments."""
    readme = (_report_with_control(report, tmp_path, monkeypatch, "trained") / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("- `untrained` worse than `trained` on FID"))
    assert "the untrained floor, outside the Holm family" in line and "Holm-adjusted" not in line
    assert "the untrained floor `untrained`" in readme


LITERATURE = """literature:
  - {better: trained, than: untrained, metric: fid, source: "Paper A 2020, Table 1"}
  - {better: untrained, than: trained, metric: fid, source: "Paper B 2021, Fig. 2", evidence: "the logged D loss says so"}
  - {better: untrained, than: trained, metric: kid/mean, source: "Paper C 2019, §4"}
  - {better: trained, than: untrained, metric: ssim, source: "Paper D 2018, §5"}
"""


@needs_data
def test_literature_claims_are_checked_against_the_measured_rows(report, tmp_path, monkeypatch):
    """Each claim gets the measured means, agrees or **contradicts**, and the two rows' test; a contradiction
    without `evidence` says it was not investigated; a metric the run did not measure is not checked."""
    out = _report_with(report, tmp_path, LITERATURE, "literature")
    readme, page = (out / "README.md").read_text(), (out / "index.html").read_text()
    assert "## Against the literature" in readme and "<h2>Against the literature</h2>" in page
    lines = [x for x in readme.splitlines() if x.startswith("- Paper ")]
    assert len(lines) == 4
    a, b, c, d = lines
    import csv

    rows = {r["entry"]: r for r in csv.DictReader((out / "leaderboard.csv").read_text().splitlines())}
    trained_fid, untrained_fid = float(rows["trained"]["fid/mean"]), float(rows["untrained"]["fid/mean"])
    assert trained_fid < untrained_fid  # the fixture's premise: training lowered FID
    assert a.startswith("- Paper A 2020, Table 1: `trained` ahead of `untrained` on FID (judge:mnist). Measured ")
    assert "agrees; **not significant**, p=0.5 (n=2) over evaluation seeds only" in a
    assert "Holm-adjusted over the 3 claims tested, p=1." in a and "contradicts" not in a and "Why" not in a
    assert "**contradicts the source**; **not significant**, p=0.5 (n=2)" in b and "Why: the logged D loss says so" in b
    assert "**contradicts the source**" in c and "Why: not investigated (the claim has no `evidence`)." in c
    assert d.endswith("Not checked: ssim was not measured for both rows.")
    assert "<strong>contradicts the source</strong>" in page and "Paper D 2018" in page
    meta = json.loads((out / "report.json").read_text())["literature"]
    assert [m["agrees"] for m in meta] == [True, False, False, None]
    assert meta[0]["p"] == pytest.approx(0.5) and meta[0]["p_holm"] == pytest.approx(1.0)
    assert meta[3]["p"] is None and meta[3]["better_mean"] is None and meta[1]["evidence"]
    assert meta[0]["better_mean"] == pytest.approx(trained_fid) and meta[0]["than_mean"] == pytest.approx(untrained_fid)


@needs_data
def test_a_logged_claim_that_does_not_read_is_a_note_not_a_failed_report(report, tmp_path, monkeypatch):
    """A logged protocol text is not re-validated (a plugin's metric may be gone): an unreadable claim is skipped
    with a note naming it, and the readable ones are still checked."""
    bad = "literature:\n  - just a string\n  - {better: trained, than: untrained, metric: gone_metric, source: S}\n" + \
          "  - {better: trained, than: untrained, metric: fid, source: 'Paper E'}\n"
    out = tmp_path / "bad"
    runs, _, _ = report
    from bench.reporting import store

    real = store.download_text
    monkeypatch.setattr(store, "download_text", lambda c, rid, name: (real(c, rid, name) or "") + (
        bad if name == "protocol.yaml" else ""))
    # by run id: the logged text is what the report reads
    run_id = json.loads((report[2] / "report.json").read_text())["parent_run_id"]
    assert main(["report", run_id, "--uri", runs.uri, "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "literature claim 1 not checked: it does not read as a claim" in readme
    assert "literature claim 2 not checked" in readme and "gone_metric" in readme
    assert "- Paper E: `trained` ahead of `untrained`" in readme


@needs_data
@pytest.mark.parametrize("edit,what", [("# a comment fixed after the run\n", "only in comments or layout (the same protocol);"),
                                       ("control: untrained\n", "only in `control` (where runs are logged"),
                                       (LITERATURE, "only in `literature` (where runs are logged"),
                                       ("dataset", "in content;"),
                                       ("tracking", "only in `tracking` (where runs are logged")])
def test_a_protocol_file_edited_after_its_run_is_noted_as_comment_only_or_content(report, tmp_path, monkeypatch,
                                                                                   capsys, edit, what):
    runs, _, _ = report
    from bench.reporting import store

    real = store.download_text
    # the logged text is what was run; the file on disk gained `edit` afterwards
    edited = tmp_path / "regression-tiny.yaml"
    text = runs.changed.read_text()
    # "tracking": another store named in the file (as a run made with `bench run --uri` logs it)
    if edit == "tracking":
        edited.write_text(re.sub(r"tracking: \{.*\}", 'tracking: {uri: "sqlite:///elsewhere.db"}', text))
    elif edit == "dataset":  # a change that would change a score: the logged text stays the record
        edited.write_text(text.replace("eval_size: ", "eval_size: 1", 1))
    else:
        edited.write_text(text + edit)
    assert edited.read_text() != text
    monkeypatch.setattr(store, "download_text", lambda c, rid, name: (
        runs.changed.read_text() if name == "protocol.yaml" else real(c, rid, name)))
    assert main(["report", str(edited), "--uri", runs.uri, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "differs from the protocol text logged with run" in printed and f" {what}" in printed
    shown = (tmp_path / "out" / "protocol.yaml").read_text()
    # readings only (tracking, control, literature): the file is shown (no other store's path, its comments and
    # its claims kept); otherwise the logged text
    readings_only = "only in `" in what
    assert shown == (edited.read_text() if readings_only else runs.changed.read_text())


@needs_data
def test_a_logged_note_naming_the_home_folder_is_shown_from_home(report, tmp_path):
    """Runs logged before the weights message wrote ~ name the runner's home ("not found in /root/.cache/torch/
    hub/checkpoints"); a report must not print the account of the machine that ran the protocol."""
    import shutil

    from mlflow.tracking import MlflowClient

    from bench.tracking import layout

    runs, _, _ = report
    store = tmp_path / "copy.db"
    shutil.copyfile(runs.uri[len("sqlite:///"):], store)
    uri = f"sqlite:///{store}"
    client = MlflowClient(uri)
    home = str(Path.home())
    reason = f"lpips: alexnet weights missing: alexnet.pth not found in {home}/.cache/torch/hub/checkpoints"
    for run in client.search_runs([client.get_experiment_by_name(NAME).experiment_id]):
        client.set_tag(run.info.run_id, f"{layout.UNAVAILABLE_PREFIX}lpips", reason)
    out = tmp_path / "out"
    assert main(["report", str(runs.changed), "--uri", uri, "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "not computed: `lpips`: lpips: alexnet weights missing: alexnet.pth not found in " \
           "~/.cache/torch/hub/checkpoints" in readme
    assert f"{home}/.cache" not in readme and f"{home}/.cache" not in (out / "index.html").read_text()

@needs_data
def test_index_lists_the_report_with_its_command(report):
    _, reports, out = report
    text = (reports / "README.md").read_text()
    assert "(old)" not in text and text.endswith("tail text\n")
    row = next(line for line in text.splitlines() if line.startswith("| [`regression-tiny/`]"))
    assert "(regression-tiny/index.html)" in row and f"`bench report" in row and str(out) in row


@needs_data
def test_report_by_entry_run_id_uses_its_protocol_run_and_drops_stale_files(report, tmp_path_factory, capsys):
    runs, _, out = report
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=runs.uri)
    exp = client.get_experiment_by_name("regression-tiny")
    first = min((r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags),
                key=lambda r: r.info.start_time)
    child = next(r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get("mlflow.parentRunId") == first.info.run_id)
    (out / "img" / "samples-gone.png").write_bytes(b"")
    meta = json.loads((out / "report.json").read_text())
    meta["files"].append("img/samples-gone.png")
    (out / "report.json").write_text(json.dumps(meta))
    assert main(["report", child.info.run_id, "--uri", runs.uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"reporting its protocol run {first.info.run_id}" in printed
    assert "1 other run(s) of this fingerprint" in printed
    meta = json.loads((out / "report.json").read_text())
    assert meta["parent_run_id"] == first.info.run_id and "n_samples: 200" in (out / "README.md").read_text()
    assert not (out / "img" / "samples-gone.png").exists()


def test_unknown_run_id_is_one_line(tmp_path, capsys):
    import mlflow  # noqa: F401 - creating a small empty store

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path.as_posix()}/m.db"
    MlflowClient(tracking_uri=uri).search_experiments()
    assert main(["report", "0123456789abcdef", "--uri", uri, "--out", str(tmp_path / "r")]) == 2
    assert "MLflow run '0123456789abcdef' not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_comparisons_state_each_neighbour_verdict_in_words():
    import pandas as pd

    from bench.reporting.leaderboard import Group
    from bench.reporting.render import comparisons

    rows = pd.DataFrame([
        {"entry": "real_data", "rank": pd.NA, "fid/mean": 0.3, "p_next": float("nan"), "test_next": "", "n_pairs_next": 0},
        {"entry": "a", "rank": 1, "fid/mean": 10.0, "p_next": 0.029, "test_next": "4 vs 4 training seeds", "n_pairs_next": 0},
        {"entry": "b", "rank": 2, "fid/mean": 12.0, "p_next": 0.2, "test_next": "", "n_pairs_next": 6},
        {"entry": "c", "rank": 3, "fid/mean": 15.0, "p_next": float("nan"),
         "test_next": "no test: evaluation seeds identical (deterministic)", "n_pairs_next": 6},
        {"entry": "d", "rank": 4, "fid/mean": 40.0, "p_next": float("nan"), "test_next": "", "n_pairs_next": 0},
    ])
    g = Group(protocol="p", experiment="p", fingerprint="f" * 64, parent_run_ids=[], sort_key="fid", keys=["fid"],
              rows=rows)
    lines = comparisons(g)
    assert len(lines) == 3  # the unranked real-data row is framed, never compared
    assert lines[0] == "`a` ahead of `b` on FID: 10.00 vs 12.00; significant, p=0.029 * (4 vs 4 training seeds)"
    assert lines[1] == ("`b` ahead of `c` on FID: 12.00 vs 15.00; **not significant**, p=0.2 (n=6) over evaluation "
                        "seeds only (one training run each; training-seed variance not measured)")
    assert "evaluation seeds only" not in lines[0]  # a training-seed test is not qualified
    assert "not tested (evaluation seeds identical (deterministic))" in lines[2]
    assert comparisons(Group(protocol="p", experiment="p", fingerprint="f", parent_run_ids=[], sort_key=None, keys=[],
                             rows=rows)) == []


def test_feature_space_labels_name_every_extractor_but_inception():
    from bench.metrics import label
    from bench.reporting.render import feature_space

    assert label("fid", "judge:cifar10") == "FID (judge:cifar10)" and label("fid_inf", "dinov2") == "fid_inf (dinov2)"
    assert label("fid_trunc/psi_0.5", "judge:celeba") == "fid_trunc/psi_0.5 (judge:celeba)"
    assert label("fid", "inception-v3-compat") == "FID" and label("fid") == "FID"  # published numbers' space
    assert label("ssim", "judge:cifar10") == "SSIM" and label("ppl_z", "judge:x") == "ppl_z"  # pixel / LPIPS space
    assert label("lpips_diversity", "judge:x") == "lpips_diversity"
    assert "not Inception" in feature_space("judge:mnist") and "not Inception" not in feature_space(
        "inception-v3-compat")
    assert feature_space("") == ""


# --- files found in the output folder are input too: never followed out of it, never a traceback ---------------

def _tree(folder: Path) -> dict[str, bytes | str]:
    """Every path under `folder` with its bytes (a file), its target (a link) or "dir"."""
    return {p.relative_to(folder).as_posix(): (f"-> {p.readlink()}" if p.is_symlink() else
                                               "dir" if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


@needs_data
def test_a_planted_report_json_never_removes_a_file_bench_did_not_write(report, tmp_path, capfd):
    """The stale-file cleanup trusted the names in the earlier report.json; an absolute path in it deleted that
    file. Only a regular file under a name bench gives its files, inside the folder, is removed."""
    runs, _, _ = report
    victims = tmp_path / "victims"
    victims.mkdir()
    for name in ("abs.txt", "up.txt", "linked.txt", "via.png"):
        (victims / name).write_text(f"keep {name}\n")
    out = tmp_path / "r"
    (out / "img").mkdir(parents=True)
    (out / "via").symlink_to(victims)  # a folder link inside the report folder, leading out of it
    (out / "img" / "link.png").symlink_to(victims / "linked.txt")  # the link itself was not bench's either
    (out / "img" / "folder.png").mkdir()
    (out / ".hidden").write_text("keep\n")
    (out / "img" / "samples-gone.png").write_bytes(b"")  # a grid an earlier report wrote: still removed
    planted = [str(victims / "abs.txt"), "../victims/up.txt", "via/via.png", "img/link.png", "img/folder.png",
               ".hidden", "img/../../victims/up.txt", "img/samples-gone.png"]
    (out / "report.json").write_text(json.dumps({"files": planted}))
    kept = {**_tree(victims), **{f"out/{k}": v for k, v in _tree(out).items() if k not in (
        "report.json", "img/samples-gone.png")}}
    assert main(["report", str(runs.changed), "--uri", runs.uri, "--out", str(out)]) == 0
    assert "Traceback" not in capfd.readouterr().err
    after = {**_tree(victims), **{f"out/{k}": v for k, v in _tree(out).items()}}
    assert {k: after.get(k) for k in kept} == kept  # every victim and planted thing, with its content
    assert not (out / "img" / "samples-gone.png").exists()
    assert "img/samples-gone.png" not in json.loads((out / "report.json").read_text())["files"]


@needs_data
@pytest.mark.parametrize("planted", ['[1, 2]', '{"files": ["img/samples-gone.png", [1]]}', '{"files": "img/x"}'],
                         ids=["a-list", "a-name-not-text", "files-not-a-list"])
def test_a_report_json_not_of_bench_shape_removes_nothing_and_is_replaced(report, tmp_path, capfd, planted):
    runs, _, _ = report
    out = tmp_path / "r"
    (out / "img").mkdir(parents=True)
    (out / "img" / "samples-gone.png").write_bytes(b"not ours")
    (out / "report.json").write_text(planted)
    assert main(["report", str(runs.changed), "--uri", runs.uri, "--out", str(out)]) == 0
    assert "Traceback" not in capfd.readouterr().err
    assert (out / "img" / "samples-gone.png").read_bytes() == b"not ours"
    assert json.loads((out / "report.json").read_text())["protocol"] == "regression-tiny"


@needs_data
@pytest.mark.parametrize("place", ["out-is-a-file", "out-under-a-file", "img-is-a-file", "index-is-a-folder",
                                   "img-links-out"])
def test_an_output_folder_that_cannot_hold_the_report_is_one_line_with_nothing_written(report, tmp_path, capfd,
                                                                                          place):
    runs, _, _ = report
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("keep\n")
    out = tmp_path / "r"
    if place == "out-is-a-file":
        out.write_text("a file\n")
    elif place == "out-under-a-file":
        (tmp_path / "f").write_text("a file\n")
        out = tmp_path / "f" / "r"
    else:
        out.mkdir()
        (out / "report.json").write_text('{"files": []}\n')  # an earlier report's, kept as it is
        if place == "img-is-a-file":
            (out / "img").write_text("a file\n")
        elif place == "index-is-a-folder":
            (out / "index.html").mkdir()
        else:
            (out / "img").symlink_to(tmp_path / "elsewhere")
    before = _tree(tmp_path)
    assert main(["report", str(runs.changed), "--uri", runs.uri, "--out", str(out)]) == 2
    err = capfd.readouterr().err
    assert err.startswith("bench: error: cannot write the report") and err.count("\n") == 1, err
    assert _tree(tmp_path) == before


@needs_data
def test_a_malformed_report_json_beside_the_report_is_left_out_of_the_index(report, tmp_path, capfd):
    """The index is rebuilt from every */report.json after this report is written: one that bench did not write
    is skipped with a note, not a traceback that hides a report already written."""
    runs, _, _ = report
    root = tmp_path / "reports"
    (root / "other").mkdir(parents=True)
    (root / "third").mkdir()
    (root / "other" / "report.json").write_text('{"fingerprint": 123}')
    (root / "third" / "report.json").write_text("[1]")
    (root / "README.md").write_text(f"# Reports\n\n{INDEX_BEGIN}\n(old)\n{INDEX_END}\n")
    assert main(["report", str(runs.changed), "--uri", runs.uri, "--out", str(root / "mine")]) == 0
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err
    index = (root / "README.md").read_text()
    assert "| [`mine/`](mine/index.html)" in index and "other/" not in index and "third/" not in index
    assert captured.out.count("out of the report index") == 2 and str(root / "other" / "report.json") in captured.out
    assert (root / "other" / "report.json").read_text() == '{"fingerprint": 123}'
    assert (root / "third" / "report.json").read_text() == "[1]"

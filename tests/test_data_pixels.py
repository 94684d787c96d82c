"""The decoded pixels a run measured against are recorded, and runs that decoded the same files to other pixels are
never pooled.

The fingerprint hashes the data files (CIFAR-10: its decoded pixels). Another Pillow or libjpeg-turbo, or torch's
resize on a CPU without AVX2, can turn the same files into other pixels, so every protocol run records the sha256 of
its decoded tensors (bench/data/base.py `pixel_digest`): `--resume` refuses to pool rows of other pixels, the
leaderboard splits a fingerprint by them, a report carries over no unit of other pixels, and `bench check` says
DATA PIXELS CHANGED.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.data.base import DataSpec, RealData, pixel_digest
from bench.data.labelmap import LabelMaps
from bench.errors import BenchError
from bench.reporting import leaderboard, render
from bench.reporting.store import CHILD_COLUMNS
from bench.tracking import results as results_mod
from tests.conftest import needs_data, tiny_protocol


def _data(seed: int = 0) -> RealData:
    g = torch.Generator().manual_seed(seed)
    img = lambda n: torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)  # noqa: E731
    return RealData(spec=DataSpec("t", 8, 3), train_images=img(6), train_labels=torch.arange(6),
                    eval_images=img(4), eval_labels=None, fingerprint="f", source="s")


def test_pixel_digest_sees_one_pixel_a_label_and_which_tensor_holds_what():
    base = _data()
    d = pixel_digest(base)
    assert d == pixel_digest(_data()) and len(d) == 64
    one_pixel = base.eval_images.clone()
    one_pixel[3, 2, 7, 7] ^= 1  # the last byte of the last image, one level
    assert pixel_digest(replace(base, eval_images=one_pixel)) != d
    labels = base.train_labels.clone()
    labels[0] = 5
    assert pixel_digest(replace(base, train_labels=labels)) != d
    assert pixel_digest(replace(base, train_labels=None)) != d
    # Plain-tensor inputs (paired photos, colourisation's grey images) are hashed, and the same bytes in another
    # tensor are other data: swapping two tensors of one shape moves the digest (their names are hashed).
    a, b = base.eval_images[:2].clone(), base.eval_images[2:].clone()
    paired = replace(base, train_inputs=a, eval_inputs=b, task="paired")
    assert pixel_digest(paired) not in (d, pixel_digest(replace(paired, train_inputs=b, eval_inputs=a)))
    reshaped = base.eval_images.reshape(4, 3, 16, 4)  # the same bytes in another shape
    assert pixel_digest(replace(base, eval_images=reshaped)) != d


def test_pixel_digest_covers_label_map_inputs():
    ids = torch.zeros(2, 8, 8, dtype=torch.uint8)
    maps = LabelMaps(ids, torch.zeros(2, 8, 8, dtype=torch.bool), label_nc=3)
    base = replace(_data(), train_inputs=maps, eval_inputs=maps, task="paired")
    d = pixel_digest(base)
    moved = ids.clone()
    moved[1, 4, 4] = 2
    assert pixel_digest(replace(base, eval_inputs=LabelMaps(moved, maps.edges, 3))) != d
    edges = maps.edges.clone()
    edges[0, 0, 0] = True
    assert pixel_digest(replace(base, eval_inputs=LabelMaps(ids, edges, 3))) != d
    assert pixel_digest(replace(base, eval_inputs=LabelMaps(ids, None, 3))) != d
    inst = torch.zeros(2, 8, 8, dtype=torch.uint8)
    with_inst = replace(base, eval_inputs=LabelMaps(ids, maps.edges, 3, inst))
    other_inst = inst.clone()
    other_inst[0, 3, 3] = 1
    assert pixel_digest(with_inst) != pixel_digest(replace(base, eval_inputs=LabelMaps(ids, maps.edges, 3, other_inst)))


def test_pixel_digest_covers_what_seg_agreement_and_its_segmenter_read():
    from bench.data.superres import SuperResData

    base = _data()
    maps = torch.zeros(4, 8, 8, dtype=torch.uint8)
    photos = base.train_images.clone()
    sr = SuperResData(**{f: getattr(base, f) for f in ("spec", "train_images", "train_labels", "eval_images",
                                                        "eval_labels", "fingerprint", "source")},
                      eval_label_maps=maps, seg_train=(photos, maps[:2].repeat(3, 1, 1)),
                      seg_heldout=(photos[:2], maps[:2]))
    d = pixel_digest(sr)
    assert d != pixel_digest(base)
    moved = maps.clone()
    moved[0, 0, 0] = 1
    assert pixel_digest(replace(sr, eval_label_maps=moved)) != d
    other = photos.clone()
    other[5, 0, 0, 0] ^= 1
    assert pixel_digest(replace(sr, seg_train=(other, sr.seg_train[1]))) != d
    assert pixel_digest(replace(sr, seg_heldout=(photos[:2], moved[:2]))) != d


def _row(entry: str, pixels, fp: str = "fp", env=None) -> str:
    env = {"packages": {"pillow": "9.0.0", "pillow.libjpeg_turbo": "2.1.0", "torch": "2.14.1"},
           "cpu_detail": "ARMv8; torch kernels SVE256; sve"} if env is None else env  # kernels unlike any x86 run
    if pixels is not None:
        env["data_pixels"] = pixels
    return json.dumps({"protocol": "p", "fingerprint": fp, "entry": entry, "zoo": "mnist_gan", "status": "FINISHED",
                       "metrics": {}, "env": env}) + "\n"


def test_resume_refuses_finished_rows_of_other_pixels(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(_row("old", None) + _row("same", "a" * 64) + _row("other-fp", "b" * 64, fp="elsewhere"))
    # Rows from before the digest was recorded, rows of these pixels and other fingerprints' rows are fine.
    assert set(results_mod.finished_rows(path, "fp", "a" * 64)) == {("old", None), ("same", None)}
    assert set(results_mod.finished_rows(path, "fp")) == {("old", None), ("same", None)}
    with open(path, "a") as f:
        f.write(_row("moved", "c" * 64))
    # The message names what decodes differently: here Pillow and libjpeg-turbo, and the CPU kernels torch used.
    now = results_mod.decoder_environment()
    with pytest.raises(BenchError, match=r"line 4: entry 'moved' was scored on data decoded to other pixels "
                                         r"\(sha256 cccccccccccc, now aaaaaaaaaaaa; pillow 9.0.0 then, .* now; "
                                         r".*torch CPU kernels SVE256 then, " + now["cpu_detail"].split("kernels ")[1]
                                         .split(";")[0] + " now\\)"):
        results_mod.finished_rows(path, "fp", "a" * 64)
    # A newer row of this unit with these pixels (a plain re-run in the same workdir) replaces it: resume again works.
    with open(path, "a") as f:
        f.write(_row("moved", "a" * 64))
    assert set(results_mod.finished_rows(path, "fp", "a" * 64)) == {("old", None), ("same", None), ("moved", None)}


@pytest.mark.parametrize("env", [[], 7, "x", None, {"data_pixels": ["a" * 64]}, {"data_pixels": 3},
                                 {"data_pixels": ""}, {"data_pixels": "A" * 64}, {"data_pixels": "a" * 63}])
def test_a_row_that_cannot_say_its_pixels_is_refused_in_one_line(tmp_path, env):
    """Not taken for a row from before the digest was recorded: a row bench wrote has a mapping env and, if it has
    data_pixels, a lowercase sha256."""
    path = tmp_path / "results.jsonl"
    row = json.loads(_row("e", None))
    row["env"] = env
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(BenchError, match=r"line 1: not a ganbench result row \('env"):
        results_mod.finished_rows(path, "fp", "a" * 64)


def test_decoder_change_names_what_differs():
    now = {"packages": {"pillow": "13.0.0", "pillow.libjpeg_turbo": "3.2.0", "torch": "2.14.1"},
           "cpu_detail": "x; torch kernels AVX2; fma avx2"}
    assert results_mod.decoder_change(now, now) == "Pillow, libjpeg-turbo, torch and its CPU kernels recorded alike"
    old = {"packages": {**now["packages"], "pillow": "12.1.0"}, "cpu_detail": "y; torch kernels DEFAULT; fma"}
    assert results_mod.decoder_change(old, now) == ("pillow 12.1.0 then, 13.0.0 now; torch CPU kernels DEFAULT then, "
                                                    "AVX2 now")
    assert results_mod.decoder_change({"packages": [1]}, now).startswith("pillow unrecorded then, 13.0.0 now")
    assert "torch CPU kernels unrecorded then, AVX2 now" in results_mod.decoder_change(7, now)


def test_other_pixels_is_a_recorded_different_digest():
    # One rule for result rows, checkpoints and sweep rows: a record made before pixels were recorded pools.
    ours, theirs = "a" * 64, "b" * 64
    assert results_mod.other_pixels(theirs, ours)
    assert not results_mod.other_pixels(ours, ours)
    assert not results_mod.other_pixels(None, ours)
    assert not results_mod.other_pixels(theirs, "")  # nothing to compare with (plain tensors, no data set)


def _run(parent: str, entry: str, pixels, fid: float, start: int) -> dict:
    return {"run_id": f"{parent}-{entry}", "parent_run_id": parent, "experiment": "exp", "protocol": "p",
            "fingerprint": "fp", "entry": entry, "zoo": "mnist_gan", "train_seed": "", "status": "FINISHED",
            "failure": "", "start_time": start, "end_time": start + 1, "metrics": {"fid": fid}, "untrained": False,
            "eval_outputs": "", "data_pixels": pixels}


def _groups(rows):
    return leaderboard.build(pd.DataFrame(rows, columns=CHILD_COLUMNS), lambda rid, key: [])


def test_leaderboard_pools_one_set_of_pixels_and_splits_several():
    one = _groups([_run("p1", "a", "a" * 64, 10.0, 1), _run("p2", "b", "a" * 64, 20.0, 2),
                   _run("p0", "c", "", 30.0, 0)])  # a run logged before the tag joins the pixels it cannot contradict
    assert len(one) == 1 and not one[0].pixels_split and one[0].data_pixels == "a" * 64
    assert sorted(one[0].rows["entry"]) == ["a", "b", "c"] and not one[0].notes

    split = _groups([_run("p1", "a", "a" * 64, 10.0, 1), _run("p2", "a", "b" * 64, 11.0, 2),
                     _run("p0", "c", "", 30.0, 0)])
    assert [(g.data_pixels, list(g.rows["entry"])) for g in split] == [("b" * 64, ["a"]), ("a" * 64, ["a"]),
                                                                         ("", ["c"])]
    for g in split:
        assert g.pixels_split and "decoded its image files to different pixels" in g.notes[0]
        assert f"pixels {g.data_pixels[:12] or 'not recorded'}" in render.title(g)
    # The newer run of entry a did not replace the older one: they measured different images.
    assert sorted(g.repeats for g in split) == [0, 0, 0]
    table = list(csv.DictReader(io.StringIO(render.to_csv(split))))
    assert sorted((r["data_pixels"], r["entry"]) for r in table) == [("", "c"), ("a" * 64, "a"), ("b" * 64, "a")]


def test_regression_gate_says_when_the_pixels_changed():
    from bench import regression

    scores = {"m": {"status": "FINISHED", "failure": "", "metrics": {"fid": {"mean": 10.0, "std": 0, "n": 2}}}}
    run = regression.RunScores("u", "r1", "p", "fp", "sha", scores, data_pixels="a" * 64)
    baseline = regression.make_baseline(run, {})
    assert baseline["data_pixels"] == "a" * 64
    same = regression.compare(baseline, run)
    assert not same.pixels_changed and "PIXELS" not in regression.format_check(same)
    moved = regression.compare(baseline, replace(run, data_pixels="b" * 64))
    assert moved.pixels_changed and not moved.failed  # shown, like a changed fingerprint, but not a failure alone
    text = regression.format_check(moved)
    assert "DATA PIXELS CHANGED: run bbbbbbbbbbbb… vs baseline aaaaaaaaaaaa…" in text
    assert text.rstrip().endswith("DATA PIXELS CHANGED (run bbbbbbbbbbbb… vs baseline aaaaaaaaaaaa…)")
    # An older baseline or run without the digest compares as before.
    assert not regression.compare({k: v for k, v in baseline.items() if k != "data_pixels"}, run).pixels_changed
    assert not regression.compare(baseline, replace(run, data_pixels="")).pixels_changed
    with pytest.raises(BenchError, match="'data_pixels' must be a string"):
        regression.validate({**baseline, "data_pixels": 7}, "b.json")


@needs_data
def test_runs_record_their_pixels_and_never_pool_other_ones(tmp_path, capsys, monkeypatch):
    """End to end: a run records the digest in results.jsonl, on its MLflow protocol run and in --dry-run; the same
    protocol whose data decode to other pixels (the digest patched, as another decoder would give) cannot resume
    the first run's rows, and its runs form a leaderboard table of their own."""
    import bench.pipeline
    from bench.data import load_dataset
    from bench.protocol.load import load_protocol
    from bench.reporting import store
    from bench.tracking import layout

    entries = """  - name: mnist_gan
    zoo: mnist_gan
    train: {steps: 2, batch_size: 16}
"""
    proto = tiny_protocol(tmp_path, entries=entries, n_samples=200)
    spec = load_protocol(str(proto)).protocol
    real = pixel_digest(load_dataset(spec.dataset, spec.seed))
    assert main(["run", str(proto), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == f"decoded data sha256 {real}"
    assert main(["run", str(proto), "--workdir", str(tmp_path / "w")]) == 0
    (row,) = results_mod.read(tmp_path / "w" / "results.jsonl")
    assert row["env"]["data_pixels"] == real and row["env"]["packages"]["pillow"] not in ("", "absent")
    c = store.client(f"sqlite:///{tmp_path.as_posix()}/mlflow.db")
    exps = store.experiment_ids(c, None)
    (parent,) = store.parent_runs(c, exps)
    assert parent.data.tags[layout.DATA_PIXELS] == real

    monkeypatch.setattr(bench.pipeline, "pixel_digest", lambda data: "e" * 64)
    capsys.readouterr()
    assert main(["run", str(proto), "--workdir", str(tmp_path / "w"), "--resume"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("[bench]")]
    assert len(err) == 1 and "was scored on data decoded to other pixels" in err[0], err
    assert main(["run", str(proto), "--workdir", str(tmp_path / "w2")]) == 0
    groups = leaderboard.load(f"sqlite:///{tmp_path.as_posix()}/mlflow.db")
    assert sorted(g.data_pixels for g in groups) == sorted([real, "e" * 64])
    assert all(g.pixels_split and len(g.rows) == 1 for g in groups)


@needs_data
def test_a_checkpoint_trained_on_other_pixels_is_not_continued(tmp_path, monkeypatch, caplog):
    """A unit killed mid-training and resumed where the files decode to other pixels trains from scratch, as with a
    checkpoint of another fingerprint: continuing would mix two data sets in one model."""
    import logging

    import bench.pipeline
    import bench.runner.train
    from bench.runner import checkpoint

    entries = """  - name: mnist_gan
    zoo: mnist_gan
    train: {steps: 4, batch_size: 16, checkpoint_every: 2}
"""
    proto = tiny_protocol(tmp_path, entries=entries, n_samples=200)
    assert main(["run", str(proto), "--workdir", str(tmp_path / "w")]) == 0
    (latest,) = (tmp_path / "w").glob("*/mnist_gan/latest.pt")
    first = checkpoint.read(latest)
    assert first["step"] == 4 and len(first["data_pixels"]) == 64
    (tmp_path / "w" / "results.jsonl").unlink()  # as if killed before its row: --resume would continue latest.pt
    for module in (bench.pipeline, bench.runner.train):
        monkeypatch.setattr(module, "pixel_digest", lambda data: "e" * 64)
    with caplog.at_level(logging.WARNING, logger="bench"):
        assert main(["run", str(proto), "--workdir", str(tmp_path / "w"), "--resume"]) == 0
    assert "was trained on data decoded to other pixels" in caplog.text
    again = checkpoint.read(latest)
    assert again["data_pixels"] == "e" * 64 and again["step"] == 4


def test_a_protocol_run_carries_over_no_unit_of_other_pixels(tmp_path):
    """A resumed protocol run's table (report, regression gate) takes the units it did not re-run from earlier runs
    of its fingerprint: only from runs of its own pixels, or runs that recorded none."""
    from bench.reporting import store
    from bench.tracking import layout
    from bench.tracking.mlflow_tracker import Tracker

    uri = f"sqlite:///{(tmp_path / 'm.db').as_posix()}"
    t = Tracker(uri, "e")

    def protocol_run(pixels: str, entries: list[str]):
        tags = {layout.PROTOCOL: "p", layout.FINGERPRINT: "F" * 64, **({layout.DATA_PIXELS: pixels} if pixels else {})}
        parent = t.start_run("p", tags)
        for entry in entries:
            child = t.start_run(entry, layout.child_tags("p", "F" * 64, entry, "mnist_gan"), parent=parent)
            t.log_metrics(child, {"fid": 1.0})
            t.end(child)
        t.end(parent)
        return parent

    protocol_run("", ["unrecorded"])
    protocol_run("b" * 64, ["other"])
    protocol_run("a" * 64, ["same"])
    last = protocol_run("a" * 64, ["new"])
    c = store.client(uri)
    runs, carried = store.protocol_run_units(c, store.experiment_ids(c, ["e"]), store.get_run(c, last))
    assert sorted(runs["entry"]) == ["new", "same", "unrecorded"] and carried == 2
    assert set(runs["data_pixels"]) == {"a" * 64, ""}
    # A protocol run logged before the tag cannot say which pixels it measured: it carries over only the units
    # that cannot either (taking every digest's units, the report and the gate read only one of their tables).
    untagged = protocol_run("", ["z"])
    runs, carried = store.protocol_run_units(c, store.experiment_ids(c, ["e"]), store.get_run(c, untagged))
    assert sorted(runs["entry"]) == ["unrecorded", "z"] and carried == 1


def test_the_report_describes_other_runs_as_the_leaderboard_groups_them():
    from bench.reporting.report import other_runs_notes

    a, b = "a" * 64, "b" * 64
    assert other_runs_notes(a, []) == []
    # One set of pixels: unrecorded runs are pooled with it, whichever side is unrecorded.
    assert other_runs_notes("", [a]) == other_runs_notes(a, [""]) == other_runs_notes(a, [a]) == [
        "1 other run(s) of this fingerprint are in the store; `bench leaderboard` pools them"]
    # Several: only runs of exactly these pixels are pooled; unrecorded ones stand apart too.
    pooled, apart = other_runs_notes(a, [a, b, ""])
    assert pooled.startswith("1 other run(s)") and apart.startswith("2 other run(s) of this fingerprint decoded")
    assert other_runs_notes("", [a, b])[0].startswith("2 other run(s) of this fingerprint decoded")


def test_torchrun_ranks_that_decode_differently_all_refuse(monkeypatch):
    import bench.pipeline
    from bench.runner import distributed as dist

    world = dist.current()
    bench.pipeline._same_pixels_on_every_rank("a" * 64, world)  # one process: nothing to compare
    monkeypatch.setattr(dist, "gather_objects", lambda obj, w: ["a" * 64, "b" * 64])
    with pytest.raises(BenchError, match="torchrun ranks decode the data to different pixels \\(sha256 rank 0: "
                                         "aaaaaaaaaaaa, rank 1: bbbbbbbbbbbb\\)"):
        bench.pipeline._same_pixels_on_every_rank("a" * 64, world)


@pytest.mark.parametrize("seed", [[1], {"a": 1}, "1", True, 1.5])
def test_a_row_with_a_malformed_training_seed_is_refused_in_one_line(tmp_path, seed):
    row = json.loads(_row("e", None))
    row["train_seed"] = seed
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(BenchError, match=r"line 1: not a ganbench result row \('train_seed' is not an integer\)"):
        results_mod.finished_rows(tmp_path / "results.jsonl", "fp", "a" * 64)

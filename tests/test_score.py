"""`bench score A B` and `bench stats save`: two folders, or a folder against `.npz` statistics, scored as
torch-fidelity scores them (`fidelity --input1 A --input2 B`) on the same weights file."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from tests.conftest import KID_VS_FIDELITY


def _folder(path, n, seed, smooth):
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        x = rng.integers(0, 256, (32, 32, 3)).astype(np.float32)
        if smooth:  # a different distribution: blurred and brightened
            x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1) + np.roll(x, 2, 0)) / 4 + 30
        Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(path / f"{i:03d}.png")
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    return _folder(root / "a", 30, 0, False), _folder(root / "b", 24, 1, True)


def test_folder_scores_equal_torch_fidelity_on_the_same_weights(folders, inception_standin, tmp_path, capsys):
    import torch_fidelity

    a, b = folders
    weights, sha = inception_standin
    uri = f"sqlite:///{tmp_path.as_posix()}/m.db"
    args = ["score", str(a), str(b), "--metrics", "fid,kid,is,precision_recall,density_coverage", "--kid-subsets", "10", "--kid-subset-size", "20",
            "--weights", weights, "--weights-sha256", sha, "--json", "--workdir", str(tmp_path / "w"), "--uri", uri]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    ours = result["metrics"]
    ref = torch_fidelity.calculate_metrics(input1=str(a), input2=str(b), fid=True, kid=True, isc=True, cuda=False,
                                           prc=True, kid_subsets=10, kid_subset_size=20, verbose=False, cache=False,
                                           feature_extractor="inception-v3-compat", feature_layer_prc="2048",
                                           feature_extractor_weights_path=weights)
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)
    assert ours["kid/mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=KID_VS_FIDELITY)
    assert ours["kid/std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=KID_VS_FIDELITY)
    assert ours["fid"] > 1 and ours["fid/ci95_low"] <= ours["fid"] <= ours["fid/ci95_high"]
    assert ours["is"] > 0
    assert ours["precision"] == pytest.approx(ref["precision"]) and ours["recall"] == pytest.approx(ref["recall"])
    assert 0 <= ours["coverage"] <= 1 and ours["density"] >= 0
    # logged like a protocol run: a results.jsonl line, and a leaderboard row in the score experiment
    (row,) = [json.loads(x) for x in (tmp_path / "w" / "results.jsonl").read_text().splitlines()]
    assert row["protocol"] == "score" and row["entry"] == "a" and row["fingerprint"] == result["fingerprint"]
    assert row["metrics"]["fid"]["mean"] == ours["fid"]
    assert main(["leaderboard", "score", "--uri", uri, "--no-log"]) == 0
    board = capsys.readouterr().out
    assert f"fingerprint {result['fingerprint'][:12]}" in board and "FID ↓" in board  # Inception's own space


def test_scoring_against_saved_statistics_gives_the_folder_fid(folders, inception_standin, tmp_path, capsys):
    a, b = folders
    weights, sha = inception_standin
    ext = ["--weights", weights, "--weights-sha256", sha]
    assert main(["stats", "save", str(b), str(tmp_path / "b.npz"), *ext]) == 0
    assert main(["score", str(a), str(b), "--metrics", "fid", "--json", "--no-log", *ext]) == 0
    assert main(["score", str(a), str(tmp_path / "b.npz"), "--metrics", "fid", "--json", "--no-log", *ext]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    folder, npz = json.loads(lines[-2])["metrics"]["fid"], json.loads(lines[-1])["metrics"]["fid"]
    assert npz == pytest.approx(folder, rel=1e-6)
    assert main(["score", str(a), str(tmp_path / "b.npz"), "--metrics", "fid,kid", "--no-log", *ext]) == 2
    assert "give FID (and IS of A) only" in capsys.readouterr().err
    # A against itself: every real ball holds its centre and its k - 1 nearest (the k-th sits on the boundary,
    # outside under the strict rule), so density is exactly 1 and coverage 1
    assert main(["score", str(a), str(a), "--metrics", "density_coverage", "--json", "--no-log", *ext]) == 0
    same = json.loads(capsys.readouterr().out)["metrics"]
    assert same == {"density": 1.0, "coverage": 1.0}


def test_bad_folders_are_one_line(tmp_path, capsys):
    (tmp_path / "one").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one" / "x.png")
    assert main(["score", str(tmp_path / "one"), str(tmp_path / "missing"), "--no-log"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scoring needs at least 2" in err[0]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(mixed / "b.png")
    assert main(["score", str(mixed), str(mixed), "--no-log"]) == 2
    assert "images differ in size" in capsys.readouterr().err


def test_score_help_lists_every_metric_it_accepts(capsys):
    from bench.score import METRICS
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    listed = text.split("comma-separated, from:", 1)[1].split("(default", 1)[0]
    assert [m.strip() for m in listed.split(",")] == list(METRICS)


def test_the_device_type_splits_folder_score_fingerprints_and_cpu_keeps_its_own():
    from bench.score import fingerprint_of

    result, settings = {"extractor_sha256": "e" * 64}, {"metrics": ["fid"], "seed": 0}
    cpu = fingerprint_of(result, "a", "b", settings)
    assert fingerprint_of(result, "a", "b", settings, "cpu") == cpu  # the fingerprint CPU scores always had
    assert fingerprint_of(result, "a", "b", settings, "cuda") != cpu


@pytest.mark.skipif(not __import__("os").environ.get("BENCH_DATA"), reason="needs ../shared/data")
def test_a_shipped_judge_scores_folders_and_refuses_a_reference_it_was_trained_on(folders, tmp_path, capsys):
    """`--extractor judge:cifar10` works on two folders (it crashed on a missing reference_digests), and a folder B
    holding images the judge trained on is refused by content digest: it would measure against what it has seen."""
    from bench.data.datasets import load_judge_data

    a, b = folders
    assert main(["score", str(a), str(b), "--extractor", "judge:cifar10", "--metrics", "fid,kid",
                 "--kid-subsets", "5", "--kid-subset-size", "20", "--json", "--no-log"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["extractor"] == "judge:cifar10" and result["metrics"]["fid"] > 0
    seen = tmp_path / "seen"
    seen.mkdir()
    for i, x in enumerate(load_judge_data("cifar10", 0).train_images[:24]):
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(seen / f"{i:03d}.png")
    assert main(["score", str(a), str(seen), "--extractor", "judge:cifar10", "--metrics", "fid", "--no-log"]) == 2
    err = capsys.readouterr().err
    assert "was trained on 24 of" in err and err.count("\n") == 1
    assert main(["stats", "save", str(seen), str(tmp_path / "s.npz"), "--extractor", "judge:cifar10"]) == 2
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("flag, value, msg", [("--batch-size", "0", "must be at least 1"),
                                              ("--kid-subsets", "-1", "must be at least 1"),
                                              ("--kid-subset-size", "1", "must be at least 2"),
                                              ("--seed", "-1", "must be at least 0"),
                                              ("--seed", "99999999999", "below 2**32"),
                                              ("--device", "banana", "not a torch device")])
def test_bad_numeric_and_device_flags_are_usage_errors(folders, capsys, flag, value, msg):
    """Each was a traceback (or, for KID's subsets, a NaN KID written to the results)."""
    a, b = folders
    with pytest.raises(SystemExit) as stop:
        main(["score", str(a), str(b), flag, value, "--no-log"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("bench: error: bench score: ") and msg in err[0]


def test_a_workdir_that_cannot_hold_results_is_refused_before_mlflow(folders, inception_standin, tmp_path, capsys):
    a, b = folders
    weights, sha = inception_standin
    (tmp_path / "file").write_text("x")
    uri = f"sqlite:///{tmp_path.as_posix()}/m.db"
    assert main(["score", str(a), str(b), "--metrics", "fid", "--weights", weights, "--weights-sha256", sha,
                 "--workdir", str(tmp_path / "file"), "--uri", uri]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    assert not (tmp_path / "m.db").exists()  # MLflow never heard of it
    # a folder under that file: the append failed after FINISHED MLflow runs were logged (a traceback)
    assert main(["score", str(a), str(b), "--metrics", "fid", "--weights", weights, "--weights-sha256", sha,
                 "--workdir", str(tmp_path / "file" / "runs"), "--uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create it" in err[0], err
    assert not (tmp_path / "m.db").exists()


def test_score_metrics_it_cannot_compute_on_these_folders_are_one_line(folders, inception_standin, tmp_path, capsys):
    a, b = folders
    weights, sha = inception_standin
    for metrics, msg in ((",,,", "--metrics names no metric"),
                         ("precision_recall", "precision_recall needs n_samples > prc_neighborhood")):
        few = tmp_path / f"few{len(metrics)}"
        few.mkdir()
        for i, png in enumerate(sorted(Path(a).glob("*.png"))[:3]):
            (few / f"{i}.png").write_bytes(png.read_bytes())
        assert main(["score", str(few), str(b), "--metrics", metrics, "--weights", weights, "--weights-sha256", sha,
                     "--workdir", str(tmp_path / "w"), "--uri", f"sqlite:///{tmp_path.as_posix()}/m.db"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "w").exists() and not (tmp_path / "m.db").exists()

"""Hostile inputs: every case exits 2 with one line `bench: error: ...` naming the problem, and nothing is
written to the MLflow store or the work folder. Cases needing the real MNIST files skip without them."""

import gzip
import os
import stat
from pathlib import Path

import pytest
import torch

from bench.cli import main
from tests.conftest import DATA

GOOD = """name: hostile
seed: 0
dataset: {name: mnist, resolution: 28, channels: 1, train_size: 200, eval_size: 100}
entries:
  - {name: e, zoo: mnist_gan, train: {steps: 1, batch_size: 8}}
evaluation: {n_samples: 50, seeds: [0], batch_size: 50, metrics: [is, fid]}
tracking: {uri: "sqlite:///STORE/mlflow.db"}
"""


def edit(old, new):
    return lambda text, tmp: text.replace(old, new)


def entry(line):
    return edit("  - {name: e, zoo: mnist_gan, train: {steps: 1, batch_size: 8}}", line)


def data_root(folder_maker):
    def f(text, tmp):
        root = tmp / "data"
        root.mkdir()
        folder_maker(root)
        return text.replace("{name: mnist,", f"{{name: mnist, root: '{root.as_posix()}',")
    return f


def truncated_idx(root):
    src = DATA / "mnist"
    (root / "t10k-images-idx3-ubyte.gz").write_bytes((src / "t10k-images-idx3-ubyte.gz").read_bytes()[:5000])
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes((src / "t10k-labels-idx1-ubyte.gz").read_bytes())


def garbage_idx(root):
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 40))
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes((DATA / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())


def paired_with(make):
    def f(text, tmp):
        root = tmp / "pairs"
        for split in ("train", "test"):
            (root / split).mkdir(parents=True)
        make(root)
        return (text.replace("{name: mnist, resolution: 28, channels: 1, train_size: 200, eval_size: 100}",
                             f"{{name: paired, root: '{root.as_posix()}', resolution: 64, channels: 3, "
                             "train_size: 1, eval_size: 2}")
                .replace("zoo: mnist_gan, train:", "zoo: pix2pix, config: {resolution: 64, generator: unet_seed, "
                         "ngf: 4, ndf: 4}, train:")
                .replace("metrics: [is, fid]", "metrics: [fid], extractor: inception-v3-compat"))
    return f


def _png(path, w=32, h=16):
    from PIL import Image

    Image.new("RGB", (w, h), (10, 20, 30)).save(path)


def checkpoint_case(kind):
    """An entry that loads a checkpoint which is damaged in one way or another."""
    def f(text, tmp):
        from bench.runner import checkpoint
        from zoo import ZOO
        from zoo.base import DataSpec

        model = ZOO.get("dcgan" if kind == "foreign" else "mnist_gan").build(
            {"ngf": 8, "ndf": 8} if kind == "foreign" else ({"beta2": 0.99} if kind == "config" else {}),
            DataSpec("mnist", 28, 1, 10))
        path = tmp / "given.pt"
        checkpoint.write(path, checkpoint.payload(model, 1, {}, "fp", "e"))
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:1000])
        elif kind == "tampered":
            blob = bytearray(path.read_bytes())
            blob[-100] ^= 0xFF
            path.write_bytes(bytes(blob))
        elif kind == "not-ours":
            checkpoint.digest_path(path).unlink()
            torch.save({"state_dict": {}}, path)
        elif kind == "missing":
            path = tmp / "nope.pt"
        return text.replace("train: {steps: 1, batch_size: 8}}", f"checkpoint: '{path.as_posix()}'}}")
    return f


def tracking_file(kind):
    """The tracking URI names a folder, an empty file or another program's SQLite database: MLflow migrated the
    latter two in place (its tables added to the user's file) and retried the folder for ~110 s."""
    def f(text, tmp):
        import sqlite3

        target = tmp / f"tracking-{kind}"
        if kind == "folder":
            target.mkdir()
        elif kind == "empty":
            target.write_bytes(b"")
        else:
            con = sqlite3.connect(target)
            con.execute("CREATE TABLE foo (x)")
            con.commit()
            con.close()
        before = b"" if kind == "folder" else target.read_bytes()
        tmp.joinpath("tracking-before").write_bytes(before)
        return text.replace('uri: "sqlite:///STORE/mlflow.db"', f'uri: "sqlite:///{target.as_posix()}"')
    return f


def read_only_workdir(text, tmp):
    wd = tmp / "work"
    wd.mkdir()
    wd.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return text


CASES = [
    ("malformed-yaml", lambda t, tmp: t.replace("seed: 0", "seed: [0"), "malformed YAML"),
    # nine levels of ten aliases: a few lines, 10**9 values to whatever walks them (an error's repr ran out of memory)
    ("yaml-alias-bomb", lambda t, tmp: t + "control: [&a0 [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)) + "]\n", "once its YAML aliases are expanded"),
    ("yaml-nested-too-deep", lambda t, tmp: t + "control: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("not-a-mapping", lambda t, tmp: "- just\n- a list\n", "a protocol is a YAML mapping"),
    ("empty-file", lambda t, tmp: "", "a protocol is a YAML mapping"),
    ("unknown-top-key", lambda t, tmp: t + "extras: 1\n", "unknown key 'extras'"),
    ("unknown-eval-key", edit("n_samples: 50", "n_sample: 50"), "unknown key 'n_sample' in evaluation"),
    ("unknown-train-key", entry("  - {name: e, zoo: mnist_gan, train: {step: 1}}"), "unknown key 'step'"),
    ("unknown-config-key", entry("  - {name: e, zoo: mnist_gan, config: {lrr: 1}, train: {steps: 1}}"),
     "unknown config key 'lrr'"),
    ("wrong-type-seed", edit("seed: 0", "seed: zero"), "seed"),
    ("wrong-type-config", entry("  - {name: e, zoo: mnist_gan, config: {lr_G: fast}, train: {steps: 1}}"),
     "expected float"),
    ("negative-size", edit("train_size: 200", "train_size: -5"), "train_size"),
    ("zero-batch", entry("  - {name: e, zoo: mnist_gan, train: {steps: 1, batch_size: 0}}"), "batch_size"),
    ("one-sample", edit("n_samples: 50", "n_samples: 1"), "n_samples"),
    ("duplicate-seeds", edit("seeds: [0]", "seeds: [0, 0]"), "eval seeds must be distinct"),
    ("prc-too-few", edit("metrics: [is, fid]", "metrics: [precision_recall], n_samples: 3"), "n_samples"),
    ("unknown-zoo", entry("  - {name: e, zoo: dcgann, train: {steps: 1}}"), "unknown zoo entry 'dcgann'"),
    ("unknown-metric", edit("metrics: [is, fid]", "metrics: [is, fidd]"), "unknown metric 'fidd'"),
    ("unknown-extractor", edit("metrics: [is, fid]", "metrics: [is], extractor: vgg"), "unknown extractor 'vgg'"),
    ("unknown-dataset", edit("name: mnist,", "name: mnits,"), "unknown dataset 'mnits'"),
    ("unknown-loss", entry("  - {name: e, zoo: dcgan, config: {loss: wgan}, train: {steps: 1}}"), "not one of"),
    ("both-sources", entry("  - {name: e, zoo: mnist_gan, train: {steps: 1}, checkpoint: x.pt}"), "exactly one"),
    ("duplicate-entry", lambda t, tmp: t.replace("entries:\n", "entries:\n  - {name: e, zoo: mlp_gan, train: {steps: 1}}\n"),
     "used twice"),
    ("path-traversal-entry", entry("  - {name: ../../etc, zoo: mnist_gan, train: {steps: 1}}"), "entry names use"),
    ("path-traversal-protocol", edit("name: hostile", "name: ../hostile"), "protocol names use"),
    ("cuda-without-gpu", edit("seed: 0", "seed: 0\ndevice: cuda"), "no CUDA device"),
    ("fp16-on-cpu", entry("  - {name: e, zoo: mnist_gan, train: {steps: 1, precision: fp16}}"), "fp16 needs a CUDA"),
    ("load-size-on-mnist", edit("eval_size: 100}", "eval_size: 100, load_size: 32}"),
     "load_size (training jitter) applies to apple2orange"),
    ("center-crop-on-mnist", edit("eval_size: 100}", "eval_size: 100, center_crop: 20}"),
     "dataset.center_crop applies to celeba, image_folder only, not 'mnist'"),
    ("label-nc-on-mnist", edit("eval_size: 100}", "eval_size: 100, label_nc: 10}"), "dataset.label_nc applies to"),
    ("bad-truncation-psi", edit("metrics: [is, fid]", "metrics: [is, fid], truncation_psis: [0.5, 1.5]"),
     "truncation_psis must be distinct values in [0, 1]"),
    ("too-much-data", edit("train_size: 200", "train_size: 9950"), "exceeds the 8000-image train pool"),
    ("pad-odd", lambda t, tmp: t.replace("resolution: 28", "resolution: 29").replace(
        "zoo: mnist_gan, train:", "zoo: dcgan, fit: pad, train:"), "pad needs"),
    ("judge-without-labels", lambda t, tmp: t.replace("name: mnist, resolution: 28, channels: 1",
                                                      "name: facades, resolution: 64, channels: 3"),
     "no judge is shipped for data set 'facades'"),
    ("missing-data-folder", edit("{name: mnist,", "{name: mnist, root: /nonexistent/mnist,"), "/nonexistent/mnist"),
    ("empty-data-folder", data_root(lambda root: None), "data"),
    ("truncated-idx", data_root(truncated_idx), "t10k-images"),
    ("garbage-idx", data_root(garbage_idx), "t10k-images"),
    ("non-image-among-images", paired_with(lambda r: ((r / "train" / "a.png").write_bytes(b"hello"),
                                                      _png(r / "test" / "b.png"), _png(r / "test" / "c.png"))), "a.png: not a readable image"),
    ("odd-width-pair", paired_with(lambda r: (_png(r / "train" / "a.png", 31), _png(r / "test" / "b.png"),
                                              _png(r / "test" / "c.png"))),
     "even width"),
    ("checkpoint-truncated", checkpoint_case("truncated"), "modified or damaged"),
    ("checkpoint-tampered", checkpoint_case("tampered"), "modified or damaged"),
    ("checkpoint-not-ours", checkpoint_case("not-ours"), "not a ganbench checkpoint"),
    ("checkpoint-missing", checkpoint_case("missing"), "not found"),
    ("checkpoint-other-architecture", checkpoint_case("foreign"), "checkpoint is a 'dcgan' model"),
    ("checkpoint-other-config", checkpoint_case("config"), "checkpoint was trained with beta2"),
    ("weights-wrong-sha", edit("metrics: [is, fid]", "metrics: [is], extractor: inception-v3-compat, "
                               "weights: {path: WEIGHTS, sha256: '" + "0" * 64 + "'}"), "expected " + "0" * 12),
    ("weights-missing", edit("metrics: [is, fid]", "metrics: [is], extractor: inception-v3-compat"),
     "inception-v3-compat weights missing"),
    ("unreachable-mlflow", edit('uri: "sqlite:///STORE/mlflow.db"', 'uri: "http://127.0.0.1:9"'), "is not usable"),
    ("read-only-workdir", read_only_workdir, "not writable"),
    ("tracking-uri-a-folder", tracking_file("folder"), "is a folder; name a database file"),
    ("tracking-uri-an-empty-file", tracking_file("empty"), "is not an MLflow store"),
    ("tracking-uri-another-database", tracking_file("other"), "is not an MLflow store"),
    # a metric no entry can feed is refused before training, naming what it needs (was "unavailable" after)
    ("metric-no-entry-can-feed", edit("metrics: [is, fid]", "metrics: [is, fid, ssim]"),
     "'ssim' needs (output, target) pairs of a paired image-to-image model, which no entry provides (e (mnist_gan))"),
    ("metric-needs-a-classifier", edit("metrics: [is, fid]", "metrics: [classifier_accuracy]"),
     "'classifier_accuracy' needs class logits"),
    # Sizes whose first allocation alone exceeds any machine's memory (a typo): refused before anything runs,
    # not a traceback from the allocator after the judge and earlier entries had run.
    ("batch-beyond-memory", entry("  - {name: e, zoo: mnist_gan, train: {steps: 1, batch_size: 1000000000000}}"),
     "entries[e].train.batch_size 1000000000000: one batch"),
    ("n-samples-beyond-memory", edit("n_samples: 50", "n_samples: 1000000000000"),
     "evaluation.n_samples 1000000000000: the latents alone"),
    ("eval-batch-beyond-memory", edit("batch_size: 50, metrics", "batch_size: 1000000000000, metrics"),
     "evaluation.batch_size 1000000000000: one batch"),
    ("metric-needs-a-style-generator", edit("metrics: [is, fid]", "metrics: [fid_truncation]"),
     "'fid_truncation' needs a style-based generator"),
]


@pytest.mark.parametrize("name,mutate,expect", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_exit_2_and_writes_nothing(name, mutate, expect, tmp_path, capsys, monkeypatch):
    if DATA is None:
        pytest.skip("needs ../shared/data")
    store = tmp_path / "store"
    store.mkdir()
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not really inception")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached weights to find
    text = mutate(GOOD, tmp_path).replace("STORE", store.as_posix()).replace("WEIGHTS", weights.as_posix())
    proto = tmp_path / "p.yaml"
    proto.write_text(text)
    workdir = tmp_path / "work"
    if name == "read-only-workdir" and os.geteuid() == 0:
        # root can write anywhere, so make the folder unusable another way: a file where the folder goes
        workdir.chmod(0o755)
        workdir.rmdir()
        workdir.write_text("a file, not a folder")
    code = main(["run", str(proto), "--workdir", str(workdir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (name, err)
    assert len(err) == 1 and err[0].startswith("bench: error: "), err
    assert expect in err[0], err[0]
    assert not list(store.iterdir()), "nothing may be written to the store"
    if workdir.is_dir():
        assert not [p for p in workdir.rglob("*") if p.is_file()], "nothing may be written to the work folder"
    for kind in ("empty", "other"):  # the user's file is left byte for byte
        if (tmp_path / f"tracking-{kind}").is_file():
            assert (tmp_path / f"tracking-{kind}").read_bytes() == (tmp_path / "tracking-before").read_bytes()


def test_the_corpus_is_large_and_distinct():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_an_error_is_printed_as_one_bounded_line():
    """Whatever a BenchError carries (an exception text from user code, a huge YAML value), the CLI prints one
    line of at most ~2,000 characters."""
    from bench.errors import BenchError, error_line

    line = error_line(BenchError("first line\n  second   line\t" + "x" * 10000))
    assert "\n" not in line and line.startswith("bench: error: first line second line xxx")
    assert len(line) == len("bench: error: ") + 2000 and line.endswith("…")
    assert error_line(BenchError("short")) == "bench: error: short"


def test_an_unreachable_tracking_server_is_one_line_from_the_command_line(tmp_path):
    """As a user sees it (a fresh process, no pytest log capture): urllib3's "Retrying ..." warning came out
    above the one-line error, for `bench run` and for `bench leaderboard`."""
    import subprocess
    import sys

    if DATA is None:
        pytest.skip("needs ../shared/data")
    proto = tmp_path / "p.yaml"
    proto.write_text(GOOD.replace("STORE", tmp_path.as_posix()))
    for argv in (["run", str(proto), "--workdir", str(tmp_path / "w"), "--uri", "http://127.0.0.1:9"],
                 ["leaderboard", str(proto), "--uri", "http://127.0.0.1:9"]):
        out = subprocess.run([sys.executable, "-m", "bench", *argv], capture_output=True, text=True)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1, (argv[0], lines)
        assert lines[0].startswith("bench: error: MLflow") and "is not usable" in lines[0], lines



@pytest.mark.parametrize("argv, msg", [
    (["zoo", "inspect", "cyclegan", "--channels", "0"], "--channels: must be at least 1"),
    (["run", "p.yaml", "--threads", "0"], "--threads: must be at least 1"),
    (["run", "p.yaml", "--gpus-per-job", "nan"], "--gpus-per-job: must be a finite number"),
    (["run", "p.yaml", "--nproc", "0"], "--nproc: must be at least 1"),
    (["run", "p.yaml", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["score", "a", "b", "--kid-subsets", "1000000000"], "--kid-subsets: must be at most 100,000"),
    (["perf", "scale", "--nproc", "0"], "--nproc: must be at least 1"),
    (["perf", "train", "--steps", "0"], "--steps: must be at least 2"),
    (["perf", "train", "--warmup", "-5"], "--warmup: must be at least 0"),
    (["perf", "metrics", "--repeats", "0"], "--repeats: must be at least 1"),
    (["perf", "metrics", "--n", "-5"], "--n: must be at least 2"),
    (["perf", "sweep", "--jobs", "0"], "--jobs: must be at least 1"),
    (["perf", "coverage", "--dims", "0"], "--dims: must be at least 1"),
    (["perf", "coverage", "--n", "1"], "--n: must be at least 20"),
    ([], "the following arguments are required: command"),
    (["check", "p.yaml", "--run", ""], "--run: an MLflow run id, not an empty string"),
])
def test_a_bad_command_line_is_one_line_exit_2(argv, msg, capsys):
    """Each was a traceback deep in the command (ZeroDivisionError, StatisticsError, MemoryError, ...), silently
    ignored (--threads 0, --gpus-per-job nan), or argparse's usage block before its error line."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("bench: error: bench") and msg in err[0], err[0]


def test_leaderboard_checks_every_output_before_writing_any(tmp_path, capsys):
    """--html under a file failed after --csv and --markdown had been written (exit 2, two files left)."""
    proto = tmp_path / "p.yaml"
    proto.write_text(GOOD.replace("STORE", tmp_path.as_posix()))
    (tmp_path / "afile").write_text("x")
    code = main(["leaderboard", str(proto), "--csv", str(tmp_path / "lb.csv"), "--markdown", str(tmp_path / "lb.md"),
                 "--html", str(tmp_path / "afile" / "lb.html"), "--no-log"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "a part of its folder path is a file" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "p.yaml"]

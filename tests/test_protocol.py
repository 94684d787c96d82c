from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.protocol.load import load_protocol
from bench.protocol.load import canonical, fingerprint
from tests.conftest import REPO, tiny_protocol

REPO_PROTOCOLS = REPO / "protocols"


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    return err


def test_every_shipped_protocol_validates(capsys):
    files = sorted(str(p) for p in (REPO / "protocols").rglob("*.yaml"))
    assert files
    assert main(["validate", *files]) == 0


def test_misspelt_key_exits_2_naming_key_location_and_valid_keys(tmp_path, capsys):
    p = tiny_protocol(tmp_path)
    p.write_text(p.read_text().replace("n_samples:", "n_sampels:"))
    assert main(["validate", str(p)]) == 2
    err = _err(capsys)
    assert "unknown key 'n_sampels' in evaluation" in err
    assert "valid keys:" in err and "n_samples" in err and "kid_subset_size" in err


def test_misspelt_key_in_an_entry_names_the_entry_position(tmp_path, capsys):
    p = tiny_protocol(tmp_path)
    p.write_text(p.read_text().replace("checkpoint_every:", "checkpont_every:"))
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 2
    err = _err(capsys)
    assert "unknown key 'checkpont_every' in entries[0].train" in err and "checkpoint_every" in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "mlflow.db").exists()  # nothing written


@pytest.mark.parametrize("old,new,expect", [
    ("zoo: mnist_gan", "zoo: mnist_gann", "unknown zoo entry 'mnist_gann'"),
    ("metrics: [is, fid, kid]", "metrics: [is, fidd]", "unknown metric 'fidd'"),
    ("extractor: judge", "extractor: resnet", "unknown extractor 'resnet'"),
    ("steps: 300", "steps: -1", "entries[0].train.steps"),
    ("n_samples: 500", "n_samples: 0", "evaluation.n_samples"),
    ("seeds: [0, 1]", "seeds: [0, 0]", "eval seeds must be distinct"),
    ("name: mnist_gan", "name: ../evil", "entries[0].name"),
    ("train_size: 2000", "train_size: two", "dataset.train_size"),
])
def test_bad_values_exit_2_with_one_line(tmp_path, capsys, old, new, expect):
    p = tiny_protocol(tmp_path)
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    assert main(["validate", str(p)]) == 2
    assert expect in _err(capsys)


def test_malformed_yaml_and_missing_file(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nentries: [\n")
    assert main(["validate", str(p)]) == 2
    assert "malformed YAML at line" in _err(capsys)
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "protocol file not found" in _err(capsys)
    p.write_text("- just\n- a list\n")
    assert main(["validate", str(p)]) == 2
    assert "a protocol is a YAML mapping" in _err(capsys)


def test_fingerprint_depends_on_what_changes_scores_only(tmp_path):
    a = load_protocol(tiny_protocol(tmp_path, name="a")).protocol
    fp = fingerprint(a, "data", "weights")
    assert fp == fingerprint(a, "data", "weights")
    assert fp != fingerprint(a, "data2", "weights")
    assert fp != fingerprint(a, "data", "weights2")
    (tmp_path / "x").mkdir()
    other_store = load_protocol(tiny_protocol(tmp_path / "x", name="a", store=tmp_path / "x")).protocol
    assert other_store.tracking != a.tracking
    assert fingerprint(other_store, "data", "weights") == fp  # where results are logged does not matter
    seed1 = load_protocol(tiny_protocol(tmp_path, name="a", seed=1)).protocol
    assert fingerprint(seed1, "data", "weights") != fp
    assert "tracking" not in canonical(a) and "root" not in canonical(a)["dataset"]


def test_entry_needs_exactly_one_of_train_or_checkpoint(tmp_path):
    p = tiny_protocol(tmp_path, entries="  - {name: a, zoo: dcgan}\n")
    with pytest.raises(BenchError, match="exactly one of 'train' or 'checkpoint'"):
        load_protocol(p)


@pytest.mark.parametrize("old,new,expect", [
    ("name: mnist,", "name: mnsit,", "unknown dataset 'mnsit'"),
    ("eval_size: 500", "eval_size: 1", "dataset.eval_size"),
    ("seeds: [0, 1]", "seeds: [0, -1]", "eval seeds must be in"),
])
def test_more_bad_values_caught_by_validate(tmp_path, capsys, old, new, expect):
    p = tiny_protocol(tmp_path)
    p.write_text(p.read_text().replace(old, new, 1))
    assert main(["validate", str(p)]) == 2
    assert expect in _err(capsys)


@pytest.mark.parametrize("entries,expect", [
    ("  - {name: a, zoo: mnist_gan, config: {latent_dim: -1}, train: {steps: 1}}\n", "latent_dim >= 1"),
    ("  - {name: a, zoo: dcgan, fit: pad, config: {resolution: 32}, train: {steps: 1}}\n"
     "  - {name: b, zoo: mnist_gan, fit: pad, train: {steps: 1}}\n", None),
])
def test_entries_are_built_before_anything_is_written(tmp_path, capsys, entries, expect):
    p = tiny_protocol(tmp_path, entries=entries)
    if expect is None:  # a valid pair: validate passes
        assert main(["validate", str(p)]) == 0
        return
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 2
    assert expect in _err(capsys)
    assert not (tmp_path / "w").exists() and not (tmp_path / "mlflow.db").exists()


def test_fingerprint_fills_in_config_defaults_and_ignores_bookkeeping(tmp_path):
    d1, d2 = tmp_path / "a", tmp_path / "b"
    d1.mkdir(), d2.mkdir()
    a = load_protocol(tiny_protocol(d1, entries="  - {name: g, zoo: dcgan, train: {steps: 3, log_every: 1}}\n",
                                    store=tmp_path)).protocol
    b = load_protocol(tiny_protocol(d2, entries="  - {name: g, zoo: dcgan, config: {ngf: 64, ndf: 64}, "
                                                "train: {steps: 3, log_every: 2}}\n", store=tmp_path)).protocol
    assert fingerprint(a, "d", "w") == fingerprint(b, "d", "w")
    assert fingerprint(a, "d", "w") != fingerprint(a, "d", "w", device_type="cuda")


def test_an_entry_config_is_resolved_once_into_the_family_config(tmp_path):
    """load_protocol parses each entry's config into its family's typed Config (defaults filled in) once;
    the fingerprint's canonical form and every build read that object."""
    import dataclasses

    from bench.protocol.load import canonical, load_protocol, resolved_config
    from zoo import ZOO
    from zoo.base import DataSpec

    p = tmp_path / "p.yaml"
    p.write_text("""name: once
dataset: {name: mnist, resolution: 28, channels: 1, train_size: 10, eval_size: 10}
entries:
  - {name: a, zoo: dcgan, config: {ngf: 8, ndf: 8}, train: {steps: 1}}
evaluation: {n_samples: 10, seeds: [0]}
""")
    proto = load_protocol(p).protocol
    entry = proto.entries[0]
    cfg = resolved_config(entry)
    assert isinstance(cfg, ZOO.get("dcgan").Config) and cfg.ngf == 8 and cfg.latent_dim == 100  # default filled
    assert resolved_config(entry) is cfg  # parsed once
    from zoo.base import LATER_CONFIG_KEYS

    # every value, defaults included, except options added later and left at their defaults (kept out so that
    # adding an option does not change earlier fingerprints)
    expected = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in LATER_CONFIG_KEYS}
    assert canonical(proto)["entries"][0]["config"] == expected
    model = ZOO.get("dcgan").build(cfg, DataSpec("mnist", 32, 1), "cpu")
    assert model.cfg is cfg


def test_a_duplicate_yaml_key_is_refused_with_its_line(tmp_path, capsys):
    p = tmp_path / "dup.yaml"
    p.write_text("""name: dup
dataset: {name: mnist, resolution: 28, channels: 1, train_size: 10, eval_size: 10}
entries:
  - name: a
    zoo: dcgan
    train: {steps: 10, steps: 1000}
evaluation: {n_samples: 10, seeds: [0]}
""")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "duplicate key 'steps'" in err[0] and "line 6" in err[0], err


@pytest.mark.parametrize("text, msg", [
    ("? [a, b]\n: 6\n", "a key must be a plain value, not a list"),  # crashed: unhashable type
    ("name: x\nentries: [{name: a, zoo: dcgan, checkpoint: ''}]\n", "checkpoint: an empty path"),
    ("name: x\nevaluation: {n_samples: 10, seeds: [0], metrics: [fid, kid, fid]}\n",
     "metrics listed more than once: fid"),
])
def test_malformed_protocols_are_one_line_each(tmp_path, capsys, text, msg):
    """Found by a review of bad inputs: each crashed with a traceback or was accepted (an empty checkpoint failed
    at run time; a metric listed twice doubled its per-seed values)."""
    p = tmp_path / "bad.yaml"
    base = ("dataset: {name: mnist, resolution: 28, channels: 1, train_size: 10, eval_size: 10}\n"
            "entries: [{name: a, zoo: dcgan, train: {steps: 1}}]\nevaluation: {n_samples: 10, seeds: [0]}\n")
    keys = {line.split(":", 1)[0] for line in text.splitlines() if ":" in line and not line.startswith((" ", "?"))}
    p.write_text(text + "".join(line + "\n" for line in base.splitlines() if line.split(":", 1)[0] not in keys))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err


def test_the_uri_and_device_flags_are_strings_not_yaml(tmp_path):
    """A '#' in a path began a YAML comment: `--uri 'sqlite:////x/my #1/m.db'` logged to sqlite:////x/my."""
    from types import SimpleNamespace

    from bench.cli import flag_overrides

    p = tiny_protocol(tmp_path, name="u")
    uri = f"sqlite:///{tmp_path.as_posix()}/my #1/m.db"
    args = SimpleNamespace(overrides=[], device="cpu", uri=uri)
    proto = load_protocol(p, flag_overrides(args)).protocol
    assert proto.tracking.uri == uri and proto.device == "cpu"


def test_validate_reports_every_bad_file_and_still_checks_the_good_ones(tmp_path, capsys):
    good = REPO_PROTOCOLS / "quickstart.yaml"
    bad1, bad2 = tmp_path / "b1.yaml", tmp_path / "b2.yaml"
    bad1.write_text("name: [\n")
    bad2.write_text(good.read_text().replace("n_samples:", "n_sampels:"))
    assert main(["validate", str(bad1), str(good), str(bad2)]) == 2
    out, err = capsys.readouterr()
    assert f"{good}: ok" in out
    lines = err.strip().splitlines()
    assert any("b1.yaml: malformed YAML" in x for x in lines) and any("unknown key 'n_sampels'" in x for x in lines)
    assert lines[-1] == "2 of 3 protocol files have errors"


def test_set_overrides_keys_by_dotted_path_and_entries_by_name(tmp_path, capsys):
    from bench.errors import BenchError
    from bench.protocol.load import load_protocol

    path = REPO_PROTOCOLS / "quickstart.yaml"
    plain = load_protocol(path)
    loaded = load_protocol(path, ["entries.dcgan.train.steps=10", "evaluation.seeds=[0]", "device=cpu",
                                  "tracking.uri=sqlite:///x.db"])
    p = loaded.protocol
    dcgan = next(e for e in p.entries if e.name == "dcgan")
    assert dcgan.train.steps == 10 and p.evaluation.seeds == [0] and p.device == "cpu"
    assert p.tracking.uri == "sqlite:///x.db"
    assert loaded.text.startswith("# quickstart.yaml with --set entries.dcgan.train.steps=10")  # the record says so
    assert plain.protocol.evaluation.seeds != [0]  # the file itself is untouched
    # only where runs are logged (`bench run --uri`): the file stays the record, no store path written into it
    uri_only = load_protocol(path, ["tracking.uri=sqlite:////some/machine/mlflow.db"])
    assert uri_only.text == plain.text and uri_only.protocol.tracking.uri == "sqlite:////some/machine/mlflow.db"
    with pytest.raises(BenchError, match="no entry named 'dcgn'.*entries: "):
        load_protocol(path, ["entries.dcgn.train.steps=10"])
    with pytest.raises(BenchError, match="expected KEY=VALUE"):
        load_protocol(path, ["entries.dcgan.train.steps"])
    with pytest.raises(BenchError, match="unknown key 'stepz'"):
        load_protocol(path, ["entries.dcgan.train.stepz=10"])


def test_validate_refuses_a_metric_no_entry_can_feed_without_data(tmp_path, capsys):
    """ssim on a protocol of DCGANs: refused by `bench validate`, from the families' declarations alone."""
    p = tmp_path / "ssim.yaml"
    p.write_text("""name: ssim
dataset: {name: mnist, resolution: 28, channels: 1, train_size: 10, eval_size: 10}
entries:
  - {name: a, zoo: dcgan, train: {steps: 1}}
evaluation: {n_samples: 10, seeds: [0], metrics: [fid, ssim]}
""")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ssim.yaml: evaluation.metrics: 'ssim' needs (output, target) pairs" in err[0], err
    p.write_text(p.read_text().replace("metrics: [fid, ssim]", "metrics: [fid, classifier_accuracy]").replace(
        "  - {name: a, zoo: dcgan, train: {steps: 1}}", "  - {name: a, zoo: dcgan, train: {steps: 1}}\n"
                                                       "  - {name: b, zoo: sgan, train: {steps: 1}}"))
    assert main(["validate", str(p)]) == 0  # one entry can: the others report it unavailable after scoring


def test_writing_to_a_folder_or_under_a_file_is_one_clear_error(tmp_path):
    """`leaderboard --csv DIR`, `stats save A DIR`, `baseline update --out DIR` were IsADirectoryError tracebacks."""
    from bench.io import atomic_write_bytes

    (tmp_path / "d").mkdir()
    with pytest.raises(BenchError, match="is a folder; give the name of the file"):
        atomic_write_bytes(tmp_path / "d", b"x")
    (tmp_path / "f").write_text("keep")
    with pytest.raises(BenchError, match="part of its folder path is a file"):
        atomic_write_bytes(tmp_path / "f" / "x.csv", b"x")
    assert (tmp_path / "f").read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]


@pytest.mark.parametrize("key, value", [("lr_D", float("inf")), ("r1_gamma", float("nan")), ("lr_G", "-inf")])
def test_a_non_finite_family_setting_is_refused_before_training(key, value):
    """lr_D: .inf passed every check and the entry failed mid-training with a non-finite loss (exit 1)."""
    from zoo import ZOO
    from zoo.base import parse_config

    with pytest.raises(BenchError, match=f"dcgan.{key}: expected a finite number"):
        parse_config(ZOO.get("dcgan").Config, {key: value}, "dcgan")
    assert parse_config(ZOO.get("dcgan").Config, {key: 0.5}, "dcgan")  # a finite value is fine


@pytest.mark.parametrize("claim,message", [
    ("{better: mnist_gan, than: nobody, metric: fid, source: 'X 2020'}", "'nobody' is not an entry; entries: mnist_gan"),
    ("{better: mnist_gan, than: mnist_gan, metric: fid, source: 'X 2020'}", "compares two entries"),
    ("{better: mnist_gan, than: real_data, metric: fdi, source: 'X 2020'}", "'fdi' has no known direction"),
    ("{better: mnist_gan, than: real_data, metric: fid}", "source"),
])
def test_a_bad_literature_claim_is_one_line_and_exit_2(tmp_path, capsys, claim, message):
    p = tiny_protocol(tmp_path, reference=True)
    p.write_text(p.read_text() + f"literature:\n  - {claim}\n")
    assert main(["validate", str(p)]) == 2
    assert message in _err(capsys)


def test_literature_claims_change_no_fingerprint(tmp_path):
    """What papers report is a reading of the scores (like `control`): adding a claim, or its evidence after the
    run, must not split one protocol's runs into two fingerprints."""
    p = tiny_protocol(tmp_path, reference=True)
    plain = load_protocol(p).protocol
    p.write_text(p.read_text() + "literature:\n  - {better: mnist_gan, than: real_data, metric: fid, source: 'X 2020', "
                 "evidence: 'a longer run'}\n")
    claimed = load_protocol(p).protocol
    assert claimed.literature and claimed.literature[0].evidence == "a longer run"
    assert fingerprint(claimed, "d", "w") == fingerprint(plain, "d", "w")
    assert "literature" not in canonical(claimed)

"""docs/contributing.md's two recipes, followed with its templates: a new family and a new metric need only
their own file and one registry line (here `register`, the same table the line fills), and then train, score,
sort, label and report like the built-in ones."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.metrics import KEY_DIRECTION, METRICS, TABLE_KEYS, label
from tests.conftest import needs_data, tiny_protocol
from zoo import ZOO

TEMPLATES = Path(__file__).resolve().parents[1] / "docs" / "templates"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"template_{name}", TEMPLATES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registered():
    family, metric = _load("family").TemplateGAN, _load("metric").TEMPLATE_BRIGHTNESS
    ZOO.register("template_gan", family)
    METRICS.register("template_brightness", metric)
    try:
        yield family, metric
    finally:
        ZOO.unregister("template_gan")
        METRICS.unregister("template_brightness")


def test_a_registered_metric_is_sorted_labelled_and_tabled_from_its_declaration(registered):
    assert KEY_DIRECTION["brightness"] is True and "brightness" in TABLE_KEYS and label("brightness") == "Bright"
    assert METRICS.get("template_brightness").needs == "fake"


def test_unregistered_the_names_are_gone():
    assert "template_gan" not in ZOO and "brightness" not in KEY_DIRECTION and "brightness" not in TABLE_KEYS


@needs_data
def test_a_new_family_and_metric_run_end_to_end(registered, tmp_path, capsys):
    p = tiny_protocol(tmp_path, name="contrib", n_samples=200, entries="""  - name: template
    zoo: template_gan
    train: {steps: 5, batch_size: 16, log_every: 1}
""")
    p.write_text(p.read_text().replace("metrics: [is, fid, kid]", "metrics: [fid, template_brightness]"))
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "w" / "results.jsonl").read_text().splitlines()]
    assert row["status"] == "FINISHED" and row["zoo"] == "template_gan"
    assert -1 <= row["metrics"]["brightness"]["mean"] <= 1 and row["metrics"]["fid"]["mean"] > 0
    capsys.readouterr()
    assert main(["leaderboard", str(p), "--sort", "brightness", "--no-log"]) == 0
    printed = capsys.readouterr().out
    assert "Bright ↑" in printed and "FID (judge:mnist) ↓" in printed


def test_a_metric_setting_lives_in_the_metric_file_and_enters_the_fingerprint_only_when_set(registered, tmp_path,
                                                                                             capsys):
    from types import SimpleNamespace

    import torch

    from bench.metrics.base import MetricContext
    from bench.protocol.load import canonical, load_protocol

    _, metric = registered
    images = torch.full((4, 1, 8, 8), 0.25)
    ctx = MetricContext(0, SimpleNamespace(metric_settings={}), fake_images=lambda: iter([images]))
    assert metric.compute(ctx)["brightness"] == 0.25  # the declared default, 1.0
    ctx.settings.metric_settings["brightness_scale"] = 2.0
    assert metric.compute(ctx)["brightness"] == 0.5

    base = tiny_protocol(tmp_path, name="settings").read_text()
    plain, default, set_ = (tmp_path / f"{n}.yaml" for n in ("plain", "default", "set"))
    plain.write_text(base)
    default.write_text(base.replace("kid_subsets: 20", "kid_subsets: 20\n  brightness_scale: 1.0"))
    set_.write_text(base.replace("kid_subsets: 20", "kid_subsets: 20\n  brightness_scale: 2.0"))
    loaded = load_protocol(set_).protocol
    assert loaded.evaluation.metric_settings == {"brightness_scale": 2.0}
    c_plain, c_default, c_set = (canonical(load_protocol(p).protocol) for p in (plain, default, set_))
    assert c_plain == c_default and c_set["evaluation"]["brightness_scale"] == 2.0 and c_set != c_plain
    bad = tmp_path / "bad.yaml"
    bad.write_text(base.replace("kid_subsets: 20", "kid_subsets: 20\n  brightness_scale: -1"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluation.brightness_scale" in err[0] and "template_brightness" in err[0]
    typo = tmp_path / "typo.yaml"
    typo.write_text(base.replace("kid_subsets: 20", "kid_subsets: 20\n  brightness_scal: 2.0"))
    assert main(["validate", str(typo)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'brightness_scal' in evaluation" in err and "brightness_scale" in err

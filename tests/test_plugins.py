"""Your own generator as a plugin: a package outside ganbench, named by a protocol entry as `module:Class`
or through the `ganbench.zoo` entry-point group, trains and scores like a built-in family."""

import json
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from tests.conftest import needs_data, tiny_protocol
from zoo import ZOO

TEMPLATE = Path(__file__).resolve().parents[1] / "docs" / "templates" / "family.py"


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A package `myplug` (the family template) and its installed metadata with a ganbench.zoo entry point,
    on sys.path as an installed package would be."""
    site = tmp_path / "site"
    (site / "myplug").mkdir(parents=True)
    shutil.copy(TEMPLATE, site / "myplug" / "__init__.py")
    info = site / "myplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ganbench.zoo]\ntinygan = myplug:TemplateGAN\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in ("myplug:TemplateGAN", "tinygan"):
        ZOO.unregister(name)


def _protocol(tmp_path, zoo):
    return tiny_protocol(tmp_path, name="plug", n_samples=200, entries=f"""  - name: mine
    zoo: "{zoo}"
    train: {{steps: 5, batch_size: 16, log_every: 1}}
""")


def test_entry_point_and_module_path_name_the_same_family(plugin_path, tmp_path, capsys):
    assert ZOO.get("tinygan") is ZOO.get("myplug:TemplateGAN")
    assert main(["validate", str(_protocol(tmp_path, "tinygan"))]) == 0


def test_a_plugin_that_is_not_a_family_or_cannot_be_imported_is_one_line(plugin_path, tmp_path, capsys):
    for zoo, expect in (("os.path:join", "is not a GAN family"), ("nosuchpkg.mod:X", "cannot import"),
                        ("myplug:Missing", "cannot import")):
        assert main(["validate", str(_protocol(tmp_path, zoo))]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err
    assert main(["validate", str(_protocol(tmp_path, "dcgn"))]) == 2
    assert "did you mean 'dcgan'" in capsys.readouterr().err  # not a plugin: the usual suggestion


@needs_data
def test_a_plugin_family_trains_scores_and_ranks_end_to_end(plugin_path, tmp_path, capsys):
    p = _protocol(tmp_path, "myplug:TemplateGAN")
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 0
    (row,) = [json.loads(x) for x in (tmp_path / "w" / "results.jsonl").read_text().splitlines()]
    assert row["status"] == "FINISHED" and row["zoo"] == "myplug:TemplateGAN" and row["metrics"]["fid"]["mean"] > 0
    capsys.readouterr()
    assert main(["leaderboard", str(p), "--no-log"]) == 0
    assert "myplug:TemplateGAN" in capsys.readouterr().out

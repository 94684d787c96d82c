"""A generator you bring (zoo/external.py): the same network scored as a ganbench checkpoint, as a TorchScript
file and as a plain state dict with the class that builds it gives the same scores; files that do not fit are
one line and exit 2 before anything runs, and a state dict carrying a pickle payload never runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.data import load_dataset
from bench.protocol.load import load_protocol
from bench.runner import checkpoint
from bench.runner.seeding import derive
from tests.conftest import needs_data, write_protocol
from tests.test_safe_loading import assert_runs_when_loaded_unsafely, one_line_error, torch_file
from zoo import ZOO

PROTOCOL = """name: ext
seed: 0
dataset: {{name: mnist, resolution: 28, channels: 1, train_size: 500, eval_size: 300}}
entries:
{entries}
evaluation: {{n_samples: 200, seeds: [0, 1], batch_size: 64, extractor: judge, metrics: [is, fid, kid],
             kid_subset_size: 100, kid_subsets: 10, reference: false}}
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""

# The class a state dict needs, as a user's package would hold it: mnist_gan's G built from keyword arguments.
MODULE = """from zoo.mnist_gan import Config, Generator


class MnistG(Generator):
    def __init__(self, **kwargs):
        super().__init__(Config(**kwargs))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One mnist_gan G (seeded init, a few steps so BatchNorm has statistics), saved three ways."""
    from bench.data.transforms import to_float

    root = tmp_path_factory.mktemp("external")
    proto = write_protocol(root / "p.yaml", PROTOCOL.format(entries="  - {name: x, zoo: mnist_gan, train: {steps: 1}}",
                                                          store=root.as_posix()))
    data = load_dataset(load_protocol(proto).protocol.dataset, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive(0, "external-test"))
        model = ZOO.get("mnist_gan").build({}, data.spec, "cpu")
        gen = torch.Generator().manual_seed(1)
        for step in range(5):
            model.train_step(lambda: to_float(data.train_images[torch.randint(0, 500, (32,), generator=gen)]), step)
    checkpoint.save(root / "bench.pt", model, 5, {}, "external-test", "x")
    G = model.G.eval()
    torch.jit.save(torch.jit.trace(G, torch.randn(4, 100)), str(root / "g.ts"))
    torch.save(G.state_dict(), root / "g_state.pt")
    (root / "extpkg").mkdir()
    (root / "extpkg" / "__init__.py").write_text("")
    (root / "extpkg" / "nets.py").write_text(MODULE)
    return root


def _run(tmp: Path, files: Path, entries: str, monkeypatch) -> int:
    monkeypatch.syspath_prepend(str(files))  # the user's package is importable, as an installed one would be
    proto = write_protocol(tmp / "ext.yaml", PROTOCOL.format(entries=entries, store=tmp.as_posix()))
    return main(["run", str(proto), "--workdir", str(tmp / "w")])


@needs_data
def test_three_formats_of_one_generator_score_the_same(files, tmp_path, monkeypatch):
    entries = f"""  - {{name: bench_ckpt, zoo: mnist_gan, checkpoint: '{files / "bench.pt"}'}}
  - name: torchscript
    checkpoint: {{path: '{files / "g.ts"}', format: torchscript, latent_dim: 100, resolution: 28}}
  - name: state_dict
    checkpoint: {{path: '{files / "g_state.pt"}', format: state_dict, module: "extpkg.nets:MnistG",
                 latent_dim: 100, resolution: 28}}"""
    assert _run(tmp_path, files, entries, monkeypatch) == 0
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    assert {r["status"] for r in rows.values()} == {"FINISHED"} and len(rows) == 3
    ref = rows["bench_ckpt"]["metrics"]
    assert ref["fid"]["mean"] > 0 and ref["is"]["mean"] > 1
    for name in ("torchscript", "state_dict"):
        for key in ("is", "fid", "kid/mean"):
            assert rows[name]["metrics"][key]["per_seed"] == pytest.approx(ref[key]["per_seed"], rel=1e-6), (name, key)
        assert rows[name]["zoo"] == "external"
    assert rows["torchscript"]["checkpoint_sha256"] != rows["state_dict"]["checkpoint_sha256"]


@needs_data
@pytest.mark.parametrize("case, expected", [
    ("format: torchscript, latent_dim: 100, resolution: 28, path: '{state}'", "not a TorchScript file"),
    ("format: torchscript, latent_dim: 100, resolution: 32, path: '{ts}'", "expected (2, 1, 32, 32)"),
    ("format: torchscript, latent_dim: 100, resolution: 28, latent_4d: true, path: '{ts}'", "external generator"),
    ("format: state_dict, module: 'extpkg.nets:Nope', latent_dim: 100, resolution: 28, path: '{state}'",
     "cannot import it"),
    ("format: state_dict, latent_dim: 100, resolution: 28, path: '{state}'", "needs module"),
    # constructor arguments the class refuses, one of them huge: printed clipped, not whole
    ("format: state_dict, module: 'extpkg.nets:MnistG', latent_dim: 100, resolution: 28, path: '{state}', "
     "kwargs: {{bogus: '" + "x" * 50000 + "'}}", "cannot build it with kwargs {'bogus': 'xxx"),
])
def test_a_file_that_does_not_fit_is_one_line_before_anything_runs(case, expected, files, tmp_path, monkeypatch,
                                                                     capsys):
    spec = case.format(state=files / "g_state.pt", ts=files / "g.ts")
    assert _run(tmp_path, files, f"  - name: mine\n    checkpoint: {{{spec}}}", monkeypatch) == 2
    line = one_line_error(capsys)
    assert expected in line and len(line) < 1500, line[:2000]
    assert not (tmp_path / "w" / "results.jsonl").exists() and not (tmp_path / "mlflow.db").exists()


@needs_data
def test_a_state_dict_with_a_pickle_payload_never_runs_it(files, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "marker"
    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(torch_file(marker))
    spec = f"path: '{hostile}', format: state_dict, module: 'extpkg.nets:MnistG', latent_dim: 100, resolution: 28"
    assert _run(tmp_path, files, f"  - name: mine\n    checkpoint: {{{spec}}}", monkeypatch) == 2
    assert "refused to load" in one_line_error(capsys)
    assert not marker.exists()
    assert_runs_when_loaded_unsafely(tmp_path, torch_file, "torch")


def test_the_mapping_form_is_only_for_a_generator_you_bring(tmp_path, capsys):
    entries = "  - {name: e, zoo: dcgan, checkpoint: {path: g.pt, format: torchscript}}"
    proto = write_protocol(tmp_path / "bad.yaml", PROTOCOL.format(entries=entries, store=tmp_path.as_posix()))
    assert main(["validate", str(proto)]) == 2
    assert "give its path as a string" in capsys.readouterr().err


def test_zoo_inspect_explains_that_external_has_no_layers_of_its_own(capsys):
    assert main(["zoo", "inspect", "external"]) == 2
    assert "no layers of its own" in one_line_error(capsys)

"""The real-data row (`evaluation.reference`, bench/runner/reference.py): real training images scored as
samples (unconditional data) or the identity map (translation), through the same evaluation as every entry.

It must score far better than an untrained model, come only from the training part (checked by content
hash against the held-out reference), be logged like an entry and marked in every table, survive --resume,
vanish with `reference: false`, and leave every fingerprint as it was before the option existed.
"""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from bench.cli import main
from bench.data import load_dataset
from bench.data.datasets import image_digests
from bench.data.transforms import to_float, to_uint8
from bench.errors import BenchError
from bench.metrics import METRICS
from bench.metrics.base import MetricContext
from bench.protocol.load import canonical, fingerprint, load_protocol
from bench.protocol.schema import DatasetSpec, EvaluationSpec, Protocol
from bench.runner import reference
from bench.runner.sampling import fake_batches
from tests.conftest import needs_data, tiny_protocol, write_protocol

UNTRAINED = "  - {name: untrained, zoo: mnist_gan, train: {steps: 0}}\n"


def _rows(workdir):
    return {r["entry"]: r for r in map(json.loads, (workdir / "results.jsonl").read_text().splitlines())}


def _digests(images: torch.Tensor) -> set[bytes]:
    return {bytes(d.tolist()) for d in image_digests(images)}


# --- the draw rule, on synthetic images ----------------------------------------------------------------

def _distinct_images(n: int) -> torch.Tensor:
    """n 1x4x4 images that all differ (image i has pixel value i at one corner)."""
    x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return x


def _drawn(source, n: int, seed: int, batch_size: int) -> torch.Tensor:
    return torch.cat(list(fake_batches(source, n, seed, batch_size, 4, 1)))


def test_real_data_draws_training_images_without_replacement_then_wraps_evenly():
    train = _distinct_images(10)
    source = reference.RealDataSamples(train)
    g = torch.Generator().manual_seed(0)
    idx = source.sample_latent(7, g)
    assert len(set(idx.tolist())) == 7  # n <= N: no image twice
    counts = Counter(source.sample_latent(25, torch.Generator().manual_seed(1)).tolist())
    assert set(counts) == set(range(10)) and set(counts.values()) == {2, 3}  # n > N: every image 2 or 3 times
    # The images that reach the extractor are the training images themselves, bit for bit.
    out = _drawn(source, 7, seed=5, batch_size=3)
    assert torch.equal(out, train[source.sample_latent(7, torch.Generator().manual_seed(5))])


def test_real_data_draw_depends_on_the_seed_and_not_on_the_batch_size():
    source = reference.RealDataSamples(_distinct_images(50))
    a = _drawn(source, 20, seed=3, batch_size=3)
    assert torch.equal(a, _drawn(source, 20, seed=3, batch_size=20))
    assert torch.equal(a, _drawn(source, 20, seed=3, batch_size=7))
    assert not torch.equal(a, _drawn(source, 20, seed=4, batch_size=3))


def test_label_map_inputs_have_no_identity_row_and_images_do():
    photos = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    labels = SimpleNamespace(task="paired", eval_inputs=torch.zeros(2, 36, 8, 8, dtype=torch.uint8),
                             eval_images=photos, spec=SimpleNamespace(name="cityscapes"))
    with pytest.raises(reference.NoReferenceRow, match="36-channel inputs of 'cityscapes'"):
        reference.reference_row(labels)
    images = SimpleNamespace(task="unpaired", eval_inputs=photos, eval_images=photos, spec=SimpleNamespace(name="h2z"))
    row = reference.reference_row(images)
    x = torch.rand(2, 3, 8, 8)
    assert row.name == "identity" and row.source.task == "unpaired"
    assert row.source.translate(x, sample_seeds=[1, 2]) is x and row.source.translate_back(x) is x


def test_metrics_without_a_latent_space_or_a_classifier_are_unavailable_with_the_reason():
    row = reference.ReferenceRow("real_data", reference.RealDataSamples(_distinct_images(3)))
    out = row.unavailable(["is", "fid", "ppl", "fid_truncation", "classifier_accuracy", "lpips_diversity"])
    assert set(out) == {"ppl", "fid_truncation", "classifier_accuracy"}
    assert "latent space" in out["ppl"] and "no discriminator" in out["classifier_accuracy"]
    assert "real training images" in out["ppl"]


# --- the option and the fingerprint --------------------------------------------------------------------

RAW = {"name": "p", "dataset": {"name": "mnist", "resolution": 28, "train_size": 100, "eval_size": 50},
       "entries": [{"name": "g", "zoo": "mnist_gan", "train": {"steps": 1}}],
       "evaluation": {"n_samples": 10, "seeds": [0]}}


def _with_reference(value):
    raw = json.loads(json.dumps(RAW))
    raw["evaluation"]["reference"] = value
    return Protocol.model_validate(raw)


def test_reference_is_on_by_default_and_never_enters_the_canonical_protocol():
    default = Protocol.model_validate(RAW)
    assert default.evaluation.reference is True
    assert "reference" not in canonical(default)["evaluation"]
    assert canonical(_with_reference(False)) == canonical(_with_reference(True)) == canonical(default)


def test_entry_names_of_the_real_data_row_are_reserved_while_it_is_on():
    for name in ("real_data", "identity"):
        raw = json.loads(json.dumps(RAW))
        raw["entries"][0]["name"] = name
        with pytest.raises(ValueError, match="real-data row"):
            Protocol.model_validate(raw)
        raw["evaluation"]["reference"] = False
        Protocol.model_validate(raw)  # free to use when the row is off


def test_reserved_name_is_a_one_line_error(tmp_path, capsys):
    p = tiny_protocol(tmp_path, entries="  - {name: real_data, zoo: mnist_gan, train: {steps: 0}}\n", reference=True)
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "real-data row" in err[0] and "reference: false" in err[0]


def test_a_protocol_without_the_key_keeps_its_fingerprint(tmp_path):
    """The text of a protocol written before `reference` existed (regression-tiny, whose fingerprint is committed in
    reports/baselines/ and checked by tests/test_regression.py) fingerprints the same with the key absent, on or off:
    the canonical protocol, the only part of the fingerprint a protocol's text contributes, never holds it."""
    from tests.report_runs import write_protocol as regression_tiny

    text = regression_tiny(tmp_path / "p").read_text()
    assert "  reference: false\n" in text
    fps = set()
    for variant in ("", "  reference: true\n", "  reference: false\n"):
        p = write_protocol(tmp_path / f"v{len(variant)}.yaml", text.replace("  reference: false\n", variant))
        protocol = load_protocol(p).protocol
        assert "reference" not in canonical(protocol)["evaluation"]
        fps.add(fingerprint(protocol, "data-sha256", "extractor-sha256", {}, "cpu"))
    assert len(fps) == 1


# --- leakage: only training images, never the reference -------------------------------------------------

@needs_data
def test_every_real_data_sample_is_a_training_image_and_none_is_a_reference_image():
    spec = DatasetSpec(name="mnist", resolution=28, channels=1, train_size=2000, eval_size=500)
    data = load_dataset(spec, 0)
    row = reference.reference_row(data)
    assert row.name == "real_data"
    reference_set = {bytes(d.tolist()) for d in data.reference_digests()} | _digests(data.eval_images)
    train_set = _digests(data.train_images)
    assert not train_set & reference_set  # the split itself is clean, so a leak below can only be the row's
    for seed in (0, 1):
        drawn = _digests(_drawn_mnist(row.source, len(data.train_images), seed))  # the whole training part
        assert drawn <= train_set and not drawn & reference_set


def _drawn_mnist(source, n, seed):
    return torch.cat(list(fake_batches(source, n, seed, 256, 28, 1)))


# --- end to end on MNIST ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """One `bench run` of an untrained entry with the real-data row, recording every image the row generated."""
    tmp = tmp_path_factory.mktemp("reference")
    p = tiny_protocol(tmp, name="ref", entries=UNTRAINED, n_samples=300, reference=True)
    p.write_text(p.read_text().replace("metrics: [is, fid, kid]", "metrics: [is, fid, kid, ppl]"))
    drawn = []
    generate = reference.RealDataSamples.generate

    def spy(self, z):
        out = generate(self, z)
        drawn.append(to_uint8(out.cpu()))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reference.RealDataSamples, "generate", spy)
        assert main(["run", str(p), "--workdir", str(tmp / "w")]) == 0
    return SimpleNamespace(tmp=tmp, protocol=p, work=tmp / "w", rows=_rows(tmp / "w"), drawn=torch.cat(drawn),
                           uri=f"sqlite:///{tmp.as_posix()}/mlflow.db")


@needs_data
def test_real_data_row_scores_far_better_than_the_untrained_entry(mnist_run):
    rows = mnist_run.rows
    assert set(rows) == {"untrained", "real_data"}
    real, untrained = rows["real_data"], rows["untrained"]
    assert real["status"] == "FINISHED" and real["info"]["baseline"] == "real_data" and real["zoo"] == "real_data"
    assert "baseline" not in untrained["info"]
    fid_real, fid_untrained = real["metrics"]["fid"]["mean"], untrained["metrics"]["fid"]["mean"]
    assert 0 < fid_real < 0.02 * fid_untrained, (fid_real, fid_untrained)
    assert real["metrics"]["is"]["mean"] > 5 * untrained["metrics"]["is"]["mean"]  # ~9 vs 1 with the judge
    s0, s1 = real["metrics"]["fid"]["per_seed"]
    assert s0 != s1  # each evaluation seed draws other training images
    assert real["fingerprint"] == untrained["fingerprint"]
    assert real["info"]["extractor"] == untrained["info"]["extractor"]  # the run-wide facts, as every row
    reasons = real["info"]["unavailable"]
    assert set(reasons) == {"ppl"} and "latent space" in reasons["ppl"]  # classifier_accuracy: the unit test above
    assert not real["checkpoint"]  # nothing trained, nothing loaded


@needs_data
def test_the_run_fed_only_training_images_to_the_real_data_row(mnist_run):
    rows = mnist_run.rows
    data = load_dataset(load_protocol(mnist_run.protocol).protocol.dataset, 0)
    drawn = _digests(mnist_run.drawn)
    assert len(mnist_run.drawn) >= 2 * 300  # two evaluation seeds (plus the sample grid) went through the spy
    assert drawn <= _digests(data.train_images)
    assert not drawn & ({bytes(d.tolist()) for d in data.reference_digests()} | _digests(data.eval_images))
    assert rows["real_data"]["status"] == "FINISHED"


@needs_data
def test_real_data_row_is_its_own_mlflow_run_and_heads_every_table(mnist_run):
    from mlflow.tracking import MlflowClient

    from bench.reporting import leaderboard, render

    rows = mnist_run.rows
    client = MlflowClient(tracking_uri=mnist_run.uri)
    runs = client.search_runs([client.get_experiment_by_name("ref").experiment_id],
                              filter_string="tags.`bench.entry` = 'real_data'")
    assert len(runs) == 1
    child = runs[0]
    assert child.data.tags["bench.baseline"] == "real_data" and "mlflow.parentRunId" in child.data.tags
    assert child.data.metrics["fid"] == pytest.approx(rows["real_data"]["metrics"]["fid"]["mean"], rel=1e-12)
    assert "samples.png" in {a.path for a in client.list_artifacts(child.info.run_id)}
    assert child.data.tags["bench.unavailable.ppl"].startswith("ppl needs a latent space")
    # The comparison table written by `bench run`: the baseline row first, marked.
    md = next(mnist_run.work.glob("ref-*/comparison.md")).read_text().splitlines()
    body = [line for line in md if line.startswith("| ") and "entry" not in line]
    assert body[0].startswith("| real_data (baseline) |") and body[1].startswith("| untrained |")
    # The leaderboard: first, unranked, marked; the untrained entry is ranked 1 (the only model).
    (group,) = leaderboard.load(mnist_run.uri, ["ref"])
    assert list(group.rows["entry"]) == ["real_data", "untrained"]
    assert pd_isna(group.rows.loc[0, "rank"]) and group.rows.loc[1, "rank"] == 1
    assert group.rows.loc[0, "baseline"] == "real_data"
    table = render.markdown_table(group).splitlines()
    assert table[2].startswith("|  | real_data (baseline) | real_data |") and "(baseline)" in render.LEGEND


def pd_isna(x) -> bool:
    import pandas as pd

    return bool(pd.isna(x))


@needs_data
def test_resume_keeps_the_finished_real_data_row(mnist_run, capsys):
    lines = (mnist_run.work / "results.jsonl").read_text().count("\n")
    assert main(["run", str(mnist_run.protocol), "--workdir", str(mnist_run.work), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "real_data: finished earlier (results.jsonl), not redone" in err
    assert "entry untrained: finished earlier" in err
    assert (mnist_run.work / "results.jsonl").read_text().count("\n") == lines  # nothing scored again


@needs_data
def test_reference_false_has_no_row_and_the_same_fingerprint(mnist_run, tmp_path):
    p = write_protocol(tmp_path / "ref.yaml", mnist_run.protocol.read_text().replace("reference: true",
                                                                                    "reference: false"))
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 0
    rows = _rows(tmp_path / "w")
    assert set(rows) == {"untrained"}
    assert rows["untrained"]["fingerprint"] == mnist_run.rows["untrained"]["fingerprint"]
    assert rows["untrained"]["metrics"] == mnist_run.rows["untrained"]["metrics"]  # the row changes no entry's score


# --- translation: the identity map -------------------------------------------------------------------------

FACADES = """
name: facades-ref
seed: 0
dataset: {{name: facades, resolution: 128, channels: 3, train_size: 4, eval_size: 4, direction: BtoA}}
entries:
  - {{name: untrained, zoo: pix2pix, config: {{resolution: 128, generator: unet_128, ngf: 8, ndf: 8}},
      train: {{steps: 0}}}}
evaluation: {{n_samples: 4, seeds: [0], batch_size: 4, extractor: inception-v3-compat, metrics: [ssim, psnr],
              weights: {{path: "{weights[0]}", sha256: {weights[1]}}}}}
tracking: {{uri: "sqlite:///{store}/mlflow.db"}}
"""


@needs_data
def test_translation_gets_the_identity_row_scored_on_input_vs_target(tmp_path, inception_standin):
    p = write_protocol(tmp_path / "f.yaml", FACADES.format(weights=inception_standin, store=tmp_path.as_posix()))
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 0
    rows = _rows(tmp_path / "w")
    assert set(rows) == {"untrained", "identity"}
    ident = rows["identity"]
    assert ident["status"] == "FINISHED" and ident["info"]["baseline"] == "identity"
    m = ident["metrics"]  # FID is left to the MNIST run: Inception's 2048-d FID costs ~15 s a row here
    # The identity map's SSIM/PSNR are those of each held-out input against its own target.
    protocol = load_protocol(p).protocol
    data = load_dataset(protocol.dataset, protocol.seed)
    inputs, targets = to_float(data.eval_inputs[:4]), to_float(data.eval_images[:4])
    settings = EvaluationSpec(n_samples=4, seeds=[0])
    ctx = MetricContext(seed=0, settings=settings, pairs=lambda: iter([(inputs, targets)]))
    for key in ("ssim", "psnr"):
        expected = METRICS.get(key).compute(ctx)[key]
        assert m[key]["mean"] == pytest.approx(expected, rel=1e-9), key
        assert m[key]["mean"] != pytest.approx(rows["untrained"]["metrics"][key]["mean"], rel=1e-3), key
    grid = next((tmp_path / "w").glob("facades-ref-*/identity/samples.png"))
    assert grid.stat().st_size > 1000


def test_a_protocol_may_turn_the_row_off_in_yaml(tmp_path):
    p = tiny_protocol(tmp_path, reference=False)
    assert load_protocol(p).protocol.evaluation.reference is False
    p = tiny_protocol(tmp_path, name="with-row", reference=True)
    assert load_protocol(p).protocol.evaluation.reference is True
    with pytest.raises(BenchError, match="evaluation.reference"):
        load_protocol(write_protocol(tmp_path / "bad.yaml", p.read_text().replace("reference: true",
                                                                                 "reference: maybe")))

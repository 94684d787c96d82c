"""Every protocol file shipped in protocols/ validates and frames its table (a real-data row and an untrained
floor), and the runner features they use work end to end: the semi-supervised stream and classifier_accuracy,
the in-training FID monitor and best.pt."""

import json
from pathlib import Path

import pytest

from bench.cli import main
from tests.conftest import REPO, needs_data, tiny_protocol

SHIPPED = sorted((REPO / "protocols").rglob("*.yaml"))


def test_protocols_are_shipped():
    names = {p.relative_to(REPO / "protocols").as_posix() for p in SHIPPED}
    assert {"quickstart.yaml", "mnist-zoo.yaml", "cifar10-zoo.yaml", "paper/mnist-zoo.yaml",
            "paper/cifar10-zoo.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO / "protocols").as_posix())
def test_shipped_protocol_validates(path, capsys):
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO / "protocols").as_posix())
def test_every_shipped_table_is_framed_by_the_real_data_row_and_an_untrained_floor(path):
    """The ceiling (real images through the same evaluation) and the floor (a trainable network scored at its
    seeded initialisation, what the table marks untrained: bench/entries.py) are in every shipped protocol, the
    paper-scale ones included; a no-training baseline such as bicubic upsampling is not a floor."""
    import torch

    from bench.data.base import DataSpec
    from bench.data.labelmap import LabelMapSpec
    from bench.protocol.load import load_protocol, resolved_config
    from zoo import ZOO

    protocol = load_protocol(path).protocol
    d = protocol.dataset
    assert protocol.evaluation.reference, "evaluation.reference is off: the table has no real-data row"
    if d.label_nc or d.name == "cityscapes":
        label_nc = d.label_nc or 35
        spec = LabelMapSpec(d.name, d.resolution, 3, 0, aspect=d.aspect, label_nc=label_nc,
                            input_channels=label_nc + (d.instance is not False))
    else:
        spec = DataSpec(d.name, d.resolution, d.channels, 10 if d.name in ("mnist", "cifar10") else 0)
    floors = []
    for e in protocol.entries:
        if e.train and e.train.steps == 0 and not e.train.init_from:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):  # shapes only
                model = ZOO.get(e.zoo).build(resolved_config(e, e.name), spec, "meta", where=e.name)
            if model.optimizers():
                floors.append(e.name)
    assert floors, "no untrained floor: add the main network with train: {steps: 0}"


ENTRIES = """  - name: sgan
    zoo: sgan
    train: {steps: 20, batch_size: 32, checkpoint_every: 10, log_every: 5, eval_every: 10, eval_n: 100}
  - name: mlp
    zoo: mlp_gan
    train: {steps: 4, batch_size: 16}
"""


@needs_data
def test_sgan_classifier_accuracy_and_in_training_fid(tmp_path):
    p = tiny_protocol(tmp_path, name="ssl", entries=ENTRIES, n_samples=100)
    text = p.read_text().replace("metrics: [is, fid, kid]", "metrics: [is, fid, classifier_accuracy]")
    p.write_text(text)
    assert main(["run", str(p), "--workdir", str(tmp_path / "w")]) == 0
    rows = {r["entry"]: r for r in map(json.loads, (tmp_path / "w" / "results.jsonl").read_text().splitlines())}
    acc = rows["sgan"]["metrics"]["classifier_accuracy"]
    assert 0.0 <= acc["mean"] <= 1.0 and len(acc["per_seed"]) == 2
    assert "classifier_accuracy" in rows["mlp"]["info"]["unavailable"]  # no classifier: reported, not faked
    best = rows["sgan"]["info"]["best"]
    assert best["step"] in (10, 20) and best["fid"] > 0
    run_dir = Path(rows["sgan"]["checkpoint"]).parent
    assert (run_dir / "best.pt").is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.as_posix()}/mlflow.db")
    run = [r for r in client.search_runs([client.get_experiment_by_name("ssl").experiment_id])
           if r.data.tags.get("bench.entry") == "sgan"][0]
    history = client.get_metric_history(run.info.run_id, "train/fid")
    assert [m.step for m in history] == [10, 20]
    assert client.get_metric_history(run.info.run_id, "loss/D/sup")

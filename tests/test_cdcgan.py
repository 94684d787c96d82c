"""Class-conditional DCGAN (zoo/cdcgan.py): conditional BN is BN then a per-class affine, the projection D's
class enters only through ⟨V e_y, φ(x)⟩, latents carry a uniformly drawn class, and a protocol trains and
scores it end to end on MNIST labels."""

from __future__ import annotations

import json

import pytest
import torch

from bench.cli import main
from tests.conftest import needs_data, write_protocol
from zoo import ZOO
from zoo.base import DataSpec
from zoo.cdcgan import ConditionalBatchNorm2d

DATA = DataSpec("mnist", 28, 1, 10)


def _model(**cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ZOO.get("cdcgan").build({"ngf": 8, "ndf": 8, **cfg}, DATA, "cpu")


def test_conditional_bn_is_bn_then_the_class_affine():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(4, 3)
    with torch.no_grad():
        cbn.gamma.weight.normal_()
        cbn.beta.weight.normal_()
    x, y = torch.randn(6, 4, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = torch.nn.functional.batch_norm(x, None, None, training=True, eps=cbn.bn.eps)
    expected = plain * cbn.gamma.weight[y][:, :, None, None] + cbn.beta.weight[y][:, :, None, None]
    assert torch.allclose(cbn(x, y), expected, atol=1e-5)


def test_projection_discriminator_and_class_conditioned_generator():
    model = _model()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    d = model.D.eval()
    phi = d.features(x)
    y1, y2 = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 5, 5, 5])
    diff = d(x, y1) - d(x, y2)
    v = d.embed.weight  # (features, classes)
    assert torch.allclose(diff.squeeze(1), ((v[:, y1] - v[:, y2]).T * phi).sum(1), atol=1e-5)
    with torch.no_grad():  # a class affine of its own per class, so G's output depends on y
        for m in model.G.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.gamma.weight.normal_(1.0, 0.5)
    zy = model.sample_latent(64, torch.Generator().manual_seed(0))
    assert zy.shape == (64, model.cfg.latent_dim + 1) and model.latent_dim == model.cfg.latent_dim + 1
    classes = zy[:, -1]
    assert torch.equal(classes, classes.round()) and set(classes.long().tolist()) <= set(range(10))
    assert len(set(classes.long().tolist())) >= 8  # uniform draws over 10 classes
    z = zy[:2].clone()
    z[1] = z[0]
    z[1, -1] = (z[0, -1] + 1) % 10
    a, b = model.generate(z)
    assert not torch.allclose(a, b)  # same z, another class


@needs_data
def test_trains_and_scores_end_to_end_on_mnist_labels(tmp_path):
    proto = write_protocol(tmp_path / "c.yaml", f"""name: cond
seed: 0
dataset: {{name: mnist, resolution: 28, channels: 1, train_size: 500, eval_size: 200}}
entries:
  - {{name: cdcgan, zoo: cdcgan, config: {{ngf: 8, ndf: 8}}, fit: pad, train: {{steps: 3, batch_size: 16}}}}
evaluation: {{n_samples: 100, seeds: [0], batch_size: 50, extractor: judge, metrics: [is, fid], reference: false}}
tracking: {{uri: "sqlite:///{tmp_path.as_posix()}/m.db"}}
""")
    assert main(["run", str(proto), "--workdir", str(tmp_path / "w")]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "w" / "results.jsonl").read_text().splitlines()]
    assert row["status"] == "FINISHED" and row["metrics"]["fid"]["mean"] > 0
    assert main(["run", str(proto), "--dry-run"]) == 0


def test_needs_labels():
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="labelled data set"):
        ZOO.get("cdcgan").build({}, DataSpec("folder", 32, 3, 0), "meta")

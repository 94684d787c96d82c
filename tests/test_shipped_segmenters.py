"""The semantic networks S that ship as files (bench/judges/segmenter-*.pt), like the judges.

seg_agreement is read by the judge-role S. Trained on each machine, S differed in its last bits across CPUs and
thread counts and moved seg_agreement of one fixed model by 0.018 under one fingerprint; shipped, every machine
measures with the same network, and its sha256 is in the fingerprint. Here: the files are what the manifest pins,
they list exactly the images they were trained on and none of the images they measure against (leakage, by
content hash), a run on their data loads them instead of training, and data they were not trained on gets a
local S under another fingerprint.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.data.base import image_digests
from bench.errors import BenchError
from bench.features import segmenter as semantic
from bench.features.weights import SEGMENTER_SHA256, manifest, resolve
from bench.io import sha256_file, sha256_tensor
from bench.protocol.load import load_protocol
from tests.conftest import needs_data

REPO = Path(__file__).resolve().parent.parent
ROLES = semantic.ROLES


def _digests(t: torch.Tensor) -> set[bytes]:
    return {bytes(row.tolist()) for row in t}


@pytest.fixture(scope="module")
def facades_sr():
    """The data of protocols/facades-sr.yaml (S trains on all of train/, is held out on val/)."""
    protocol = load_protocol(REPO / "protocols" / "facades-sr.yaml").protocol
    from bench.data.datasets import load_dataset

    return protocol, load_dataset(protocol.dataset, protocol.seed)


@pytest.mark.parametrize("role", ROLES)
def test_each_shipped_file_is_pinned_by_the_manifest(role):
    path = semantic.shipped_file("facades_sr", role)
    entry = manifest().get(semantic.shipped_name("facades_sr", role))
    assert entry.packaged == path and entry.sha256 == SEGMENTER_SHA256[("facades_sr", role)]
    assert sha256_file(path) == entry.sha256
    net, meta, digests = semantic.read_segmenter_file(path)
    assert meta["role"] == role and meta["recipe"] == asdict(semantic.recipe_for(role))
    assert meta["num_classes"] == 12 and meta["resolution"] == semantic.SHIPPED["facades_sr"]
    assert len(digests) == meta["train_images"] == 400


def test_the_two_roles_are_two_networks():
    a, _, _ = semantic.read_segmenter_file(semantic.shipped_file("facades_sr", "training"))
    b, _, _ = semantic.read_segmenter_file(semantic.shipped_file("facades_sr", "judge"))
    sa, sb = a.state_dict(), b.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if sa[k].is_floating_point())


def test_a_modified_shipped_file_is_refused_not_retrained(tmp_path, monkeypatch):
    import shutil

    bad = tmp_path / "judges"
    bad.mkdir()
    for role in ROLES:
        shutil.copy(semantic.shipped_file("facades_sr", role), bad / semantic.shipped_file("facades_sr", role).name)
    with open(bad / semantic.shipped_file("facades_sr", "judge").name, "ab") as f:
        f.write(b"\0")
    monkeypatch.setattr("bench.features.judge.JUDGE_DIR", bad)
    with pytest.raises(BenchError, match="sha256 .* expected"):
        resolve(semantic.shipped_name("facades_sr", "judge"), allow_download=False)


@needs_data
@pytest.mark.parametrize("role", ROLES)
def test_shipped_S_lists_exactly_its_training_photos_and_never_saw_what_it_measures(facades_sr, role):
    """Leakage by content hash: the digests in the file are recomputed from the photos the recipe trains on,
    and none of the held-out photos it is measured on (val/) nor of the protocol's evaluation targets (the
    photos seg_agreement compares outputs with) is among them."""
    _, data = facades_sr
    _, meta, digests = semantic.read_segmenter_file(semantic.shipped_file("facades_sr", role))
    (train_x, train_y), (held_x, _) = data.seg_train, data.seg_heldout
    assert meta["data"] == sha256_tensor(train_x, train_y)  # trained on exactly this data
    seen = _digests(digests)
    assert seen == _digests(image_digests(train_x))
    assert not seen & _digests(image_digests(held_x))
    targets = _digests(image_digests(data.eval_images))
    assert len(targets) == len(data.eval_images) and not seen & targets


@needs_data
def test_a_run_on_the_shipped_data_loads_the_files_and_trains_nothing(facades_sr, tmp_path, monkeypatch):
    """Empty cache, the real recipe: both roles come from bench/judges/, identical to the files, and the
    fingerprint holds their sha256 (dry run and loaded networks agree)."""
    protocol, data = facades_sr
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(semantic, "_LOADED", {})
    monkeypatch.setattr(semantic, "train_segmenter", lambda *a, **k: pytest.fail("trained an S"))
    nets = semantic.for_run(protocol, data, True)
    assert set(nets) == set(ROLES)
    for role, S in nets.items():
        file_net, _, _ = semantic.read_segmenter_file(semantic.shipped_file("facades_sr", role))
        assert not S.info["local"] and S.info["cache"] == "shipped"
        sha = SEGMENTER_SHA256[("facades_sr", role)]
        assert S.info["identity"] == f"sha256:{sha}" == semantic.identity(data, role)
        for k, v in file_net.state_dict().items():
            assert torch.equal(S.net.state_dict()[k], v), k
    assert semantic.identities(protocol, data, True) == {r: S.info["identity"] for r, S in nets.items()}
    assert not (tmp_path / "segmenters").exists()  # nothing trained, nothing cached


@needs_data
def test_other_data_gets_a_local_S_under_another_identity(facades_sr, monkeypatch):
    """The shipped files fit only the data and recipe they were trained with; anything else is trained here,
    and its identity (in the fingerprint) names the machine."""
    _, data = facades_sr
    monkeypatch.setattr(semantic, "RECIPE", semantic.SegmenterRecipe(steps=5))
    ident = semantic.identity(data, "judge")
    assert ident.startswith("local:")
    other = SimpleNamespace(**{**data.__dict__, "spec": SimpleNamespace(name="facades_sr", resolution=64)})
    monkeypatch.setattr(semantic, "RECIPE", semantic.SegmenterRecipe())
    assert semantic.identity(other, "judge").startswith("local:")
    assert semantic.identity(data, "judge").startswith("sha256:")


@needs_data
def test_the_fingerprint_holds_the_segmenters(facades_sr):
    from bench.protocol.load import fingerprint

    protocol, data = facades_sr
    base = dict(protocol=protocol, data_fingerprint=data.fingerprint, extractor_sha256="e" * 64)
    judge = semantic.identities(protocol, data, True)
    fp = fingerprint(**base, segmenters=judge)
    assert fp != fingerprint(**base, segmenters={**judge, "judge": "local:x"})
    assert fp != fingerprint(**base)


def test_only_shipped_segmenters_enter_the_fingerprint():
    """A local S's identity names the machine and thread count; a protocol's fingerprint must not."""
    ids = {"judge": "sha256:" + "a" * 64, "training": "local:segmenter-key-with-machine"}
    assert semantic.fingerprint_part(ids) == {"judge": "sha256:" + "a" * 64}
    assert semantic.fingerprint_part({"judge": "local:x"}) == {}

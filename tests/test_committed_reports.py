"""The committed reports that docs/protocols.md calls current carry the fingerprint that the current code gives their
protocol on any machine (`bench run --dry-run`, from an empty cache: shipped judges are files and the resize is
exact on every CPU, bench/data/resample.py, so nothing machine-dependent enters it), and
their data decode to the pixels pinned in tests/regression/pinned-pixels.json. A change that moves a shipped
protocol's fingerprint fails here until its report is re-run (or moved to the stale list in README and
reports/README.md)."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from tests.conftest import REPO, needs_data

# Every committed report must be current: its fingerprint is what its protocol gives now (no stale report can
# sit beside current ones), and every shipped CPU protocol has one.
CURRENT = sorted(p.parent.name for p in (REPO / "reports").glob("*/report.json"))
# The decoded pixels of each protocol's data: the fingerprint hashes the files, these what they decode to here.
PINNED_PIXELS = json.loads((REPO / "tests" / "regression" / "pinned-pixels.json").read_text())["protocols"]


def test_every_shipped_protocol_has_a_committed_report():
    shipped = sorted(p.stem for p in (REPO / "protocols").glob("*.yaml"))
    assert CURRENT == shipped
    assert sorted(PINNED_PIXELS) == shipped


@needs_data
@pytest.mark.parametrize("name", CURRENT)
def test_committed_report_fingerprint_is_what_the_protocol_gives_now(name, capsys):
    committed = json.loads((REPO / "reports" / name / "report.json").read_text())["fingerprint"]
    assert main(["run", str(REPO / "protocols" / f"{name}.yaml"), "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{name}  fingerprint {committed[:12]}  (dry run"), printed
    assert printed[1] == committed
    assert printed[2].startswith("decoded data sha256 ")


@needs_data
@pytest.mark.parametrize("name", CURRENT)
def test_shipped_data_decode_to_the_pinned_pixels(name):
    """Another Pillow or libjpeg-turbo may decode the same files to other pixels: then this machine cannot reproduce
    the committed numbers exactly, and its runs are kept apart from runs of the pinned pixels
    (tests/test_data_pixels.py). torch's CPU kernels no longer matter: the resize is bench/data/resample.py's,
    and tests/test_resample.py decodes these protocols again with torch's default (non-AVX2) kernels."""
    from bench.data.base import pixel_digest
    from bench.preflight import preflight
    from bench.protocol.load import load_protocol

    _, data, _ = preflight(load_protocol(str(REPO / "protocols" / f"{name}.yaml")))
    assert pixel_digest(data) == PINNED_PIXELS[name], (
        f"{name}: the data decode to other pixels here than tests/regression/pinned-pixels.json pins; compare Pillow "
        "and libjpeg-turbo (PIL.features.version('libjpeg_turbo')) with its note")


@needs_data
def test_set_overrides_reach_the_fingerprint(capsys):
    path = str(REPO / "protocols" / "quickstart.yaml")
    assert main(["run", path, "--dry-run"]) == 0
    plain = capsys.readouterr().out.splitlines()[1]
    assert main(["run", path, "--dry-run", "--set", "evaluation.seeds=[0]", "--device", "cpu"]) == 0
    changed = capsys.readouterr().out.splitlines()[1]
    assert changed != plain  # one evaluation seed is another protocol
    assert main(["run", path, "--dry-run", "--set", "tracking.uri=sqlite:///elsewhere.db"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == plain  # where results are logged is not a score


@needs_data
def test_the_bf16_investigation_quotes_the_fingerprint_its_protocol_gives_now(capsys):
    """reports/bf16-investigation.md cites its run by fingerprint: a change that moves it must update the write-up
    (or re-run it)."""
    import re

    quoted = re.search(r"fingerprint `([0-9a-f]{12})`, MLflow run", (REPO / "reports" / "bf16-investigation.md").read_text())
    assert quoted, "the write-up names its fingerprint"
    assert main(["run", str(REPO / "reports" / "investigations" / "bf16-quickstart.yaml"), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(quoted.group(1))

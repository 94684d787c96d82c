"""One small MLflow store shared by the leaderboard, report, browser and regression tests.

Three `bench run`s into one SQLite store: the protocol `regression-tiny` twice, and a changed copy of it
(fewer evaluation samples, so another fingerprint under the same name and experiment) once. Made at most
once per pytest process, whichever test asks first, because each run costs CPU time.
`regression-tiny` is also the protocol of the committed baseline reports/baselines/regression-tiny.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.cli import main
from tests.conftest import REPO, tiny_protocol

NAME = "regression-tiny"
# Both entries share a config, so either checkpoint can be loaded under the other's entry (a
# deliberately worse model for the regression gate is the untrained one's weights).
ENTRIES = """  - name: trained
    zoo: mnist_gan
    config: {lr_G: 0.002, lr_D: 0.002}
    train: {steps: 20, batch_size: 32, log_every: 5, eval_every: 10, eval_n: 100}
  - name: untrained
    zoo: mnist_gan
    config: {lr_G: 0.002, lr_D: 0.002}
    train: {steps: 0}
"""
N_SAMPLES, CHANGED_N_SAMPLES = 200, 150
BASELINE = REPO / "reports" / "baselines" / f"{NAME}.json"


@dataclass
class SharedRuns:
    root: Path
    protocol: Path  # regression-tiny, run twice (workdirs work-1, work-2)
    changed: Path  # the same name with another n_samples, run once (work-3)
    uri: str
    results: dict[str, list[dict]]  # workdir name -> results.jsonl lines

    def checkpoint(self, entry: str) -> Path:
        return Path(next(r["checkpoint"] for r in self.results["work-1"] if r["entry"] == entry))


_CACHE: dict[str, SharedRuns] = {}


def write_protocol(folder: Path, n_samples: int = N_SAMPLES, store: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return tiny_protocol(folder, name=NAME, entries=ENTRIES, n_samples=n_samples, store=store or folder)


def shared_runs(tmp_path_factory) -> SharedRuns:
    if "runs" in _CACHE:
        return _CACHE["runs"]
    root = tmp_path_factory.mktemp("report-runs")
    store = root / "store"
    store.mkdir()
    protocol = write_protocol(root / "p", store=store)
    changed = write_protocol(root / "changed", CHANGED_N_SAMPLES, store=store)
    results = {}
    for work, proto in (("work-1", protocol), ("work-2", protocol), ("work-3", changed)):
        assert main(["run", str(proto), "--workdir", str(root / work)]) == 0
        results[work] = [json.loads(line) for line in (root / work / "results.jsonl").read_text().splitlines()]
    _CACHE["runs"] = SharedRuns(root, protocol, changed, f"sqlite:///{store.as_posix()}/mlflow.db", results)
    return _CACHE["runs"]

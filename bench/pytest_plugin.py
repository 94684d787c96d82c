"""The regression gate inside pytest: `pytest -p bench.pytest_plugin`, then use the `bench_regression` fixture.

    def test_quickstart_has_not_regressed(bench_regression):
        bench_regression.check("protocols/quickstart.yaml")            # newest run in its MLflow store
        bench_regression.check("protocols/quickstart.yaml", rerun=True)  # or score it now

A regression fails the test with the same diff table `bench check` prints; so does an improvement
beyond tolerance (SUSPICIOUS: a collapse to FID 0 is an "improvement" too) unless the check is given
`allow_improvement=True`. With `--bench-update-baselines` the fixture writes the baselines from the
runs instead of checking them (review the JSON diff before committing it). `--bench-baselines DIR`
changes where baselines live (default reports/baselines, relative to the directory pytest runs in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from bench import regression
from bench.errors import BenchError


def pytest_addoption(parser) -> None:
    group = parser.getgroup("bench", "ganbench regression gate")
    group.addoption("--bench-baselines", default=None, metavar="DIR",
                    help="folder of <protocol>.json baselines (default: reports/baselines)")
    group.addoption("--bench-update-baselines", action="store_true", default=False,
                    help="write baselines from the runs instead of checking against them")


class BenchRegression:
    """What the `bench_regression` fixture returns."""

    def __init__(self, baselines: Optional[Path], update: bool, tmp_path: Path):
        self.baselines = baselines
        self.update = update
        self._tmp = tmp_path

    def _baseline_path(self, protocol: str, baseline: Optional[str]) -> Path:
        if baseline:
            return Path(baseline)
        from bench.protocol.load import load_protocol

        name = load_protocol(protocol).protocol.name
        return (self.baselines / f"{name}.json") if self.baselines else regression.default_path(name)

    def check(self, protocol: str | Path, baseline: Optional[str | Path] = None, run: Optional[str] = None,
              uri: Optional[str] = None, rerun: bool = False, workdir: Optional[str | Path] = None,
              allow_improvement: bool = False) -> Optional[regression.CheckResult]:
        """Fail the calling test when any metric of the run moved beyond its baseline tolerance: the bad
        way always, the good way unless `allow_improvement`."""
        protocol = str(protocol)
        path = self._baseline_path(protocol, str(baseline) if baseline else None)
        try:
            if rerun:
                from bench.protocol.load import load_protocol

                run = regression.rerun_protocol(load_protocol(protocol), Path(workdir or self._tmp / "runs"))
            if self.update:
                regression.update(protocol, str(path), run, uri)
                return None
            result = regression.check(protocol, str(path), run, uri, allow_improvement=allow_improvement)
        except BenchError as exc:
            pytest.fail(f"bench regression gate: {exc}", pytrace=False)
        if result.failed:
            hint = ("(here: bench_regression.check(..., allow_improvement=True) if the improvement is expected)\n"
                    if any(ln.verdict == regression.SUSPICIOUS for ln in result.lines) else "")
            pytest.fail("bench regression gate failed\n" + regression.format_check(result) + hint, pytrace=False)
        return result


@pytest.fixture
def bench_regression(request, tmp_path) -> BenchRegression:
    opt = request.config.getoption
    try:
        folder, update = opt("--bench-baselines"), opt("--bench-update-baselines")
    except ValueError:  # the fixture imported into a test module without the plugin's options
        folder, update = None, False
    return BenchRegression(Path(folder) if folder else None, bool(update), tmp_path)

"""The regression gate: a protocol run's scores against a committed baseline JSON.

A baseline (reports/baselines/<protocol>.json) holds, per entry and metric, the mean over seeds of a
reference run, and a tolerance per metric, allowed = max(abs, rel * |baseline|). The gate is two-sided:

- a metric that moves in its bad direction (KEY_DIRECTION) by more than `allowed` is WORSE and fails;
- a metric that moves in its good direction by more than `allowed` is SUSPICIOUS and fails too, unless
  the check is told to allow improvements (`bench check --allow-improvement`, the pytest plugin's
  `allow_improvement=True`); then it is `better (allowed)` and passes. A big jump the good way may be a
  broken instrument rather than a better model (features that collapse to a constant make FID and KID
  0). An expected improvement is accepted by allowing it once, then writing a new baseline
  (`bench baseline update`).

An entry or metric that the baseline has but the run lacks, or an entry that failed, also fails.

The fingerprint is compared and a change is shown prominently (a FINGERPRINT CHANGED line under the
title and in the summary line), but it does not fail the check by itself: changing a checkpoint, a
family default, the data or the device changes it, and catching what such a change does to the scores
is the point of the gate. A change that breaks the instrument shows up in the scores, whichever way
they move, and fails there.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bench.errors import BenchError
from bench.io import atomic_write_bytes
from bench.metrics import KEY_DIRECTION
from bench.tracking import layout

FORMAT = 1
DEFAULT_TOLERANCE = {"rel": 0.05, "abs": 0.0}


def default_path(protocol_name: str) -> Path:
    return Path("reports") / "baselines" / f"{protocol_name}.json"


@dataclass
class RunScores:
    """Per entry: status, failure and {metric: {mean, std, n}} of one protocol run."""

    uri: str
    parent_run_id: str
    protocol: str
    fingerprint: str
    git_sha: str
    entries: dict[str, dict[str, Any]]
    data_pixels: str = ""  # layout.DATA_PIXELS of the protocol run; "" = not recorded


def find_parent(protocol_path: str, uri: Optional[str], run_id: Optional[str]):
    """(client, uri, parent run) of `run_id`, else of the protocol's newest finished run."""
    from bench.protocol.load import load_protocol
    from bench.reporting import store
    from bench.tracking.mlflow_tracker import resolve_uri

    p = load_protocol(protocol_path).protocol
    uri = uri or resolve_uri(p.tracking.uri)
    c = store.client(uri)
    if run_id:
        run = store.get_run(c, run_id)
        run = store.get_run(c, run.data.tags[layout.PARENT]) if layout.PARENT in run.data.tags else run
        if run.data.tags.get(layout.PROTOCOL) != p.name:
            raise BenchError(f"MLflow run {run_id} is a run of protocol "
                             f"'{run.data.tags.get(layout.PROTOCOL, '?')}', not '{p.name}'")
        return c, uri, run
    return c, uri, store.latest_parent(c, store.experiment_ids(c, [p.tracking.experiment or p.name]), p.name)


def scores(c, uri: str, parent) -> RunScores:
    from bench.reporting import leaderboard, store

    exps = {parent.info.experiment_id: parent.info.experiment_id}
    # A resumed run's own child runs are only the units it re-ran: the others are carried from the earlier runs
    # of its fingerprint, as its report does (store.protocol_run_units).
    runs, _ = store.protocol_run_units(c, exps, parent)
    if runs.empty:
        raise BenchError(f"protocol run {parent.info.run_id} has no entry runs")
    group = leaderboard.build(runs, lambda rid, key: store.per_seed(c, rid, key))[0]
    entries = {}
    for _, r in group.rows.iterrows():
        metrics = {k: {"mean": float(r[f"{k}/mean"]), "std": float(r[f"{k}/std"]),
                       "n": int(r["n_train"]) * int(r["n_eval"])}
                   for k in group.keys if f"{k}/mean" in r and not _missing(r[f"{k}/mean"])}
        entries[r["entry"]] = {"status": r["status"], "failure": r["failure"], "metrics": metrics}
    t = parent.data.tags
    return RunScores(uri, parent.info.run_id, t.get(layout.PROTOCOL, ""), t.get(layout.FINGERPRINT, ""),
                     t.get(layout.GIT_SHA, "unknown"), entries, t.get(layout.DATA_PIXELS, ""))


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# --- baseline files ---------------------------------------------------------------------------------

def make_baseline(s: RunScores, tolerance: dict[str, Any]) -> dict[str, Any]:
    failed = [e for e, v in s.entries.items() if v["status"] != "FINISHED"]
    if failed:
        raise BenchError(f"run {s.parent_run_id} has failed entries ({', '.join(failed)}); "
                         "a baseline is written only from a run whose entries all finished")
    return {
        "format": FORMAT, "protocol": s.protocol, "fingerprint": s.fingerprint,
        # The fingerprint hashes the data files; these are the pixels the run decoded them to (layout.DATA_PIXELS).
        **({"data_pixels": s.data_pixels} if s.data_pixels else {}),
        "source": {"parent_run_id": s.parent_run_id, "git_sha": s.git_sha,
                   "written": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "tolerance": tolerance,
        "entries": {e: {k: {"value": m["mean"], "std": m["std"], "n": m["n"],
                            "higher_is_better": KEY_DIRECTION[k]} for k, m in sorted(v["metrics"].items())}
                    for e, v in sorted(s.entries.items())},
    }


def read_baseline(path: Path) -> dict[str, Any]:
    """The baseline at `path`, refused in one line unless the gate can use every field of it as it stands
    (`validate`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"no baseline at {path}; write one with `bench baseline update PROTOCOL --out {path}`") from None
    # RecursionError: 100,000 nested brackets are valid JSON, nested deeper than the parser goes.
    except (OSError, ValueError, RecursionError) as exc:
        raise BenchError(f"{path}: not a readable baseline JSON ({exc})") from None
    return validate(data, str(path))


def validate(data: Any, where: str) -> dict[str, Any]:
    """`data` if it is a baseline the gate can use, else a BenchError naming `where` and the offending key. Every
    field `compare`, `tolerance_for` and `write_baseline` read is checked here, once, and trusted there: a string
    protocol and fingerprint, at least one metric, each with a numeric 'value' and, if given, a true/false
    higher_is_better, and each tolerance level `tolerance_for` reads for them a mapping whose rel and abs are finite
    numbers >= 0. Keys the gate does not read (tolerance.note) are left alone."""
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        raise BenchError(f"{where}: not a ganbench baseline (format {FORMAT} with 'entries')")
    for key in ("protocol", "fingerprint", "data_pixels"):
        if key in data and not isinstance(data[key], str):
            raise BenchError(f"{where}: '{key}' must be a string, got {_shown(data[key])}")
    tol = {} if data.get("tolerance") is None else data["tolerance"]
    if not isinstance(tol, dict):
        raise BenchError(f"{where}: 'tolerance' must be a mapping (default / metric / entries), got {_shown(tol)}")
    per_entry = {} if tol.get("entries") is None else tol["entries"]
    if not isinstance(per_entry, dict):
        raise BenchError(f"{where}: tolerance.entries must be a mapping of entry names, got {_shown(per_entry)}")
    for entry, keys in data["entries"].items():
        if not isinstance(keys, dict):
            raise BenchError(f"{where}: entries.{entry} must be a mapping of metrics, got {_shown(keys)}")
        own = per_entry.get(entry, {})
        if not isinstance(own, dict):
            raise BenchError(f"{where}: tolerance.entries.{entry} must be a mapping (default / metric), got "
                             f"{_shown(own)}")
        for key, ref in keys.items():
            if not isinstance(ref, dict):
                raise BenchError(f"{where}: entries.{entry}.{key} must be a mapping with a numeric 'value', got "
                                 f"{_shown(ref)}")
            number = _number(ref.get("value"))
            # ±inf is a score (PSNR of an output identical to its target); NaN, a non-number and an integer too big
            # for a float (10**400) are not.
            if number is None or math.isnan(number):
                raise BenchError(f"{where}: entries.{entry}.{key} needs a numeric 'value', got "
                                 f"{_shown(ref.get('value'))}")
            if not isinstance(ref.get("higher_is_better", True), bool):
                raise BenchError(f"{where}: entries.{entry}.{key}.higher_is_better must be true or false, got "
                                 f"{_shown(ref['higher_is_better'])}")
            # The levels `tolerance_for` merges for this metric.
            for level, at in ((tol.get("default", {}), "tolerance.default"), (tol.get(key, {}), f"tolerance.{key}"),
                              (own.get("default", {}), f"tolerance.entries.{entry}.default"),
                              (own.get(key, {}), f"tolerance.entries.{entry}.{key}")):
                if not isinstance(level, dict):
                    raise BenchError(f"{where}: {at} must be a mapping of rel / abs, got {_shown(level)}")
                for name in ("rel", "abs"):
                    if name in level:
                        _tolerance_value(level[name], f"{where}: {at}.{name}")
    if not any(data["entries"].values()):
        raise BenchError(f"{where}: 'entries' holds no metric; a baseline that checks nothing can never catch a "
                         "regression")
    return data


def _number(value: Any) -> Optional[float]:
    """A JSON number as a float; None for anything else, true/false and an integer too big for a float included."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _shown(value: Any) -> str:
    """A value from the file as an error shows it: clipped, since it may be 10**400 or nested 900 deep."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlong, short.maxstring, short.maxother = 2, 20, 40, 40
    return short.repr(value)


def _tolerance_value(value: Any, where: str) -> float:
    """A tolerance must be a finite number >= 0: NaN made every comparison 'ok' (x > NaN is always False), so a
    baseline with it passed any regression."""
    number = _number(value)
    if number is None or not math.isfinite(number) or number < 0:
        raise BenchError(f"{where} must be a finite number >= 0, got {_shown(value)}")
    return number


def _kept_tolerance(path: Path, rel: Optional[float] = None, abs_: Optional[float] = None) -> dict[str, Any]:
    """The tolerance a new baseline at `path` gets: the existing file's, read as `bench check` reads it (a bad
    file is refused, not copied), else the default; `rel` / `abs_` replace its default's."""
    for name, value in (("rel", rel), ("abs", abs_)):
        if value is not None:
            _tolerance_value(value, f"--{name}")
    tolerance: dict[str, Any] = {"default": dict(DEFAULT_TOLERANCE)}
    if Path(path).is_file():
        try:
            tolerance = read_baseline(path).get("tolerance") or tolerance
        except BenchError as exc:
            raise BenchError(f"{exc} (a baseline update keeps the tolerance of the file it replaces: fix the file or "
                             "remove it)") from None
    if rel is not None or abs_ is not None:
        tolerance = dict(tolerance)
        default = dict(tolerance.get("default", DEFAULT_TOLERANCE))
        default.update({k: v for k, v in (("rel", rel), ("abs", abs_)) if v is not None})
        tolerance["default"] = default
    return tolerance


def write_baseline(path: Path, s: RunScores, rel: Optional[float] = None, abs_: Optional[float] = None,
                   tolerance: Optional[dict[str, Any]] = None) -> dict:
    """Write the baseline of run `s`; tolerances already in the file are kept unless rel/abs are given
    (`_kept_tolerance`, unless `tolerance` is that already)."""
    baseline = make_baseline(s, _kept_tolerance(path, rel, abs_) if tolerance is None else tolerance)
    # The kept tolerance was checked for the old file's metrics, and the run may have others; a run without a score
    # would give a baseline that checks nothing. Either way the file would be one `bench check` refuses.
    validate(baseline, f"{path} (from run {s.parent_run_id})")
    atomic_write_bytes(Path(path), (json.dumps(baseline, indent=2, sort_keys=True) + "\n").encode())
    return baseline


# --- the check --------------------------------------------------------------------------------------

@dataclass
class Line:
    entry: str
    key: str
    baseline: Optional[float]
    current: Optional[float]
    allowed: Optional[float]
    verdict: str  # ok | WORSE | SUSPICIOUS | better (allowed) | MISSING | FAILED | new (not gated)


REGRESSED = ("WORSE", "MISSING", "FAILED")
SUSPICIOUS = "SUSPICIOUS"  # improved beyond tolerance, improvements not allowed: fails
ALLOWED_BETTER = "better (allowed)"  # improved beyond tolerance with allow_improvement: passes
NOT_GATED = "new (not gated)"


@dataclass
class CheckResult:
    lines: list[Line]
    baseline_path: str
    run: RunScores
    baseline_fingerprint: str = ""
    baseline_pixels: str = ""

    @property
    def fingerprint_changed(self) -> bool:
        return bool(self.baseline_fingerprint) and self.baseline_fingerprint != self.run.fingerprint

    @property
    def pixels_changed(self) -> bool:
        """Both recorded their decoded pixels, and they differ: another decoder read the data files."""
        theirs, ours = self.baseline_pixels, self.run.data_pixels
        return bool(theirs) and bool(ours) and theirs != ours

    @property
    def failed(self) -> bool:
        return any(line.verdict in (*REGRESSED, SUSPICIOUS) for line in self.lines)


def tolerance_for(baseline: dict[str, Any], key: str, entry: str | None = None) -> tuple[float, float]:
    """(rel, abs) for one metric: the file's default, then the metric's own, then, under `entries`, the
    entry's default and its metric's own (an untrained floor is exact on every machine; a trained entry
    needs room for the training-seed spread). The levels are `validate`d when the baseline is read."""
    tol = baseline.get("tolerance") or {}
    per_entry = (tol.get("entries") or {}).get(entry or "", {})
    parts = [tol.get("default", {}), tol.get(key, {}), per_entry.get("default", {}), per_entry.get(key, {})]
    t = {**DEFAULT_TOLERANCE, **{k: v for p in parts for k, v in p.items()}}
    return float(t["rel"]), float(t["abs"])


def compare(baseline: dict[str, Any], s: RunScores, baseline_path: str = "",
            allow_improvement: bool = False) -> CheckResult:
    """The verdict of every (entry, metric) of the baseline; moving either way beyond tolerance fails,
    the good way only when `allow_improvement` is not given (module docstring)."""
    if baseline.get("protocol") and baseline["protocol"] != s.protocol:
        raise BenchError(f"{baseline_path or 'baseline'} is for protocol '{baseline['protocol']}', "
                         f"the run is of '{s.protocol}'")
    lines: list[Line] = []
    for entry, keys in sorted(baseline["entries"].items()):
        got = s.entries.get(entry)
        if got is None:
            lines.append(Line(entry, "*", None, None, None, "MISSING"))
            continue
        if got["status"] != "FINISHED":
            lines.append(Line(entry, f"* ({got['failure'] or got['status']})", None, None, None, "FAILED"))
            continue
        for key, ref in sorted(keys.items()):
            value = ref["value"]
            rel, abs_ = tolerance_for(baseline, key, entry)
            # A relative tolerance of an infinite baseline would allow anything: only the absolute one applies.
            allowed = max(abs_, rel * abs(value)) if math.isfinite(value) else abs_
            cur = got["metrics"].get(key, {}).get("mean")
            if cur is not None and cur == value:  # equal, +inf included (PSNR of identical images): nothing moved
                lines.append(Line(entry, key, value, cur, allowed, "ok"))
                continue
            if cur is None or not math.isfinite(cur):
                lines.append(Line(entry, key, value, cur, allowed, "MISSING"))
                continue
            # Positive = moved in the bad direction.
            worse_by = (value - cur) if KEY_DIRECTION.get(key, ref.get("higher_is_better", True)) else (cur - value)
            if worse_by > allowed:
                verdict = "WORSE"
            elif -worse_by > allowed:
                verdict = ALLOWED_BETTER if allow_improvement else SUSPICIOUS
            else:
                verdict = "ok"
            lines.append(Line(entry, key, value, cur, allowed, verdict))
    for entry in sorted(set(s.entries) - set(baseline["entries"])):
        lines.append(Line(entry, "*", None, None, None, NOT_GATED))
    return CheckResult(lines, baseline_path, s, baseline.get("fingerprint") or "", baseline.get("data_pixels") or "")


def _num(x: Optional[float]) -> str:
    if x is None:
        return "—"
    return f"{x:.6g}"


def fingerprint_line(r: CheckResult) -> str:
    """The line under the title when the run's fingerprint is not the baseline's ("" when it is)."""
    if not r.fingerprint_changed:
        return ""
    return (f"FINGERPRINT CHANGED: run {r.run.fingerprint[:12]}… vs baseline {r.baseline_fingerprint[:12]}… — "
            "scores are from a different instrument/protocol (checkpoint, family default, data, extractor or "
            "device); compared anyway")


def pixels_line(r: CheckResult) -> str:
    """The line under the title when the run decoded the data to other pixels than the baseline's run ("" else)."""
    if not r.pixels_changed:
        return ""
    return (f"DATA PIXELS CHANGED: run {r.run.data_pixels[:12]}… vs baseline {r.baseline_pixels[:12]}… — "
            "the same data files decoded to other pixels (another Pillow, libjpeg-turbo, torch or CPU without AVX2: see "
            f"the runs' {layout.VERSION_PREFIX}* and {layout.CPU_DETAIL} tags), so the scores measure other images; "
            "compared anyway")


def summary_line(r: CheckResult) -> str:
    """The last line: ok or FAIL, counting regressions and suspicious improvements apart."""
    gated = [ln for ln in r.lines if ln.verdict != NOT_GATED]
    bad = [ln for ln in gated if ln.verdict in REGRESSED]
    sus = [ln for ln in gated if ln.verdict == SUSPICIOUS]
    better = [ln for ln in gated if ln.verdict == ALLOWED_BETTER]
    hint = "pass --allow-improvement if expected"
    if bad and sus:
        text = (f"FAIL: {len(bad)} of {len(gated)} checks regressed beyond tolerance, "
                f"{len(sus)} improved suspiciously ({hint})")
    elif bad:
        text = f"FAIL: {len(bad)} of {len(gated)} checks regressed beyond tolerance"
    elif sus:
        text = f"FAIL: {len(sus)} of {len(gated)} checks improved suspiciously beyond tolerance ({hint})"
    elif better:
        text = (f"ok: {len(gated) - len(better)} of {len(gated)} checks within tolerance, "
                f"{len(better)} improved beyond it (allowed)")
    else:
        text = f"ok: {len(gated)} checks within tolerance"
    if r.fingerprint_changed:
        text += f"; FINGERPRINT CHANGED (run {r.run.fingerprint[:12]}… vs baseline {r.baseline_fingerprint[:12]}…)"
    if r.pixels_changed:
        text += f"; DATA PIXELS CHANGED (run {r.run.data_pixels[:12]}… vs baseline {r.baseline_pixels[:12]}…)"
    return text


def format_check(r: CheckResult) -> str:
    header = ["entry", "metric", "baseline", "current", "change", "allowed (either way)", "verdict"]
    body = []
    for ln in r.lines:
        change = ""
        if ln.baseline is not None and ln.current is not None and math.isfinite(ln.current):
            d = ln.current - ln.baseline
            change = f"{d:+.4g}" + (f" ({100 * d / abs(ln.baseline):+.1f}%)" if ln.baseline else "")
        arrow = "" if ln.key not in KEY_DIRECTION else (" ↑" if KEY_DIRECTION[ln.key] else " ↓")
        body.append([ln.entry, ln.key + arrow, _num(ln.baseline), _num(ln.current), change,
                     "" if ln.allowed is None else _num(ln.allowed), ln.verdict])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [f"{r.run.protocol}: run {r.run.parent_run_id} (fingerprint {r.run.fingerprint[:12]}, "
           f"code {r.run.git_sha}) vs {r.baseline_path}"]
    if r.fingerprint_changed:
        out.append(fingerprint_line(r))
    if r.pixels_changed:
        out.append(pixels_line(r))
    out += [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body), summary_line(r)]
    return "\n".join(out) + "\n"


def check(protocol_path: str, baseline_path: Optional[str] = None, run_id: Optional[str] = None,
          uri: Optional[str] = None, rerun: bool = False, workdir: Optional[Path] = None,
          allow_improvement: bool = False) -> CheckResult:
    """Compare a run of the protocol with its baseline: `rerun` scores it now (bench run), else the
    newest finished run in the store (or `run_id`) is read. `allow_improvement` lets metrics that
    improved beyond tolerance pass (else they are SUSPICIOUS and fail)."""
    from bench.protocol.load import load_protocol

    loaded = load_protocol(protocol_path)
    path = Path(baseline_path) if baseline_path else default_path(loaded.protocol.name)
    baseline = read_baseline(path)  # before a rerun: a missing baseline should not cost a training run
    if rerun:
        if run_id or uri:
            raise BenchError("--rerun scores the protocol now into its own tracking store; "
                             "it cannot be combined with --run or --uri")
        run_id = rerun_protocol(loaded, Path(workdir or "runs"))
    c, uri, parent = find_parent(protocol_path, uri, run_id)
    return compare(baseline, scores(c, uri, parent), str(path), allow_improvement)


def rerun_protocol(loaded, workdir: Path) -> str:
    """`bench run` the protocol (single process) and return its MLflow parent run id."""
    from bench.pipeline import run_protocol
    from bench.runner import distributed

    try:
        summary = run_protocol(loaded, workdir)
    finally:
        distributed.shutdown()
    return summary.parent_run_id


def update(protocol_path: str, out: Optional[str] = None, run_id: Optional[str] = None, uri: Optional[str] = None,
           rel: Optional[float] = None, abs_: Optional[float] = None) -> tuple[Path, dict[str, Any]]:
    from bench.protocol.load import load_protocol

    name = load_protocol(protocol_path).protocol.name
    path = Path(out) if out else default_path(name)
    tolerance = _kept_tolerance(path, rel, abs_)  # a bad file or flag is refused before the store is read
    c, uri, parent = find_parent(protocol_path, uri, run_id)
    return path, write_baseline(path, scores(c, uri, parent), tolerance=tolerance)

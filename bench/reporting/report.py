"""`bench report`: one protocol run, read back from MLflow, as reports/<protocol>/index.html + README.md.

A report is about one `bench run` (one parent run): its leaderboard (the entries' runs under that
parent, pooled over training seeds), each entry's sample grid and training curves, a bar chart per
metric, the protocol text as logged, the fingerprint, code and package versions, device and timings.
Every number comes from the store; nothing is recomputed. `bench leaderboard` is the place that pools
several runs of one fingerprint.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from bench.errors import BenchError
from bench.io import atomic_write_bytes, home_relative
from bench.reporting import leaderboard, plots, render, significance, store
from bench.tracking import layout

INDEX_BEGIN = "<!-- BEGIN REPORT INDEX: `bench report` rewrites this table -->"
INDEX_END = "<!-- END REPORT INDEX -->"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class Report:
    out: Path
    protocol: str
    fingerprint: str
    parent_run_id: str
    files: list[str]
    notes: list[str]


# Top-level protocol keys that change no score and no fingerprint (bench/protocol/load.py: canonical): where runs
# are logged, and how reports read the scores (the control every entry is tested against, the literature claims
# checked against them).
READINGS = ("tracking", "control", "literature")


def _without_readings(doc: Any) -> Any:
    return {k: v for k, v in doc.items() if k not in READINGS} if isinstance(doc, dict) else doc


def resolve(target: str, uri: Optional[str]) -> tuple[Any, Any, str, list[str], Optional[str]]:
    """(client, parent run, uri, notes, the protocol text to show instead of the logged one or None) for a
    protocol file (its newest run) or a run id."""
    from bench.tracking.mlflow_tracker import resolve_uri

    notes: list[str] = []
    if Path(target).is_file() or target.endswith((".yaml", ".yml")):
        from bench.protocol.load import load_protocol

        loaded = load_protocol(target)
        p = loaded.protocol
        uri = uri or resolve_uri(p.tracking.uri)
        c = store.client(uri)
        parent = store.latest_parent(c, store.experiment_ids(c, [p.tracking.experiment or p.name]), p.name)
        logged = store.download_text(c, parent.info.run_id, "protocol.yaml")
        if logged is not None and logged != loaded.text:
            try:
                logged_doc, file_doc = yaml.safe_load(logged), yaml.safe_load(loaded.text)
            except yaml.YAMLError:
                logged_doc, file_doc = None, {}
            # A comment fixed after the run (a wall time, a citation) is not a different protocol, nor is the store
            # the run logged to (`bench run --uri` logs the protocol with tracking.uri set, and tracking is outside
            # the fingerprint): say which it is.
            if logged_doc == file_doc:
                what = "only in comments or layout (the same protocol)"
            elif _without_readings(logged_doc) == _without_readings(file_doc):
                # the file is the record then: the logged copy differs only in the store's (machine-specific) path,
                # or in how the scores are read (a literature claim's evidence, written after the run had measured
                # it), and has lost the file's comments; what was measured is the same
                absent = object()  # `control: ~` in one and no control in the other differ too
                keys = [k for k in READINGS if logged_doc.get(k, absent) != file_doc.get(k, absent)]
                notes.append(f"{target} differs from the protocol text logged with run {parent.info.run_id} only in "
                             + ", ".join(f"`{k}`" for k in keys) + " (where runs are logged and how reports read "
                             "the scores; not part of the fingerprint: the same protocol); the report shows the "
                             "protocol file")
                return c, parent, uri, notes, loaded.text
            else:
                what = "in content"
            notes.append(f"{target} differs from the protocol text logged with run {parent.info.run_id} {what}; "
                         "the report shows the logged text")
        return c, parent, uri, notes, None
    uri = uri or resolve_uri(None)
    c = store.client(uri)
    run = store.get_run(c, target)
    parent_id = run.data.tags.get(layout.PARENT)
    if parent_id:
        notes.append(f"{target} is the entry run {run.data.tags.get(layout.ENTRY, '?')}; "
                     f"reporting its protocol run {parent_id}")
        run = store.get_run(c, parent_id)
    if layout.FINGERPRINT not in run.data.tags:
        raise BenchError(f"MLflow run {target} is not a `bench run` protocol run (no bench.fingerprint tag)")
    return c, run, uri, notes, None


def write_report(target: str, out: Optional[Path] = None, uri: Optional[str] = None,
                 command: Optional[str] = None) -> Report:
    c, parent, uri, notes, shown_text = resolve(target, uri)
    tags = parent.data.tags
    protocol, fingerprint, pid = tags.get(layout.PROTOCOL, "?"), tags[layout.FINGERPRINT], parent.info.run_id
    exps = {parent.info.experiment_id: c.get_experiment(parent.info.experiment_id).name}
    runs, carried = store.protocol_run_units(c, exps, parent)
    if carried:
        notes.append(f"{carried} unit(s) finished under earlier run(s) of this fingerprint and were skipped by this "
                     "one (`--resume`, or a re-run sweep): their runs are included")
    if runs.empty:
        raise BenchError(f"protocol run {pid} has no entry runs to report")
    group = leaderboard.build(runs, lambda run_id, key: store.per_seed(c, run_id, key))[0]
    if parent.info.status != "FINISHED":
        notes.append(f"protocol run {pid} is {parent.info.status}; entries it did not reach are missing")
    others = [p for p in store.parent_runs(c, exps, protocol)
              if p.info.run_id != pid and p.data.tags.get(layout.FINGERPRINT) == fingerprint]
    notes += other_runs_notes(tags.get(layout.DATA_PIXELS, ""),
                              [p.data.tags.get(layout.DATA_PIXELS, "") for p in others])

    out = Path(out) if out else Path("reports") / protocol
    try:  # before the figures are drawn: `--out FILE` or `--out FILE/x` fails at once, with nothing written
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BenchError(f"cannot write the report to {out}: it, or a folder above it, is a file") from None
    except OSError as exc:
        raise BenchError(f"cannot write the report to {out}: {exc.strerror}") from None
    files: dict[str, bytes] = {}
    bars = []
    for key in group.keys:
        png, whiskers = plots.metric_bars(group.rows, key, group.extractor)
        name = f"img/bar-{_SAFE.sub('_', key)}.png"
        files[name] = png
        bars.append((key, name, whiskers))
    if any(k.startswith("fid_trunc/psi_") for k in group.keys):
        files["img/truncation-fid.png"] = plots.truncation_curve(group.rows, group.keys)
        bars.append(("fid_trunc", "img/truncation-fid.png", "± std over seeds"))
    entries = []
    for _, row in group.rows.iterrows():
        entries.append(_entry_assets(c, row, files))
    protocol_text = shown_text or store.download_text(c, pid, "protocol.yaml") or "(protocol.yaml artifact missing)"
    env = _environment(parent, group)
    control = _control(protocol_text)
    claims, unread = _literature(protocol_text)
    notes += unread
    checked = leaderboard.against_literature(group, claims)
    cmd = command or f"bench report {shlex.quote(target)}"
    meta = {"command": cmd, "protocol": protocol, "fingerprint": fingerprint, "parent_run_id": pid,
            "experiment": next(iter(exps.values())), "uri": uri,
            "run_started": _when(parent.info.start_time), "notes": notes, "control": control,
            # each claim with what this run measured: `agrees` null = not checked (see `missing`); p null = no test
            "literature": [{**k.claim.model_dump(), "agrees": k.agrees, "tie": k.tie, "better_mean": _finite(k.better_mean),
                            "than_mean": _finite(k.than_mean), "p": _finite(k.p), "p_holm": _finite(k.p_holm),
                            "test": k.test, "n_pairs": k.n_pairs, "missing": k.missing} for k in checked]}
    ctx = dict(meta=meta, group=group, bars=bars, entries=entries, protocol_text=protocol_text, env=env, checked=checked)
    files["README.md"] = _markdown(**ctx).encode()
    files["index.html"] = _html(**ctx).encode()
    files["leaderboard.csv"] = render.to_csv([group]).encode()
    files["protocol.yaml"] = protocol_text.encode()
    meta["files"] = sorted(files) + ["report.json"]
    files["report.json"] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    _write_all(out, files)
    # after report.json was written: notes on the index are about this command, not part of the report
    notes = notes + _update_index(out.parent)
    return Report(out, protocol, fingerprint, pid, meta["files"], notes)


def _entry_assets(c, row, files: dict[str, bytes]) -> dict[str, Any]:
    """Sample grids and curves of one entry: one per training run (several when it has training seeds)."""
    from bench.runner import reference
    from zoo import ZOO

    entry, zoo_name = row["entry"], row["zoo"]
    task = ZOO.get(zoo_name).task if zoo_name in ZOO else "unconditional"
    caption = _grid_caption(task)
    if row["baseline"]:  # the real-data row (bench/runner/reference.py): no model, no training curves
        kind = row["baseline"]
        task, caption = f"baseline: {reference.DESCRIPTIONS[kind]}", reference.GRID_CAPTIONS[kind]
    safe = _SAFE.sub("_", entry)
    grids, curves, figures, unavailable = [], {}, [], {}
    several = len(row["run_ids"]) > 1
    for run_id, seed in zip(row["run_ids"], row["train_seeds"]):
        suffix = f"-seed{_SAFE.sub('_', str(seed))}" if several else ""
        name = f"img/samples-{safe}{suffix}.png"
        with tempfile.TemporaryDirectory() as tmp:
            if store.download_file(c, run_id, "samples.png", Path(tmp) / "g.png"):
                files[name] = (Path(tmp) / "g.png").read_bytes()
                grids.append((name, f"training seed {seed}" if several else ""))
        for art in _figure_artifacts(c, run_id):  # the family's sampling figures (StyleGAN: mixing, ψ sweep, ...)
            stem = Path(art).stem
            fig_name = f"img/{stem}-{safe}{suffix}.png"
            with tempfile.TemporaryDirectory() as tmp:
                if store.download_file(c, run_id, art, Path(tmp) / "f.png"):
                    files[fig_name] = (Path(tmp) / "f.png").read_bytes()
                    figures.append((fig_name, FIGURE_CAPTIONS.get(stem, stem) + (f"; training seed {seed}"
                                                                                 if several else "")))
        run = c.get_run(run_id)
        for metric, reason in layout.unavailable_of(run.data.tags).items():  # metrics with no number, and why
            unavailable.setdefault(metric, home_relative(reason))  # runs logged before messages said ~
        for key in sorted(run.data.metrics):
            if key.startswith(("loss/", "train/")):
                curves[f"{key}@seed {seed}" if several else key] = store.history(c, run_id, key)
    curve_file = None
    if curves:
        curve_file = f"img/curves-{safe}.png"
        files[curve_file] = plots.training_curves(entry, curves)
    return {"entry": entry, "zoo": zoo_name, "task": task, "caption": caption, "grids": grids,
            "figures": figures, "unavailable": unavailable, "curves": curve_file, "status": row["status"], "failure": row["failure"],
            "duration_s": row["duration_s"]}


FIGURE_CAPTIONS = {
    "truncation": "truncation sweep: rows = latents, columns = ψ 1, 0.7, 0.5, 0, -0.5, -1 (0 = the average w)",
    "style_mixing": "style mixing: top row = fine sources, left column = coarse sources; each cell takes the "
                    "coarse (4-8 px) styles of its row and the rest from its column",
    "noise": "stochastic variation: one w, different noise draws; last image = per-pixel std over the draws",
    "interpolation": "latent interpolation from one sample to another (linear in W for StyleGAN, slerp in Z "
                     "otherwise)",
    "multimodal": "multimodal synthesis (pix2pixHD instance features, Wang et al. 2018 §3.4): one held-out label "
                  "map, then G's outputs for different draws of each instance's k-means feature centre",
}


def other_runs_notes(pixels: str, theirs: list[str]) -> list[str]:
    """The notes on the other protocol runs of this fingerprint, given this run's decoded pixels and theirs
    (layout.DATA_PIXELS, "" = not recorded): grouped as `bench leaderboard` groups them (leaderboard._by_pixels),
    so unrecorded runs join a fingerprint's one set of pixels and stand apart once it has several."""
    split = len({x for x in theirs + [pixels] if x}) > 1
    apart = sum(1 for x in theirs if split and x != pixels)
    notes = []
    if len(theirs) > apart:
        notes.append(f"{len(theirs) - apart} other run(s) of this fingerprint are in the store; "
                     "`bench leaderboard` pools them")
    if apart:
        notes.append(f"{apart} other run(s) of this fingerprint decoded the data to other pixels (another "
                     "Pillow, libjpeg-turbo, torch or CPU without AVX2); `bench leaderboard` keeps them apart")
    return notes


def _figure_artifacts(c, run_id: str) -> list[str]:
    try:
        return sorted(a.path for a in c.list_artifacts(run_id, "figures") if a.path.endswith(".png"))
    except Exception:  # noqa: BLE001 - a run without figures, or a store that cannot list: no figures
        return []


def _grid_caption(task: str) -> str:
    if "unpaired" in task:
        return "each row: a → G(a) → F(G(a)) (translation and cycle reconstruction), from fixed inputs"
    if "paired" in task:
        return "each row: input | output | target, from fixed inputs"
    return "8×8 grid of samples from fixed noise"


def _environment(parent, group) -> list[tuple[str, str]]:
    t, p = parent.data.tags, parent.data.params
    rows = [("fingerprint", t.get(layout.FINGERPRINT, "")), ("protocol run", parent.info.run_id),
            ("code version (git sha)", t.get(layout.GIT_SHA, "unknown")), ("device", t.get(layout.DEVICE, "")),
            # training differs in its last bits across CPUs and thread counts (a GAN amplifies it): a reader
            # comparing two reports of one fingerprint needs both (runs before the detail tag show the name only)
            ("CPU", " — ".join(x for x in (t.get(layout.CPU, ""), t.get(layout.CPU_DETAIL, "")) if x) or "unknown"),
            ("torch threads", t.get(layout.THREADS, "unknown")),
            ("extractor", f"{t.get(layout.EXTRACTOR, '')} (sha256 {t.get(layout.EXTRACTOR_SHA256, '')})"),
            # the fingerprint hashes the data files; these are the pixels this run's decoder made of them
            ("decoded data (sha256)", t.get(layout.DATA_PIXELS, "not recorded")),
            ("started", _when(parent.info.start_time))]
    if parent.info.end_time:
        rows.append(("protocol run wall time", f"{(parent.info.end_time - parent.info.start_time) / 1000:.1f} s"))
    rows += [(f"param {k}", v) for k, v in sorted(p.items())]
    rows += [(f"package {k}", v) for k, v in layout.versions_of(t).items()]
    rows += [(f"wall time of entry {r['entry']}", f"{r['duration_s']:.1f} s (train + evaluate, MLflow run)")
             for _, r in group.rows.iterrows()]
    return rows


def _when(ms: Optional[int]) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ms else ""


def _finite(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None  # JSON has no NaN


def _literature(protocol_text: str) -> tuple[list[Any], list[str]]:
    """(claims, notes): the shown protocol's literature claims (bench/protocol/schema.py: LiteratureClaim), and a
    note for each one that cannot be read (a logged text is not re-validated: a metric a plugin registered may be
    gone). A logged text from before claims existed has none."""
    from pydantic import ValidationError

    from bench.protocol.schema import LiteratureClaim

    try:
        doc = yaml.safe_load(protocol_text)
    except yaml.YAMLError:
        return [], []
    items = doc.get("literature") if isinstance(doc, dict) else None
    if items is None:
        return [], []
    if not isinstance(items, list):
        return [], ["the protocol's `literature` is not a list: no claim checked"]
    from bench.metrics import KEY_DIRECTION

    claims, notes = [], []
    for i, item in enumerate(items):
        try:
            claim = LiteratureClaim(**item)
        except (TypeError, ValidationError) as exc:
            reason = str(exc).splitlines()[-1 if isinstance(exc, ValidationError) else 0].strip()
            notes.append(f"literature claim {i + 1} not checked: it does not read as a claim ({reason})")
            continue
        if claim.metric not in KEY_DIRECTION:
            notes.append(f"literature claim {i + 1} not checked: metric '{claim.metric}' has no known direction")
            continue
        claims.append(claim)
    return claims, notes


def _control(protocol_text: str) -> Optional[str]:
    """The logged protocol's `control` entry (the one reports test every other entry against), if any."""
    try:
        doc = yaml.safe_load(protocol_text)
    except yaml.YAMLError:
        return None
    value = doc.get("control") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _markdown(meta, group, bars, entries, protocol_text, env, checked) -> str:
    out = [f"# {meta['protocol']}", "",
           f"Written by `{meta['command']}` from MLflow run `{meta['parent_run_id']}` (experiment "
           f"`{meta['experiment']}`, started {meta['run_started']}). Fingerprint `{meta['fingerprint']}`: "
           "scores compare only within it.", ""]
    space = render.feature_space(group.extractor)
    out += [space, ""] if space else []
    out += [f"> {n}" for n in meta["notes"]] + ([""] if meta["notes"] else [])
    out += ["## Leaderboard", "", render.markdown_table(group), f"_{render.LEGEND}_", ""]
    found = render.comparisons(group)
    if found:
        out += ["## Comparisons", "", "Each ranked row against the row below it on the sort metric (the `vs next` "
                f"test of the legend; significant: p < {significance.ALPHA}):", ""] + [f"- {line}" for line in found] + [""]
    if meta.get("control"):
        head, lines = render.control_lines(group, meta["control"])
        out += [f"## Against the control `{meta['control']}`", "", render.CONTROL_INTRO.format(c=meta["control"]), ""]
        out += [f"- **{line}**" for line in head] + [""] + [f"- {line}" for line in lines] + [""]
    if checked:
        out += ["## Against the literature", "", render.LITERATURE_INTRO.format(alpha=significance.ALPHA), ""]
        out += [f"- {line}" for line in render.literature_lines(group, checked)] + [""]
    out += ["## Metrics", ""]
    out += [f"![{render.label(k, group.extractor)}]({name})" for k, name, _ in bars] + [""]
    out += ["## Entries", ""]
    for e in entries:
        status = "" if e["status"] == "FINISHED" else f" — **{e['status']}**: {e['failure']}"
        out += [f"### {e['entry']} (`{e['zoo']}`, {e['task']}){status}", ""]
        out += [f"- not computed: `{k}`: {v}" for k, v in e["unavailable"].items()] + ([""] if e["unavailable"] else [])
        for name, sub in e["grids"]:
            out += [f"![{e['entry']} samples]({name})", "", f"_{e['caption']}{'; ' + sub if sub else ''}_", ""]
        for name, cap in e["figures"]:
            out += [f"![{e['entry']} {cap.split(':')[0]}]({name})", "", f"_{cap}_", ""]
        if e["curves"]:
            out += [f"![{e['entry']} training curves]({e['curves']})", ""]
    out += ["## Protocol", "", "```yaml", protocol_text.rstrip("\n"), "```", "", "## Environment", "",
            "| | |", "|---|---|"] + [f"| {k} | {str(v).replace('|', '/')} |" for k, v in env] + [""]
    return "\n".join(out)


def _html(meta, group, bars, entries, protocol_text, env, checked) -> str:
    e = html.escape
    body = [f"<p>Written by <code>{e(meta['command'])}</code> from MLflow run <code>{e(meta['parent_run_id'])}"
            f"</code> (experiment <code>{e(meta['experiment'])}</code>, started {e(meta['run_started'])}). "
            f"Fingerprint <code>{e(meta['fingerprint'])}</code>: scores compare only within it.</p>"]
    space = render.feature_space(group.extractor)
    body += [f"<p>{_inline_html(space)}</p>"] if space else []
    body += [f"<p class='note'>{e(n)}</p>" for n in meta["notes"]]
    body += ["<h2>Leaderboard</h2>", render.html_table(group), f"<p class='legend'>{e(render.LEGEND)}</p>"]
    found = render.comparisons(group)
    if found:
        body += ["<h2>Comparisons</h2>", "<p>Each ranked row against the row below it on the sort metric (the "
                 f"<code>vs next</code> test of the legend; significant: p &lt; {significance.ALPHA}):</p>", "<ul>"]
        body += [f"<li>{_inline_html(line)}</li>" for line in found] + ["</ul>"]
    if meta.get("control"):
        head, lines = render.control_lines(group, meta["control"])
        body += [f"<h2>Against the control <code>{e(meta['control'])}</code></h2>",
                 f"<p>{_inline_html(render.CONTROL_INTRO.format(c=meta['control']))}</p>", "<ul>"]
        body += [f"<li><strong>{_inline_html(line)}</strong></li>" for line in head] + ["</ul>", "<ul>"]
        body += [f"<li>{_inline_html(line)}</li>" for line in lines] + ["</ul>"]
    if checked:
        body += ["<h2>Against the literature</h2>",
                 f"<p>{_inline_html(render.LITERATURE_INTRO.format(alpha=significance.ALPHA))}</p>", "<ul>"]
        body += [f"<li>{_inline_html(line)}</li>" for line in render.literature_lines(group, checked)]
        body += ["</ul>"]
    body.append("<h2>Metrics</h2>")
    body += [f"<figure><img class='bar' src='{e(name)}' alt='{e(render.label(k, group.extractor))}'>"
             f"<figcaption>{e(render.label(k, group.extractor))}; whiskers: {e(w)}</figcaption></figure>"
             for k, name, w in bars]
    body.append("<h2>Entries</h2>")
    for en in entries:
        status = "" if en["status"] == "FINISHED" else f" — {en['status']}: {en['failure']}"
        body.append(f"<h3 id='entry-{e(en['entry'])}'>{e(en['entry'])} (<code>{e(en['zoo'])}</code>, "
                    f"{e(en['task'])}){e(status)}</h3>")
        body += [f"<p class='note'>not computed: <code>{e(k)}</code>: {e(v)}</p>" for k, v in en["unavailable"].items()]
        for name, sub in en["grids"]:
            body.append(f"<figure><img class='samples' src='{e(name)}' alt='{e(en['entry'])} samples'>"
                        f"<figcaption>{e(en['caption'] + ('; ' + sub if sub else ''))}</figcaption></figure>")
        for name, cap in en["figures"]:
            body.append(f"<figure><img class='samples' src='{e(name)}' alt='{e(en['entry'])} "
                        f"{e(cap.split(':')[0])}'><figcaption>{e(cap)}</figcaption></figure>")
        if en["curves"]:
            body.append(f"<figure><img class='curves' src='{e(en['curves'])}' alt='{e(en['entry'])} curves'>"
                        "<figcaption>losses and in-training scores vs training step</figcaption></figure>")
    body += ["<h2>Protocol</h2>", f"<pre>{e(protocol_text)}</pre>", "<h2>Environment</h2>",
             "<table class='env'>" + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in env)
             + "</table>"]
    return render.html_page(f"{meta['protocol']}: ganbench report", "\n".join(body))


def _inline_html(text: str) -> str:
    """The Markdown of a comparison line (`code`, **bold**) as HTML."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _write_all(out: Path, files: dict[str, bytes]) -> None:
    """Write every file atomically; remove files an earlier report wrote that this one no longer has.

    Every file's place is checked before the first is written, so a clash leaves the folder as it was rather
    than half an old report and half a new one."""
    root = out.resolve()
    for name in files:
        path = out / name
        if path.is_dir():
            raise BenchError(f"cannot write the report: {path} is a folder")
        for folder in reversed(Path(name).parents[:-1]):  # img/ for img/x.png: a file there, or a link out of `out`
            if (out / folder).exists() and not (out / folder).is_dir():
                raise BenchError(f"cannot write the report: {out / folder} is a file, not a folder")
            if not (out / folder).resolve().is_relative_to(root):
                raise BenchError(f"cannot write the report: {out / folder} is a link out of {out}; remove it")
    stale = [out / name for name in sorted(_previous_files(out) - set(files)) if _removable(out, root, name)]
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    for path in stale:
        path.unlink(missing_ok=True)


# The shape of every name write_report gives a file: a top-level name or img/<name>, of _SAFE's characters and never
# starting with a dot (so never `.` or `..`). Only names of this shape are ever removed as stale.
_OWN_NAME = re.compile(r"(img/)?[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _previous_files(out: Path) -> set[str]:
    """The names out/report.json lists, if it has the shape bench writes (an object whose "files" is a list of
    names); else none, and nothing is removed. It is a file in the output folder: anything can be in it (hand
    edits, another tool's report.json, a planted one), and it is overwritten with this report's all the same."""
    try:
        meta = json.loads((out / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # missing, a folder, unreadable, not JSON, nested past the limit
        return set()
    names = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return set()
    return set(names)


def _removable(out: Path, root: Path, name: str) -> bool:
    """Whether a stale name from the earlier report.json may be deleted: only a regular file (not a folder, not a
    symlink) under a name bench gives its files, that stays inside the report folder once the links of the folders
    above it are followed. Anything else was not written by bench, and is left alone: an absolute path or a
    `..` would otherwise let a report.json delete any file the user can."""
    path = out / name
    return (_OWN_NAME.fullmatch(name) is not None and not path.is_symlink() and path.is_file()
            and path.resolve().is_relative_to(root))


def _update_index(root: Path) -> list[str]:
    """Rewrite the report table of root/README.md (between the markers) from every */report.json; returns notes
    on what it left out.

    A report.json there that bench did not write (not JSON, not an object of text fields) is left out of the table
    with a note, not made an error: the index is a by-product of this command, whose report is already written by
    then, and one damaged or foreign folder beside it should neither fail the command nor keep every other report
    out of the index. Its own `bench report` rewrites it."""
    readme = root / "README.md"
    if not readme.is_file():
        return []
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [f"the report index {readme} was not updated: cannot read it as text ({type(exc).__name__})"]
    if INDEX_BEGIN not in text or INDEX_END not in text:
        return []
    fields = ("protocol", "fingerprint", "parent_run_id", "run_started", "command")
    lines = ["| report | protocol | fingerprint | protocol run | written by |", "|---|---|---|---|---|"]
    skipped = []
    for meta_path in sorted(root.glob("*/report.json")):
        try:
            m = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            m = None
        if not (isinstance(m, dict) and all(isinstance(m.get(k, ""), str) for k in fields)):
            skipped.append(meta_path)
            continue
        m = {k: m.get(k, "") for k in fields}
        folder = meta_path.parent.name
        lines.append(f"| [`{folder}/`]({folder}/index.html) ([md]({folder}/README.md)) | {m['protocol']} | "
                     f"`{m['fingerprint'][:12]}` | `{m['parent_run_id']}` ({m['run_started']}) | `{m['command']}` |")
    head, rest = text.split(INDEX_BEGIN, 1)
    tail = rest.split(INDEX_END, 1)[1]
    atomic_write_bytes(readme, (head + INDEX_BEGIN + "\n" + "\n".join(lines) + "\n" + INDEX_END + tail).encode())
    return [f"left {p} out of the report index in {readme}: not a report.json bench writes" for p in skipped]

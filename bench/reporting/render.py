"""Leaderboard groups as text: terminal, Markdown, CSV and HTML (one table per fingerprint)."""

from __future__ import annotations

import html as _html
import io
import math
from typing import Any, Optional

import pandas as pd

from bench.metrics import INCEPTION, KEY_DIRECTION
from bench.metrics import label as key_label
from bench.reporting import significance
from bench.reporting.leaderboard import Group

LEGEND = ("Cells: mean ± std over training seeds × evaluation seeds (sample std, n − 1; — for a single value); "
          "[a, b]: 95% interval where the metric has one, averaged over seeds (FID: delete-a-group jackknife with its "
          "second-order bias removed, covers FID at this sample size; KID: variance from all pairs of points, covers "
          "the population MMD²; coverage checked by "
          "`bench perf coverage`). n: training seeds × evaluation seeds (? = runs "
          "logged before per-seed values were). "
          f"vs next: {significance.METHOD}, between a row and the row below it, on the sort metric. "
          "Only rows of one fingerprint are ever compared. "
          "(baseline): the real-data row, unranked, no model: real training images scored as samples (real_data: "
          "what a perfect generator scores) or, for translation, each input as its own output (identity: what "
          "doing nothing scores).")


def _num(x: float, mag: Optional[float] = None) -> str:
    """Digits by magnitude, as the comparison table does (bench/reporting/table.py)."""
    if not math.isfinite(x):
        return str(x)
    mag = max(abs(x if mag is None else mag), 1e-12)
    digits = 4 if mag < 0.01 else (3 if mag < 10 else 2)
    return f"{x:.{digits}{'e' if mag < 1e-3 else 'f'}}"


def feature_space(extractor: str) -> str:
    """One sentence for a report header or leaderboard: which features IS/FID/KID were computed in, and
    whether they may be read beside published numbers."""
    if not extractor:
        return ""
    if extractor == INCEPTION:
        return (f"Features: `{extractor}` (torch-fidelity's port of the TF Inception-v3): IS, FID and KID are "
                "computed as published numbers are, at this protocol's sample sizes.")
    return (f"Features: `{extractor}`, not Inception. IS, FID and KID here compare only within this fingerprint, "
            f"never with published numbers; a protocol with `extractor: {INCEPTION}` gives those.")


def label(key: str, extractor: str = "") -> str:
    return f"{key_label(key, extractor)} {'↑' if KEY_DIRECTION[key] else '↓'}"


def cell(row: pd.Series, key: str) -> str:
    mean = row.get(f"{key}/mean")
    if mean is None or pd.isna(mean):
        return "—"
    std = row.get(f"{key}/std")
    text = f"{_num(mean)} ± " + ("—" if std is None or pd.isna(std) else _num(std, mean))
    lo, hi = row.get(f"{key}/ci95_low"), row.get(f"{key}/ci95_high")
    if lo is not None and hi is not None and not pd.isna(lo) and not pd.isna(hi):
        text += f" [{_num(lo, mean)}, {_num(hi, mean)}]"
    return text


def p_cell(row: pd.Series) -> str:
    return p_text(row.get("p_next"), row.get("test_next") or "", row.get("n_pairs_next"))


def p_text(p: Optional[float], test: str, n_pairs: Any) -> str:
    """A test's p with its units (leaderboard.two_sample's (p, test, n))."""
    if p is None or pd.isna(p):
        return test if test.startswith("no test") else ""
    units = f"n={int(n_pairs or 0)}" if test in ("", "paired") else test  # e.g. "3 vs 3 training seeds"
    return f"p={significance.format_p(p)}" + (" *" if p < significance.ALPHA else "") + f" ({units})"


def verdict(p: Optional[float], test: str, n_pairs: Any) -> str:
    """Whether a two-row test calls the difference significant, in words, or why it was not tested."""
    if test.startswith("no test"):
        return f"not tested ({test.removeprefix('no test: ')})" + (
            ": only training seeds can decide it" if "deterministic" in test else "")
    if p is None or pd.isna(p):
        return "not tested (too few paired values)"
    text = ("significant" if p < significance.ALPHA else "**not significant**") + f", {p_text(p, test, n_pairs)}"
    if test in ("", "paired"):
        # One training run per row: the test sees evaluation noise only. Re-running a one-seed protocol
        # has reordered trained entries (cifar10-zoo, 2026-12-01), so the sentence must say so.
        text += " over evaluation seeds only (one training run each; training-seed variance not measured)"
    return text


def comparisons(g: Group) -> list[str]:
    """One sentence per neighbouring pair of ranked rows on the sort metric: which is ahead, by how much,
    and whether the difference is significant (the `vs next` test), so a report states it in words."""
    if not g.sort_key:
        return []
    ranked = g.rows[g.rows["rank"].notna()]
    name = key_label(g.sort_key, g.extractor)
    out = []
    for (_, a), (_, b) in zip(ranked.iterrows(), ranked.iloc[1:].iterrows()):
        va, vb = a.get(f"{g.sort_key}/mean"), b.get(f"{g.sort_key}/mean")
        if va is None or vb is None or pd.isna(va) or pd.isna(vb):
            continue
        said = verdict(a.get("p_next"), a.get("test_next") or "", a.get("n_pairs_next"))
        out.append(f"`{a['entry']}` ahead of `{b['entry']}` on {name}: {_num(va)} vs {_num(vb, va)}; {said}")
    return out


LITERATURE_INTRO = ("What the papers report about these entries (the protocol's `literature`), against the "
                    "measured means, with the `vs next` test between the two rows; the p-values are also "
                    "Holm-adjusted over the claims tested here, and a verdict of significant uses the adjusted p "
                    "(p < {alpha}). Where this protocol contradicts a paper, the line says so and gives what was "
                    "measured about why.")


def literature_lines(g: Group, checks: list[Any]) -> list[str]:
    """One sentence per checked literature claim (leaderboard.against_literature): the claim and its source,
    the measured means, agreement or contradiction, and whether the Holm-adjusted test calls the gap
    significant."""
    out = []
    k = sum(1 for c in checks if not pd.isna(c.p))
    for c in checks:
        claim = c.claim
        name = key_label(claim.metric, g.extractor)
        text = f"{claim.source}: `{claim.better}` ahead of `{claim.than}` on {name}. "
        if c.missing:
            out.append(text + f"Not checked: {c.missing}.")
            continue
        text += f"Measured {_num(c.better_mean)} vs {_num(c.than_mean, c.better_mean)}: "
        text += "a tie, neither row ahead" if c.tie else "agrees" if c.agrees else "**contradicts the source**"
        if pd.isna(c.p):
            text += f"; {verdict(c.p, c.test, c.n_pairs)}."
        else:
            paired = c.test in ("", "paired")
            units = f"n={c.n_pairs}" if paired else c.test
            # significant or not: on the adjusted p (the raw p carries no star, it is not the verdict)
            text += "; " + ("significant" if c.p_holm < significance.ALPHA else "**not significant**")
            text += f", p={significance.format_p(c.p)} ({units})"
            if paired:
                text += " over evaluation seeds only (one training run each; training-seed variance not measured)"
            if k > 1:
                text += f"; Holm-adjusted over the {k} claims tested, p={significance.format_p(c.p_holm)}"
            text += "."
        if claim.evidence and not c.agrees:
            text += f" Why: {claim.evidence}"
        elif claim.evidence:
            text += f" Evidence on record: {claim.evidence}"
        elif not c.agrees and not c.tie:
            text += " Why: not investigated (the claim has no `evidence`)."
        out.append(text)
    return out


def control_lines(g: Group, control: str) -> tuple[list[str], list[str]]:
    """(headline, lines): which entries beat `control` with significance (Holm-adjusted) on each metric, then
    one sentence per entry and metric (leaderboard.against_control)."""
    from bench.reporting.leaderboard import against_control

    tests = against_control(g, control)
    headline, lines = [], []
    for key in g.keys:
        mine = [t for t in tests if t.key == key]
        if not mine:
            continue
        name = key_label(key, g.extractor)
        family = [t for t in mine if not t.floor]
        wins = [t.entry for t in family if t.better and t.p_holm < significance.ALPHA]
        losses = [t.entry for t in family if not t.better and t.p_holm < significance.ALPHA]
        untested = [t.entry for t in family if math.isnan(t.p)]
        text = f"{name}: " + (f"beat `{control}` with significance: " + ", ".join(f"`{e}`" for e in wins)
                              if wins else f"no entry beats `{control}` with significance")
        if losses:
            text += "; significantly worse: " + ", ".join(f"`{e}`" for e in losses)
        if untested:
            text += "; not testable: " + ", ".join(f"`{e}`" for e in untested)
        for t in mine:
            if t.floor and not math.isnan(t.p):
                sig = t.p < significance.ALPHA
                if not t.better:
                    text += (f"; `{control}` beats the untrained floor `{t.entry}`"
                             + (" with significance" if sig else " (**not significant**)"))
                elif sig:  # the floor is ahead, beyond noise: the control learned something harmful
                    text += f"; `{control}` is **significantly worse** than the untrained floor `{t.entry}`"
                else:
                    text += f"; `{control}` does not beat the untrained floor `{t.entry}` (**not significant**)"
        headline.append(text)
        for t in mine:
            if math.isnan(t.p):
                verdict = "not tested" + (f" ({t.test.removeprefix('no test: ')})" if t.test else "")
            elif t.floor:
                verdict = (("significant" if t.p < significance.ALPHA else "**not significant**")
                           + f", p={significance.format_p(t.p)}, the untrained floor, outside the Holm family ({t.test or 'paired'})")
            else:
                sig = t.p_holm < significance.ALPHA
                verdict = (("significant" if sig else "**not significant**")
                           + f", p={significance.format_p(t.p)}, Holm-adjusted p={significance.format_p(t.p_holm)} ({t.test or 'paired'})")
            lines.append(f"`{t.entry}` {'better' if t.better else 'worse'} than `{control}` on {name}: "
                         f"{_num(t.mean)} vs {_num(t.control_mean, t.mean)}; {verdict}")
    return headline, lines


CONTROL_INTRO = ("Every entry against the control `{c}` on every metric: the same test as `vs next` (training "
                 "seeds as the units when there are several), and because k entries are each tested against one "
                 "control, the p-values are also Holm-adjusted over the k (family-wise error at "
                 f"{significance.ALPHA}); a verdict uses the adjusted p. An untrained entry is a floor, not one of "
                 "the k: its test asks whether the control learned anything, and is read unadjusted.")


def title(g: Group) -> str:
    runs = f"{len(g.parent_run_ids)} run{'s' if len(g.parent_run_ids) != 1 else ''}"
    rep = f", {g.repeats} older repeat{'s' if g.repeats != 1 else ''} superseded" if g.repeats else ""
    space = f" · features {g.extractor}" if g.extractor else ""
    if g.pixels_split:  # one fingerprint, several decoded versions of its data: say which this table is
        space += f" · pixels {g.data_pixels[:12] or 'not recorded'}"
    return f"{g.protocol} · fingerprint {g.fingerprint[:12]}{space} · experiment {g.experiment} · {runs}{rep}"


def rows(g: Group) -> tuple[list[str], list[list[str]]]:
    sort_label = key_label(g.sort_key, g.extractor) if g.sort_key else ""
    vs = f"vs next ({sort_label})" if sort_label else "vs next"
    header = ["#", "entry", "zoo"] + [label(k, g.extractor) for k in g.keys] + ["n", vs, "status"]
    body = []
    for _, r in g.rows.iterrows():
        rank = "" if pd.isna(r["rank"]) else str(int(r["rank"]))
        status = r["status"] if r["status"] == "FINISHED" else f"{r['status']}: {r['failure']}".rstrip(": ")
        entry = f"{r['entry']} (baseline)" if r["baseline"] else r["entry"]  # the real-data row, unranked
        body.append([rank, entry, r["zoo"], *(cell(r, k) for k in g.keys),
                     f"{r['n_train']}×{r['n_eval'] or '?'}", p_cell(r), status])
    return header, body


def terminal(groups: list[Group]) -> str:
    out = []
    for g in groups:
        header, body = rows(g)
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        out += [title(g), line(header), line(["-" * w for w in widths]), *map(line, body), *g.notes]
        out += [f"  {c.replace('**', '').replace('`', '')}" for c in comparisons(g)] + [""]
    out.append(LEGEND)
    return "\n".join(out) + "\n"


def markdown_table(g: Group) -> str:
    header, body = rows(g)
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in b) + " |" for b in body]
    return "\n".join(out + g.notes) + "\n"


def markdown(groups: list[Group], heading: str = "###") -> str:
    out = []
    for g in groups:
        out += [f"{heading} {title(g)}", "", markdown_table(g)]
        found = comparisons(g)
        out += [f"- {c}" for c in found] + ([""] if found else [])
    out.append(f"_{LEGEND}_")
    return "\n".join(out) + "\n"


def to_csv(groups: list[Group]) -> str:
    """Every number, unformatted: one line per (fingerprint, decoded pixels, entry)."""
    frames = []
    for g in groups:
        df = g.rows.drop(columns=[c for c in g.rows if c.endswith("/by_seed")] + ["run_ids", "train_seeds"])
        df.insert(0, "experiment", g.experiment)
        df.insert(0, "data_pixels", g.data_pixels)  # tells apart the groups of a fingerprint split by its pixels
        df.insert(0, "fingerprint", g.fingerprint)
        df.insert(0, "protocol", g.protocol)
        df["sort_key"] = g.sort_key or ""
        df["run_ids"] = [" ".join(r) for r in g.rows["run_ids"]]
        frames.append(df)
    buf = io.StringIO()
    pd.concat(frames, ignore_index=True).to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def html_table(g: Group) -> str:
    header, body = rows(g)
    e = _html.escape
    out = [f'<table class="leaderboard" data-fingerprint="{e(g.fingerprint)}">',
           f"<caption>{e(title(g))}</caption>",
           "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for b, (_, r) in zip(body, g.rows.iterrows()):
        cls = ("baseline" if r["baseline"] else "ok") if r["status"] == "FINISHED" else "failed"
        out.append(f'<tr class="{cls}">' + "".join(f"<td>{e(c)}</td>" for c in b) + "</tr>")
    out.append("</tbody></table>")
    out += [f"<p class='note'>{e(n)}</p>" for n in g.notes]
    return "\n".join(out)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } caption { text-align: left; font-weight: bold; padding: 0.4em 0; }
tr.failed td { color: #a00; } .legend, .note { font-size: 0.85em; color: #555; }
tr.baseline td { background: #f4f8fc; font-style: italic; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #444; max-width: 40em; }
img { max-width: 100%; border: 1px solid #ddd; }
img.samples { width: 320px; image-rendering: pixelated; }
"""


def html_page(title_text: str, body: str) -> str:
    e = _html.escape
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title_text)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{e(title_text)}</h1>\n{body}\n</body></html>\n")


def to_html(groups: list[Group], title_text: str = "ganbench leaderboard") -> str:
    return html_page(title_text, "\n".join(html_table(g) for g in groups)
                     + f"\n<p class=\"legend\">{_html.escape(LEGEND)}</p>")

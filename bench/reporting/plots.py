"""Report figures as PNG bytes: a bar chart per metric and training curves per entry.

Figures are built on matplotlib's object API with an explicit Agg canvas, so nothing here touches
pyplot's global state or the process-wide backend of whoever imported us.
"""

from __future__ import annotations

import io
import math

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.reporting.render import label


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def metric_bars(rows: pd.DataFrame, key: str, extractor: str = "") -> tuple[bytes, str]:
    """Horizontal bars of the entries' means in leaderboard order; returns (png, what the whiskers are)."""
    have = rows[rows["status"].eq("FINISHED") & rows.get(f"{key}/mean", pd.Series(dtype=float)).notna()]
    # The real-data row (leaderboard: first, unranked) is drawn in grey and named as a baseline.
    names = [f"{e} (baseline)" if b else e for e, b in zip(have["entry"], have["baseline"])]
    colours = ["#999999" if b else "#4c72b0" for b in have["baseline"]]
    means = [float(v) for v in have[f"{key}/mean"]]
    lo_col, hi_col = f"{key}/ci95_low", f"{key}/ci95_high"
    if lo_col in have and have[lo_col].notna().all():
        err = [[m - float(lo) for m, lo in zip(means, have[lo_col])],
               [float(hi) - m for m, hi in zip(means, have[hi_col])]]
        whiskers = "95% interval (mean over seeds)"
    else:
        std = [float(s) if not math.isnan(float(s)) else 0.0 for s in have[f"{key}/std"]]
        err = [std, std]
        whiskers = "± std over seeds"
    # Negative whisker lengths (an interval that does not contain the mean) cannot be drawn; clip them.
    err = [[max(0.0, e) for e in side] for side in err]
    fig = Figure(figsize=(5.6, 0.45 * max(len(names), 2) + 1.2))
    ax = fig.add_subplot()
    ys = list(range(len(names)))[::-1]  # the best entry on top
    ax.barh(ys, means, xerr=err, color=colours, ecolor="#222", capsize=3)
    ax.set_yticks(ys, names)
    ax.set_xlabel(label(key, extractor))
    ax.set_title(f"{label(key, extractor)}   whiskers: {whiskers}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig), whiskers


def training_curves(entry: str, curves: dict[str, list[tuple[int, float]]]) -> bytes:
    """Losses vs step on the left; in-training scores (`train/...`, e.g. train/fid) vs step on the right."""
    losses = {k: v for k, v in curves.items() if not k.split("@")[0].startswith("train/")}
    scores = {k: v for k, v in curves.items() if k.split("@")[0].startswith("train/")}
    panels = [(losses, "loss")] + ([(scores, "in-training score")] if scores else [])
    fig = Figure(figsize=(6.0 * len(panels), 3.6))
    for i, (series, ylabel) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        for name, points in sorted(series.items()):
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], label=name,
                        marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=8)
    fig.suptitle(entry)
    fig.tight_layout()
    return _png(fig)


def truncation_curve(rows: pd.DataFrame, keys: list[str]) -> bytes:
    """FID vs truncation ψ, one line per entry that has the curve (`fid_trunc/psi_<ψ>` keys), ± std over seeds."""
    points = sorted((float(k.rsplit("psi_", 1)[1]), k) for k in keys if k.startswith("fid_trunc/psi_"))
    fig = Figure(figsize=(5.6, 3.6))
    ax = fig.add_subplot()
    have = rows[rows["status"].eq("FINISHED")]
    seen: list[float] = []
    for _, row in have.iterrows():
        xs, ys, es = [], [], []
        for psi, key in points:
            m = row.get(f"{key}/mean")
            if m is not None and not math.isnan(float(m)):
                s = row.get(f"{key}/std")
                xs.append(psi)
                ys.append(float(m))
                es.append(0.0 if s is None or math.isnan(float(s)) else float(s))
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=row["entry"])
            seen += ys
    if seen and min(seen) > 0 and max(seen) / min(seen) > 10:
        ax.set_yscale("log")  # an untrained floor would flatten the trained curves on a linear axis
    ax.set_xlabel("truncation ψ (1 = none)")
    ax.set_ylabel("FID")
    ax.set_title("FID vs truncation (lower is better)   whiskers: ± std over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)

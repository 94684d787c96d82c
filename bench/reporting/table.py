"""The comparison table: one row per entry (per entry and training seed when a protocol has `train_seeds`) x
metrics, mean ± sample std over evaluation seeds."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from bench.metrics import KEY_DIRECTION, LABELS, TABLE_KEYS, label

# Keys shown in the table, in order; other keys stay in results.jsonl and MLflow.
__all__ = ["LABELS", "TABLE_KEYS", "markdown", "rows", "to_csv"]  # labels and columns: declared by each metric


def _fmt(mean: float, std: float | None) -> str:
    if not math.isfinite(mean):
        return str(mean)
    mag = max(abs(mean), 1e-12)
    digits = 4 if mag < 0.01 else (3 if mag < 10 else 2)
    fmt = f"{{:.{digits}{'e' if mag < 1e-3 else 'f'}}}"
    # A sample std of one evaluation seed is undefined (results.jsonl: null), not 0.
    return f"{fmt.format(mean)} ± " + ("—" if std is None or not math.isfinite(std) else fmt.format(std))


def _label(r: dict[str, Any]) -> str:
    if r.get("info", {}).get("baseline"):  # the real-data row (bench/runner/reference.py), not a model
        return f"{r['entry']} (baseline)"
    seed = r.get("train_seed")
    return r["entry"] if seed is None else f"{r['entry']} (training seed {seed})"


def rows(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    keys = [k for k in TABLE_KEYS if any(k in r.get("metrics", {}) for r in results)]
    extractor = next((r["info"]["extractor"] for r in results if r.get("info", {}).get("extractor")), "")
    header = ["entry"] + [f"{label(k, extractor)} {'↑' if KEY_DIRECTION[k] else '↓'}" for k in keys] + ["status"]
    body = []
    for r in results:
        m = r.get("metrics", {})
        cells = [_fmt(m[k]["mean"], m[k]["std"]) if k in m else "—" for k in keys]
        body.append([_label(r), *cells, r["status"] if r["status"] != "FAILED" else f"FAILED: {r['reason']}"])
    return header, body


def markdown(results: list[dict[str, Any]], title: str = "") -> str:
    header, body = rows(results)
    out = [f"### {title}", ""] if title else []
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join("---" for _ in header) + "|")
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out) + "\n"


def to_csv(results: list[dict[str, Any]]) -> str:
    keys = sorted({k for r in results for k in r.get("metrics", {})})
    buf = io.StringIO()
    w = csv.writer(buf)
    seeded = any(r.get("train_seed") is not None for r in results)  # a train_seed column only when there are any
    w.writerow(["entry", *(["train_seed"] if seeded else []), "status"]
               + [f"{k}/{s}" for k in keys for s in ("mean", "std")])
    for r in results:
        m = r.get("metrics", {})
        seed = [r.get("train_seed", "")] if seeded else []
        w.writerow([r["entry"], *seed, r["status"]]
                   + [("" if m[k][s] is None else m[k][s]) if k in m else "" for k in keys for s in ("mean", "std")])
    return buf.getvalue()


def terminal(results: list[dict[str, Any]]) -> str:
    header, body = rows(results)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])

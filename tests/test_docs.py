"""The front door and the reference docs stay true to the code: the README is short and its links resolve;
the protocol-key, metric and zoo tables in docs/ list exactly what the code has, with the numbers it gives."""

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from bench.cli import main
from bench.metrics import METRICS
from bench.protocol.schema import Protocol
from zoo import ZOO

ROOT = Path(__file__).resolve().parents[1]


def _table_rows(path: Path) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split(" | ")]
            for line in path.read_text().splitlines() if line.startswith("| `")]


def test_readme_is_a_front_door_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert {"docs/protocols.md", "docs/metrics.md", "docs/zoo.md", "docs/contributing.md"} <= set(links)
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / link).exists(), f"{doc.name}: broken link {link}"


def _schema_paths(model: type[BaseModel], prefix: str, documented: set[str]) -> set[str]:
    """Every key of the schema, descending into a nested section only where the docs list its sub-keys."""
    out = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        inner = field.annotation
        for arg in (typing.get_args(inner) or (inner,)):
            if typing.get_origin(arg) is list and typing.get_args(arg):
                arg = typing.get_args(arg)[0]
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                sub = f"{path}[]." if typing.get_origin(inner) is list else f"{path}."
                if any(d.startswith(sub) for d in documented):
                    out |= _schema_paths(arg, sub, documented)
                    if sub.endswith("[].") is False and path in documented:
                        out.add(path)
                    break
        else:
            out.add(path)
            continue
        if path in documented:
            out.add(path)
    return out


def test_protocol_key_table_lists_every_schema_key():
    keys = set()
    for row in _table_rows(ROOT / "docs" / "protocols.md"):
        key = row[0].strip("`")
        if key.startswith("  ."):  # a key of entries[].train, indented under it
            key = "entries[].train." + key.strip().lstrip(".")
        keys.add(key)
    schema = _schema_paths(Protocol, "", keys)
    assert schema - keys == set(), "keys in the schema but not in docs/protocols.md"
    assert keys - schema == set(), "keys in docs/protocols.md that the schema does not have"


def test_metric_table_lists_every_metric_and_its_keys():
    rows = {r[0].strip("`"): r for r in _table_rows(ROOT / "docs" / "metrics.md")}
    assert set(METRICS.names()) <= set(rows), "metrics missing from docs/metrics.md"
    for name in METRICS.names():
        metric = METRICS.get(name)
        assert rows[name][1] == metric.needs, name
        for key in metric.keys:
            assert f"`{key.name}`" in rows[name][2] or key.name == "fid_trunc", (name, key.name)


def test_zoo_table_has_every_family_with_the_counts_bench_zoo_list_prints(capsys):
    rows = {r[0].strip("`"): r for r in _table_rows(ROOT / "docs" / "zoo.md") if len(r) >= 5}
    assert main(["zoo", "list"]) == 0
    printed = capsys.readouterr().out.splitlines()[1:]
    listed = {}
    for line in printed:
        parts = line.split()
        if parts and parts[0] in ZOO:
            listed[parts[0]] = (parts[1], parts[-len(parts) + 2], parts[3])  # task, G params, D params
    assert set(listed) == set(ZOO.names()) <= set(rows)
    for name, (task, g, d) in listed.items():
        assert rows[name][2] == g and rows[name][3] == d, (name, rows[name][2:4], (g, d))
        assert rows[name][4] == ZOO.get(name).seed_section, name

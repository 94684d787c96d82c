"""The module graph of bench/ and zoo/: no import cycle anywhere, and the lower layers never reach up.

Every import counts, including those inside functions (a lazy import hides a cycle from the interpreter,
not from a reader), and so do the package __init__ files an import runs first (bench.data.base runs
bench/data/__init__.py). `from pkg import submodule` depends on the submodule, not on pkg's own names.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _graph() -> dict[str, set[str]]:
    mods = {}
    for p in [*ROOT.glob("bench/**/*.py"), *ROOT.glob("zoo/**/*.py")]:
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = p
    graph = {}
    for name, path in mods.items():
        found = set()
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", getattr(block.test, "attr", "")) == "TYPE_CHECKING"
                       for n in ast.walk(block)}  # annotations only: never run
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                found.update(subs if all(s in mods for s in subs) else [node.module])
        deps = set()
        for d in found:
            while d and d not in mods:
                d = d.rpartition(".")[0]
            if d and d != name:
                deps.add(d)
                # importing a.b.c first runs a/__init__ and a/b/__init__: those are dependencies too,
                # except the packages this module itself lives in (already running when it imports)
                parts = d.split(".")
                deps.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
                            if p in mods and not (name == p or name.startswith(p + ".")))
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_lower_layers_do_not_import_upper_ones():
    graph = _graph()
    # the content-hashed disk cache is a utility every layer may use (bench/features/__init__ imports nothing)
    allowed = {"bench.features.cache", "bench.features"}
    rules = {"bench.data": ("zoo", "bench.features", "bench.runner", "bench.metrics", "bench.reporting"),
             "bench.features": ("zoo", "bench.runner", "bench.reporting"),
             "bench.metrics": ("bench.runner.train", "bench.reporting", "bench.pipeline"),
             "bench.tracking": ("zoo", "bench.runner", "bench.metrics", "bench.reporting"),
             "zoo": ("bench.runner", "bench.metrics", "bench.features", "bench.reporting", "bench.pipeline",
                     "bench.entries", "bench.evaluation", "bench.preflight", "bench.protocol.load")}
    bad = [(m, d) for m, deps in graph.items() for layer, banned in rules.items()
           if m == layer or m.startswith(layer + ".")
           for d in deps if d not in allowed and any(d == b or d.startswith(b + ".") for b in banned)]
    assert bad == [], bad

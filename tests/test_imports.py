"""The package's import graph: no cycles (module-level or inside functions), and no import of a
module named by data."""
import ast
from pathlib import Path

import numpy as np
import pytest

import crowdprop
from crowdprop.campaign import roundplan
from crowdprop.errors import StateError
from crowdprop.policy.controller import RoundPlan

ROOT = Path(crowdprop.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the crowdprop modules it imports anywhere in its code (``from . import x`` counts
    as importing the submodule ``x`` when there is one, else the package)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (f, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    t = ".".join(base + ([node.module] if node.module else []))
                else:
                    t = node.module or ""
                subs = [f"{t}.{a.name}" for a in node.names if f"{t}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [t, *subs]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m:
                    graph[m].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def test_cycle_finder_finds_a_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "crowdprop.detect.ray_engine" in graph["crowdprop.detect.pipeline"]  # the graph sees lazy imports
    assert cycles(graph) == []


def test_no_module_is_imported_by_a_name_built_at_run_time():
    users = sorted(str(f.relative_to(ROOT)) for f, _ in _modules().values()
                   if "import_module(" in f.read_text(encoding="utf-8"))
    assert users == ["cli.py"]  # the command modules of crowdprop/commands, listed by pkgutil


def test_a_plan_names_only_the_classes_it_may_hold():
    plan = RoundPlan(free_splits=[3], nodes=[1, 2], asks={1: np.array([4, 5])})
    back = roundplan.decode(roundplan.encode(plan))
    assert (back.free_splits, back.nodes, sorted(back.asks)) == ([3], [1, 2], [1])
    np.testing.assert_array_equal(back.asks[1], [4, 5])
    with pytest.raises(StateError, match="unknown class 'os:system'"):
        roundplan.decode({"__dataclass__": "os:system", "fields": {"command": "true"}})

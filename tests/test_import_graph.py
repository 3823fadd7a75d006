"""No import cycles among gendiff's parts (issue 28): modules, and the parts core <- pipelines <- mri / offline <- cli.

The graph is read from the source with ``ast`` (every ``import``, including those inside functions, which is how a
cycle used to be hidden), with the folders mapped to packages as pyproject.toml's ``package-dir`` maps them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
APPS = ("gendiff.pipelines", "gendiff.mri", "gendiff.offline")
FRONT_DOOR = ("gendiff.cli", "gendiff.__main__")


def package_dirs() -> dict[str, Path]:
    """pyproject's package-dir: installed top-level package name -> source folder."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: ROOT / folder for name, folder in cfg["tool"]["setuptools"]["package-dir"].items()}


def module_files() -> dict[str, Path]:
    """Every module of the installed tree: dotted name -> file (a package is its __init__.py)."""
    out: dict[str, Path] = {}
    for name, folder in package_dirs().items():
        for f in folder.rglob("*.py"):
            parts = [p for p in f.relative_to(folder).with_suffix("").parts if p != "__init__"]
            out[".".join([name, *parts])] = f
    return out


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement may load (``from a import b`` may load a or a.b)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join(pkg + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (functions included)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for t in _targets(mod, path, node):
                    while t and t not in files:  # a.b.name -> a.b
                        t = t.rpartition(".")[0]
                    if t and t != mod:
                        found.add(t)
        graph[mod] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def part(module: str) -> str:
    """core, pipelines, mri, offline or cli (the front door)."""
    if module in FRONT_DOOR:
        return "cli"
    for app in APPS:
        if module == app or module.startswith(app + "."):
            return app.split(".")[1]
    return "core"


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_the_project():
    graph = import_graph()
    assert {"gendiff.sampler", "gendiff.pipelines.ads", "gendiff.mri.cli", "gendiff.offline.diffusion"} <= set(graph)
    assert "gendiff.sampler" in graph["gendiff.pipelines.ads"]  # a module-level import
    assert "gendiff.mri.cli" in graph["gendiff.cli"]  # one inside a function


def test_no_module_imports_itself_back():
    graph = import_graph()
    found = cycles(graph)
    detail = [{m: sorted(graph[m] & set(c)) for m in c} for c in found]
    assert not found, f"import cycles: {detail}"


def test_parts_form_layers_core_pipelines_apps_cli():
    graph = import_graph()
    parts: dict[str, set[str]] = {}
    edges: dict[tuple[str, str], list[str]] = {}
    for mod, targets in graph.items():
        for t in targets:
            a, b = part(mod), part(t)
            if a != b:
                parts.setdefault(a, set()).add(b)
                edges.setdefault((a, b), []).append(f"{mod} -> {t}")
    assert not cycles(parts), f"the parts import each other: { {k: v[:3] for k, v in edges.items()} }"
    core_out = {p: edges[("core", p)][:3] for p in parts.get("core", ())}
    assert not core_out, f"the core imports an application: {core_out}"
    assert "cli" not in set().union(*parts.values()), "an application imports the front door (gendiff.cli)"

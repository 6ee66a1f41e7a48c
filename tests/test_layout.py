"""The code's shape: imports go one way (no cycles, counting imports inside functions), and
the README's "where each concept lives" table names every module, and only files that exist."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _import_graph() -> dict[str, set[str]]:
    files = {}
    for p in sorted((ROOT / "pi").rglob("*.py")) + sorted((ROOT / "training").rglob("*.py")):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        files[name] = p
    graph = {m: set() for m in files}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[module] |= {n for n in names if n in files and n != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_pi_or_training():
    graph = _import_graph()
    assert "pi.app" in graph and graph["pi.app"]  # the walk sees the package
    assert _cycles(graph) == []


def test_pi_never_imports_training():
    graph = _import_graph()
    assert not {m for m, deps in graph.items() if m.startswith("pi")
                for d in deps if d.startswith("training")}


def test_the_readme_table_names_every_module_and_only_files_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Where each concept lives", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[2] for line in table.splitlines() if line.startswith("| ")]
    named = {p for cell in rows for p in re.findall(r"`([^`]+)`", cell)}
    assert named and all((ROOT / p).exists() for p in named), \
        sorted(p for p in named if not (ROOT / p).exists())
    modules = {p.relative_to(ROOT).as_posix() for top in ("pi", "training")
               for p in (ROOT / top).rglob("*") if p.is_file() and p.name != "__init__.py"
               and "__pycache__" not in p.parts and p.suffix in (".py", ".html", ".js", ".css")
               and "static" not in p.parts}
    assert modules - named == set()

"""The shape of the code (docs: /work/shared/STYLE.md): small modules and functions, and an import graph without
cycles at import time and without modules importing names from a package that contains them.

Everything is read with ``ast``, nothing is imported. Limits: a module at most 400 lines; a function or method
at most 80 lines, counted from its ``def`` line to its last line (decorators excluded).
Import graph: the package's own modules only; absolute and relative imports; ``from P import name`` is an edge to
the submodule P.name when there is one, else to P itself; importing P.q.r also runs the ``__init__`` of P and P.q
first, so those are edges too. Cycles are looked for among the imports that run when a module is imported (not
inside a function, not under ``if TYPE_CHECKING``); edges to a module's own enclosing packages are left to the
back-edge check, which covers every import, those inside functions included.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "robustseg"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Edge:
    source: str          # importing module
    target: str          # imported module (a package means its __init__)
    line: int
    at_import_time: bool
    explicit: bool       # named in the import statement (not a parent package it runs first)


def module_files(root: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} of every module of ``package`` under ``root``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _import_time_nodes(tree: ast.Module):
    """(node, runs at import time) for every import statement of a module."""
    def walk(node, at_import_time):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from walk(child, False)
            else:
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    yield child, at_import_time
                yield from walk(child, at_import_time)
    yield from walk(tree, True)


def _targets(node: ast.Import | ast.ImportFrom, module: str, files: dict[str, Path]) -> list[str]:
    """The package modules an import statement names (before parent packages are added)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base_parts = module.split(".") if _is_package(module, files) else module.split(".")[:-1]
        base_parts = base_parts[:len(base_parts) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]


def import_edges(files: dict[str, Path], package: str) -> list[Edge]:
    edges = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, at_import_time in _import_time_nodes(tree):
            for target in _targets(node, module, files):
                if not (target == package or target.startswith(package + ".")):
                    continue
                while target not in files:  # ``import pkg.mod.attr``-like names: the module part
                    target = target.rpartition(".")[0]
                runs_first = [p for p in _ancestors(target) if p != module and p not in _ancestors(module)]
                edges += [Edge(module, p, node.lineno, at_import_time, False) for p in runs_first]
                if target != module:
                    edges.append(Edge(module, target, node.lineno, at_import_time, True))
    return list(dict.fromkeys(edges))  # one edge per statement and target, however many names it imports


def back_edges(edges: list[Edge]) -> list[Edge]:
    """Imports of names from a package that contains the importing module."""
    return [e for e in edges if e.explicit and e.target in _ancestors(e.source)]


def import_cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components (more than one module) of the import-time graph, by Tarjan's algorithm."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.at_import_time and e.target not in _ancestors(e.source):
            graph.setdefault(e.source, set()).add(e.target)
            graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def long_functions(files: dict[str, Path], limit: int, root: Path = ROOT) -> list[tuple[str, int, str, int]]:
    """(file, line, qualified name, lines) of every function or method longer than ``limit`` lines."""
    out = []
    for path in files.values():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, qualname in _functions(tree, ""):
            length = node.end_lineno - node.lineno + 1  # node.lineno is the def line, after any decorators
            if length > limit:
                out.append((str(path.relative_to(root)), node.lineno, qualname, length))
    return out


def _functions(node, prefix: str):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield child, prefix + child.name
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


@pytest.fixture(scope="module")
def files() -> dict[str, Path]:
    return module_files(ROOT, PACKAGE)


def test_no_module_over_400_lines(files):
    long = [(str(p.relative_to(ROOT)), len(p.read_text(encoding="utf-8").splitlines())) for p in files.values()]
    long = sorted((n, f) for f, n in long if n > MAX_MODULE_LINES)[::-1]
    assert not long, f"{len(long)} module(s) over {MAX_MODULE_LINES} lines:\n" + "\n".join(
        f"  {f}: {n} lines" for n, f in long)


def test_no_function_over_80_lines(files):
    long = sorted(long_functions(files, MAX_FUNCTION_LINES), key=lambda o: -o[3])
    assert not long, f"{len(long)} function(s) over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(
        f"  {f}:{line} {name}: {n} lines" for f, line, name, n in long)


def test_no_import_cycle_at_import_time(files):
    edges = import_edges(files, PACKAGE)
    cycles = import_cycles(edges)

    def where(component):
        inside = [e for e in edges if e.at_import_time and e.source in component and e.target in component]
        return ", ".join(f"{files[e.source].relative_to(ROOT)}:{e.line} -> {e.target}" for e in inside)
    assert not cycles, f"{len(cycles)} import cycle(s) at import time:\n" + "\n".join(
        f"  {' <-> '.join(c)}: {where(c)}" for c in cycles)


def test_no_module_imports_from_a_package_that_contains_it(files):
    bad = back_edges(import_edges(files, PACKAGE))
    assert not bad, f"{len(bad)} import(s) from an enclosing package:\n" + "\n".join(
        f"  {files[e.source].relative_to(ROOT)}:{e.line} {e.source} imports from {e.target}"
        f"{'' if e.at_import_time else ' (inside a function)'}" for e in bad)


def test_the_checks_find_what_they_look_for(tmp_path):
    """On a made-up package: a cycle, a back-edge inside a function, a long function, and what is allowed."""
    pkg = tmp_path / "fake"
    (pkg / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "from .a import f\n__version__ = '1'\n",
        "a.py": "from . import b\n\ndef f():\n    from . import __version__\n    return __version__\n",
        "b.py": "import fake.a\nfrom .sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n\n"
                    "def g():\n    from ..a import f\n" + "    x = 1\n" * 80,
    }
    for name, text in sources.items():
        (pkg / name).write_text(text)
    fake = module_files(tmp_path, "fake")
    edges = import_edges(fake, "fake")
    assert import_cycles(edges) == [["fake.a", "fake.b"]]
    assert [(e.source, e.target, e.at_import_time) for e in back_edges(edges)] == [("fake.a", "fake", False)]
    assert ("fake.sub.c", "fake.a", False, True) in {(e.source, e.target, e.at_import_time, e.explicit)
                                                      for e in edges}
    assert [(name, n) for _, _, name, n in long_functions(fake, 80, tmp_path)] == [("g", 82)]

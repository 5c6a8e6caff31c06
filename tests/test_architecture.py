"""The library's layering, as a newcomer extending it relies on it: every module imports on its own, no module
imports another (even inside a function), in a cycle, and no module reaches into another's private names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "course_lib"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` in ``module`` names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import of ``module``, at any depth (function-level included)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            names = [a.name for a in node.names]
            # "from . import x" / "from .checks import nb01" import submodules, not names
            subs = [n for n in names if f"{target}.{n}" in MODULES]
            for sub in subs:
                found.append((f"{target}.{sub}", [], node.lineno))
            rest = [n for n in names if n not in subs]
            if rest:
                found.append((target, rest, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return [(t, n, line) for t, n, line in found if t in MODULES]


def _graph() -> dict[str, set[str]]:
    """module -> the course_lib modules it imports; the package ``course_lib`` itself stands for its __init__."""
    graph = {}
    for module in MODULES:
        edges = set()
        for target, _, _ in _imports(module):
            if target != module and not module.startswith(target + "."):  # a module may import its own package
                edges.add(target)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules_even_inside_functions():
    graph = _graph()
    # the package's __init__ re-exports from its modules; the modules import it only for FAST etc. through _runtime
    assert all("course_lib" not in edges for m, edges in graph.items() if m != "course_lib"), \
        [m for m, edges in graph.items() if "course_lib" in edges and m != "course_lib"]
    assert _cycles(graph) == []


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for module in MODULES:
        for target, names, line in _imports(module):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != module:
                where = MODULES[module].relative_to(PACKAGE.parent)
                offenders.append(f"{where}:{line} imports {private} from {target}")
    assert offenders == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports_on_its_own(module):
    """In a fresh interpreter, so an import that only works after another module was imported first fails here."""
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]

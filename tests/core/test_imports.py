"""The import structure of zhllama, read from the source with `ast` (nothing is imported).

Every import counts, also those inside functions (a lazy import is still a dependency; only
`if TYPE_CHECKING:` blocks are left out). The rules: core never imports the CLI, plugins never
import the CLI, and no import cycle runs among core modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import zhllama

ROOT = Path(zhllama.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The zhllama module `name` refers to (a name imported from a module resolves to that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, source: str | None = None) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(r for a in node.names if (r := _resolve(a.name)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in MODULES else _resolve(base)
                if target:
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source if source is not None else path.read_text(encoding="utf-8")))
    found.discard(module)
    return {m for m in found if m.startswith("zhllama")}


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def cycles(nodes: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), among `nodes`."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v] & nodes):
            if w not in index:
                connect(w)
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

    for v in sorted(nodes):
        if v not in index:
            connect(v)
    return found


def _under(prefix: str) -> set[str]:
    return {m for m in GRAPH if m == prefix or m.startswith(prefix + ".")}


def test_the_walk_counts_lazy_imports_and_skips_type_checking():
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
from zhllama.core import console
if TYPE_CHECKING:
    from zhllama.core.engine import LoadedModel
else:
    import zhllama.core.atomic
def f():
    from zhllama.core.errors import UserError
    from . import paths
    from .checkpoint.sources import resolve_model
"""
    found = _imports("zhllama.core.fake", ROOT / "core" / "fake.py", source)
    expected = {"console", "atomic", "errors", "paths", "checkpoint.sources"}
    assert found == {f"zhllama.core.{name}" for name in expected}
    assert cycles({"zhllama.core.training.runner", "zhllama.core.training.tasks"}) == []


def test_core_never_imports_the_cli():
    offenders = sorted((m, d) for m in _under("zhllama.core") for d in GRAPH[m] if d.startswith("zhllama.cli"))
    assert offenders == []


def test_training_and_alignment_are_free_of_cycles():
    """The training pipeline: no module of core/training or core/alignment is on an import cycle."""
    mine = _under("zhllama.core.training") | _under("zhllama.core.alignment")
    on_cycles = [c for c in cycles(_under("zhllama.core")) if set(c) & mine]
    assert on_cycles == []


def test_no_import_cycle_among_core_modules():
    found = cycles(_under("zhllama.core"))
    assert found == []


def test_plugins_never_import_the_cli():
    offenders = sorted((m, d) for m in _under("zhllama.plugins") for d in GRAPH[m] if d.startswith("zhllama.cli"))
    assert offenders == []

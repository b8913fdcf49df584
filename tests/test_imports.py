"""The package's structure: its import graph, read from the source with ``ast``, and its public names.

* The library (everything outside ``minimipt/course/``) never imports ``minimipt.course``; only the
  command line (``minimipt/__main__.py``) reaches the course's ``report`` command, by name.
* No import cycle between the package's modules, counting imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import minimipt

PKG = Path(__file__).resolve().parents[1] / "minimipt"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (``from . import x`` resolves to
    the module ``x`` when it is one, else to the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "minimipt")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "minimipt":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            out.update(subs or [target])
    return {m for m in out if m in known and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_library_never_imports_the_course(graph):
    bad = {m: sorted(d for d in deps if d.startswith("minimipt.course"))
           for m, deps in graph.items() if not m.startswith("minimipt.course") and m != "minimipt.__main__"}
    assert not {m: d for m, d in bad.items() if d}, bad


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (a depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles(graph):
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_finds_a_planted_cycle(graph):
    planted = {k: set(v) for k, v in graph.items()}
    planted["minimipt.ops.reference"].add("minimipt.layer")  # layer → ops → reference → layer
    assert _cycle(planted) is not None


def test_exports():
    for name in ("MIPTClassifier", "MIPTLM", "TransformerClassifier", "TransformerLM", "CausalSparseCache",
                 "state_nbytes"):
        assert name in minimipt.__all__ and hasattr(minimipt, name)

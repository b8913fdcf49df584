"""The package's structure: its import graph (read from the source with ``ast``), its public names, and
the test folder that mirrors it.

* The library (everything outside ``minimipt/course/``) never imports ``minimipt.course``; only the
  command line (``minimipt/__main__.py``) reaches the course's ``report`` command, by name.
* No import cycle between the package's modules, counting imports inside functions too.
* Every test file is named after a module (``tests/<dir>/test_<m>.py`` tests ``minimipt/<dir>/<m>.py``
  or the package ``minimipt/<dir>/<m>/``), or is one of the cross-cutting files that tests/README.md
  lists: a renamed or removed module cannot leave its tests behind under the old name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import minimipt

TESTS = Path(__file__).resolve().parent
PKG = TESTS.parent / "minimipt"
# test files that check a contract across modules rather than one module (see tests/README.md)
CROSS_CUTTING = ("test_repo.py", "test_imports.py", "test_cli.py", "test_faults.py", "test_properties.py",
                 "test_streaming.py", "test_exercises.py", "test_notebook_times.py", "test_jupyter_root.py",
                 "browser/test_jupyterlab.py")


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


def _unmatched_test_files(tests: Path, pkg: Path, cross_cutting=CROSS_CUTTING) -> list[str]:
    """The test files under ``tests`` named after no module of ``pkg`` (and not cross-cutting)."""
    out = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests)
        if rel.as_posix() in cross_cutting:
            continue
        module = pkg.joinpath(*rel.parts[:-1], rel.stem.removeprefix("test_"))
        if not (module.with_suffix(".py").is_file() or (module / "__init__.py").is_file()):
            out.append(rel.as_posix())
    return out


def test_every_test_file_is_named_after_a_module():
    assert not _unmatched_test_files(TESTS, PKG), (
        "name each test file after the module it tests (tests/<dir>/test_<m>.py for minimipt/<dir>/<m>.py), "
        "or add a cross-cutting file to CROSS_CUTTING and tests/README.md")
    missing = [name for name in CROSS_CUTTING if not (TESTS / name).is_file()]
    assert not missing, f"CROSS_CUTTING names files that do not exist: {missing}"


def test_layout_check_finds_the_tests_of_a_renamed_module(tmp_path):
    for name in ("pkg/__init__.py", "pkg/layer.py", "pkg/ops/__init__.py", "pkg/ops/scan.py", "pkg/data/__init__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    for name in ("tests/test_layer.py", "tests/test_data.py", "tests/ops/test_scan.py", "tests/test_repo.py",
                 "tests/ops/test_chunked.py", "tests/test_layers.py", "tests/data/test_ops.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    found = _unmatched_test_files(tmp_path / "tests", tmp_path / "pkg", cross_cutting=("test_repo.py",))
    assert found == ["data/test_ops.py", "ops/test_chunked.py", "test_layers.py"]

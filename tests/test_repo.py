"""Repository-level checks: packaging, environment files, README, notebooks as committed, and the
results document as the report writes it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import minimipt

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def _req_name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0]).lower()


def _markdown(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                     if c["cell_type"] == "markdown")


# Words of a project tracker, not of the field: a course says "goal" and "reached", never these.
PROJECT_WORDS = re.compile(r"\b(issues?|targets?|anchors?|met|missed)\b", re.I)


def _readme_block(name: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return re.search(rf"<!-- {name} -->(.*?)<!-- /{name} -->", readme, re.S).group(1)


def test_layout():
    for path in ("notebooks", "minimipt", "data", "tests", "environment.yml", "README.md",
                 "pyproject.toml", ".ci/run", "LICENSE", "requirements.txt"):
        assert (ROOT / path).exists(), path


def test_version_has_one_source():
    """pyproject.toml reads the version from minimipt/_version.py; the installed metadata agrees."""
    from importlib.metadata import version

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in meta["project"]["dynamic"] and "version" not in meta["project"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "minimipt._version.__version__"}
    assert version("minimipt") == minimipt.__version__


def test_pyproject_core_dependencies_loose_and_pinned_file_covers_them():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_req_name(r): r for r in meta["dependencies"]}
    assert set(core) == {"torch", "numpy", "tqdm", "safetensors"}
    assert "==" not in core["torch"], "torch must stay unpinned in pyproject.toml"
    pins = _pins()
    assert pins["torch"] == "2.13.0"
    wanted = set(core)
    for extra in ("course", "data", "test"):
        wanted |= {_req_name(r) for r in meta["optional-dependencies"][extra]}
    missing = sorted(wanted - set(pins))
    assert not missing, f"requirements.txt pins none of {missing}"


def test_environment_yml_agrees():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.txt" in pip_section
    editable = [p for p in pip_section if p.startswith("-e .")]
    assert editable, "environment.yml must install the package itself"
    extras = set(re.search(r"\[(.*)\]", editable[0]).group(1).split(","))
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert extras <= set(meta["optional-dependencies"])
    assert {"course", "data", "test"} <= extras
    py = re.search(r"python=(\d+\.\d+)", " ".join(d for d in deps if isinstance(d, str))).group(1)
    lo = re.search(r">=\s*(\d+\.\d+)", meta["requires-python"]).group(1)
    assert tuple(map(int, py.split("."))) >= tuple(map(int, lo.split(".")))


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\s*\n(.+?)\n```\s*<!-- /test-command -->", readme, re.S)
    assert m, "README must hold the test command between <!-- test-command --> markers"
    cmd = m.group(1).strip()
    assert "requirements.txt" in cmd and cmd.endswith("pytest")
    assert "test-command" in (ROOT / ".ci/run").read_text()


def test_readme_documents_every_env_variable():
    readme = (ROOT / "README.md").read_text()
    used = set()
    for path in (ROOT / "minimipt").rglob("*.py"):
        used |= set(re.findall(r"MINIMIPT_[A-Z_]+", path.read_text()))
    for path in NOTEBOOKS:
        used |= set(re.findall(r"MINIMIPT_[A-Z_]+", path.read_text()))
    undocumented = sorted(v for v in used if f"`{v}`" not in readme)
    assert not undocumented, f"README does not document {undocumented}"


def test_readme_syllabus_lists_every_notebook():
    block = _readme_block("syllabus")
    listed = re.findall(r"\(notebooks/([0-9]{2}_[A-Za-z0-9_]+\.ipynb)\)", block)
    assert listed == [p.name for p in NOTEBOOKS], "README syllabus and notebooks/ disagree"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_committed_clean(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for cell in code:
        assert not cell.get("outputs"), f"{path.name}: commit notebooks without outputs"
        assert cell.get("execution_count") is None, f"{path.name}: clear execution counts"
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        assert "data:image/" not in src and not cell.get("attachments"), f"{path.name}: embedded image"
    first = "".join(code[0]["source"])
    assert f'minimipt.setup(expect_version="{minimipt.__version__}"' in first, (
        f"{path.name}: the first code cell must be the shared setup call for this version")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_has_summary_exercises_and_references(path):
    text = _markdown(path)
    assert "## Summary" in text and "## Exercises" in text, path.name
    references = text.split("## References", 1)
    assert len(references) == 2 and "https://" in references[1], f"{path.name}: end with linked references"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_text_speaks_the_fields_language(path):
    found = sorted({m.group(0).lower() for m in PROJECT_WORDS.finditer(_markdown(path))})
    assert not found, f"{path.name}: project words in the text: {found}"


def test_readme_course_and_results_speak_the_fields_language():
    for block in ("syllabus", "results-summary"):
        found = sorted({m.group(0).lower() for m in PROJECT_WORDS.finditer(_readme_block(block))})
        assert not found, f"README {block}: project words: {found}"


def test_core_import_needs_no_course_extras():
    """`pip install -e .` without extras must be enough to import the package."""
    code = r"""
import importlib.abc, sys
BLOCKED = ("matplotlib", "ipywidgets", "jupyterlab", "IPython", "datasets", "tokenizers", "nbval")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked {name}")
sys.meta_path.insert(0, Block())
import minimipt, pkgutil, importlib
for info in pkgutil.walk_packages(minimipt.__path__, "minimipt."):
    if info.name.split(".")[-1] in ("viz",) or ".viz" in info.name:
        continue  # plotting helpers need matplotlib by design
    importlib.import_module(info.name)
print("ok", minimipt.__version__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_cli_info_runs():
    out = subprocess.run([sys.executable, "-m", "minimipt", "info"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "minimipt" in out.stdout and "smoke" in out.stdout


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The package example in the README is executed (in a temporary folder: it saves a model), so it
    cannot drift from the API."""
    monkeypatch.chdir(tmp_path)
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_results_files_hold_no_machine_local_path():
    """A results file says where things are relative to the repository or the data folder, never as an
    absolute path of the machine that ran it."""
    bad = []
    for path in sorted((ROOT / "results").rglob("*.json")):
        text = path.read_text()
        bad += [f"{path.relative_to(ROOT)}: {m}" for m in re.findall(r'"((?:/tmp|/root|/home|/work|/Users|[A-Z]:\\\\)[^"]*)"', text)]
    assert not bad, bad[:5]


def test_readme_results_summary_quotes_the_results_document():
    """Every measured number in the README's results summary (a number with a decimal point) appears
    in docs/results.md, which the report writes from the results files: the summary cannot drift."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- results-summary -->(.*?)<!-- /results-summary -->", readme, re.S).group(1)
    numbers = set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", block))
    assert len(numbers) >= 10, numbers
    doc = (ROOT / "docs" / "results.md").read_text()
    missing = sorted(n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", doc))
    assert not missing, f"README quotes numbers that docs/results.md does not hold: {missing}"


def test_committed_results_document_is_current():
    """docs/results.md is exactly what `python -m minimipt report` writes from the committed results."""
    from minimipt.course.report import results_markdown
    from minimipt.env import repo_root

    doc = repo_root() / "docs" / "results.md"
    figures = {p.stem: f"figures/{p.name}" for p in sorted((doc.parent / "figures").glob("*.png"))}
    assert doc.read_text() == results_markdown(figures=figures), "run `python -m minimipt report` and commit"

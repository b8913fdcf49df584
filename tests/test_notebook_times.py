"""results/notebook_times.json (read by 00_start_here) and the script that writes it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RESULTS = ROOT / "results" / "notebook_times.json"


def _script():
    spec = importlib.util.spec_from_file_location("time_notebooks", ROOT / "scripts" / "time_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_times_cover_every_notebook():
    entries = json.loads(RESULTS.read_text())["notebooks"]
    missing = sorted({p.name for p in NOTEBOOKS} - set(entries))
    assert not missing, f"run `python scripts/time_notebooks.py {' '.join('notebooks/' + m for m in missing)}`"
    for name, entry in entries.items():
        assert entry["passed"], f"{name} failed when it was timed"
        assert entry["cpu_count"] >= 1 and entry["cpu"] and entry["torch"] and entry["git_commit"]
        assert entry["seconds"] > 0 and entry["cpu_seconds"] > 0 and entry["load_average"] >= 0


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS if p.name[:2] <= "06"])
def test_theory_and_mechanics_notebooks_run_well_under_a_minute(name):
    entry = json.loads(RESULTS.read_text())["notebooks"][name]
    assert entry["seconds"] < 45 and entry["cpu_seconds"] < 45, f"{name}: {entry} (smoke mode)"


def test_script_times_a_notebook_and_keeps_other_entries(tmp_path):
    script = _script()
    nb = tmp_path / "99_tiny.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                                         "source": ["assert 1 + 1 == 2"]}],
                              "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                              "nbformat": 4, "nbformat_minor": 5}))
    results = tmp_path / "times.json"
    results.write_text(json.dumps({"notebooks": {"00_other.ipynb": {"seconds": 1.0, "passed": True}}}))
    data = script.update([nb], results)
    entry = data["notebooks"]["99_tiny.ipynb"]
    assert entry["passed"] and 0 < entry["seconds"] < 120 and entry["cpu_count"] >= 1
    assert data["notebooks"]["00_other.ipynb"] == {"seconds": 1.0, "passed": True}
    assert json.loads(results.read_text()) == data
    with pytest.raises(FileNotFoundError, match="no such notebook"):
        script.main([str(tmp_path / "missing.ipynb"), "--results", str(results)])

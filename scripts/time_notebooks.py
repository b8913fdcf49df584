"""Time notebooks in smoke mode, as the tests run them, and record the times in results/notebook_times.json.

    python scripts/time_notebooks.py                          # every notebook in notebooks/
    python scripts/time_notebooks.py notebooks/07_ag_news.ipynb notebooks/08_needle.ipynb   # re-measure some

Each notebook is executed by ``python -m pytest -q -p no:cacheprovider -c pyproject.toml NOTEBOOK`` from the
repository root, so with the repository's pytest configuration (nbval, ``MINIMIPT_SMOKE=1`` from
``conftest.py``). Recorded per notebook: the wall time around that command (it includes starting Python, pytest
and the kernel), the CPU time of pytest and the kernel, and the machine's load average (a shared machine's other
work slows the wall time, much less the CPU time), with the commit, versions and processor. Entries of notebooks
not named on the command line are kept, so the file can be updated one notebook at a time. ``00_start_here``
reads the file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "notebook_times.json"


def machine() -> dict:
    """The processor and software a time was measured with."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch_version,
            "git_commit": commit or None}


def time_notebook(path: Path, python: str = sys.executable, timeout: float = 600.0) -> dict:
    """Run one notebook under pytest (nbval, smoke mode) and return ``{"seconds", "cpu_seconds", "passed",
    "load_average"}``: wall time, CPU time of pytest and the kernel (user + system), and the machine's
    1-minute load average when the run ended (a shared machine's other work shows up there)."""
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"), str(path)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "passed": done.returncode == 0,
            "load_average": round(os.getloadavg()[0], 1)}


def update(paths: list[Path], results: Path = RESULTS, python: str = sys.executable) -> dict:
    """Time ``paths`` and merge the entries into ``results`` (created if missing); returns the new content."""
    data = json.loads(results.read_text()) if results.exists() else {}
    data["command"] = "python -m pytest -q -p no:cacheprovider -c pyproject.toml NOTEBOOK (from the repository root; smoke mode)"
    entries = data.setdefault("notebooks", {})
    where = machine()
    for path in paths:
        entry = time_notebook(path, python)
        entries[path.name] = {**entry, **where}
        print(f"{path.name:<32} {entry['seconds']:6.1f} s wall, {entry['cpu_seconds']:6.1f} s CPU, "
              f"load {entry['load_average']:4.1f}  {'passed' if entry['passed'] else 'FAILED'}", flush=True)
    data["notebooks"] = dict(sorted(entries.items()))
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(data, indent=1) + "\n")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to time (default: all of notebooks/)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"JSON file to update (default: {RESULTS})")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such notebook: {missing}; pass paths like notebooks/00_start_here.ipynb")
    data = update(paths, args.results)
    return 0 if all(data["notebooks"][p.name]["passed"] for p in paths) else 1


if __name__ == "__main__":
    raise SystemExit(main())

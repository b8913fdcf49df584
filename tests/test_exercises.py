"""The notebooks' exercises: every solution runs and passes its check, and every check can fail.

A notebook's exercises follow its ``## Exercises`` heading, each under a ``### Exercise k`` heading, each
with a collapsed ``<details>`` solution. Fenced ```` ```python ```` blocks inside a solution are
self-contained; they are executed here, in a fresh namespace, inside
:func:`minimipt.course.exercises.strict`, so a solution whose check fails, or that leaves an answer
unfilled, fails the test; the ids they check must be exactly the checks registered for that notebook.
"Your turn" code cells (code cells of the exercises section that call ``exercises.check``) must, as
committed, report "not done yet" without failing.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pytest
import torch

from minimipt.course import exercises

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WITH_SOLUTIONS = ("00", "01", "02", "03", "04", "05", "06")  # notebooks whose every exercise has a checked solution
COURSE = [p for p in NOTEBOOKS if p.name[:2] in WITH_SOLUTIONS]

_EXERCISE = re.compile(r"^###\s+Exercise\s+(\d+)\b")
_DETAILS = re.compile(r"<details>\s*<summary>.*?Solution.*?</summary>(.*?)</details>", re.S)
_PYTHON = re.compile(r"```python\n(.*?)```", re.S)
_CHECK_ID = re.compile(r"""check\(\s*["'](\d\d\.\d+)["']""")


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def exercise_sections(nb: dict) -> dict[int, list[dict]]:
    """The cells of each exercise (``### Exercise k`` up to the next heading of level <= 3), by ``k``."""
    sections: dict[int, list[dict]] = {}
    current = None
    in_exercises = False
    for cell in nb["cells"]:
        text = _source(cell)
        if cell["cell_type"] == "markdown":
            sections_here = [line for line in text.splitlines() if line.startswith("## ")]
            if sections_here:  # a level-2 heading ends the current exercise; the last one decides where we are
                in_exercises = sections_here[-1].startswith("## Exercises")
                current = None
                if in_exercises and "\n### " in text.split("## Exercises", 1)[1]:
                    raise AssertionError("start each exercise in its own markdown cell")
                continue
            m = _EXERCISE.match(text)
            if m:
                if not in_exercises:
                    raise AssertionError(f"exercise {m.group(1)} sits outside the '## Exercises' section")
                current = int(m.group(1))
                sections[current] = [cell]
                continue
        if current is not None:
            sections[current].append(cell)
    return sections


def solution_code(cells: list[dict]) -> tuple[int, list[str]]:
    """How many ``<details>`` solutions the cells hold, and their Python blocks."""
    n, blocks = 0, []
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        for body in _DETAILS.findall(_source(cell)):
            n += 1
            blocks += _PYTHON.findall(body)
    return n, blocks


def your_turn_cells(cells: list[dict]) -> list[str]:
    return [_source(c) for c in cells if c["cell_type"] == "code" and "exercises.check(" in _source(c)]


def run_solutions(nb: dict) -> dict[int, list[tuple[str, str]]]:
    """Execute every solution block inside ``exercises.strict()``; returns the check log per exercise.
    Raises what a failing block raises (``ExerciseError`` for a wrong or unfilled answer)."""
    logs = {}
    for k, cells in exercise_sections(nb).items():
        _, blocks = solution_code(cells)
        with exercises.strict() as log, contextlib.redirect_stdout(io.StringIO()):
            for block in blocks:
                exec(compile(block, f"<exercise {k} solution>", "exec"), {"__name__": "__solution__"})
        logs[k] = list(log)
    return logs


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# the committed notebooks
# --------------------------------------------------------------------------------------------

def test_notebooks_with_solutions_exist():
    assert [p.name[:2] for p in COURSE] == list(WITH_SOLUTIONS)


@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_every_exercise_has_one_solution(path):
    sections = exercise_sections(_load(path))
    assert sections, f"{path.name}: no '### Exercise k' cells under '## Exercises'"
    assert sorted(sections) == list(range(1, len(sections) + 1)), f"{path.name}: exercises numbered {sorted(sections)}"
    for k, cells in sections.items():
        n, _ = solution_code(cells)
        assert n == 1, f"{path.name}, exercise {k}: {n} collapsed solutions (want exactly one <details> block)"


@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_solutions_pass_their_checks(path):
    nb = _load(path)
    logs = run_solutions(nb)
    checked = set()
    for k, log in logs.items():
        assert all(outcome == "passed" for _, outcome in log), f"{path.name}, exercise {k}: {log}"
        ids = {eid for eid, _ in log}
        assert all(eid == f"{path.name[:2]}.{k}" for eid in ids), f"{path.name}, exercise {k} checks {ids}"
        checked |= ids
    assert checked == set(exercises.registered(path.name[:2])), (
        f"{path.name}: checks without a solution that runs them: {sorted(set(exercises.registered(path.name[:2])) - checked)}")


@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_your_turn_cells_report_not_done(path):
    for k, cells in exercise_sections(_load(path)).items():
        for src in your_turn_cells(cells):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(src, f"<exercise {k} your turn>", "exec"), {"__name__": "__your_turn__"})
            assert "not done yet" in out.getvalue(), f"{path.name}, exercise {k}: the unfilled cell must say 'not done yet'"
            assert set(_CHECK_ID.findall(src)) == {f"{path.name[:2]}.{k}"}, f"{path.name}, exercise {k}: checks the wrong id"


# --------------------------------------------------------------------------------------------
# the runner and the checks can fail
# --------------------------------------------------------------------------------------------

def _notebook(*cells: tuple[str, str]) -> dict:
    return {"cells": [{"cell_type": t, "metadata": {}, "source": [s]} for t, s in cells]}


def _solution(code: str) -> str:
    return f"<details><summary><b>Solution</b></summary>\n\n```python\n{code}```\n\n</details>"


def test_runner_fails_on_a_wrong_solution():
    right = "from minimipt.course import exercises\nimport math\nexercises.check('00.2', math.pi / 2)\n"
    wrong = "from minimipt.course import exercises\nexercises.check('00.2', 1.0)\n"
    unfilled = "from minimipt.course import exercises\nexercises.check('00.2', ...)\n"
    good = _notebook(("markdown", "## Exercises"), ("markdown", "### Exercise 2 · period"), ("markdown", _solution(right)))
    assert run_solutions(good) == {2: [("00.2", "passed")]}
    for bad in (wrong, unfilled):
        nb = _notebook(("markdown", "## Exercises"), ("markdown", "### Exercise 2 · period"), ("markdown", _solution(bad)))
        with pytest.raises(exercises.ExerciseError):
            run_solutions(nb)


def test_structure_checks_catch_missing_solutions_and_stray_exercises():
    missing = _notebook(("markdown", "## Exercises"), ("markdown", "### Exercise 1 · no solution"))
    assert solution_code(exercise_sections(missing)[1]) == (0, [])
    no_check = _notebook(("markdown", "## Exercises"), ("markdown", "### Exercise 1 · x"),
                         ("markdown", _solution("x = 1\n")))
    assert run_solutions(no_check) == {1: []}  # the id set then misses the registered checks
    stray = _notebook(("markdown", "## 3. A section"), ("markdown", "### Exercise 1 · misplaced"))
    with pytest.raises(AssertionError, match="outside"):
        exercise_sections(stray)


def test_not_done_outside_strict_prints_and_returns_false(capsys):
    def unfilled(*args):
        raise NotImplementedError

    assert exercises.check("05.1", unfilled) is False
    assert "not done yet" in capsys.readouterr().out
    with exercises.strict() as log, pytest.raises(exercises.ExerciseError, match="not done"):
        exercises.check("05.1", unfilled)
    assert log == [("05.1", "not done")]
    with pytest.raises(ValueError, match="no exercise"):
        exercises.check("99.1", 1)
    with pytest.raises(ValueError, match="ids look like"):
        exercises.exercise("5.1")


def _zeros_like_first(*args, **kwargs):
    return torch.zeros_like(torch.as_tensor(args[0]))


# One wrong answer per check: each must be rejected.
WRONG = {
    "00.1": ("minimipt 0.1.0 | device cuda",),
    "00.2": (math.pi,),
    "01.1": (lambda k: 0.5,),
    "01.2": (False, False),
    "01.3": (lambda D, L: min(L, D),),
    "01.4": (lambda lam: (0.0, 1.0),),
    "01.5": (lambda Q, eps: torch.eye(Q.shape[0], dtype=Q.dtype),),
    "01.6": (lambda D: (torch.eye(D, dtype=torch.complex128), torch.ones(D, dtype=torch.complex128)),),
    "02.1": (lambda D, N: 0.5,),
    "02.2": (0.5, 0.9),
    "02.3": (lambda D, N: 1.0,),
    "02.4": (lambda D, N, s: s * s * N / D,),
    "02.5": (lambda h, keys: h.real[..., :1].expand(h.shape[0], keys.shape[-2]).contiguous(),),
    "02.6": (lambda D: 2 * D,),
    "02.7": (0,),
    "03.1": (lambda h0, theta: h0, lambda u: u * 0),
    "03.2": (lambda p, L: 0.5, 0.5),
    "03.3": (lambda N: 0.5,),
    "03.4": (torch.full((64,), 1 / 64, dtype=torch.float64),),
    "03.5": (1.0, 1.0),
    "03.6": (0.0, 1.0),
    "04.1": (lambda layer: layer,),
    "04.2": (lambda p, theta: 0.0,),
    "04.3": (lambda a, b, m: 0.5,),
    "04.4": (math.pi,),
    "04.5": (-103.28, 17.33),
    "05.1": (_zeros_like_first,),
    "05.2": (lambda p: 126,),
    "05.3": (lambda L: 1e-6, 1e6),
    "05.4": (False, True),
    "05.6": (lambda ga, gb, p, theta, u: (p * 0, theta * 0, u * 0),),
    "06.1": (range(8), True),
    "06.3": (lambda log_w, eligible, K: list(range(len(log_w))),),
    "06.4": (lambda attn, K: range(K),),
    "06.5": (torch.zeros(2, 4),),
}


def test_every_check_has_a_wrong_answer_here():
    assert set(WRONG) == set(exercises.registered())


@pytest.mark.parametrize("eid", sorted(WRONG))
def test_each_check_rejects_a_wrong_answer(eid):
    with pytest.raises(exercises.ExerciseError):
        exercises.check(eid, *WRONG[eid])

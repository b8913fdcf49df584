"""The machinery behind ``check("05.1", answer)``: a registry of checks, and how a result is reported.

A check is a function that receives the learner's answer(s) and raises ``AssertionError`` with a hint
when they are wrong. :func:`check` runs it and reports one of three outcomes:

* **not done yet**: an answer is ``...`` (the placeholder of a "your turn" cell), or calling it raises
  ``NotImplementedError``; a friendly line is printed and ``False`` returned, so an unfilled notebook
  still runs top to bottom;
* **wrong**: :class:`ExerciseError` (an ``AssertionError``) is raised with the check's hint;
* **correct**: a line is printed and ``True`` returned.

Inside :func:`strict` "not done yet" is an error too, and every outcome is logged: that is how the tests
run each solution of the notebooks through its check.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator

__all__ = ["ExerciseError", "exercise", "check", "registered", "strict"]

_ID = re.compile(r"^\d\d\.\d+$")
_CHECKS: dict[str, Callable] = {}
_state = {"strict": False, "log": None}


class ExerciseError(AssertionError):
    """An answer that does not pass its exercise's check."""


def exercise(eid: str) -> Callable[[Callable], Callable]:
    """Register the decorated function as the check of exercise ``eid`` (``"NN.k"``: notebook ``NN``,
    exercise ``k``)."""
    if not _ID.match(eid):
        raise ValueError(f"exercise ids look like '05.1' (notebook 05, exercise 1), got {eid!r}")

    def register(fn: Callable) -> Callable:
        if eid in _CHECKS:
            raise ValueError(f"exercise {eid} has two checks: {_CHECKS[eid].__name__} and {fn.__name__}")
        _CHECKS[eid] = fn
        return fn

    return register


def registered(notebook: str | None = None) -> list[str]:
    """The exercise ids that have a check, sorted; only notebook ``notebook`` (e.g. ``"05"``) if given."""
    return sorted(e for e in _CHECKS if notebook is None or e.startswith(f"{notebook}."))


def _not_done(eid: str, why: str) -> bool:
    if _state["log"] is not None:
        _state["log"].append((eid, "not done"))
    if _state["strict"]:
        raise ExerciseError(f"exercise {eid}: not done ({why})")
    print(f"Exercise {eid}: not done yet ({why}). Fill in the cell above, run it again, and this line "
          "will tell you whether your answer is right.")
    return False


def check(eid: str, *answers) -> bool:
    """Check the answer(s) to exercise ``eid``; see the module docstring for the three outcomes."""
    if eid not in _CHECKS:
        raise ValueError(f"no exercise {eid!r}; known: {registered()}")
    if any(a is ... for a in answers):
        return _not_done(eid, "an answer is still `...`")
    try:
        _CHECKS[eid](*answers)
    except NotImplementedError:
        return _not_done(eid, "your function raises NotImplementedError")
    except ExerciseError:
        _log(eid, "wrong")
        raise
    except AssertionError as err:
        _log(eid, "wrong")
        raise ExerciseError(f"exercise {eid}: {err}") from None
    _log(eid, "passed")
    print(f"Exercise {eid}: correct.")
    return True


def _log(eid: str, outcome: str) -> None:
    if _state["log"] is not None:
        _state["log"].append((eid, outcome))


@contextlib.contextmanager
def strict() -> Iterator[list[tuple[str, str]]]:
    """Within this block "not done yet" raises :class:`ExerciseError`; yields the list of
    ``(exercise id, outcome)`` pairs of every check run inside it."""
    saved = dict(_state)
    log: list[tuple[str, str]] = []
    _state.update(strict=True, log=log)
    try:
        yield log
    finally:
        _state.update(saved)

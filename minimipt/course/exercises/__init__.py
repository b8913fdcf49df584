"""Checked exercises for the notebooks: ``exercises.check("05.1", your_answer)``.

Every exercise of notebooks 00-06 with a computable answer has a check here, registered under the id
``"NN.k"`` (notebook ``NN``, exercise ``k``): :mod:`~minimipt.course.exercises.theory_checks` for 00-03,
:mod:`~minimipt.course.exercises.mechanics_checks` for 04-06. A "your turn" cell calls :func:`check`
with a placeholder; it prints "not done yet" until the learner fills it in. The solutions in the
notebooks' collapsed blocks call the same checks, and ``tests/test_exercises.py`` runs every one of them.
"""

from __future__ import annotations

from . import mechanics_checks, theory_checks  # noqa: F401  (importing registers the checks)
from ._registry import ExerciseError, check, exercise, registered, strict

__all__ = ["check", "exercise", "registered", "strict", "ExerciseError"]

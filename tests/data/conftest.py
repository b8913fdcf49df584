"""Fixtures of the data tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A throw-away MINIMIPT_DATA: tests never write into the repository's data/."""
    monkeypatch.setenv("MINIMIPT_DATA", str(tmp_path))
    return tmp_path

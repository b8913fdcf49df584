"""Fixtures shared by the test folders (the repository's conftest.py sets the environment of the
whole run)."""

from __future__ import annotations

import pytest


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """Prepared arrays go to a temporary MINIMIPT_DATA, never into the repository; the device is the CPU.
    A module that trains asks for it for every test: ``pytestmark = pytest.mark.usefixtures("data_home")``."""
    monkeypatch.setenv("MINIMIPT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MINIMIPT_DEVICE", "cpu")

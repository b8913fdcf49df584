"""Fixtures for the browser tests: a JupyterLab server, headless Chromium, artifact folder.

Requirements: Debian's ``chromium`` package (``/usr/bin/chromium``) and PyPI's ``playwright``
(the ``test`` extra). Playwright's own browser download is never used. Without them the tests
are skipped locally, and fail under CI (``CI=true``), where ``.ci/run`` installs Chromium.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.browser.lab_server import NOTEBOOKS, JupyterLab, stop_and_check

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _missing(reason: str):
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: the browser tests must run in CI; .ci/run installs Chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of the system Chromium; skips (fails under CI) when it or playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing('playwright is not installed: pip install -e ".[test]"')
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        _missing("Chromium is not installed: apt-get install chromium (Debian/Ubuntu package)")
    return path


@pytest.fixture(scope="session")
def artifacts(pytestconfig) -> Path:
    """Folder for screenshots and logs (``--browser-artifacts``, default ``.pytest_artifacts/``)."""
    base = Path(pytestconfig.getoption("browser_artifacts"))
    folder = (base if base.is_absolute() else pytestconfig.rootpath / base) / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory, artifacts):
    """A JupyterLab server serving a copy of notebooks/; shut down (and checked) after the module."""
    server = JupyterLab.start(NOTEBOOKS, tmp_path_factory.mktemp("jupyterlab"))
    try:
        yield server
    finally:
        stop_and_check(server, keep_log_in=artifacts)


@pytest.fixture(scope="module")
def browser(chromium_path):
    """Headless Chromium driven by Playwright (sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser context and page (no shared storage between tests)."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()

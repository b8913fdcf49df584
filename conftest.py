"""Test configuration for the whole repository (unit tests and notebooks).

Everything the notebooks need to run non-interactively is set here, for the pytest process and
therefore for every notebook kernel it starts: the smoke switch, a non-interactive matplotlib
backend, an offline Hugging Face hub and throw-away cache folders. Nobody running ``pytest`` has
to set anything by hand.
"""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config):
    cache = tempfile.mkdtemp(prefix="minimipt-test-cache-")
    os.environ["MINIMIPT_SMOKE"] = "1"
    os.environ["MPLBACKEND"] = "Agg"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for var, sub in (("HF_HOME", "hf"), ("MPLCONFIGDIR", "mpl"), ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"),
                     ("IPYTHONDIR", "ipython"), ("HYPOTHESIS_STORAGE_DIRECTORY", "hypothesis")):
        path = os.path.join(cache, sub)
        os.makedirs(path, exist_ok=True)
        os.environ[var] = path
    # Unit tests must not depend on a GPU being present or absent.
    os.environ.pop("MINIMIPT_DEVICE", None)
    # Data loaders use the repository's data/ folder unless a test says otherwise.
    os.environ.pop("MINIMIPT_DATA", None)


def pytest_addoption(parser):
    # Declared here because pytest reads options only from the top-level conftest.
    parser.addoption("--browser-artifacts", default=".pytest_artifacts", metavar="DIR",
                     help="folder for the browser tests' screenshots and JupyterLab log (tests/browser)")


def pytest_collection_modifyitems(config, items):
    """Notebooks (nbval) and the browser test are integration tests: they count as ``slow``, so that
    ``pytest -m "not slow"`` is the quick inner loop of unit tests."""
    import pytest

    for item in items:
        if item.get_closest_marker("browser") is not None or type(item).__module__.startswith("nbval"):
            item.add_marker(pytest.mark.slow)

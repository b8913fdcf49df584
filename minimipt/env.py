"""Environment helpers shared by the package, the notebooks and the command line.

Every ``MINIMIPT_*`` environment variable the project reads is defined here, so that the README
can document one place:

=====================  ==========================================================================
``MINIMIPT_SMOKE``     ``1`` picks tiny CPU presets everywhere (notebooks, training, benchmarks).
                       The test configuration sets it for the notebook kernels.
``MINIMIPT_DEVICE``    force a device (``cpu``, ``cuda``, ``cuda:1``); default: CUDA if available.
``MINIMIPT_DATA``      folder holding the canonical raw data files and prepared arrays
                       (default: the repository's ``data/`` folder).
``MINIMIPT_GIT_COMMIT`` the commit recorded in results files when the code runs from a copy
                       without ``.git`` (read by :mod:`minimipt.train.provenance`).
=====================  ==========================================================================
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "SMOKE_VAR",
    "DEVICE_VAR",
    "DATA_VAR",
    "smoke_mode",
    "get_device",
    "seed_everything",
    "repo_root",
    "data_dir",
    "Setup",
    "setup",
]

SMOKE_VAR = "MINIMIPT_SMOKE"
DEVICE_VAR = "MINIMIPT_DEVICE"
DATA_VAR = "MINIMIPT_DATA"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def smoke_mode() -> bool:
    """True when ``MINIMIPT_SMOKE`` asks for tiny CPU presets (``1``/``true``/``yes``/``on``)."""
    value = os.environ.get(SMOKE_VAR, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{SMOKE_VAR}={value!r} is not understood; use 1 (smoke mode) or 0 (full presets).")


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Pick a device: the argument, else ``MINIMIPT_DEVICE``, else CUDA when present, else CPU."""
    source = "device" if device is not None else DEVICE_VAR
    choice = device if device is not None else os.environ.get(DEVICE_VAR) or None
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fix = f"unset {DEVICE_VAR} or use 'cpu'" if source == DEVICE_VAR else "use 'cpu'"
    if not isinstance(choice, (str, torch.device)):
        raise ValueError(f"{source} must be a device name such as 'cpu' or 'cuda:0'; got {choice!r}")
    try:
        dev = torch.device(choice)
    except (RuntimeError, ValueError):
        raise ValueError(f"{source}={choice!r} is not a device name; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cpu":
        return dev
    backend = getattr(torch, dev.type, None)  # torch.cuda, torch.mps, torch.xpu ...
    if backend is None or not hasattr(backend, "is_available") or not hasattr(backend, "device_count"):
        raise ValueError(f"{source}={str(dev)!r}: minimipt runs on cpu, cuda, mps or xpu devices; {fix}")
    if not backend.is_available():
        raise ValueError(f"{source}={str(dev)!r} was requested but this torch build sees no {dev.type.upper()} "
                         f"device; {fix}")
    count = backend.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"{source}={str(dev)!r} was requested but only {count} {dev.type} device(s) exist "
                         f"(indices 0..{count - 1}); {fix}")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def repo_root() -> Path:
    """The folder that holds ``minimipt/`` (the repository root in an editable install)."""
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Where data lives: ``MINIMIPT_DATA`` if set, else the repository's ``data/`` folder."""
    env = os.environ.get(DATA_VAR)
    return Path(env).expanduser() if env else repo_root() / "data"


@dataclass(frozen=True)
class Setup:
    """What :func:`setup` decided; notebooks read presets from it."""

    version: str
    device: torch.device
    smoke: bool
    seed: int

    def __str__(self) -> str:
        mode = "smoke (tiny CPU presets)" if self.smoke else "full presets"
        return (
            f"minimipt {self.version} | torch {torch.__version__} | device {self.device} | "
            f"{mode} | seed {self.seed}"
        )


def setup(expect_version: str | None = None, seed: int = 0, device: str | None = None,
          plots: bool = True, verbose: bool = True) -> Setup:
    """The one call every notebook makes first.

    Checks that the installed ``minimipt`` is the version the notebook was written for, seeds all
    generators, picks the device, reads the smoke switch and sets plot defaults.
    """
    from ._version import __version__

    if expect_version is not None and expect_version != __version__:
        raise RuntimeError(
            f"this notebook expects minimipt {expect_version} but {__version__} is installed; "
            "run `pip install -e .` from the repository root (or check out the matching version)."
        )
    seed_everything(seed)
    cfg = Setup(version=__version__, device=get_device(device), smoke=smoke_mode(), seed=seed)
    if plots:
        _plot_defaults()
    if verbose:
        print(cfg)
    return cfg


def _plot_defaults() -> None:
    """Readable defaults for matplotlib, if it is installed (it is an optional extra)."""
    try:
        import matplotlib as mpl
    except ImportError:  # core install without the `course` extra
        return
    mpl.rcParams.update({
        "figure.figsize": (6.4, 3.6),
        "figure.dpi": 100,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 10,
    })


def environment_report() -> dict[str, str]:
    """What the course needs, and whether it works here: ``{component: status}``.

    Used by ``00_start_here``. A status starts with ``ok`` when the component works.
    """
    import importlib
    import platform

    report: dict[str, str] = {
        "python": f"ok {platform.python_version()}",
        "torch": f"ok {torch.__version__}",
    }
    x = torch.randn(4, 3, dtype=torch.complex64, requires_grad=True)
    (x.abs() ** 2).sum().backward()  # complex autograd is what the whole course relies on
    report["complex autograd"] = "ok" if torch.allclose(x.grad, 2 * x.detach()) else "FAILED"
    dev = get_device()
    report["device"] = f"ok {dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
    for name, module, extra in (("numpy", "numpy", "core"), ("matplotlib", "matplotlib", "course"),
                                ("widgets", "ipywidgets", "course"),
                                ("widgets in JupyterLab", "jupyterlab_widgets", "course"),
                                ("datasets", "datasets", "data"), ("tokenizers", "tokenizers", "data")):
        try:
            mod = importlib.import_module(module)
            report[name] = f"ok {getattr(mod, '__version__', '')}".strip()
        except ImportError:
            report[name] = f"missing: pip install -e \".[{extra}]\""
    report["smoke mode"] = "ok on" if smoke_mode() else "ok off"
    return report

"""``save_pretrained`` / ``from_pretrained``: a model as a folder of two files, no pickle, no network.

    model.save_pretrained("my-model")          # my-model/config.json, my-model/model.safetensors
    twin = MIPTLM.from_pretrained("my-model")  # the same class, config and weights (eval mode)
    any_model = minimipt.from_pretrained("my-model")   # the class named in config.json

``config.json`` holds the class name, the model's config (:mod:`minimipt.config`) and the package
version; ``model.safetensors`` holds the ``state_dict`` in the safetensors format (tensors only: reading
it runs no code). Loading reads a local folder only. Weights that record their ``cache_slots``
(:class:`~minimipt.MIPTLM` and the classifier do) refuse a model built with another K.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ._version import __version__
from .fileio import atomic_write, atomic_write_json

__all__ = ["PretrainedMixin", "from_pretrained", "CONFIG_NAME", "WEIGHTS_NAME"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_CLASSES: dict[str, type] = {}  # class name → model class, filled as the model classes are defined


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as err:  # an optional dependency of the package
        raise ImportError("save_pretrained/from_pretrained need the safetensors package: pip install safetensors") from err
    return safetensors.torch


def _read_config(path: str | Path) -> tuple[Path, dict]:
    folder = Path(path)
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}: give the folder written by model.save_pretrained(folder)")
    meta = json.loads(file.read_text())
    if not isinstance(meta, dict) or "class" not in meta or "config" not in meta:
        raise ValueError(f"{file} is not a minimipt model config (it needs the keys 'class' and 'config')")
    return folder, meta


class PretrainedMixin:
    """``save_pretrained`` and ``from_pretrained`` for a model built from a config (``self.config``,
    class attribute ``config_class``)."""

    config_class: type

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if not cls.__name__.startswith("_"):
            _CLASSES[cls.__name__] = cls

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into the folder ``path`` (created if needed)."""
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"save_pretrained needs a folder; {folder} is a file")
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        data = _safetensors().save(tensors, metadata={"format": "pt", "class": type(self).__name__})
        atomic_write(folder / WEIGHTS_NAME, lambda f: f.write(data))
        atomic_write_json(folder / CONFIG_NAME, {"class": type(self).__name__, "config": self.config.to_dict(),
                                                 "minimipt_version": __version__})
        return folder

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str | None = None, **changes):
        """The model saved in the folder ``path`` by :meth:`save_pretrained`, in eval mode.

        ``changes``: config fields to set differently (e.g. ``scan_method``); a change that does not
        fit the weights (a shape, or ``cache_slots``) raises ``ValueError``.
        """
        folder, meta = _read_config(path)
        if meta["class"] != cls.__name__:
            raise ValueError(f"{folder} holds a {meta['class']}, not a {cls.__name__}: use "
                             f"{meta['class']}.from_pretrained or minimipt.from_pretrained")
        config = cls.config_class.from_dict(meta["config"])
        if changes:
            config = config.replace(**changes)
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"no {WEIGHTS_NAME} in {folder} (save_pretrained writes it beside {CONFIG_NAME})")
        model = cls(config)
        state = _safetensors().load_file(str(weights), device="cpu")
        try:
            model.load_state_dict(state)
        except RuntimeError as err:  # shapes or names: the weights belong to another config
            raise ValueError(f"the weights in {weights} do not fit a {cls.__name__} built from {config}: {err}") from err
        return model.to(device or "cpu").eval()


def from_pretrained(path: str | Path, device: torch.device | str | None = None, **changes):
    """The model saved in the folder ``path``, of the class its ``config.json`` names."""
    folder, meta = _read_config(path)
    if meta["class"] not in _CLASSES:
        raise ValueError(f"{folder} holds a {meta['class']!r}; known model classes: {sorted(_CLASSES)}")
    return _CLASSES[meta["class"]].from_pretrained(folder, device, **changes)

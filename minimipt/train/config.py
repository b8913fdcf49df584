"""Training configuration and presets.

A run is fully described by a :class:`TrainConfig`; presets give its values for each task:

* ``smoke``: tiny, CPU, bundled samples, seconds (what the tests and notebooks run);
* ``offline``: the offline protocols of the reference runs (AG News: stratified 5,600 / 2,000 split
  of the official test file; WikiText: WikiText-2 train, shared valid/test), for one GPU;
* ``full``: the standard protocols (AG News 120k train / 7,600 test; WikiText-103), for users who
  have the data (``--data-root`` or ``MINIMIPT_DATA``).

Any field can be overridden (``--set key=value`` on the command line, keyword arguments in Python).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import MIPTConfig, TransformerConfig, _is_int, _is_real

__all__ = ["TrainConfig", "PRESETS", "TASKS", "EXTRA_KEYS", "make_config", "model_config"]

TASKS = ("ag_news", "needle", "wikitext", "mqar")
MODELS = ("mipt", "transformer")
# (train_split, eval_split) pairs a task can load; tasks not listed read no split names
SPLITS = {"ag_news": (("sample-train", "sample-eval"), ("offline-train", "offline-eval"), ("train", "test")),
          "wikitext": (("sample-train", "sample-test"), ("train", "test"))}
# the keys of TrainConfig.extra that a task reads (any other key is refused)
EXTRA_KEYS: dict[str, tuple[str, ...]] = {"needle": ("n_needles", "n_distractors", "needle_range", "n_noise")}
# TrainConfig field behind a model-config field of another name
_MODEL_FIELD = {"cache_heads": "n_heads", "max_len": "seq_len"}


@dataclass
class TrainConfig:
    """Every setting of one training run. Each field is checked when the config is made (type and
    range, the message names the field and the value); the model fields are checked by building
    the :class:`~minimipt.MIPTConfig` and :class:`~minimipt.TransformerConfig` they feed."""

    task: str
    model: str = "mipt"
    preset: str = "smoke"
    seed: int = 0
    # --- model ---
    d_model: int = 128
    n_layers: int = 2
    cache_slots: int | None = 0  # MIPT: 0 = no cache, None = unbounded
    write_threshold: float = 0.0  # MIPT cache: tokens with write score below this are never written
    write_penalty: float = 0.0  # MIPT cache: L1 penalty on the mean write score (sparser writes)
    n_heads: int = 4  # Transformer heads (and MIPT cache heads)
    attention: str = "sdpa"  # Transformer: "sdpa" (fused) or "naive" (materialised softmax)
    phase: str = "input"  # MIPT: "input" (paper) or "static"
    readout: str = "real"  # MIPT: "real" (paper) or "proj"
    pos_embedding: str = "learned"  # "learned" (paper) or "none"
    dropout: float = 0.0  # residual/embedding dropout (both models)
    ffn_mult: int = 4  # MLP hidden width = ffn_mult · d_model (both models)
    scan_method: str = "auto"  # MIPT: any minimipt.scan_methods() name ("auto": fastest correct one)
    d_state: int | None = None  # MIPT: complex state channels D (None: = d_model)
    p_init: list[float] = field(default_factory=lambda: [1e-3, 0.1])  # MIPT: range of the initial rates σ(b_p)
    theta_init: float = math.pi / 2  # MIPT: initial phases uniform in [-theta_init, theta_init]
    cache_method: str = "auto"  # MIPT cache: batched attention path ("auto", "blocked", "slots", "dense")
    fused_mixer: bool = False  # MIPT: the fused Triton mixer under bf16 autocast on CUDA
    # --- data ---
    seq_len: int = 512
    train_split: str = "offline-train"
    eval_split: str = "offline-eval"  # held out, reported; never used for selection
    val_fraction: float = 0.1  # carved from the training rows, used to select hyperparameters
    split_seed: int = 0
    data_root: str | None = None
    dataset: str = "wikitext-2"  # wikitext task only
    vocab_size: int = 16_384  # BPE vocabulary (wikitext only; AG News words are cut by min_count)
    min_count: int = 2  # word-level tokenizer (ag_news)
    n_train: int = 5000  # needle task sizes
    n_val: int = 500
    n_test: int = 1000
    eval_lengths: list[int] = field(default_factory=list)  # needle: also test at these lengths
    n_pairs: int = 16  # mqar: key-value pairs per sequence (sizes: n_train / n_val / n_test)
    # --- optimisation ---
    batch_size: int = 32  # global batch (split over ranks)
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_frac: float = 0.1
    epochs: float = 15.0  # classification; LM uses max_steps
    max_steps: int | None = None
    grad_clip: float = 1.0  # 0: no clipping
    eval_every: int = 200
    ckpt_every: int = 200
    eval_batches: int | None = None  # LM: cap the eval windows (None = whole split)
    # --- runtime ---
    device: str | None = None
    amp: bool = True  # bf16 autocast on CUDA only
    extra: dict[str, Any] = field(default_factory=dict)  # task options: EXTRA_KEYS[task]

    def __post_init__(self):
        if isinstance(self.p_init, tuple):
            self.p_init = list(self.p_init)
        if isinstance(self.eval_lengths, tuple):
            self.eval_lengths = list(self.eval_lengths)
        if type(self.device).__name__ == "device":  # a torch.device: stored by name (JSON, comparisons)
            self.device = str(self.device)
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return make_config(**{**self.to_dict(), **changes})


def _fail(key: str, value, allowed: str):
    raise ValueError(f"TrainConfig.{key} must be {allowed}; got {value!r}")


def _pos_int(v) -> bool:
    return _is_int(v) and v >= 1


def _opt(check):
    return lambda v: v is None or check(v)


# field: (check, what is allowed). The model fields are checked by the model configs (_check_model).
_FIELDS = {
    "seed": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "seq_len": (_pos_int, "a positive int"),
    "split_seed": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "val_fraction": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "data_root": (_opt(lambda v: isinstance(v, str) and v != ""), "None or a folder path"),
    "dataset": (lambda v: v in ("wikitext-2", "wikitext-103"), "'wikitext-2' or 'wikitext-103'"),
    "min_count": (_pos_int, "a positive int"),
    "n_train": (_pos_int, "a positive int"),
    "n_val": (_pos_int, "a positive int"),
    "n_test": (_pos_int, "a positive int"),
    "n_pairs": (_pos_int, "a positive int (key-value pairs per MQAR sequence)"),
    "eval_lengths": (lambda v: isinstance(v, list) and all(_is_int(n) and n >= 2 for n in v),
                     "a list of ints >= 2"),
    "batch_size": (_pos_int, "a positive int"),
    "lr": (lambda v: _is_real(v) and v > 0, "a finite number > 0"),
    "weight_decay": (lambda v: _is_real(v) and v >= 0, "a finite number >= 0"),
    "warmup_frac": (lambda v: _is_real(v) and 0 < v < 1, "a number in (0, 1) (the warm-up share of the steps)"),
    "epochs": (lambda v: _is_real(v) and v > 0, "a finite number > 0"),
    "max_steps": (_opt(_pos_int), "None (use epochs) or a positive int"),
    "grad_clip": (lambda v: _is_real(v) and v >= 0, "a finite number >= 0 (0: no clipping)"),
    "eval_every": (_pos_int, "a positive int (steps between evaluations)"),
    "ckpt_every": (_pos_int, "a positive int (steps between checkpoints)"),
    "eval_batches": (_opt(_pos_int), "None (the whole split) or a positive int"),
    "amp": (lambda v: isinstance(v, bool), "true or false"),
    "p_init": (lambda v: isinstance(v, list) and len(v) == 2, "a pair [low, high] with 0 < low <= high < 1"),
    "train_split": (lambda v: isinstance(v, str) and v != "", "a split name"),
    "eval_split": (lambda v: isinstance(v, str) and v != "", "a split name"),
}


def _check(cfg: TrainConfig) -> None:
    if cfg.task not in PRESETS:
        _fail("task", cfg.task, f"one of {tuple(PRESETS)}")
    if cfg.model not in MODELS:
        _fail("model", cfg.model, f"one of {MODELS}")
    if cfg.preset not in PRESETS[cfg.task]:
        _fail("preset", cfg.preset, f"one of {tuple(PRESETS[cfg.task])}")
    for key, (ok, allowed) in _FIELDS.items():
        if not ok(getattr(cfg, key)):
            _fail(key, getattr(cfg, key), allowed)
    pairs = SPLITS.get(cfg.task)
    if pairs and (cfg.train_split, cfg.eval_split) not in pairs:
        _fail("train_split, eval_split", (cfg.train_split, cfg.eval_split),
              f"one of the pairs {list(pairs)} for task {cfg.task!r}")
    if cfg.device is not None:
        _check_device(cfg.device)
    _check_extra(cfg)
    _check_model(cfg)


def _check_device(device) -> None:
    import torch

    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        _fail("device", device, "None (CUDA when present, else the CPU) or a device name such as 'cpu', "
              "'cuda' or 'cuda:1'")


def _check_extra(cfg: TrainConfig) -> None:
    if not isinstance(cfg.extra, dict):
        _fail("extra", cfg.extra, "a dict of task options")
    valid = EXTRA_KEYS.get(cfg.task, ())
    unknown = sorted(set(cfg.extra) - set(valid))
    if unknown:
        raise ValueError(f"TrainConfig.extra has unknown keys {unknown} for task {cfg.task!r}; valid keys: "
                         f"{list(valid) or 'none'}")
    if cfg.task == "needle" and cfg.extra:
        from ..data.needle import make_needle_task

        r = cfg.extra.get("needle_range", (0.0, 0.1))
        if not (isinstance(r, (list, tuple)) and len(r) == 2 and all(_is_real(x) for x in r)):
            _fail("extra['needle_range']", r, "a pair [a, b] of fractions of the length")
        for length in (cfg.seq_len, *cfg.eval_lengths):  # the generator's own checks, on one sequence
            try:
                make_needle_task(1, length, **cfg.extra)
            except ValueError as err:
                raise ValueError(f"TrainConfig.extra={cfg.extra!r} (length {length}): {err}") from None


def _check_model(cfg: TrainConfig) -> None:
    """Build both model configs from the fields (placeholder vocabulary: the data supplies it)."""
    for model in MODELS:
        try:
            model_config(cfg, cfg.vocab_size, None, model=model)
        except ValueError as err:
            found = re.search(r"(?:MIPTConfig|TransformerConfig)\.(\w+)", str(err))
            key = _MODEL_FIELD.get(found.group(1), found.group(1)) if found else None
            where = f"TrainConfig.{key}={getattr(cfg, key)!r}" if hasattr(cfg, key or "") else "TrainConfig"
            raise ValueError(f"{where} is refused by the model: {err}") from None


def model_config(cfg: TrainConfig, vocab_size: int, n_classes: int | None, pad_id: int = 0,
                 max_len: int | None = None, *, model: str | None = None) -> MIPTConfig | TransformerConfig:
    """The model config a training config asks for: MIPT or the same-size Transformer (``model``,
    default ``cfg.model``), classifier (``n_classes``) or language model (``n_classes=None``)."""
    common = dict(vocab_size=vocab_size, d_model=cfg.d_model, n_layers=cfg.n_layers, ffn_mult=cfg.ffn_mult,
                  dropout=cfg.dropout, max_len=max_len or cfg.seq_len,
                  n_classes=n_classes, pad_id=None if n_classes is None else pad_id)
    if (model or cfg.model) == "mipt":
        return MIPTConfig(**common, cache_slots=cfg.cache_slots, cache_heads=cfg.n_heads,
                          write_threshold=cfg.write_threshold, write_penalty=cfg.write_penalty,
                          cache_method=cfg.cache_method, d_state=cfg.d_state, phase=cfg.phase, readout=cfg.readout,
                          scan_method=cfg.scan_method, p_init=tuple(cfg.p_init), theta_init=cfg.theta_init,
                          fused_mixer=cfg.fused_mixer, pos_embedding=cfg.pos_embedding)
    return TransformerConfig(**common, n_heads=cfg.n_heads, attention=cfg.attention)


_AG_MODEL = dict(d_model=128, n_layers=2, n_heads=4, seq_len=512)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "ag_news": {
        "smoke": dict(d_model=32, n_layers=1, n_heads=2, seq_len=64, batch_size=16, epochs=2,
                      train_split="sample-train", eval_split="sample-eval", eval_every=20, ckpt_every=20,
                      lr=3e-3),
        # 5,040 training rows: both models overfit within a few epochs without dropout
        "offline": dict(**_AG_MODEL, batch_size=32, epochs=15, lr=1e-3, dropout=0.1, eval_every=500, ckpt_every=500),
        "full": dict(**_AG_MODEL, batch_size=64, epochs=5, lr=1e-3, dropout=0.1, train_split="train", eval_split="test",
                     val_fraction=0.05, eval_every=2000, ckpt_every=2000),
    },
    "needle": {
        "smoke": dict(d_model=32, n_layers=1, n_heads=2, seq_len=64, n_train=256, n_val=64, n_test=64,
                      batch_size=32, epochs=3, eval_every=20, ckpt_every=20, lr=3e-3),
        "offline": dict(d_model=64, n_layers=1, n_heads=4, seq_len=512, n_train=5000, n_val=500, n_test=1000,
                        batch_size=32, epochs=15, lr=3e-3, eval_every=500, ckpt_every=500),
        "full": dict(d_model=64, n_layers=1, n_heads=4, seq_len=512, n_train=5000, n_val=500, n_test=1000,
                     batch_size=32, epochs=15, lr=3e-3, eval_every=500, ckpt_every=500),
    },
    "wikitext": {
        "smoke": dict(d_model=32, n_layers=1, n_heads=2, seq_len=64, batch_size=8, max_steps=30, vocab_size=512,
                      dataset="wikitext-2", train_split="sample-train", eval_split="sample-test",
                      eval_every=15, ckpt_every=15, lr=3e-3, pos_embedding="none", eval_batches=8),
        # WikiText-2 train is ~2.4 M BPE tokens: 1,500 steps of 32 × 512 tokens are ~10 epochs, so dropout
        "offline": dict(d_model=512, n_layers=8, n_heads=8, seq_len=512, batch_size=32, max_steps=1500,
                        dataset="wikitext-2", train_split="train", eval_split="test", lr=1e-3, dropout=0.1,
                        pos_embedding="none", eval_every=250, ckpt_every=250, weight_decay=0.1),
        "full": dict(d_model=512, n_layers=8, n_heads=8, seq_len=512, batch_size=64, max_steps=50_000, dropout=0.1,
                     dataset="wikitext-103", train_split="train", eval_split="test", lr=1e-3,
                     pos_embedding="none", eval_every=2000, ckpt_every=1000, weight_decay=0.1),
    },
    # Zoology's MQAR (arXiv 2312.04927): 2 layers, V = 8,192, zero fillers, query gaps from a power law;
    # the recurrence knows order, so MIPT runs without a position embedding (the Transformer keeps its own)
    "mqar": {
        "smoke": dict(d_model=32, n_layers=2, n_heads=2, seq_len=64, n_pairs=4, vocab_size=256, n_train=2048,
                      n_val=128, n_test=256, batch_size=32, epochs=4, lr=3e-3, pos_embedding="none",
                      eval_every=64, ckpt_every=64, weight_decay=0.1),
        # a short schedule: V = 512 instead of Zoology's 8,192, so that every id is seen often (128 pairs still
        # draw from 255 keys and 256 values); random pairs cannot be memorised, so no weight decay
        "offline": dict(d_model=128, n_layers=2, n_heads=4, seq_len=128, n_pairs=8, vocab_size=512, n_train=50_000,
                        n_val=500, n_test=1000, batch_size=256, max_steps=4000, lr=1e-3, pos_embedding="none",
                        eval_every=250, ckpt_every=4000, weight_decay=0.0),
        # Zoology's scale: 100,000 training sequences, 3,000 test, batch 256, 64 epochs
        "full": dict(d_model=128, n_layers=2, n_heads=4, seq_len=256, n_pairs=16, vocab_size=8192, n_train=100_000,
                     n_val=1000, n_test=3000, batch_size=256, epochs=64, lr=1e-3, pos_embedding="none",
                     eval_every=2000, ckpt_every=2000, weight_decay=0.1),
    },
}


def make_config(task: str, preset: str = "smoke", **overrides) -> TrainConfig:
    """A config from a task's preset with ``overrides`` applied (unknown keys raise ValueError)."""
    if task not in PRESETS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if preset not in PRESETS[task]:
        raise ValueError(f"preset must be one of {tuple(PRESETS[task])}, got {preset!r}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(names)}")
    values = {**PRESETS[task][preset], **overrides, "task": task, "preset": preset}
    return TrainConfig(**values)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as JSON when possible (``cache_slots=null``, ``lr=3e-4``)."""
    if "=" not in text:
        raise ValueError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value

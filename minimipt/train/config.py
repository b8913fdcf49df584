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
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "PRESETS", "TASKS", "make_config"]

TASKS = ("ag_news", "needle", "wikitext", "mqar")
MODELS = ("mipt", "transformer")


@dataclass
class TrainConfig:
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
    scan_method: str = "auto"  # MIPT: any minimipt.scan_methods() name ("auto": fastest correct one)
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
    grad_clip: float = 1.0
    eval_every: int = 200
    ckpt_every: int = 200
    eval_batches: int | None = None  # LM: cap the eval windows (None = whole split)
    # --- runtime ---
    device: str | None = None
    amp: bool = True  # bf16 autocast on CUDA only
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        for name in ("d_model", "n_layers", "seq_len", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return make_config(**{**self.to_dict(), **changes})


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

"""One config object per model family: it builds the model, is stored with it, and round-trips JSON.

    model = MIPTLM(MIPTConfig(vocab_size=16_384, d_model=512, n_layers=8, cache_slots=64))
    model.config                     # the MIPTConfig it was built from
    MIPTConfig.from_dict(model.config.to_dict()) == model.config

Keyword construction builds the same config: ``MIPTLM(16_384, 512, 8, cache_slots=64)``. Every field is
checked when the config is made (type and range, with the field's name, the value and what is
allowed), so a bad value fails before any tensor is allocated.

The language model and the classifier share one config class per family. Fields that only one of
them reads (``n_classes``, ``pad_id``; ``causal`` for the Transformer) are ``None``/unused for the other.
The defaults are the language model's; the classifiers' keyword construction fills in their own
(``pos_embedding="learned"``, ``max_len=512``, ``pad_id=0``) for the fields it is not given.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["MIPTConfig", "TransformerConfig"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _fail(cls: str, key: str, value, allowed: str):
    raise ValueError(f"{cls}.{key} must be {allowed}; got {value!r}")


class _Config:
    """Shared behaviour: dict round trip, keyword construction, checks."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON types (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` listing the valid ones."""
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}.from_dict needs a dict of fields; got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {names}")
        return cls(**d)

    def replace(self, **changes):
        """A copy with ``changes`` applied (checked like a new config)."""
        return self.from_dict({**dataclasses.asdict(self), **changes})

    @classmethod
    def from_args(cls, args: tuple, fields: dict[str, Any], positional: tuple[str, ...],
                  defaults: dict[str, Any] | None = None):
        """The config a model's constructor was called with: a config object alone, or its fields
        (the first ones positionally, named by ``positional``; ``defaults`` fill fields not given)."""
        if args and isinstance(args[0], cls):
            if len(args) > 1 or fields:
                raise ValueError(f"pass either a {cls.__name__} or its fields as keywords, not both")
            return args[0]
        if len(args) > len(positional):
            raise ValueError(f"at most {len(positional)} positional arguments {positional}; got {len(args)}: "
                             "pass the others by keyword")
        given = dict(zip(positional, args))
        twice = sorted(set(given) & set(fields))
        if twice:
            raise ValueError(f"{twice} given both positionally and by keyword")
        return cls.from_dict({**(defaults or {}), **given, **fields})

    def _check_common(self) -> None:
        name = type(self).__name__
        for key in ("vocab_size", "d_model", "n_layers", "ffn_mult", "max_len"):
            v = getattr(self, key)
            if not _is_int(v) or v <= 0:
                _fail(name, key, v, "a positive int")
        if not _is_real(self.dropout) or not 0 <= self.dropout < 1:
            _fail(name, "dropout", self.dropout, "a number in [0, 1)")
        if self.n_classes is not None and (not _is_int(self.n_classes) or self.n_classes < 2):
            _fail(name, "n_classes", self.n_classes, "None (language model) or an int >= 2 (classifier)")
        if self.pad_id is not None and (not _is_int(self.pad_id) or not 0 <= self.pad_id < self.vocab_size):
            _fail(name, "pad_id", self.pad_id, f"None or a token id in [0, vocab_size={self.vocab_size})")


@dataclass(frozen=True)
class MIPTConfig(_Config):
    """Everything that defines a MIPT model (:class:`~minimipt.MIPTLM`, :class:`~minimipt.MIPTClassifier`).

    Model: ``vocab_size`` V, ``d_model`` d, ``n_layers``, ``ffn_mult`` (MLP hidden width ``ffn_mult · d``),
    ``dropout``, ``pos_embedding`` (``"none"``, or ``"learned"`` with ``max_len`` rows).
    Layer (:class:`~minimipt.MIPTLayer`): ``d_state`` D (None: = d), ``phase`` (``"input"``: θ depends on
    the token, the paper; ``"static"``: a learned per-channel constant, HGRN-like), ``readout``
    (``"real"``: ``Re h``, the paper; ``"proj"``: a linear map of ``[Re h, Im h]``), ``scan_method``,
    ``p_init`` (range of the initial rates ``σ(b_p)``), ``theta_init`` (initial phases in
    ``[-theta_init, theta_init]``), ``fused_mixer`` (the fused Triton mixer under bf16/fp16 autocast).
    Cache (:class:`~minimipt.CausalSparseCache`): ``cache_slots`` (0: none, K ≥ 1, None: unbounded),
    ``cache_heads``, ``write_threshold`` τ, ``write_penalty`` λ (an L1 penalty on the write rate),
    ``cache_method``. Classifier: ``n_classes``, ``pad_id`` (None: no padding).
    """

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 2
    cache_slots: int | None = 0
    cache_heads: int = 4
    write_threshold: float = 0.0
    write_penalty: float = 0.0
    cache_method: str = "auto"
    d_state: int | None = None
    phase: str = "input"
    readout: str = "real"
    scan_method: str = "auto"
    p_init: tuple[float, float] = (1e-3, 0.1)
    theta_init: float = math.pi / 2
    fused_mixer: bool = False
    ffn_mult: int = 4
    dropout: float = 0.0
    pos_embedding: str = "none"
    max_len: int = 1024
    n_classes: int | None = None
    pad_id: int | None = None

    def __post_init__(self):
        if isinstance(self.p_init, list):
            object.__setattr__(self, "p_init", tuple(self.p_init))
        self._check_common()
        name = "MIPTConfig"
        K = self.cache_slots
        if K is not None and (not _is_int(K) or K < 0):
            _fail(name, "cache_slots", K, "an int >= 0 (0: no cache) or None (unbounded)")
        if not _is_int(self.cache_heads) or self.cache_heads <= 0 or self.d_model % self.cache_heads:
            _fail(name, "cache_heads", self.cache_heads, f"a positive int dividing d_model={self.d_model}")
        if not _is_real(self.write_threshold) or not 0 <= self.write_threshold <= 1:
            _fail(name, "write_threshold", self.write_threshold, "a number in [0, 1] (a bound on the mean rate w)")
        if not _is_real(self.write_penalty) or self.write_penalty < 0:
            _fail(name, "write_penalty", self.write_penalty, "a number >= 0")
        if self.cache_method not in ("auto", "fused", "blocked", "slots", "dense"):
            _fail(name, "cache_method", self.cache_method, "one of 'auto', 'fused', 'blocked', 'slots', 'dense'")
        if self.cache_method in ("fused", "blocked", "slots") and K is None:
            _fail(name, "cache_method", self.cache_method, "'auto' or 'dense' with an unbounded cache (cache_slots=None)")
        if self.d_state is not None and (not _is_int(self.d_state) or self.d_state <= 0):
            _fail(name, "d_state", self.d_state, "None (= d_model) or a positive int")
        if self.phase not in ("input", "static"):
            _fail(name, "phase", self.phase, "'input' (the paper) or 'static' (HGRN-like)")
        if self.readout not in ("real", "proj"):
            _fail(name, "readout", self.readout, "'real' (the paper) or 'proj'")
        if self.readout == "real" and self.d_state not in (None, self.d_model):
            _fail(name, "d_state", self.d_state, f"None or d_model={self.d_model} with readout='real' (Re h is the "
                  "output); use readout='proj' for another state size")
        if not isinstance(self.scan_method, str) or not self.scan_method:
            _fail(name, "scan_method", self.scan_method, "'auto' or a method of minimipt.scan_methods()")
        lo_hi = self.p_init
        if not (isinstance(lo_hi, tuple) and len(lo_hi) == 2 and all(_is_real(x) for x in lo_hi)
                and 0 < lo_hi[0] <= lo_hi[1] < 1):
            _fail(name, "p_init", lo_hi, "a pair (low, high) with 0 < low <= high < 1")
        if not _is_real(self.theta_init) or self.theta_init < 0:
            _fail(name, "theta_init", self.theta_init, "a number >= 0 (radians)")
        if not isinstance(self.fused_mixer, bool):
            _fail(name, "fused_mixer", self.fused_mixer, "True or False")
        if self.pos_embedding not in ("learned", "none"):
            _fail(name, "pos_embedding", self.pos_embedding, "'learned' or 'none'")


@dataclass(frozen=True)
class TransformerConfig(_Config):
    """Everything that defines a Transformer baseline (:class:`~minimipt.TransformerLM`,
    :class:`~minimipt.TransformerClassifier`): pre-LN blocks of ``n_heads``-head attention
    (``attention="sdpa"``: fused kernels; ``"naive"``: the materialised softmax) and a ``ffn_mult · d``
    MLP, learned positions of ``max_len`` rows. Classifier: ``n_classes``, ``pad_id``, ``causal``
    (False: bidirectional, the usual encoder baseline)."""

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    attention: str = "sdpa"
    ffn_mult: int = 4
    dropout: float = 0.0
    max_len: int = 1024
    n_classes: int | None = None
    pad_id: int | None = None
    causal: bool = False

    def __post_init__(self):
        self._check_common()
        name = "TransformerConfig"
        if not _is_int(self.n_heads) or self.n_heads <= 0 or self.d_model % self.n_heads:
            _fail(name, "n_heads", self.n_heads, f"a positive int dividing d_model={self.d_model}")
        if self.attention not in ("sdpa", "naive"):
            _fail(name, "attention", self.attention, "'sdpa' (fused) or 'naive' (materialised softmax)")
        if not isinstance(self.causal, bool):
            _fail(name, "causal", self.causal, "True or False")

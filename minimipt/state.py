"""What the models return besides their logits: the streaming state and the auxiliary output.

Glossary (``minimipt/__init__.py``): B batch, D state channels, d model width, K cache slots, H heads,
``d_h = d / H``, T tokens held by a Transformer's KV cache.

A *state* is everything a model keeps about the tokens it has seen, so that the next tokens can be
processed without them: ``logits, state = model(tokens, return_state=True)`` (in parallel) or
``logits_t, state = model.step(tokens_t, state)`` (one token) produce the same state, and
``model(more_tokens, state=state)`` continues from it. One dataclass per model family:

* :class:`MIPTState`: per layer (:class:`MIPTLayerState`) the complex recurrent state ``h`` ``(B, D)``
  and the cache's slots (:class:`CacheState`, or None without a cache); its size does not depend on
  the number of tokens for a finite K.
* :class:`PooledMIPTState`: the same plus the running sum of the features that
  :class:`~minimipt.MIPTClassifier` averages.
* :class:`TransformerState`: per layer the keys and values of every token (:class:`KVCache`), which
  grow by one entry per token.

Every state has ``nbytes``, ``to(device)``, ``clone()``, ``detach()`` and ``copy_(other)`` (in place,
for the fixed-shape decoder in :mod:`minimipt.decoding`). Token counts are 0-dim long tensors on the
state's device, so that a step never needs a Python int that changes from token to token.

:class:`ModelAux` is what ``model(tokens, return_aux=True)`` returns besides the logits: the cache
statistics per layer and the auxiliary loss (the write penalty) with its gradient.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

__all__ = ["CacheState", "MIPTLayerState", "MIPTState", "PooledMIPTState", "KVCache", "TransformerState",
           "CacheStats", "CacheAux", "ModelAux", "state_nbytes", "outputs", "unpack"]


class _Tensors:
    """Behaviour shared by the state dataclasses: every tensor field (also inside lists and nested
    states) is mapped, counted or copied; other fields (ints, None) are kept as they are."""

    def _map(self, fn):
        def go(v):
            if isinstance(v, torch.Tensor):
                return fn(v)
            if isinstance(v, _Tensors):
                return v._map(fn)
            if isinstance(v, list):
                return [go(x) for x in v]
            return v

        return dataclasses.replace(self, **{f.name: go(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def _tensors(self) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        self._map(lambda t: out.append(t) or t)
        return out

    @property
    def nbytes(self) -> int:
        """Bytes held by the state's tensors."""
        return sum(t.nelement() * t.element_size() for t in self._tensors())

    def to(self, device: torch.device | str):
        """A copy on ``device`` (the tensors' dtypes are kept)."""
        return self._map(lambda t: t.to(device))

    def clone(self):
        return self._map(torch.clone)

    def detach(self):
        """The same values cut from the autograd graph (truncated backpropagation through time)."""
        return self._map(torch.Tensor.detach)

    def copy_(self, other) -> None:
        """Copy ``other``'s values into this state's tensors in place (same type and shapes)."""
        mine, theirs = self._tensors(), other._tensors()
        if type(other) is not type(self) or len(mine) != len(theirs) or \
                any(a.shape != b.shape for a, b in zip(mine, theirs)):
            raise ValueError(f"copy_ needs a {type(self).__name__} of the same shapes; got {type(other).__name__}")
        for a, b in zip(mine, theirs):
            a.copy_(b)


@dataclass
class CacheState(_Tensors):
    """The slots of one :class:`~minimipt.CausalSparseCache` (streaming order: slot j is the j-th
    slot ever filled; valid slots are always 0, 1, …, n − 1).

    ``slots`` is the cache's K (None: unbounded, then the slot arrays grow by one entry per token
    and slot j holds position j).
    """

    k: torch.Tensor      # (B, S, H, d_h) keys; S = K, or the tokens seen for K = None
    v: torch.Tensor      # (B, S, H, d_h) values
    log_w: torch.Tensor  # (B, S) write scores log w_s
    valid: torch.Tensor  # (B, S) bool: the slot holds a token
    pos: torch.Tensor    # (B, S) long: the token's position, −1 for an empty slot
    t: torch.Tensor      # () long: tokens seen
    slots: int | None = None

    @staticmethod
    def score_dtype(dtype: torch.dtype) -> torch.dtype:
        """The dtype of ``log_w`` in a state whose keys and values are ``dtype``: the same for
        float32/float64, float32 for half precision (a log score needs the range)."""
        return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@dataclass
class MIPTLayerState(_Tensors):
    h: torch.Tensor                   # (B, D) complex: the recurrent state after the last token
    cache: CacheState | None = None   # None for a block without a cache


@dataclass
class MIPTState(_Tensors):
    """A MIPT model's state: ``t`` tokens seen and one :class:`MIPTLayerState` per layer."""

    t: torch.Tensor                   # () long
    layers: list[MIPTLayerState] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return self.layers[0].h.shape[0]


@dataclass
class PooledMIPTState(MIPTState):
    """:class:`MIPTState` plus the classifier's running masked sum of its final features."""

    pooled: torch.Tensor | None = None  # (B, d) Σ_t m_t x_t over the tokens seen
    count: torch.Tensor | None = None   # (B,) Σ_t m_t: real (non-pad) tokens seen
    ended: torch.Tensor | None = None   # (B,) bool: a pad has been seen (only pads may follow)


@dataclass
class KVCache(_Tensors):
    k: torch.Tensor  # (B, H, T, d_h)
    v: torch.Tensor  # (B, H, T, d_h)


@dataclass
class TransformerState(_Tensors):
    """A Transformer's state: the keys and values of every token seen, per layer."""

    layers: list[KVCache] = field(default_factory=list)

    @property
    def t(self) -> int:
        """Tokens seen (the KV cache's length: known on the host, no device sync)."""
        return self.layers[0].k.shape[2]

    @property
    def batch_size(self) -> int:
        return self.layers[0].k.shape[0]


def state_nbytes(state) -> int:
    """Bytes held by a state's tensors (a state above, or nested dicts/lists/tuples of tensors)."""
    if isinstance(state, _Tensors):
        return state.nbytes
    if isinstance(state, torch.Tensor):
        return state.nelement() * state.element_size()
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0


# ----------------------------------------------------------------------------------------------
# auxiliary outputs
# ----------------------------------------------------------------------------------------------

@dataclass
class CacheStats:
    """Per-sequence counts of one cache over the tokens of one forward call (long tensors ``(B,)``).

    ``written``: tokens of this call that entered the cache; ``held``: slots occupied at the last
    (non-pad) position, counting tokens of earlier calls that are still held; ``eligible``: tokens of
    this call with ``w ≥ τ``; ``length``: tokens of this call counted.
    """

    written: torch.Tensor
    held: torch.Tensor
    eligible: torch.Tensor
    length: torch.Tensor


@dataclass
class CacheAux:
    """What one cache's batched forward reports: its :class:`CacheStats` and the mean write rate
    ``mean_t w_t`` over the counted tokens (a tensor with gradient, for the write penalty)."""

    stats: CacheStats
    write_rate: torch.Tensor


@dataclass
class ModelAux:
    """``model(tokens, return_aux=True)``'s second output.

    ``cache_stats``: one :class:`CacheStats` per layer with a cache (``[]`` without); ``loss``: the
    auxiliary loss to add to the task loss, ``write_penalty · mean over layers of mean_t w_t`` (0
    when unused), with its gradient.
    """

    cache_stats: list[CacheStats]
    loss: torch.Tensor


def outputs(main, state, aux, return_state: bool, return_aux: bool):
    """The return convention of every ``forward`` here: ``main`` alone, or the tuple ``(main, state)``,
    ``(main, aux)`` or ``(main, state, aux)`` as asked."""
    if not (return_state or return_aux):
        return main
    return (main,) + ((state,) if return_state else ()) + ((aux,) if return_aux else ())


def unpack(out, return_state: bool, return_aux: bool):
    """The inverse of :func:`outputs`: ``(main, state or None, aux or None)``."""
    if not (return_state or return_aux):
        return out, None, None
    main, *rest = out
    return main, rest.pop(0) if return_state else None, rest.pop(0) if return_aux else None

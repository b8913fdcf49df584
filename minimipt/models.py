"""MIPT models: a sequence classifier and a language model with O(1)-per-token streaming.

Glossary (``minimipt/__init__.py``): B batch, L length, d model width, V vocabulary, C classes, K slots.

    x = E[tokens] (+ P[positions])  →  n_layers × MIPTBlock  →  LN
    classifier:  logits = W_c · masked_mean_t(x_t)  over non-pad tokens           (B, C)
    LM:          logits_t = E · x_t   (weights tied to the token embedding)          (B, L, V)

Positions: the classifier uses a learned absolute position embedding by default, as the paper.
The LM defaults to ``pos_embedding="none"``: the causal recurrence already knows order, and a
learned table of ``max_len`` rows would cap streaming generation at ``max_len`` tokens, which
would defeat the O(1) state. (With ``"learned"``, positions past ``max_len`` raise ``ValueError``.)

Padding (classifier): pads are left out of the pooled mean. The model is causal, so pads placed
*after* the text (right padding) cannot change any real position; left padding would.

State (:mod:`minimipt.state`): ``logits, state = model(tokens, return_state=True)`` computes, in
parallel, the :class:`~minimipt.state.MIPTState` that ``step`` would hold after ``tokens`` (per layer
the complex ``h`` and the cache's slots; its size does not depend on the tokens seen for finite K);
``model(more, state=state)`` continues from it, so a long document can be read in pieces.
``return_aux=True`` adds a :class:`~minimipt.state.ModelAux` (cache statistics, write-penalty loss).
Every ``forward`` returns ``logits``, then the state if asked, then the aux output if asked.

Weights record ``cache_slots`` (the module's extra state): loading weights trained with one K into a
model built with another raises ``ValueError``, through ``load_state_dict`` and ``from_pretrained``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import MIPTBlock
from .config import MIPTConfig
from .embedding import TokenEmbedding, check_tokens
from .generation import GenerateMixin
from .pretrained import PretrainedMixin
from .state import MIPTState, ModelAux, PooledMIPTState, outputs, unpack

__all__ = ["MIPTClassifier", "MIPTLM"]

_EXTRA = "_extra_state"


class _MIPTStack(PretrainedMixin, nn.Module):
    """Embedding, ``n_layers`` MIPT blocks and the final LayerNorm; states, aux output, K record."""

    config_class = MIPTConfig
    state_class = MIPTState

    def __init__(self, config: MIPTConfig):
        super().__init__()
        c = self.config = config
        self.vocab_size, self.d_model, self.n_layers = c.vocab_size, c.d_model, c.n_layers
        self.cache_slots, self.write_penalty = c.cache_slots, float(c.write_penalty)
        self.embed = TokenEmbedding(c.vocab_size, c.d_model, c.pos_embedding, c.max_len, c.dropout)
        self.blocks = nn.ModuleList(MIPTBlock(c) for _ in range(c.n_layers))
        self.final_norm = nn.LayerNorm(c.d_model)

    def _run(self, tokens: torch.Tensor, state: MIPTState | None, lengths, return_state: bool, return_aux: bool):
        """Embedding → blocks → LN from ``state``: ``(features (B, L, d), MIPTState or None, ModelAux or None)``."""
        B, L = tokens.shape
        t0 = torch.zeros((), dtype=torch.long, device=tokens.device) if state is None else state.t
        x = self.embed(tokens, start=t0)  # (B, L, d)
        layers, cache_aux = [], []
        for i, block in enumerate(self.blocks):
            x, s, a = unpack(block(x, lengths, None if state is None else state.layers[i],
                                   return_state=return_state, return_aux=return_aux), return_state, return_aux)
            layers.append(s)
            if a is not None:
                cache_aux.append(a)
        new = MIPTState(t=t0 + L, layers=layers) if return_state else None
        aux = None
        if return_aux:
            loss = self.final_norm.weight.new_zeros(())
            if self.write_penalty and cache_aux:
                loss = self.write_penalty * torch.stack([a.write_rate for a in cache_aux]).mean()
            aux = ModelAux(cache_stats=[a.stats for a in cache_aux], loss=loss)
        return self.final_norm(x), new, aux

    def features(self, tokens: torch.Tensor, return_aux: bool = False):
        """The final LayerNorm's output ``(B, L, d)``, before the head (and a
        :class:`~minimipt.state.ModelAux` if ``return_aux``): for a task that reads only some positions."""
        check_tokens(tokens, self.vocab_size)
        x, _, aux = self._run(tokens, None, None, False, return_aux)
        return (x, aux) if return_aux else x

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> MIPTState:
        """The state before any token: ``h = 0`` and empty caches."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        device = device or self.final_norm.weight.device
        return MIPTState(t=torch.zeros((), dtype=torch.long, device=device),
                         layers=[b.init_state(batch_size, device) for b in self.blocks])

    def check_state(self, state, batch_size: int) -> None:
        """``ValueError`` unless ``state`` is this model's kind of state for ``batch_size`` sequences."""
        name = type(self).__name__
        if type(state) is not self.state_class:  # a classifier's pooled state is not an LM's, nor the reverse
            raise ValueError(f"{name} needs a {self.state_class.__name__} (from its init_state, step or "
                             f"forward(..., return_state=True)); got {type(state).__name__}")
        if len(state.layers) != self.n_layers:
            raise ValueError(f"the state has {len(state.layers)} layers; this {name} has {self.n_layers}")
        if state.batch_size != batch_size:
            raise ValueError(f"the state was made for batch {state.batch_size}, the tokens have batch {batch_size}")
        for i, (block, s) in enumerate(zip(self.blocks, state.layers)):
            D = block.mixer.d_state
            if not s.h.is_complex() or tuple(s.h.shape) != (batch_size, D):
                raise ValueError(f"layer {i}: the state's h has shape {tuple(s.h.shape)} ({s.h.dtype}); this "
                                 f"{name} needs complex (B, D) = ({batch_size}, {D})")
            if (block.cache is None) != (s.cache is None):
                have = "no cache" if s.cache is None else f"a cache with cache_slots={s.cache.slots}"
                raise ValueError(f"the state holds {have}; this {name} has cache_slots={self.cache_slots}")
            if block.cache is not None:
                block.cache.check_state(s.cache, batch_size)

    # the cache_slots record in the weights ------------------------------------------------------
    def get_extra_state(self) -> torch.Tensor:
        """``cache_slots`` as a tensor (−1: unbounded), saved with the weights."""
        return torch.tensor([-1 if self.cache_slots is None else self.cache_slots])

    def set_extra_state(self, value) -> None:
        saved = int(torch.as_tensor(value).reshape(-1)[0])
        saved = None if saved == -1 else saved
        if saved != self.cache_slots:
            raise ValueError(f"these weights were trained with cache_slots={saved}, but this {type(self).__name__} "
                             f"was built with cache_slots={self.cache_slots}: build it with cache_slots={saved} "
                             "(or load with from_pretrained, which reads the saved config)")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if prefix + _EXTRA in missing_keys:  # weights saved without the record cannot be checked
            missing_keys.remove(prefix + _EXTRA)


class MIPTClassifier(_MIPTStack):
    """``(B, L)`` token ids → ``(B, n_classes)`` logits (masked mean pooling over non-pad tokens).

    Build from a :class:`~minimipt.MIPTConfig` with ``n_classes`` set, or from its fields:
    ``MIPTClassifier(vocab_size, n_classes, d_model, n_layers, cache_slots=0, **fields)``. Keyword
    construction defaults to ``pos_embedding="learned"`` (as the paper), ``max_len=512`` and
    ``pad_id=0``; ``pad_id=None``: no padding, every token is pooled. ``cache_slots``: 0 (no cache,
    the plain MIPT model), K ≥ 1, or None (unbounded).

    A long document can be read in pieces: ``logits, state = clf(piece, state=state, return_state=True)``
    gives, after the last piece, the logits of the whole document. The state
    (:class:`~minimipt.state.PooledMIPTState`) adds the running pooled sum to the layers' states.
    Padding may only end a document: once a row had a pad, later pieces must be all pads there.
    """

    _POSITIONAL = ("vocab_size", "n_classes", "d_model", "n_layers", "cache_slots")
    _DEFAULTS = {"pos_embedding": "learned", "max_len": 512, "pad_id": 0}
    state_class = PooledMIPTState

    def __init__(self, *args, **fields):
        config = MIPTConfig.from_args(args, fields, self._POSITIONAL, self._DEFAULTS)
        if config.n_classes is None:
            raise ValueError("MIPTClassifier needs MIPTConfig.n_classes (an int >= 2); got None")
        super().__init__(config)
        self.n_classes, self.pad_id = config.n_classes, config.pad_id
        self.head = nn.Linear(config.d_model, config.n_classes)

    def forward(self, tokens: torch.Tensor, state: PooledMIPTState | None = None, return_state: bool = False,
                return_aux: bool = False):
        """``tokens`` ``(B, L)`` → logits ``(B, C)`` of everything read so far (``state``'s tokens and these)."""
        check_tokens(tokens, self.vocab_size)
        B = tokens.shape[0]
        if state is not None:
            self.check_state(state, B)
        mask = torch.ones_like(tokens, dtype=torch.bool) if self.pad_id is None else tokens != self.pad_id  # (B, L)
        lengths = mask.sum(1)  # (B,)
        count = lengths if state is None else state.count + lengths
        if bool((count == 0).any()):
            raise ValueError(f"a sequence in the batch is all padding (pad_id={self.pad_id}); "
                             "every sequence needs at least one real token")
        if state is not None and bool((state.ended & mask.any(1)).any()):
            raise ValueError(f"a sequence continues after padding (pad_id={self.pad_id}): pad only the end of "
                             "a document, and give its later pieces as all pads")
        x, new, aux = self._run(tokens, state, lengths, return_state, return_aux)  # (B, L, d)
        pooled = (x * mask[..., None].to(x.dtype)).sum(1)  # (B, d)
        if state is not None:
            pooled = pooled + state.pooled
        logits = self.head(pooled / count.clamp(min=1)[:, None].to(x.dtype))  # (B, C)
        if return_state:
            ended = ~mask.all(1) if state is None else state.ended | ~mask.all(1)
            new = PooledMIPTState(t=new.t, layers=new.layers, pooled=pooled, count=count, ended=ended)
        return outputs(logits, new, aux, return_state, return_aux)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> PooledMIPTState:
        s = super().init_state(batch_size, device)
        w = self.final_norm.weight
        return PooledMIPTState(t=s.t, layers=s.layers, pooled=w.new_zeros(batch_size, self.d_model, device=s.t.device),
                               count=torch.zeros(batch_size, dtype=torch.long, device=s.t.device),
                               ended=torch.zeros(batch_size, dtype=torch.bool, device=s.t.device))


class MIPTLM(GenerateMixin, _MIPTStack):
    """``(B, L)`` token ids → ``(B, L, vocab_size)`` next-token logits, tied embeddings.

    Build from a :class:`~minimipt.MIPTConfig` or from its fields:
    ``MIPTLM(vocab_size, d_model, n_layers, cache_slots=0, **fields)``; ``pos_embedding`` defaults to
    ``"none"`` (see the module docstring).

    Streaming: ``logits, state = lm(prompt, return_state=True)`` (parallel), then
    ``logits_t, state = lm.step(tokens_t, state)`` with ``tokens_t`` ``(B,)``; ``lm.generate(prompt, 20)``
    does both (:mod:`minimipt.generation`).
    """

    _POSITIONAL = ("vocab_size", "d_model", "n_layers", "cache_slots")

    def __init__(self, *args, **fields):
        config = MIPTConfig.from_args(args, fields, self._POSITIONAL)
        if config.n_classes is not None:
            raise ValueError(f"MIPTLM predicts tokens: MIPTConfig.n_classes must be None; got {config.n_classes} "
                             "(use MIPTClassifier)")
        super().__init__(config)

    def forward(self, tokens: torch.Tensor, state: MIPTState | None = None, return_state: bool = False,
                return_aux: bool = False):
        """``tokens`` ``(B, L)`` → logits ``(B, L, V)`` (see the module docstring for ``state`` and the outputs)."""
        check_tokens(tokens, self.vocab_size)
        if state is not None:
            self.check_state(state, tokens.shape[0])
        x, new, aux = self._run(tokens, state, None, return_state, return_aux)
        return outputs(F.linear(x, self.embed.tok.weight), new, aux, return_state, return_aux)  # (B, L, V)

    def step(self, tokens_t: torch.Tensor, state: MIPTState):
        """One token per sequence: ``tokens_t`` ``(B,)`` → ``(logits_t (B, V), new state)``.

        O(1) in the tokens already seen (finite K). No host synchronisation unless the position
        embedding is learned (its ``max_len`` check), so the step can be captured in a CUDA graph
        (:mod:`minimipt.decoding`).
        """
        check_tokens(tokens_t, self.vocab_size, ndim=1, name="tokens_t")
        self.check_state(state, tokens_t.shape[0])
        return self._step(tokens_t, state)

    def _step(self, tokens_t: torch.Tensor, state: MIPTState, check_positions: bool = True):
        """:meth:`step` without its input checks (:class:`~minimipt.decoding.Decoder` checks once)."""
        x = self.embed(tokens_t[:, None], start=state.t, check=check_positions)[:, 0]  # (B, d)
        layers = []
        for block, s in zip(self.blocks, state.layers):
            x, s = block.step(x, s)
            layers.append(s)
        logits = F.linear(self.final_norm(x), self.embed.tok.weight)  # (B, V)
        return logits, MIPTState(t=state.t + 1, layers=layers)

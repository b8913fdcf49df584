"""MIPT models: a sequence classifier and a language model with O(1)-per-token streaming.

Glossary (``minimipt/__init__.py``): B batch, L length, d model width, V vocabulary, C classes, K slots.

    x = E[tokens] (+ P[positions])  →  n_layers × MIPTBlock  →  LN
    classifier:  logits = W_c · masked_mean_t(x_t)  over non-pad tokens           (B, C)
    LM:          logits_t = E · x_t   (weights tied to the token embedding)          (B, L, V)

Positions: the classifier uses a learned absolute position embedding by default, as the paper.
The LM defaults to ``pos_embedding="none"``: the causal recurrence already knows order, and a
learned table of ``max_len`` rows would cap streaming generation at ``max_len`` tokens, which
would defeat the O(1) state. (With ``"learned"``, ``step`` past ``max_len`` raises ``ValueError``.)

Padding (classifier): pads are left out of the pooled mean. The model is causal, so pads placed
*after* the text (right padding) cannot change any real position; left padding would.

Streaming state of :class:`MIPTLM` (``init_state``): ``{"t": int, "layers": [{"h": (B, D) complex,
"cache": None or K slots of keys/values/scores}]}`` — its size does not depend on t for finite K
(:func:`minimipt.state_nbytes` measures it).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import MIPTBlock
from .cache import CacheStats
from .config import MIPTConfig
from .embedding import TokenEmbedding, check_tokens, masked_mean
from .generation import GenerateMixin

__all__ = ["MIPTClassifier", "MIPTLM"]


class _MIPTStack(nn.Module):
    """Embedding, ``n_layers`` MIPT blocks and the final LayerNorm; cache report and aux loss."""

    def __init__(self, config: MIPTConfig):
        super().__init__()
        c = self.config = config
        self.vocab_size, self.d_model, self.n_layers = c.vocab_size, c.d_model, c.n_layers
        self.cache_slots, self.write_penalty = c.cache_slots, float(c.write_penalty)
        self.embed = TokenEmbedding(c.vocab_size, c.d_model, c.pos_embedding, c.max_len, c.dropout)
        self.blocks = nn.ModuleList(MIPTBlock(c) for _ in range(c.n_layers))
        self.final_norm = nn.LayerNorm(c.d_model)

    def features(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(tokens)  # (B, L, d)
        for block in self.blocks:
            x = block(x, lengths)
        return self.final_norm(x)

    def cache_stats(self) -> list[CacheStats]:
        """Per layer, the :class:`~minimipt.cache.CacheStats` of the last forward ([] without a cache)."""
        return [b.cache.last_stats for b in self.blocks if b.cache is not None and b.cache.last_stats is not None]

    def aux_loss(self) -> torch.Tensor:
        """``write_penalty · mean over layers of mean_t w_t`` from the last forward (0 if unused)."""
        rates = [b.cache.last_write_rate for b in self.blocks
                 if b.cache is not None and b.cache.last_write_rate is not None]
        if self.write_penalty == 0 or not rates:
            return self.final_norm.weight.new_zeros(())
        return self.write_penalty * torch.stack(rates).mean()


class MIPTClassifier(_MIPTStack):
    """``(B, L)`` token ids → ``(B, n_classes)`` logits (masked mean pooling over non-pad tokens).

    Build from a :class:`~minimipt.MIPTConfig` with ``n_classes`` set, or from its fields:
    ``MIPTClassifier(vocab_size, n_classes, d_model, n_layers, cache_slots=0, **fields)``. Keyword
    construction defaults to ``pos_embedding="learned"`` (as the paper), ``max_len=512`` and
    ``pad_id=0``; ``pad_id=None``: no padding, every token is pooled. ``cache_slots``: 0 (no cache,
    the plain MIPT model), K ≥ 1, or None (unbounded).
    """

    _POSITIONAL = ("vocab_size", "n_classes", "d_model", "n_layers", "cache_slots")
    _DEFAULTS = {"pos_embedding": "learned", "max_len": 512, "pad_id": 0}

    def __init__(self, *args, **fields):
        config = MIPTConfig.from_args(args, fields, self._POSITIONAL, self._DEFAULTS)
        if config.n_classes is None:
            raise ValueError("MIPTClassifier needs MIPTConfig.n_classes (an int >= 2); got None")
        super().__init__(config)
        self.n_classes, self.pad_id = config.n_classes, config.pad_id
        self.head = nn.Linear(config.d_model, config.n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.vocab_size)
        mask = None if self.pad_id is None else tokens != self.pad_id  # (B, L)
        lengths = None
        if mask is not None:
            lengths = mask.sum(1)
            if bool((lengths == 0).any()):
                raise ValueError(f"a sequence in the batch is all padding (pad_id={self.pad_id}); "
                                 "every sequence needs at least one real token")
        x = self.features(tokens, lengths)  # (B, L, d)
        return self.head(masked_mean(x, mask))  # (B, C)


class MIPTLM(GenerateMixin, _MIPTStack):
    """``(B, L)`` token ids → ``(B, L, vocab_size)`` next-token logits, tied embeddings.

    Build from a :class:`~minimipt.MIPTConfig` or from its fields:
    ``MIPTLM(vocab_size, d_model, n_layers, cache_slots=0, **fields)``; ``pos_embedding`` defaults to
    ``"none"`` (see the module docstring).

    Streaming: ``state = lm.init_state(B)``; ``logits_t, state = lm.step(tokens_t, state)`` with
    ``tokens_t`` ``(B,)``; ``lm.generate(prompt, max_new_tokens, temperature=1.0, top_k=None)``.
    """

    _POSITIONAL = ("vocab_size", "d_model", "n_layers", "cache_slots")

    def __init__(self, *args, **fields):
        config = MIPTConfig.from_args(args, fields, self._POSITIONAL)
        if config.n_classes is not None:
            raise ValueError(f"MIPTLM predicts tokens: MIPTConfig.n_classes must be None; got {config.n_classes} "
                             "(use MIPTClassifier)")
        super().__init__(config)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.vocab_size)
        return F.linear(self.features(tokens), self.embed.tok.weight)  # (B, L, V)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> dict:
        """State before any token (see the module docstring)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        return {"t": 0, "layers": [b.init_state(batch_size, device) for b in self.blocks]}

    def step(self, tokens_t: torch.Tensor, state: dict):
        """One token per sequence: ``tokens_t`` ``(B,)`` → ``(logits_t (B, V), new state)``."""
        self._check_step(tokens_t, state, "h")
        t = state["t"]
        x = self.embed(tokens_t[:, None], start=t)[:, 0]  # (B, d)
        layers = []
        for block, s in zip(self.blocks, state["layers"]):
            x, s = block.step(x, s)
            layers.append(s)
        logits = F.linear(self.final_norm(x), self.embed.tok.weight)  # (B, V)
        return logits, {"t": t + 1, "layers": layers}

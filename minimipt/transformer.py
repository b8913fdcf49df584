"""Transformer baselines with the same interfaces as the MIPT models (classifier, LM, KV cache).

Glossary (``minimipt/__init__.py``): B batch, L length, d model width, H heads, d_h = d / H.

Pre-LN blocks, as the MIPT blocks:

    x ← x + W_o Attn(LN x),      Attn = softmax(q kᵀ / √d_h + mask) v   per head
    x ← x + W_2 GELU(W_1 LN x)   (hidden width 4·d)

``attention="sdpa"`` calls ``F.scaled_dot_product_attention`` (fused kernels where available: memory
linear in L); ``attention="naive"`` materialises the ``(B, H, L, L)`` softmax (memory quadratic in
L — the kind of Transformer the paper's memory table reports). Both compute the same function.

The classifier is bidirectional by default (``causal=False``: the usual encoder baseline; pads
are masked out as keys and out of the mean), the LM causal. :class:`TransformerLM` streams with a
KV cache whose size grows with every token — the contrast to MIPT's O(1) state: ``forward(tokens,
state=None, return_state=False, return_aux=False)`` returns the :class:`~minimipt.state.TransformerState`
(every token's keys and values) with ``return_state=True`` and continues from one with ``state=``;
``step`` is that forward for one token. Positions are a learned absolute embedding of ``max_len`` rows.

The classifier has no state: it is bidirectional by default, so a position's features depend on
the tokens after it and nothing carried forward can stand in for the tokens already read.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .feedforward import FeedForward
from .config import TransformerConfig
from .embedding import TokenEmbedding, check_tokens, masked_mean
from .generation import GenerateMixin
from .pretrained import PretrainedMixin
from .state import KVCache, ModelAux, TransformerState, outputs

__all__ = ["SelfAttention", "TransformerBlock", "TransformerClassifier", "TransformerLM", "attention_naive"]

ATTENTIONS = ("sdpa", "naive")


def attention_naive(q, k, v, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
    """Materialised softmax attention; same arguments as SDPA (``q, k, v``: ``(B, H, L, d_h)``,
    ``mask``: bool, True = may attend)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Lq, Lk)
    if causal:
        Lq, Lk = scores.shape[-2:]
        keep = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril(Lk - Lq)
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``[q | k | v]`` projection."""

    def __init__(self, d_model: int, n_heads: int, attention: str = "sdpa", dropout: float = 0.0):
        super().__init__()
        if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads <= 0 or d_model % n_heads:
            raise ValueError(f"n_heads must be a positive int dividing d_model={d_model}; got {n_heads!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be 'sdpa' (fused) or 'naive' (materialised softmax); got {attention!r}")
        self.n_heads, self.head_dim, self.attention = n_heads, d_model // n_heads, attention
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def _heads(self, x):  # (B, L, d) → 3 × (B, H, L, d_h)
        B, L, _ = x.shape
        return self.qkv(x).view(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def _attend(self, q, k, v, mask, causal):
        if self.attention == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return attention_naive(q, k, v, mask, causal)

    def _merge(self, o):  # (B, H, L, d_h) → (B, L, d)
        B, H, L, dh = o.shape
        return self.drop(self.out_proj(o.transpose(1, 2).reshape(B, L, H * dh)))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, causal: bool = False,
                past: KVCache | None = None):
        """``x`` ``(B, L, d)``; ``key_mask`` bool ``(B, L)`` (True = real token) → ``(B, L, d)``.

        ``past``: the keys and values of earlier tokens (causal only); then returns ``(out, KVCache)``
        with this call's keys and values appended, and query i (position T + i) sees keys 0 … T + i.
        """
        q, k, v = self._heads(x)  # (B, H, L, d_h)
        if past is None:
            mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, L)
            if mask is not None and causal:
                L = x.shape[1]
                mask = mask & torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
            return self._merge(self._attend(q, k, v, mask, causal))
        if key_mask is not None or not causal:
            raise ValueError("attention over a KV cache (past=) is causal and takes no key_mask")
        k, v = torch.cat([past.k, k], 2), torch.cat([past.v, v], 2)  # (B, H, T + L, d_h)
        Lq, Lk = q.shape[2], k.shape[2]
        # queries end at the last key: row i keeps keys ≤ Lk − Lq + i (one query sees every key)
        mask = None if Lq == 1 else torch.ones(Lq, Lk, dtype=torch.bool, device=x.device).tril(Lk - Lq)
        return self._merge(self._attend(q, k, v, mask, False)), KVCache(k=k, v=v)


class TransformerBlock(nn.Module):
    """Pre-LN attention block followed by the same 4× GELU MLP as :class:`~minimipt.blocks.MIPTBlock`."""

    def __init__(self, d_model: int, n_heads: int, attention: str = "sdpa", ffn_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, attention, dropout)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_mult, dropout)

    def forward(self, x, key_mask=None, causal=False, past: KVCache | None = None):
        """``(B, L, d)`` → ``(B, L, d)``; with ``past`` (causal) also the grown :class:`KVCache`."""
        if past is None:
            x = x + self.attn(self.norm(x), key_mask, causal)
            return x + self.ffn(self.ffn_norm(x))
        a, kv = self.attn(self.norm(x), key_mask, causal, past)
        x = x + a
        return x + self.ffn(self.ffn_norm(x)), kv


class _TransformerStack(PretrainedMixin, nn.Module):
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = self.config = config
        self.vocab_size, self.d_model, self.n_layers, self.attention = c.vocab_size, c.d_model, c.n_layers, c.attention
        self.embed = TokenEmbedding(c.vocab_size, c.d_model, "learned", c.max_len, c.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(c.d_model, c.n_heads, c.attention, c.ffn_mult, c.dropout)
                                    for _ in range(c.n_layers))
        self.final_norm = nn.LayerNorm(c.d_model)

    def features(self, tokens, key_mask=None, causal=False, return_aux: bool = False):
        """The final normed hidden states ``(B, L, d)``; with ``return_aux`` also the (empty)
        :class:`~minimipt.state.ModelAux`, as the MIPT models' ``features`` returns it."""
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, key_mask, causal)
        x = self.final_norm(x)
        return (x, self._aux()) if return_aux else x

    def _aux(self) -> ModelAux:
        """No cache statistics and no auxiliary loss: the same interface as the MIPT models."""
        return ModelAux(cache_stats=[], loss=self.final_norm.weight.new_zeros(()))


class TransformerClassifier(_TransformerStack):
    """``(B, L)`` → ``(B, n_classes)``; masked mean pooling; bidirectional unless ``causal=True``.

    Build from a :class:`~minimipt.TransformerConfig` with ``n_classes`` set, or from its fields:
    ``TransformerClassifier(vocab_size, n_classes, d_model, n_layers, **fields)`` (keyword construction
    defaults to ``max_len=512`` and ``pad_id=0``)."""

    _POSITIONAL = ("vocab_size", "n_classes", "d_model", "n_layers")
    _DEFAULTS = {"max_len": 512, "pad_id": 0}

    def __init__(self, *args, **fields):
        config = TransformerConfig.from_args(args, fields, self._POSITIONAL, self._DEFAULTS)
        if config.n_classes is None:
            raise ValueError("TransformerClassifier needs TransformerConfig.n_classes (an int >= 2); got None")
        super().__init__(config)
        self.n_classes, self.pad_id, self.causal = config.n_classes, config.pad_id, config.causal
        self.head = nn.Linear(config.d_model, config.n_classes)

    def forward(self, tokens: torch.Tensor, return_aux: bool = False):
        """``tokens`` ``(B, L)`` → logits ``(B, C)`` (and a :class:`~minimipt.state.ModelAux` if ``return_aux``)."""
        check_tokens(tokens, self.vocab_size)
        mask = None if self.pad_id is None else tokens != self.pad_id  # (B, L)
        if mask is not None and bool((~mask.any(1)).any()):
            raise ValueError(f"a sequence in the batch is all padding (pad_id={self.pad_id}); "
                             "every sequence needs at least one real token")
        x = self.features(tokens, mask, self.causal)
        return outputs(self.head(masked_mean(x, mask)), None, self._aux(), False, return_aux)


class TransformerLM(GenerateMixin, _TransformerStack):
    """Causal LM ``(B, L)`` → ``(B, L, V)`` with tied embeddings; ``step`` uses a growing KV cache.

    Build from a :class:`~minimipt.TransformerConfig` or from its fields:
    ``TransformerLM(vocab_size, d_model, n_layers, **fields)``."""

    _POSITIONAL = ("vocab_size", "d_model", "n_layers")

    def __init__(self, *args, **fields):
        config = TransformerConfig.from_args(args, fields, self._POSITIONAL)
        if config.n_classes is not None:
            raise ValueError(f"TransformerLM predicts tokens: TransformerConfig.n_classes must be None; got "
                             f"{config.n_classes} (use TransformerClassifier)")
        super().__init__(config)

    def forward(self, tokens: torch.Tensor, state: TransformerState | None = None, return_state: bool = False,
                return_aux: bool = False):
        """``tokens`` ``(B, L)`` → logits ``(B, L, V)``, then the state if ``return_state``, then a
        :class:`~minimipt.state.ModelAux` if ``return_aux``. ``state``: continue after its tokens."""
        check_tokens(tokens, self.vocab_size)
        if state is not None:
            self.check_state(state, tokens.shape[0])
        logits, new = self._run(tokens, state, return_state)
        return outputs(logits, new, self._aux() if return_aux else None, return_state, return_aux)

    def features(self, tokens: torch.Tensor, return_aux: bool = False):
        """The final normed hidden states ``(B, L, d)``, causal (a language model reads left to right);
        with ``return_aux`` also the (empty) :class:`~minimipt.state.ModelAux`."""
        return super().features(tokens, None, True, return_aux)

    def _run(self, tokens, state, return_state):
        if state is None and not return_state:
            return F.linear(self.features(tokens), self.embed.tok.weight), None
        state = state or self.init_state(tokens.shape[0], tokens.device)
        x = self.embed(tokens, start=state.t)  # (B, L, d)
        layers = []
        for block, kv in zip(self.blocks, state.layers):
            x, kv = block(x, None, True, kv)
            layers.append(kv)
        return F.linear(self.final_norm(x), self.embed.tok.weight), TransformerState(layers=layers)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> TransformerState:
        """An empty KV cache per layer: keys and values ``(B, H, 0, d_h)``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        ref = self.final_norm.weight
        att = self.blocks[0].attn
        empty = lambda: torch.zeros(batch_size, att.n_heads, 0, att.head_dim, device=device or ref.device,
                                    dtype=ref.dtype)
        return TransformerState(layers=[KVCache(k=empty(), v=empty()) for _ in self.blocks])

    def check_state(self, state, batch_size: int) -> None:
        """``ValueError`` unless ``state`` is a :class:`~minimipt.state.TransformerState` of this model."""
        if not isinstance(state, TransformerState):
            raise ValueError(f"TransformerLM needs a TransformerState (from its init_state, step or "
                             f"forward(..., return_state=True)); got {type(state).__name__}")
        att = self.blocks[0].attn
        if len(state.layers) != self.n_layers:
            raise ValueError(f"the state has {len(state.layers)} layers; this TransformerLM has {self.n_layers}")
        k = state.layers[0].k
        if k.shape[0] != batch_size:
            raise ValueError(f"the state was made for batch {k.shape[0]}, the tokens have batch {batch_size}")
        if (k.shape[1], k.shape[3]) != (att.n_heads, att.head_dim):
            raise ValueError(f"the state holds keys of shape {tuple(k.shape)}; this TransformerLM needs "
                             f"(B={batch_size}, H={att.n_heads}, T, d_h={att.head_dim})")

    def step(self, tokens_t: torch.Tensor, state: TransformerState):
        """``tokens_t`` ``(B,)`` → ``(logits_t (B, V), new state)``: the forward of one token; raises past ``max_len``."""
        check_tokens(tokens_t, self.vocab_size, ndim=1, name="tokens_t")
        self.check_state(state, tokens_t.shape[0])
        logits, state = self._run(tokens_t[:, None], state, True)
        return logits[:, 0], state

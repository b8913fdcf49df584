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
KV cache whose size grows with every token — the contrast to MIPT's O(1) state. Positions are a
learned absolute embedding of ``max_len`` rows.
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

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """``x`` ``(B, L, d)``; ``key_mask`` bool ``(B, L)`` (True = real token) → ``(B, L, d)``."""
        q, k, v = self._heads(x)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, L)
        if mask is not None and causal:
            L = x.shape[1]
            mask = mask & torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        return self._merge(self._attend(q, k, v, mask, causal))

    def step(self, x_t: torch.Tensor, kv: dict):
        """One causal token: ``x_t`` ``(B, d)``, KV cache ``{"k", "v": (B, H, t, d_h)}`` grown by one."""
        q, k, v = self._heads(x_t[:, None])  # (B, H, 1, d_h)
        k, v = torch.cat([kv["k"], k], 2), torch.cat([kv["v"], v], 2)
        return self._merge(self._attend(q, k, v, None, False))[:, 0], {"k": k, "v": v}


class TransformerBlock(nn.Module):
    """Pre-LN attention block followed by the same 4× GELU MLP as :class:`~minimipt.blocks.MIPTBlock`."""

    def __init__(self, d_model: int, n_heads: int, attention: str = "sdpa", ffn_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, attention, dropout)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_mult, dropout)

    def forward(self, x, key_mask=None, causal=False):
        x = x + self.attn(self.norm(x), key_mask, causal)
        return x + self.ffn(self.ffn_norm(x))

    def step(self, x_t, kv):
        a, kv = self.attn.step(self.norm(x_t), kv)
        x_t = x_t + a
        return x_t + self.ffn(self.ffn_norm(x_t)), kv


class _TransformerStack(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = self.config = config
        self.vocab_size, self.d_model, self.n_layers, self.attention = c.vocab_size, c.d_model, c.n_layers, c.attention
        self.embed = TokenEmbedding(c.vocab_size, c.d_model, "learned", c.max_len, c.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(c.d_model, c.n_heads, c.attention, c.ffn_mult, c.dropout)
                                    for _ in range(c.n_layers))
        self.final_norm = nn.LayerNorm(c.d_model)

    def features(self, tokens, key_mask=None, causal=False):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, key_mask, causal)
        return self.final_norm(x)

    def aux_loss(self) -> torch.Tensor:
        """No auxiliary loss (0): same training-loop interface as the MIPT models."""
        return self.final_norm.weight.new_zeros(())

    def cache_stats(self) -> list:
        return []


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

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.vocab_size)
        mask = None if self.pad_id is None else tokens != self.pad_id  # (B, L)
        if mask is not None and bool((~mask.any(1)).any()):
            raise ValueError(f"a sequence in the batch is all padding (pad_id={self.pad_id}); "
                             "every sequence needs at least one real token")
        x = self.features(tokens, mask, self.causal)
        return self.head(masked_mean(x, mask))


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

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.vocab_size)
        return F.linear(self.features(tokens, None, True), self.embed.tok.weight)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> dict:
        """``{"t": 0, "layers": [{"k", "v": (B, H, 0, d_h)}]}``: an empty KV cache per layer."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        ref = self.final_norm.weight
        att = self.blocks[0].attn
        empty = lambda: torch.zeros(batch_size, att.n_heads, 0, att.head_dim, device=device or ref.device,
                                    dtype=ref.dtype)
        return {"t": 0, "layers": [{"k": empty(), "v": empty()} for _ in self.blocks]}

    def step(self, tokens_t: torch.Tensor, state: dict):
        """``tokens_t`` ``(B,)`` → ``(logits_t (B, V), new state)``; raises past ``max_len``."""
        self._check_step(tokens_t, state, "k")
        t = state["t"]
        x = self.embed(tokens_t[:, None], start=t)[:, 0]
        layers = []
        for block, kv in zip(self.blocks, state["layers"]):
            x, kv = block.step(x, kv)
            layers.append(kv)
        return F.linear(self.final_norm(x), self.embed.tok.weight), {"t": t + 1, "layers": layers}

"""The MIPT block: pre-LN residual mixer (MIPT layer + optional causal sparse cache), then an MLP.

Glossary (``minimipt/__init__.py``): B batch, L length, D state channels, d model width, K slots.

    x̂_t = LN(x_t)
    y_t = Re h_t  [+ r_t]          h from MIPTLayer(x̂), r from CausalSparseCache(x̂, log p)
    x_t ← x_t + y_t
    x_t ← x_t + W_2 GELU(W_1 LN(x_t))                (hidden width 4·d)

The block owns the pre-norm ``norm``: it feeds both the scan and the cache (the layer has none).
Its state is a :class:`~minimipt.state.MIPTLayerState` (``h`` ``(B, D)`` complex and the cache's
slots); ``forward(x, state=s, return_state=True)`` and ``step`` produce the same state.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .cache import CausalSparseCache
from .config import MIPTConfig
from .feedforward import FeedForward
from .layer import MIPTLayer
from .state import MIPTLayerState, outputs, unpack

__all__ = ["MIPTBlock"]


class MIPTBlock(nn.Module):
    """One MIPT block (see the module docstring), built from a :class:`~minimipt.MIPTConfig`."""

    def __init__(self, config: MIPTConfig):
        super().__init__()
        c = config
        self.norm = nn.LayerNorm(c.d_model)
        self.mixer = MIPTLayer(c.d_model, c.d_state, phase=c.phase, readout=c.readout, scan_method=c.scan_method,
                               p_init=c.p_init, theta_init=c.theta_init, fused_mixer=c.fused_mixer)
        self.cache = None if c.cache_slots == 0 else CausalSparseCache(
            c.d_model, c.cache_slots, heads=c.cache_heads, write_threshold=c.write_threshold, method=c.cache_method)
        self.ffn_norm = nn.LayerNorm(c.d_model)
        self.ffn = FeedForward(c.d_model, c.ffn_mult, c.dropout)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: MIPTLayerState | None = None,
                return_state: bool = False, return_aux: bool = False):
        """``x``: ``(B, L, d)`` → ``(B, L, d)``, then the state after the last token if
        ``return_state``, then the cache's :class:`~minimipt.state.CacheAux` (None without a cache)
        if ``return_aux``. ``state``: continue from it; ``lengths`` (B,) only feeds the cache statistics."""
        xh = self.norm(x)  # (B, L, d)
        h0 = None if state is None else state.h
        if self.cache is None and not return_state:
            y = self.mixer(xh, h0)
            cache_state = cache_aux = None
        else:
            y, aux = self.mixer(xh, h0, return_aux=True)
            cache_state = cache_aux = None
            if self.cache is not None:
                r, cache_state, cache_aux = unpack(
                    self.cache(xh, aux.log_p, lengths, None if state is None else state.cache,
                               return_state=return_state, return_aux=return_aux), return_state, return_aux)
                y = y + r.to(y.dtype)
        x = x + self.drop(y)
        x = x + self.ffn(self.ffn_norm(x))
        new = MIPTLayerState(h=aux.h[:, -1], cache=cache_state) if return_state else None
        return outputs(x, new, cache_aux, return_state, return_aux)

    def init_state(self, batch_size: int, device=None) -> MIPTLayerState:
        return MIPTLayerState(h=self.mixer.init_state(batch_size, device=device),
                              cache=None if self.cache is None else self.cache.init_state(batch_size, device=device))

    def step(self, x_t: torch.Tensor, state: MIPTLayerState):
        """``x_t``: ``(B, d)`` → ``(x_t (B, d), new state)``."""
        xh = self.norm(x_t)
        y, h, aux = self.mixer.step(xh, state.h, return_aux=True)
        cache_state = state.cache
        if self.cache is not None:
            r, cache_state = self.cache.step(xh, aux.log_p, cache_state)
            y = y + r.to(y.dtype)
        x_t = x_t + self.drop(y)
        return x_t + self.ffn(self.ffn_norm(x_t)), MIPTLayerState(h=h, cache=cache_state)

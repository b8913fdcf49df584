"""What every model here shares around its blocks: token checks, embeddings, pooling.

Glossary (``minimipt/__init__.py``): B batch, L length, d model width, V vocabulary size.

    x_t = E[token_t] (+ P[t] with pos_embedding="learned")            (B, L, d)
    pooled = Σ_t m_t x_t / Σ_t m_t,   m_t = [token_t ≠ pad_id]          (B, d)
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["check_tokens", "TokenEmbedding", "masked_mean"]

POS_EMBEDDINGS = ("learned", "none")


def _capturing(t: torch.Tensor) -> bool:
    """Whether ``t``'s stream is being captured into a CUDA graph (no host syncs allowed then)."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


TOKEN_DTYPES = (torch.int64, torch.int32)  # the index types nn.Embedding takes


def check_tokens(tokens, vocab_size: int, ndim: int = 2, name: str = "tokens") -> None:
    """Raise ``ValueError`` naming the problem unless ``tokens`` is an int64 or int32 tensor of
    ``ndim`` dims, not empty, with ids in ``[0, vocab_size)``. Other integer types (uint8, int16 ...)
    are refused rather than cast: the caller converts once with ``tokens.long()``. The id range costs
    one host sync, so it is skipped while a CUDA graph is being captured (shape and dtype are still
    checked)."""
    shape = "(B, L)" if ndim == 2 else "(B,)"
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of token ids with shape {shape}; got {type(tokens).__name__}")
    if tokens.dtype not in TOKEN_DTYPES:
        hint = ("convert with .long()" if not (tokens.dtype.is_floating_point or tokens.dtype.is_complex)
                else "token ids are integers")
        raise ValueError(f"{name} must hold token ids as torch.int64 (torch.long) or torch.int32; got dtype "
                         f"{tokens.dtype} ({hint})")
    if tokens.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape}; got {tuple(tokens.shape)} "
                         + ("(add a batch dim with tokens[None])" if tokens.dim() == ndim - 1 else ""))
    if tokens.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(tokens.shape)}; give at least one token per sequence")
    if _capturing(tokens):
        return  # a host sync would break a CUDA graph capture: the range is checked on eager calls only
    lo, hi = torch.aminmax(tokens)
    lo, hi = int(lo), int(hi)  # one host sync
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} ids must lie in [0, vocab_size={vocab_size}); got values in [{lo}, {hi}]")


class TokenEmbedding(nn.Module):
    """Token embedding plus an optional learned absolute position embedding (``max_len`` rows)."""

    def __init__(self, vocab_size: int, d_model: int, pos_embedding: str = "learned", max_len: int = 512,
                 dropout: float = 0.0):
        super().__init__()
        for arg, value in (("vocab_size", vocab_size), ("d_model", d_model), ("max_len", max_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{arg} must be a positive int; got {value!r}")
        if pos_embedding not in POS_EMBEDDINGS:
            raise ValueError(f"pos_embedding must be one of {POS_EMBEDDINGS}; got {pos_embedding!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {dropout}")
        self.vocab_size, self.max_len = vocab_size, max_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model) if pos_embedding == "learned" else None
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.tok.weight, std=0.02)
        if self.pos is not None:
            nn.init.normal_(self.pos.weight, std=0.02)

    def check_length(self, end: int) -> None:
        if self.pos is not None and end > self.max_len:
            raise ValueError(f"sequence reaches position {end} but the learned position embedding has "
                             f"max_len={self.max_len}; build the model with a larger max_len "
                             "(or pos_embedding='none' where the model allows it)")

    def forward(self, tokens: torch.Tensor, start: int | torch.Tensor = 0, check: bool = True) -> torch.Tensor:
        """``tokens`` ``(B, L)`` (already checked) at positions ``start…`` → ``(B, L, d)``.

        ``start`` may be a 0-dim long tensor (a state's token count): reading its value for the
        ``max_len`` check costs a host sync, so that check is skipped while a CUDA graph is captured
        (:mod:`minimipt.decoding` checks positions on the host instead, with ``check=False``)."""
        x = self.tok(tokens)
        if self.pos is not None:
            L = tokens.shape[1]
            if check and not _capturing(tokens):
                self.check_length(int(start) + L)
            x = x + self.pos(start + torch.arange(L, device=tokens.device))
        return self.drop(x)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` ``(B, L, d)`` over the positions where ``mask`` ``(B, L)`` is True → ``(B, d)``."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp(min=1)

"""Sampling shared by every language model here (one implementation), and the size of a state.

A model streams with ``state = model.init_state(B)`` and ``logits_t, state = model.step(tokens_t, state)``
(``tokens_t``: ``(B,)``, ``logits_t``: ``(B, V)``). Generation feeds the prompt token by token
through ``step`` and then samples::

    next ~ softmax(logits_t / temperature)  restricted to the top_k largest logits
    (temperature = 0: argmax)
"""

from __future__ import annotations

import torch

__all__ = ["generate", "sample_next", "state_nbytes", "GenerateMixin"]


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``logits`` ``(B, V)`` → long ``(B,)``."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be a positive int or None; got {top_k!r}")
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue ``prompt`` (``(B, L0)`` or ``(L0,)``) by ``max_new_tokens`` through ``model.step``.

    Returns the prompt followed by the new tokens: ``(B, L0 + max_new_tokens)`` (or 1-D for a 1-D
    prompt). Time per token and memory do not grow with length for a model whose state does not.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0; got {max_new_tokens!r}")
    squeeze = isinstance(prompt, torch.Tensor) and prompt.dim() == 1
    if squeeze:
        prompt = prompt[None]
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[1] == 0:
        got = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
        raise ValueError(f"prompt must be token ids of shape (B, L0) or (L0,) with L0 >= 1; got {got}")
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()  # no dropout while generating; the mode is restored below
    try:
        state = model.init_state(prompt.shape[0])
        for t in range(prompt.shape[1]):
            logits, state = model.step(prompt[:, t], state)
        out = [prompt]
        for i in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, generator)  # (B,)
            out.append(nxt[:, None].to(prompt.dtype))
            if i + 1 < max_new_tokens:
                logits, state = model.step(nxt, state)
    finally:
        if was_training:
            model.train()
    result = torch.cat(out, 1)
    return result[0] if squeeze else result


def state_nbytes(state) -> int:
    """Bytes held by the tensors of a streaming state (nested dicts/lists/tuples; ints count 0)."""
    if isinstance(state, torch.Tensor):
        return state.nelement() * state.element_size()
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0


class GenerateMixin:
    """Adds ``generate`` to a model that has ``init_state`` and ``step`` (and the checks ``step`` shares)."""

    def _check_step(self, tokens_t: torch.Tensor, state, batch_key: str) -> int:
        """Validate one streaming step's inputs; returns the batch size B of the state.

        ``batch_key``: a tensor of each layer's state whose first dimension is the batch.
        """
        from .embedding import check_tokens

        check_tokens(tokens_t, self.vocab_size, ndim=1, name="tokens_t")
        if not isinstance(state, dict) or "layers" not in state or len(state["layers"]) != self.n_layers:
            raise ValueError("state must come from this model's init_state(batch_size)")
        B = state["layers"][0][batch_key].shape[0]
        if tokens_t.shape[0] != B:
            raise ValueError(f"tokens_t has batch {tokens_t.shape[0]} but the state was made for batch {B}")
        return B

    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """See :func:`minimipt.generation.generate`."""
        return generate(self, prompt, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)

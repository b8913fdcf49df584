"""Generation shared by every language model here (one implementation): parallel prefill, then ``step``.

A model streams with ``logits, state = model(prompt, return_state=True)`` (all prompt positions at
once) and ``logits_t, state = model.step(tokens_t, state)`` (``tokens_t``: ``(B,)``, ``logits_t``:
``(B, V)``). :func:`generate` reads the prompt in one parallel call, then draws each new token from
the last logits and feeds it back through ``step`` (:class:`~minimipt.decoding.Decoder`: on CUDA a
fixed-shape state is stepped by a captured CUDA graph)::

    do_sample=True:   next ~ softmax(logits_t / temperature), restricted to the top_k largest logits
                      and to the smallest set whose probability reaches top_p (nucleus sampling)
    do_sample=False:  next = argmax logits_t  (greedy: temperature, top_k and top_p do not matter)
"""

from __future__ import annotations

import math

import torch

from .decoding import Decoder

__all__ = ["generate", "sample_next", "check_sampling", "GenerateMixin"]


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    """``ValueError`` naming the argument unless ``temperature`` is a finite number > 0, ``top_k`` a
    positive int or None and ``top_p`` a number in (0, 1] or None."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r} "
                         "(for greedy decoding pass do_sample=False)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be a positive int or None; got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1] or None; got {top_p!r}")


def sample_next(logits: torch.Tensor, do_sample: bool = True, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``logits`` ``(B, V)`` → long ``(B,)`` (arguments checked by :func:`check_sampling`)."""
    logits = logits.float()
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_logits, -1)
        beyond = probs.cumsum(-1) - probs >= top_p  # the tokens after the nucleus (the first is always kept)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(beyond, float("-inf")))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model, prompt: torch.Tensor, max_new_tokens: int, *, do_sample: bool = True, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, eos_token_id: int | None = None,
             generator: torch.Generator | None = None, decode: str = "auto") -> torch.Tensor:
    """Continue ``prompt`` (``(B, L0)`` or ``(L0,)``) by up to ``max_new_tokens`` tokens.

    The prompt is read in one parallel call (``model(prompt, return_state=True)``), then each token
    is sampled (see the module docstring) and fed through ``step``. ``eos_token_id``: a row that
    produced it is continued with it, and generation stops once every row has. ``generator``: a
    ``torch.Generator`` on the model's device, for reproducible samples. ``decode``: how ``step``
    runs (:class:`~minimipt.decoding.Decoder`: ``"auto"``, ``"eager"``, ``"graph"``, ``"compile"``).

    Returns the prompt followed by the new tokens: ``(B, L0 + n)`` with ``n ≤ max_new_tokens`` (or
    1-D for a 1-D prompt). The model is in eval mode meanwhile (no dropout) and its mode is restored.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0; got {max_new_tokens!r}")
    check_sampling(temperature, top_k, top_p)
    if eos_token_id is not None and (isinstance(eos_token_id, bool) or not isinstance(eos_token_id, int)
                                     or not 0 <= eos_token_id < model.vocab_size):
        raise ValueError(f"eos_token_id must be None or a token id in [0, vocab_size={model.vocab_size}); "
                         f"got {eos_token_id!r}")
    squeeze = isinstance(prompt, torch.Tensor) and prompt.dim() == 1
    if squeeze:
        prompt = prompt[None]
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[1] == 0:
        got = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
        raise ValueError(f"prompt must be token ids of shape (B, L0) or (L0,) with L0 >= 1; got {got}")
    embed = getattr(model, "embed", None)
    if getattr(embed, "pos", None) is not None and prompt.shape[1] + max_new_tokens - 1 > embed.max_len:
        raise ValueError(f"prompt ({prompt.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) - 1 exceeds the "
                         f"learned position embedding's max_len={embed.max_len}")
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()  # no dropout while generating; the mode is restored below
    try:
        logits, state = model(prompt, return_state=True)  # parallel prefill
        logits = logits[:, -1]  # (B, V)
        decoder = Decoder(model, state, mode=decode, steps=max_new_tokens - 1)
        out = [prompt]
        done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
        for i in range(max_new_tokens):
            nxt = sample_next(logits, do_sample, temperature, top_k, top_p, generator)  # (B,)
            if eos_token_id is not None:
                nxt = torch.where(done, eos_token_id, nxt)
                done = done | (nxt == eos_token_id)
            out.append(nxt[:, None].to(prompt.dtype))
            if i + 1 == max_new_tokens or (eos_token_id is not None and bool(done.all())):
                break
            logits = decoder.step(nxt)
    finally:
        if was_training:
            model.train()
    result = torch.cat(out, 1)
    return result[0] if squeeze else result


class GenerateMixin:
    """Adds :func:`generate` to a language model that has ``forward(..., return_state=True)`` and ``step``."""

    def generate(self, prompt: torch.Tensor, max_new_tokens: int, **kw) -> torch.Tensor:
        """See :func:`minimipt.generation.generate` (keyword arguments: ``do_sample``, ``temperature``,
        ``top_k``, ``top_p``, ``eos_token_id``, ``generator``, ``decode``)."""
        return generate(self, prompt, max_new_tokens, **kw)

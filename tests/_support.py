"""Checks shared by several test modules (imported as ``from _support import ...``)."""

from __future__ import annotations

import io

import torch


def png(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes (proves it draws; compares two renderings)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@torch.no_grad()
def assert_causal(model, vocab_size: int, batch: int, length: int, positions, seed: int) -> None:
    """Perturbing tokens from position t on leaves the logits before t unchanged, and changes them at t."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (batch, length), generator=gen)
    ref = model(tokens)
    for t in positions:
        other = tokens.clone()
        other[:, t:] = torch.randint(0, vocab_size, (batch, length - t), generator=gen)
        out = model(other)
        torch.testing.assert_close(out[:, :t], ref[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, t], ref[:, t])  # the perturbation is visible where it happens


@torch.no_grad()
def assert_greedy_generation_matches_forward(model, vocab_size: int, batch: int, prompt_len: int,
                                             new_tokens: int, seed: int = 4):
    """``generate(do_sample=False)`` (parallel prefill, then ``step``) appends, at each position, the
    argmax of the parallel forward's logits there; returns the prompt used."""
    prompt = torch.randint(0, vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(seed))
    out = model.generate(prompt, new_tokens, do_sample=False)
    total = prompt_len + new_tokens
    assert out.shape == (batch, total) and torch.equal(out[:, :prompt_len], prompt)
    for t in range(prompt_len, total):
        assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])
    return prompt

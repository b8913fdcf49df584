"""Checks shared by several test modules (imported as ``from tests._support import ...``)."""

from __future__ import annotations

import io

import torch

from minimipt import MIPTLM
from minimipt.ops.reference import write_scores


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


def small_lm(vocab_size: int, cache_slots=0, write_threshold=0.0, tied_scores: bool = False, **kw) -> MIPTLM:
    """A small MIPT LM (d 16, 2 layers, 2 cache heads) in eval mode.

    ``write_threshold="split"`` sets each layer's τ between the two middle write scores of a probe
    batch, so that the threshold really excludes about half of the tokens. ``tied_scores``: the gate
    rows of every layer are zero, so every token has the same write score (ties everywhere: the
    cache keeps the most recent eligible tokens).
    """
    torch.manual_seed(0)
    split = write_threshold == "split"
    model = MIPTLM(vocab_size, 16, 2, cache_slots=cache_slots, write_threshold=0.0 if split else write_threshold,
                   cache_heads=2, **kw).eval()
    with torch.no_grad():
        if tied_scores:
            for block in model.blocks:
                block.mixer.in_proj.weight[:block.mixer.d_state] = 0
        if split:
            x = model.embed(torch.randint(0, vocab_size, (3, 20), generator=torch.Generator().manual_seed(99)))
            for block in model.blocks:
                D = block.mixer.d_state
                block.mixer.in_proj.weight[:D] *= 30  # spread the rates so that w varies by token
                xh = block.norm(x)
                w = write_scores(block.mixer(xh, return_aux=True)[1].log_p).exp().flatten().sort().values
                block.cache.write_threshold = float(w[len(w) // 2 - 1:len(w) // 2 + 1].mean())
                x = block(x)
    return model


def stream(model, tokens: torch.Tensor, state=None):
    """``step`` over every position of ``tokens`` ``(B, L)`` from ``state`` (a fresh one if None):
    the logits ``(B, L, V)`` and the final state."""
    state = model.init_state(tokens.shape[0]) if state is None else state
    out = []
    for t in range(tokens.shape[1]):
        logits, state = model.step(tokens[:, t], state)
        out.append(logits)
    return torch.stack(out, 1), state

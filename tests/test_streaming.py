"""Streaming as script users expect: prefill in parallel, then step; forward in pieces with ``state=``.

For every model family: ``forward(prompt, return_state=True)`` followed by ``step`` over the
continuation equals ``forward(prompt + continuation)`` on the continuation (float32, 1e-5), the
state equals the one ``step`` holds, pieces with ``state=`` equal the whole (values and, in float64,
gradients), and a continued forward is causal.
"""

from __future__ import annotations

import pytest
import torch

from minimipt import MIPTClassifier, TransformerLM
from tests._support import assert_causal, small_lm, stream

V = 257
TOL = dict(atol=1e-5, rtol=1e-5)
# (cache_slots, write_threshold, tied write scores): no cache, K = 4, K = 64, unbounded; thresholds; ties
CASES = [(0, 0.0, False), (4, 0.0, False), (64, 0.0, False), (None, 0.0, False), (4, "split", False),
         (64, "split", False), (None, "split", False), (4, 0.0, True), (64, 0.0, True)]
IDS = [f"K{k}-tau{t}{'-ties' if tie else ''}" for k, t, tie in CASES]


def _tokens(B, L, seed):
    """No token twice in a row of the batch. Two equal tokens get equal write scores in the first
    layer (its gate reads only the token), and the batched and streaming computations may round
    such a tie apart differently, then keep different (equally scored) tokens. Exact ties are
    tested with ``tied_scores`` instead, where every path computes the same score bit for bit."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(V, generator=g)[:L] for _ in range(B)])


def _assert_states_close(a, b):
    """Two MIPT states hold the same values (same slots in the same order)."""
    assert int(a.t) == int(b.t)
    for la, lb in zip(a.layers, b.layers):
        torch.testing.assert_close(la.h, lb.h, **TOL)
        assert (la.cache is None) == (lb.cache is None)
        if la.cache is not None:
            assert torch.equal(la.cache.valid, lb.cache.valid) and torch.equal(la.cache.pos, lb.cache.pos)
            v = la.cache.valid[..., None, None]
            for name in ("k", "v"):
                torch.testing.assert_close(getattr(la.cache, name) * v, getattr(lb.cache, name) * v, **TOL)
            torch.testing.assert_close(la.cache.log_w * la.cache.valid, lb.cache.log_w * lb.cache.valid, **TOL)


@pytest.mark.parametrize("cache_slots,threshold,ties", CASES, ids=IDS)
@pytest.mark.parametrize("prompt_len", [3, 20, 90])  # shorter and longer than K = 4 and K = 64
def test_prefill_then_step_equals_forward(cache_slots, threshold, ties, prompt_len):
    model = small_lm(V, cache_slots, threshold, tied_scores=ties)
    tokens = _tokens(2, prompt_len + 12, seed=prompt_len)
    with torch.no_grad():
        full = model(tokens)
        logits, state = model(tokens[:, :prompt_len], return_state=True)
        continued, _ = stream(model, tokens[:, prompt_len:], state)
    torch.testing.assert_close(logits, full[:, :prompt_len], **TOL)
    torch.testing.assert_close(continued, full[:, prompt_len:], **TOL)


@pytest.mark.parametrize("cache_slots,threshold,ties", CASES, ids=IDS)
def test_prefill_state_equals_the_stepped_state(cache_slots, threshold, ties):
    """The same slots in the same order. float64: in float32 two write scores a rounding apart
    can be ordered differently by the batched and the streaming computation."""
    model = small_lm(V, cache_slots, threshold, tied_scores=ties).double()
    tokens = _tokens(2, 90, seed=4)
    with torch.no_grad():
        for n in (3, 20, 90):
            _, state = model(tokens[:, :n], return_state=True)
            _assert_states_close(state, stream(model, tokens[:, :n])[1])


@pytest.mark.parametrize("cache_slots,threshold,ties", CASES, ids=IDS)
def test_forward_in_pieces_equals_forward(cache_slots, threshold, ties):
    tokens = _tokens(3, 150, seed=5)
    for dtype in (torch.float32, torch.float64):  # logits in float32; the states' slots in float64 (see above)
        model = small_lm(V, cache_slots, threshold, tied_scores=ties).to(dtype)
        with torch.no_grad():
            full, full_state = model(tokens, return_state=True)
            state, pieces = None, []
            for a, b in ((0, 1), (1, 70), (70, 71), (71, 150)):  # one-token pieces, and pieces longer than K
                logits, state = model(tokens[:, a:b], state=state, return_state=True)
                pieces.append(logits)
        torch.testing.assert_close(torch.cat(pieces, 1), full, **TOL)
        if dtype == torch.float64:
            _assert_states_close(state, full_state)


@pytest.mark.parametrize("cache_slots,threshold", [(0, 0.0), (3, 0.0), (3, "split"), (None, "split")])
def test_gradients_through_the_state_equal_the_whole(cache_slots, threshold):
    """float64: a loss on two pieces read with ``state=`` has the gradients of the same loss on the
    whole sequence, for every parameter (the state carries the first piece's graph)."""
    model = small_lm(V, cache_slots, threshold).double()
    tokens = _tokens(2, 40, seed=7)
    target = torch.randn(2, 40, V, dtype=torch.float64, generator=torch.Generator().manual_seed(8))

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole = grads((model(tokens) * target).sum())
    first, state = model(tokens[:, :17], return_state=True)
    second = model(tokens[:, 17:], state=state)
    pieces = grads((torch.cat([first, second], 1) * target).sum())
    assert len(whole) == len(pieces) > 0
    for a, b in zip(pieces, whole):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cache_slots,threshold", [(0, 0.0), (4, 0.0), (4, "split"), (None, 0.0)])
def test_continued_forward_is_causal(cache_slots, threshold):
    model = small_lm(V, cache_slots, threshold)
    with torch.no_grad():
        _, state = model(_tokens(2, 30, seed=9), return_state=True)
    assert_causal(lambda t: model(t, state=state), V, batch=2, length=16, positions=(1, 6, 15), seed=10)


def test_state_does_not_depend_on_later_tokens():
    model = small_lm(V, 4)
    tokens = _tokens(2, 30, seed=11)
    other = tokens.clone()
    other[:, 20:] = (other[:, 20:] + 1) % V
    with torch.no_grad():
        _, a = model(tokens[:, :20], return_state=True)
        _, b = model(other[:, :20], return_state=True)
        _, c = model(other, return_state=True)
    _assert_states_close(a, b)
    assert not torch.allclose(a.layers[0].h, c.layers[0].h)


# ----------------------------------------------------------------------------------------------
# the Transformer (a KV cache) and the classifier (a pooled sum)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["sdpa", "naive"])
def test_transformer_prefill_pieces_and_step(attention):
    torch.manual_seed(0)
    model = TransformerLM(V, 16, 2, n_heads=4, attention=attention, max_len=64).eval()
    tokens = _tokens(2, 40, seed=12)
    with torch.no_grad():
        full = model(tokens)
        logits, state = model(tokens[:, :25], return_state=True)
        continued, end = stream(model, tokens[:, 25:], state)
        pieces = [logits]
        _, s = model(tokens[:, :1], return_state=True)
        for a, b in ((1, 9), (9, 40)):
            out, s = model(tokens[:, a:b], state=s, return_state=True)
            pieces.append(out)
    torch.testing.assert_close(logits, full[:, :25], **TOL)
    torch.testing.assert_close(continued, full[:, 25:], **TOL)
    torch.testing.assert_close(torch.cat(pieces[1:], 1), full[:, 1:], **TOL)
    assert end.t == s.t == 40
    for a, b in zip(end.layers, s.layers):
        torch.testing.assert_close(a.k, b.k, **TOL)
    assert_causal(lambda t: model(t, state=state), V, batch=2, length=12, positions=(1, 11), seed=13)


@pytest.mark.parametrize("cache_slots", [0, 3, None])
def test_classifier_in_pieces_equals_whole(cache_slots):
    torch.manual_seed(0)
    clf = MIPTClassifier(V, 3, 16, 2, cache_slots=cache_slots, cache_heads=2, max_len=64).eval()
    tokens = torch.randint(1, V, (3, 40), generator=torch.Generator().manual_seed(14))
    tokens[1, 33:] = 0  # right padding inside the last piece
    tokens[2, 20:] = 0  # a whole last piece of padding
    with torch.no_grad():
        whole = clf(tokens)
        state = None
        for a, b in ((0, 7), (7, 20), (20, 40)):
            logits, state = clf(tokens[:, a:b], state=state, return_state=True)
    torch.testing.assert_close(logits, whole, **TOL)
    assert state.count.tolist() == [40, 33, 20] and state.ended.tolist() == [False, True, True]
    with pytest.raises(ValueError, match="continues after padding"):
        clf(torch.ones(3, 2, dtype=torch.long), state=state)

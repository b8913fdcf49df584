"""The Decoder (minimipt.decoding): the fixed-buffer step that "graph" captures and "compile" compiles
equals the eager step; the modes and their refusals."""

from __future__ import annotations

import pytest
import torch

from minimipt import Decoder, MIPTLM, TransformerLM
from tests._support import small_lm

V = 23


def _decode(model, state, tokens, mode, monkeypatch=None):
    dec = Decoder(model, state, mode=mode)
    return torch.stack([dec.step(tokens[:, t]).clone() for t in range(tokens.shape[1])], 1), dec


@pytest.mark.parametrize("cache_slots", [0, 4])
def test_in_place_decoding_equals_eager_step(cache_slots, monkeypatch):
    """The fixed-buffer path that "graph" captures and "compile" compiles, run eagerly on the CPU
    (torch.compile replaced by the identity): the same logits and state as step."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    model = small_lm(V, cache_slots)
    tokens = torch.randint(0, V, (2, 30))
    with torch.no_grad():
        _, state = model(torch.randint(0, V, (2, 9)), return_state=True)
    eager, e = _decode(model, state, tokens, "eager")
    fixed, f = _decode(model, state, tokens, "compile")
    assert f.mode == "compile" and f._graph is None and e.mode == "eager"
    torch.testing.assert_close(fixed, eager, rtol=0, atol=0)
    assert int(f.state.t) == int(e.state.t) == 39 and int(state.t) == 9  # the caller's state is untouched
    f.state.to("cpu").copy_(e.state)  # same structure and shapes
    with pytest.raises(ValueError, match="tokens_t"):
        f.step(torch.zeros(3, dtype=torch.long))


def test_decoder_modes_and_refusals(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    assert Decoder(small_lm(V, 4), small_lm(V, 4).init_state(1)).mode == "eager"  # "auto" on the CPU
    with pytest.raises(ValueError, match="CUDA"):
        Decoder(small_lm(V, 4), small_lm(V, 4).init_state(1), mode="graph")
    with pytest.raises(ValueError, match="fixed shapes"):
        Decoder(small_lm(V, None), small_lm(V, None).init_state(1), mode="compile")
    tr = TransformerLM(V, 16, 1, max_len=8).eval()
    with pytest.raises(ValueError, match="fixed shapes"):
        Decoder(tr, tr.init_state(1), mode="compile")
    learned = small_lm(V, 2, pos_embedding="learned", max_len=4)
    dec = Decoder(learned, learned(torch.zeros(1, 3, dtype=torch.long), return_state=True)[1], mode="compile")
    dec.step(torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len=4"):
        dec.step(torch.zeros(1, dtype=torch.long))


@pytest.mark.slow
def test_compiled_decoding_equals_eager_step_on_cpu():
    model = small_lm(V, 4)
    tokens = torch.randint(0, V, (1, 6))
    state = model.init_state(1)
    torch.testing.assert_close(_decode(model, state, tokens, "compile")[0], _decode(model, state, tokens, "eager")[0],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cache_slots", [0, 64])
@pytest.mark.parametrize("mode", ["graph", "compile"])
def test_cuda_decoding_equals_eager_step(cache_slots, mode):
    """The captured CUDA graph (and the compiled step) against eager steps: logits and final state,
    batch 1 and 64, through the cache filling up; and greedy generate through the graph."""
    torch.manual_seed(0)
    model = MIPTLM(256, 128, 2, cache_slots=cache_slots).cuda().eval()
    for B in (1, 64) if mode == "graph" else (1,):  # a compilation per batch size: one is enough
        with torch.no_grad():
            _, state = model(torch.randint(0, 256, (B, 40), device="cuda"), return_state=True)
        tokens = torch.randint(0, 256, (B, 80), device="cuda")
        eager, e = _decode(model, state, tokens, "eager")
        fast, f = _decode(model, state, tokens, mode)
        assert f.mode == mode and f._graph is not None
        torch.testing.assert_close(fast, eager, atol=1e-4, rtol=1e-4)
        assert int(f.state.t) == int(e.state.t)
        for a, b in zip(f.state.layers, e.state.layers):
            torch.testing.assert_close(a.h, b.h, atol=1e-4, rtol=1e-4)
            if a.cache is not None:
                assert torch.equal(a.cache.pos, b.cache.pos)
    prompt = torch.randint(0, 256, (2, 30), device="cuda")
    assert torch.equal(model.generate(prompt, 40, do_sample=False, decode=mode),
                       model.generate(prompt, 40, do_sample=False, decode="eager"))

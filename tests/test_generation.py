"""generate: parallel prefill then step, sampling options, reproducibility; the Decoder's modes."""

from __future__ import annotations

import pytest
import torch

from tests._support import small_lm
from minimipt import Decoder, MIPTLM, TransformerLM
from minimipt.generation import sample_next

V = 23


def test_the_prompt_is_read_in_one_parallel_call(monkeypatch):
    model = small_lm(V, 4)
    calls = {"forward": 0, "step": 0}
    forward, step = model.forward, model.step

    def counted(name, fn):
        def wrapper(*a, **kw):
            calls[name] += 1
            return fn(*a, **kw)
        return wrapper

    monkeypatch.setattr(model, "forward", counted("forward", forward))
    monkeypatch.setattr(model, "step", counted("step", step))
    out = model.generate(torch.randint(0, V, (2, 50)), 6, do_sample=False, decode="eager")
    assert out.shape == (2, 56) and calls == {"forward": 1, "step": 5}


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0), "temperature"), (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")), "temperature"),
    (dict(temperature="1"), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"), (dict(eos_token_id=V), "eos_token_id"), (dict(decode="fast"), "decode mode"),
])
def test_bad_sampling_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_lm(V, 2).generate(torch.tensor([1, 2]), 3, **kwargs)


def test_max_new_tokens_and_prompt_checks():
    model = small_lm(V, 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.tensor([1]), -1)
    with pytest.raises(ValueError, match="prompt"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 3)
    assert torch.equal(model.generate(torch.tensor([4, 5]), 0), torch.tensor([4, 5]))
    learned = small_lm(V, 2, pos_embedding="learned", max_len=8)
    with pytest.raises(ValueError, match="max_len=8"):
        learned.generate(torch.tensor([1, 2, 3]), 7)
    assert learned.generate(torch.tensor([1, 2, 3]), 6).shape == (9,)  # the last token needs no position


def test_generator_makes_samples_reproducible():
    model = small_lm(V, 4)
    prompt = torch.randint(0, V, (3, 7))

    def sample(seed, **kw):
        return model.generate(prompt, 12, temperature=1.3, top_k=10, top_p=0.9,
                              generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))


def test_top_k_one_and_a_tiny_nucleus_are_greedy():
    model = small_lm(V, 4)
    prompt = torch.randint(0, V, (2, 5))
    greedy = model.generate(prompt, 8, do_sample=False)
    assert torch.equal(model.generate(prompt, 8, top_k=1), greedy)
    assert torch.equal(model.generate(prompt, 8, top_p=1e-6), greedy)


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    drawn = sample_next(logits, top_p=0.7, generator=g)  # 0.5 < 0.7 ≤ 0.8: tokens 0 and 1
    assert set(drawn.tolist()) == {0, 1}
    assert abs((drawn == 0).float().mean().item() - 0.5 / 0.8) < 0.03  # renormalised inside the nucleus
    assert set(sample_next(logits, top_p=1.0, generator=g).tolist()) == {0, 1, 2, 3}


def test_eos_stops_a_row_and_then_the_generation():
    model = small_lm(V, 4)
    prompt = torch.randint(0, V, (2, 4), generator=torch.Generator().manual_seed(3))
    greedy = model.generate(prompt, 10, do_sample=False)
    eos = int(greedy[0, 6])  # row 0's third new token
    out = model.generate(prompt, 10, do_sample=False, eos_token_id=eos)
    for row in range(2):
        new = greedy[row, 4:].tolist()
        stop = new.index(eos) + 1 if eos in new else len(new)
        n = out.shape[1] - 4
        assert out[row, 4:4 + min(stop, n)].tolist() == new[:min(stop, n)]
        assert all(x == eos for x in out[row, 4 + stop:].tolist())  # a finished row repeats eos
    finished = [eos in greedy[r, 4:].tolist() for r in range(2)]
    assert (out.shape[1] < 14) == all(finished)


def test_transformer_generates_through_prefill_too():
    torch.manual_seed(0)
    model = TransformerLM(V, 16, 2, max_len=32).eval()
    prompt = torch.randint(0, V, (2, 6))
    out = model.generate(prompt, 5, do_sample=False)
    for t in range(6, 11):
        assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])


# ----------------------------------------------------------------------------------------------
# the Decoder
# ----------------------------------------------------------------------------------------------

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

"""generate: parallel prefill then step, sampling options, reproducibility, the model's mode kept.
The Decoder it steps with: test_decoding.py."""

from __future__ import annotations

import pytest
import torch

from minimipt import MIPTLM, TransformerLM
from minimipt.generation import sample_next
from tests._support import small_lm

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


def test_generate_ignores_dropout_and_restores_the_mode():
    torch.manual_seed(0)
    lm = MIPTLM(50, 16, 1, dropout=0.5)
    lm.train()
    prompt = torch.tensor([1, 2, 3])
    a = lm.generate(prompt, 8, do_sample=False)
    b = lm.generate(prompt, 8, do_sample=False)
    assert torch.equal(a, b) and lm.training

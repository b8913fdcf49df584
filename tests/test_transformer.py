"""Transformer baselines: sdpa == naive, causality, KV-cache step == forward, padding, checks."""

from __future__ import annotations

import pytest
import torch

from minimipt import TransformerClassifier, TransformerLM, count_parameters, state_nbytes
from tests._support import assert_causal, assert_greedy_generation_matches_forward

V = 29


def _lm(attention="sdpa", **kw):
    torch.manual_seed(0)
    return TransformerLM(V, 16, 2, n_heads=4, attention=attention, max_len=64, **kw).eval()


def _clf(attention="sdpa", **kw):
    torch.manual_seed(0)
    return TransformerClassifier(V, 3, 16, 2, n_heads=4, attention=attention, max_len=64, **kw).eval()


def test_sdpa_equals_naive_values_and_gradients():
    tokens = torch.randint(1, V, (2, 12), generator=torch.Generator().manual_seed(1))
    tokens[1, 8:] = 0  # padding for the classifier
    for make in (_lm, _clf, lambda a: _clf(a, causal=True)):
        fused, naive = make("sdpa"), make("naive")
        naive.load_state_dict(fused.state_dict())
        out_f, out_n = fused(tokens), naive(tokens)
        torch.testing.assert_close(out_f, out_n, atol=1e-5, rtol=1e-5)
        out_f.square().sum().backward()
        out_n.square().sum().backward()
        for (name, a), b in zip(fused.named_parameters(), naive.parameters()):
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("attention", ["sdpa", "naive"])
def test_lm_is_causal(attention):
    assert_causal(_lm(attention), V, batch=2, length=16, positions=(1, 9, 15), seed=2)


def test_lm_features_are_causal_and_feed_the_logits():
    lm = _lm("sdpa").eval()
    features = type("Features", (torch.nn.Module,), {"forward": lambda self, x: lm.features(x)})()
    assert_causal(features, V, batch=2, length=16, positions=(1, 9, 15), seed=3)
    tokens = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(4))
    h, aux = lm.features(tokens, return_aux=True)
    torch.testing.assert_close(torch.nn.functional.linear(h, lm.embed.tok.weight), lm(tokens))
    assert aux.cache_stats == []


@pytest.mark.parametrize("attention", ["sdpa", "naive"])
def test_kv_cache_step_equals_forward(attention):
    model = _lm(attention)
    tokens = torch.randint(0, V, (3, 20), generator=torch.Generator().manual_seed(3))
    state = model.init_state(3)
    outs, sizes = [], []
    with torch.no_grad():
        full = model(tokens)
        for t in range(20):
            logits, state = model.step(tokens[:, t], state)
            outs.append(logits)
            sizes.append(state_nbytes(state))
    torch.testing.assert_close(torch.stack(outs, 1), full, atol=1e-4, rtol=1e-4)
    assert sizes[19] == 20 * sizes[0]  # the KV cache grows by one entry per token and layer


def test_generate_greedy_matches_forward_argmax():
    model = _lm()
    assert_greedy_generation_matches_forward(model, V, batch=2, prompt_len=4, new_tokens=5)


def test_classifier_ignores_padding():
    model = _clf()
    tokens = torch.randint(1, V, (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = model(tokens)
        padded = model(torch.cat([tokens, torch.zeros(2, 6, dtype=torch.long)], 1))
    assert logits.shape == (2, 3)
    torch.testing.assert_close(padded, logits, atol=1e-5, rtol=1e-5)


def test_bad_inputs_raise_value_error():
    lm, clf = _lm(), _clf()
    for model in (lm, clf):
        with pytest.raises(ValueError, match="vocab_size"):
            model(torch.tensor([[1, V]]))
        with pytest.raises(ValueError, match="shape"):
            model(torch.ones(2, 3, 4, dtype=torch.long))
        with pytest.raises(ValueError, match="empty"):
            model(torch.zeros(1, 0, dtype=torch.long))
        with pytest.raises(ValueError, match="max_len"):
            model(torch.ones(1, 65, dtype=torch.long))
    state = lm.init_state(1)
    with torch.no_grad():
        for t in range(64):
            _, state = lm.step(torch.tensor([1]), state)
        with pytest.raises(ValueError, match="max_len"):
            lm.step(torch.tensor([1]), state)
    with pytest.raises(ValueError, match="attention"):
        TransformerLM(V, 16, 1, attention="flash")
    with pytest.raises(ValueError, match="n_heads"):
        TransformerLM(V, 16, 1, n_heads=5)
    with pytest.raises(ValueError, match="all padding"):
        clf(torch.zeros(1, 4, dtype=torch.long))


def test_save_load_round_trip(tmp_path):
    for model, make in ((_lm(), _lm), (_clf(), _clf)):
        torch.save(model.state_dict(), tmp_path / "m.pt")
        torch.manual_seed(123)  # a differently initialised twin
        twin = make()
        twin.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
        tokens = torch.randint(1, V, (2, 7))
        with torch.no_grad():
            assert torch.equal(twin(tokens), model(tokens))


def test_count_parameters_with_and_without_embeddings():
    d, L_max = 16, 64
    lm, clf = _lm(), _clf()
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d + 4 * d * d + d)
    assert count_parameters(lm, embeddings=False) == 2 * block + 2 * d
    assert count_parameters(lm) == count_parameters(lm, embeddings=False) + V * d + L_max * d  # tied head
    assert count_parameters(clf) == count_parameters(clf, embeddings=False) + V * d + L_max * d
    assert count_parameters(clf, embeddings=False) == 2 * block + 2 * d + (d * 3 + 3)

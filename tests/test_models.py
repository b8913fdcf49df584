"""MIPT models: causality, streaming == batched, O(1) state, input checks, save/load, counts."""

from __future__ import annotations

import pytest
import torch

from minimipt import MIPTLM, MIPTClassifier, count_parameters, state_nbytes
from tests._support import assert_causal, assert_greedy_generation_matches_forward, small_lm, stream

V = 37
# (cache_slots, write_threshold): no cache, K = 1, K = 4, unbounded, unbounded with a threshold
CACHES = [(0, 0.0), (1, 0.0), (4, 0.0), (None, 0.0), (None, "split"), (3, "split")]


def _lm(cache_slots=0, write_threshold=0.0, **kw):
    return small_lm(V, cache_slots, write_threshold, **kw)


def _stream(model, tokens):
    return stream(model, tokens)


@pytest.mark.parametrize("cache_slots,write_threshold", CACHES)
def test_lm_is_causal(cache_slots, write_threshold):
    assert_causal(_lm(cache_slots, write_threshold), V, batch=3, length=20, positions=(1, 7, 19), seed=1)


@pytest.mark.parametrize("cache_slots,write_threshold", CACHES)
def test_step_equals_forward(cache_slots, write_threshold):
    model = _lm(cache_slots, write_threshold)
    tokens = torch.randint(0, V, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        streamed, state = _stream(model, tokens)
    torch.testing.assert_close(streamed, full, atol=1e-4, rtol=1e-4)
    if write_threshold == "split":  # the threshold really excluded tokens, and really let some in
        with torch.no_grad():
            stats = model(tokens, return_aux=True)[1].cache_stats
        assert any((s.eligible < 24).any() for s in stats) and any((s.written > 0).any() for s in stats)


@pytest.mark.parametrize("options", [dict(phase="static"), dict(readout="proj", d_state=8),
                                     dict(pos_embedding="learned", max_len=30), dict(scan_method="sequential")])
def test_step_equals_forward_with_layer_options(options):
    model = _lm(4, **options)
    tokens = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(_stream(model, tokens)[0], model(tokens), atol=1e-4, rtol=1e-4)


@pytest.fixture
def one_thread():
    """Thousands of tiny steps: one thread avoids OpenMP spin-waits on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("cache_slots", [0, 4])
def test_streaming_state_size_is_constant(cache_slots, one_thread):
    torch.manual_seed(0)
    model = MIPTLM(V, 8, 1, cache_slots=cache_slots, cache_heads=2).eval()
    state = model.init_state(2)
    tokens = torch.randint(0, V, (2, 5000))
    sizes = {}
    with torch.no_grad():
        for t in range(5000):
            logits, state = model.step(tokens[:, t], state)
            if t + 1 in (10, 5000):
                sizes[t + 1] = state_nbytes(state)
    assert torch.isfinite(logits).all()
    assert sizes[10] == sizes[5000] == state_nbytes(model.init_state(2)) == state.nbytes > 0
    assert int(state.t) == 5000


def test_unbounded_cache_state_grows():
    model = _lm(None)
    _, s10 = _stream(model, torch.randint(0, V, (1, 10)))
    _, s20 = _stream(model, torch.randint(0, V, (1, 20)))
    assert state_nbytes(s20) > state_nbytes(s10)


def test_generate_greedy_matches_forward_argmax():
    model = _lm(2)
    prompt = assert_greedy_generation_matches_forward(model, V, batch=2, prompt_len=5, new_tokens=6)
    sampled = model.generate(prompt[0], 4, temperature=0.8, top_k=3, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (9,) and sampled.max() < V


def test_bad_inputs_raise_value_error():
    lm = _lm(2)
    clf = MIPTClassifier(V, 4, 16, 1, cache_slots=2, cache_heads=2)
    for model in (lm, clf):
        with pytest.raises(ValueError, match="vocab_size"):
            model(torch.tensor([[1, V]]))
        with pytest.raises(ValueError, match="vocab_size"):
            model(torch.tensor([[-1, 2]]))
        with pytest.raises(ValueError, match="shape"):
            model(torch.tensor([1, 2, 3]))
        with pytest.raises(ValueError, match="empty"):
            model(torch.zeros(2, 0, dtype=torch.long))
        with pytest.raises(ValueError, match="integer"):
            model(torch.zeros(2, 3))
    state = lm.init_state(2)
    with pytest.raises(ValueError, match="tokens_t"):
        lm.step(torch.tensor([[1], [2]]), state)
    with pytest.raises(ValueError, match="batch"):
        lm.step(torch.tensor([1, 2, 3]), state)
    with pytest.raises(ValueError, match="all padding"):
        clf(torch.tensor([[3, 4], [0, 0]]))
    with pytest.raises(ValueError, match="max_len"):
        MIPTClassifier(V, 4, 16, 1, max_len=8)(torch.ones(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="cache_slots"):
        MIPTLM(V, 16, 1, cache_slots=-2)
    with pytest.raises(ValueError, match="pos_embedding"):
        MIPTLM(V, 16, 1, pos_embedding="rotary")
    with pytest.raises(ValueError, match="prompt"):
        lm.generate(torch.zeros(1, 0, dtype=torch.long), 3)


def test_classifier_shapes_padding_and_stats():
    torch.manual_seed(0)
    clf = MIPTClassifier(V, 4, 16, 2, cache_slots=3, cache_heads=2, pad_id=0).eval()
    tokens = torch.randint(1, V, (2, 10))
    with torch.no_grad():
        logits = clf(tokens)
        padded, aux = clf(torch.cat([tokens, torch.zeros(2, 5, dtype=torch.long)], 1), return_aux=True)  # right padding
    assert logits.shape == (2, 4)
    torch.testing.assert_close(padded, logits, atol=1e-5, rtol=1e-5)
    stats = aux.cache_stats
    assert len(stats) == 2 and all(s.length.tolist() == [10, 10] for s in stats)
    assert all(((s.held <= 3) & (s.held <= s.written) & (s.written <= 10)).all() for s in stats)


def test_save_load_round_trip(tmp_path):
    for model in (_lm(4, write_threshold=0.02, phase="static"),
                  MIPTClassifier(V, 3, 16, 2, cache_slots=None, cache_heads=2).eval()):
        path = tmp_path / "model.pt"
        torch.save(model.state_dict(), path)
        sd = torch.load(path, weights_only=True)
        twin = type(model)(**_ctor_args(model)).eval()
        twin.load_state_dict(sd)
        tokens = torch.randint(1, V, (2, 9))
        with torch.no_grad():
            assert torch.equal(twin(tokens), model(tokens))


def _ctor_args(model):
    b = model.blocks[0]
    kw = dict(vocab_size=V, d_model=model.d_model, n_layers=model.n_layers, cache_slots=model.cache_slots,
              phase=b.mixer.phase, cache_heads=2)
    if b.cache is not None:
        kw["write_threshold"] = b.cache.write_threshold
    if isinstance(model, MIPTClassifier):
        kw["n_classes"] = model.n_classes
    return kw


def test_write_penalty_aux_loss():
    model = _lm(2, write_penalty=0.1)
    tokens = torch.randint(0, V, (2, 8))
    logits, aux = model(tokens, return_aux=True)
    assert torch.equal(logits, model(tokens))  # the aux output changes nothing else
    assert aux.loss.item() > 0
    aux.loss.backward()
    assert model.blocks[0].mixer.in_proj.bias.grad.abs().sum() > 0
    unused = _lm(0)(tokens, return_aux=True)[1]
    assert unused.loss.item() == 0 and unused.cache_stats == []
    assert not hasattr(model.blocks[0].cache, "last_stats")  # statistics are returned, not stored


def test_count_parameters_with_and_without_embeddings():
    torch.manual_seed(0)
    d = 16
    lm = MIPTLM(V, d, 2, cache_slots=0)
    clf = MIPTClassifier(V, 4, d, 2, max_len=64)
    assert count_parameters(lm) - count_parameters(lm, embeddings=False) == V * d  # tied head counted once
    assert count_parameters(clf) - count_parameters(clf, embeddings=False) == V * d + 64 * d
    block = 2 * d + (d * 4 * d + 4 * d) + 2 * d + (d * 4 * d + 4 * d + 4 * d * d + d)  # norm, in_proj, ffn
    assert count_parameters(lm, embeddings=False) == 2 * block + 2 * d
    cached = MIPTLM(V, d, 2, cache_slots=4)
    extra = 3 * d * d + 2 * (d * d + d)  # qkv, out_proj, gate
    assert count_parameters(cached, embeddings=False) == count_parameters(lm, embeddings=False) + 2 * extra


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lm_training_step_captures_in_a_cuda_graph():
    """bench scaling --cuda-graphs: a whole training step of the LM (forward, backward, AdamW)
    captures and replays, and the replay changes the weights like an eager step would."""
    torch.manual_seed(0)
    model = MIPTLM(V, 32, 2, cache_slots=4, cache_heads=2).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, capturable=True)
    x = torch.randint(0, V, (2, 33), device="cuda")

    def step():
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    before = [p.detach().clone() for p in model.parameters()]
    graph.replay()
    torch.cuda.synchronize()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

"""Typed states: size, device moves, copies, and clear errors for a state of another model."""

from __future__ import annotations

import pytest
import torch

from minimipt import MIPTLM, MIPTClassifier, MIPTState, TransformerLM, TransformerState, state_nbytes

V = 29


def _lm(K, **kw):
    torch.manual_seed(0)
    return MIPTLM(V, 16, 2, cache_slots=K, cache_heads=2, **kw).eval()


def test_init_state_is_typed_and_sized():
    model = _lm(4)
    s = model.init_state(3)
    assert isinstance(s, MIPTState) and s.batch_size == 3 and int(s.t) == 0
    D, K, H, dh = 16, 4, 2, 8
    per_layer = 3 * D * 8 + 2 * (3 * K * H * dh * 4) + 3 * K * 4 + 3 * K + 3 * K * 8 + 8  # h, k/v, log_w, valid, pos, t
    assert s.nbytes == state_nbytes(s) == 2 * per_layer + 8
    t = TransformerLM(V, 16, 2, max_len=32).init_state(2)
    assert isinstance(t, TransformerState) and t.t == 0 and t.nbytes == 0


def test_to_clone_detach_copy():
    model = _lm(4)
    with torch.no_grad():
        _, s = model(torch.randint(0, V, (2, 9)), return_state=True)
    meta = s.to("meta")
    assert all(x.device.type == "meta" for x in meta._tensors()) and meta.layers[0].cache.slots == 4
    c = s.clone()
    c.layers[0].h.zero_()
    assert s.layers[0].h.abs().sum() > 0  # a clone owns its tensors
    c.copy_(s)
    assert torch.equal(c.layers[0].h, s.layers[0].h) and torch.equal(c.layers[1].cache.k, s.layers[1].cache.k)
    with pytest.raises(ValueError, match="same shapes"):
        c.copy_(model.init_state(3))
    g = _lm(0)(torch.randint(0, V, (1, 4)), return_state=True)[1]
    assert g.layers[0].h.requires_grad and not g.detach().layers[0].h.requires_grad


@pytest.mark.parametrize("call", ["step", "forward"])
def test_a_state_of_another_model_is_refused(call):
    k4, k64, none, unbounded = _lm(4), _lm(64), _lm(0), _lm(None)
    tr = TransformerLM(V, 16, 2, max_len=32).eval()
    wide = MIPTLM(V, 32, 2, cache_slots=4, cache_heads=2)
    deep = MIPTLM(V, 16, 3, cache_slots=4, cache_heads=2)

    def run(model, state, B=2):
        tokens = torch.zeros(B, dtype=torch.long)
        return model.step(tokens, state) if call == "step" else model(tokens[:, None], state=state)

    cases = [(k64, k4.init_state(2), "cache_slots=4"), (k4, k64.init_state(2), "cache_slots=64"),
             (k4, unbounded.init_state(2), "cache_slots=None"), (k4, none.init_state(2), "no cache"),
             (none, k4.init_state(2), "cache_slots=0"), (k4, tr.init_state(2), "TransformerState"),
             (tr, k4.init_state(2), "MIPTState"), (k4, wide.init_state(2), "shape"),
             (k4, deep.init_state(2), "3 layers"), (k4, {"t": 0, "layers": []}, "dict"),
             (k4, MIPTClassifier(V, 3, 16, 2, cache_slots=4, cache_heads=2).init_state(2), "PooledMIPTState")]
    for model, state, match in cases:
        with pytest.raises(ValueError, match=match):
            run(model, state)
    with pytest.raises(ValueError, match="batch"):
        run(k4, k4.init_state(3))
    with pytest.raises(ValueError, match="batch"):
        run(tr, tr.init_state(3))
    with pytest.raises(ValueError, match="PooledMIPTState"):
        MIPTClassifier(V, 3, 16, 2, cache_slots=4, cache_heads=2)(torch.ones(2, 3, dtype=torch.long),
                                                                  state=k4.init_state(2))


def test_state_and_aux_outputs_come_in_a_fixed_order():
    model = _lm(4, write_penalty=0.1)
    tokens = torch.randint(0, V, (2, 6))
    logits = model(tokens)
    a, state = model(tokens, return_state=True)
    b, aux = model(tokens, return_aux=True)
    c, state2, aux2 = model(tokens, return_state=True, return_aux=True)
    for x in (a, b, c):
        torch.testing.assert_close(x, logits)
    assert isinstance(state, MIPTState) and isinstance(state2, MIPTState)
    assert len(aux.cache_stats) == len(aux2.cache_stats) == 2 and aux.loss.item() > 0


def test_learned_positions_end_at_max_len_in_every_path():
    model = _lm(2, pos_embedding="learned", max_len=10)
    _, s = model(torch.zeros(1, 8, dtype=torch.long), return_state=True)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 3, dtype=torch.long), state=s)
    _, s = model.step(torch.zeros(1, dtype=torch.long), s)
    _, s = model.step(torch.zeros(1, dtype=torch.long), s)
    with pytest.raises(ValueError, match="max_len"):
        model.step(torch.zeros(1, dtype=torch.long), s)

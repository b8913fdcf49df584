"""The cache continued from a state: eviction from a held set (fast == loop), the slots of the state
it returns (== step's), and its outputs and gradients (== the step loop's, float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minimipt.cache import CausalSparseCache
from minimipt.cache_continue import eviction_times_from, eviction_times_from_reference, state_as_prefix
from minimipt.ops.eviction import eviction_times
from minimipt.state import CacheState


def _scores(B, L, ties, gen):
    if ties:  # few distinct values: exercises the tie rule (the more recent wins)
        return torch.randint(0, 3, (B, L), generator=gen).double() - 3.0
    return torch.randn(B, L, generator=gen, dtype=torch.float64) - 2.0


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("slots", [None, 1, 2, 4, 9])
def test_eviction_from_a_held_set_matches_the_loop(slots, ties):
    """Random held sets (at most K, some slots empty) followed by new tokens, some not eligible."""
    gen = torch.Generator().manual_seed(3 + (slots or 0) + 50 * ties)
    for _ in range(25):
        S = slots if slots is not None else int(torch.randint(0, 12, (1,), generator=gen))
        L = int(torch.randint(1, 30, (1,), generator=gen))
        held = torch.rand(3, S, generator=gen) > 0.3
        held = held.sort(1, descending=False).values  # empty slots first, as state_as_prefix lists them
        prefix_w, w = _scores(3, S, ties, gen), _scores(3, L, ties, gen)
        eligible = torch.rand(3, L, generator=gen) > 0.25
        ref = eviction_times_from_reference(prefix_w, held, w, eligible, slots)
        assert torch.equal(eviction_times_from(prefix_w, held, w, eligible, slots), ref)
        assert (ref[:, :S][held] > torch.arange(S).expand(3, S)[held]).all()  # every held entry starts held


def test_reference_refuses_more_held_entries_than_slots():
    with pytest.raises(ValueError, match="more than slots"):
        eviction_times_from_reference(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 2),
                                      torch.ones(1, 2, dtype=torch.bool), 2)


def test_without_a_prefix_it_is_the_plain_eviction():
    gen = torch.Generator().manual_seed(0)
    w, eligible = _scores(2, 20, True, gen), torch.rand(2, 20, generator=gen) > 0.2
    empty_w, empty = w.new_zeros(2, 0), eligible.new_zeros(2, 0)
    assert torch.equal(eviction_times_from(empty_w, empty, w, eligible, 4), eviction_times(w, eligible, 4))


def _inputs(B, L, gen, ties=False):
    xh = torch.randn(B, L, 16, generator=gen, dtype=torch.float64)
    z = (torch.randint(0, 3, (B, L, 1), generator=gen).double() - 2).expand(B, L, 8) if ties else \
        torch.randn(B, L, 8, generator=gen, dtype=torch.float64) * 2 - 1
    return xh, F.logsigmoid(z)


def _stepped(cache, xh, log_p, state):
    outs = []
    for t in range(xh.shape[1]):
        r, state = cache.step(xh[:, t], log_p[:, t], state)
        outs.append(r)
    return (torch.stack(outs, 1) if outs else None), state


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("threshold", [0.0, 0.3])
@pytest.mark.parametrize("slots", [1, 3, 8, None])
def test_continued_forward_equals_the_step_loop_values_and_gradients(slots, threshold, ties):
    """From a state reached by stepping m tokens, the batched forward over the next tokens equals
    stepping them: outputs, the returned state slot for slot, and the gradients with respect to the
    new inputs and to the state's keys, values and scores (float64)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(11 + (slots or 0))
    cache = CausalSparseCache(16, slots, heads=4, write_threshold=threshold).double()
    B = 3
    for m, L in ((0, 7), (2, 9), (13, 20)):
        xh0, lp0 = _inputs(B, m, gen, ties)
        _, state = _stepped(cache, xh0, lp0, cache.init_state(B))
        leaves = [state.k, state.v, state.log_w] = [x.clone().requires_grad_() for x in (state.k, state.v, state.log_w)]
        xh, lp = _inputs(B, L, gen, ties)
        xh.requires_grad_(), lp.requires_grad_()
        out, new = cache(xh, lp, state=state, return_state=True)
        ref, ref_new = _stepped(cache, xh, lp, state)
        torch.testing.assert_close(out, ref)
        for name in ("valid", "pos", "t"):
            assert torch.equal(getattr(new, name), getattr(ref_new, name)), name
        for name in ("k", "v", "log_w"):
            torch.testing.assert_close(getattr(new, name), getattr(ref_new, name))
        g = torch.randn_like(out)
        wrt = [xh, lp] + [x for x in leaves if x.numel()]
        for a, b in zip(torch.autograd.grad(out, wrt, g, retain_graph=True), torch.autograd.grad(ref, wrt, g)):
            torch.testing.assert_close(a, b)


def test_prefix_lists_held_entries_by_position():
    state = CacheState(k=torch.arange(4.0).view(1, 4, 1, 1), v=torch.zeros(1, 4, 1, 1),
                       log_w=torch.tensor([[0.1, 0.2, 0.3, 0.0]]), valid=torch.tensor([[True, True, True, False]]),
                       pos=torch.tensor([[7, 2, 5, -1]]), t=torch.tensor(8), slots=4)
    p = state_as_prefix(state)
    assert p.pos.tolist() == [[-1, 2, 5, 7]] and p.slot.tolist() == [[3, 1, 2, 0]]
    assert p.eligible.tolist() == [[False, True, True, True]] and p.k.flatten().tolist() == [3.0, 1.0, 2.0, 0.0]

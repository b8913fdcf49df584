"""MIPTBlock (minimipt.blocks): the layer and the cache joined in one residual block."""

from __future__ import annotations

import torch

from minimipt.blocks import MIPTBlock
from minimipt.config import MIPTConfig


def test_gate_gets_gradient_through_cache_alone():
    """A loss on the cache's read-out alone reaches the measurement gate W_p (via log w in the logits)."""
    torch.manual_seed(0)
    D = 8
    block = MIPTBlock(MIPTConfig(d_model=D, cache_slots=2, cache_heads=2))
    x = torch.randn(2, 9, D)
    xh = block.norm(x)
    _, aux = block.mixer(xh, return_aux=True)
    block.cache(xh, aux.log_p).square().sum().backward()
    grad = block.mixer.in_proj.weight.grad  # rows [z | θ | u_re | u_im]
    assert grad[:D].abs().sum() > 0  # the gate rows get a gradient
    assert grad[D:].abs().sum() == 0  # nothing else of the scan does: it went through p only

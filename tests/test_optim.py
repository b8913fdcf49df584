"""minimipt.optim: parameter groups with and without weight decay."""

from __future__ import annotations

import pytest

from minimipt import MIPTLayer, param_groups


def test_param_groups_split(capsys):
    layer = MIPTLayer(8, phase="static")
    groups = param_groups(layer, 0.1)
    assert "weight decay 0.1" in capsys.readouterr().out
    decay = {id(p) for p in groups[0]["params"]}
    assert id(layer.in_proj.weight) in decay
    assert id(layer.theta) not in decay and id(layer.in_proj.bias) not in decay
    assert groups[1]["weight_decay"] == 0.0
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in layer.parameters())
    with pytest.raises(ValueError):
        param_groups(layer, -1.0)

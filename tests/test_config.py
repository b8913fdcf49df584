"""minimipt.config: one config object builds a model, round-trips JSON, and refuses bad values."""

from __future__ import annotations

import json

import pytest
import torch

from minimipt import MIPTLM, MIPTClassifier, MIPTConfig, TransformerClassifier, TransformerConfig, TransformerLM


@pytest.mark.parametrize("cls", [MIPTConfig, TransformerConfig])
def test_dict_round_trip_through_json(cls):
    c = cls(vocab_size=50, d_model=32, n_layers=3, n_classes=4, pad_id=0)
    assert cls.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.replace(d_model=64).d_model == 64 and c.d_model == 32


def test_keyword_and_config_construction_build_the_same_model():
    torch.manual_seed(0)
    a = MIPTLM(50, 16, 2, cache_slots=4, cache_heads=2, phase="static")
    torch.manual_seed(0)
    b = MIPTLM(MIPTConfig(vocab_size=50, d_model=16, n_layers=2, cache_slots=4, cache_heads=2, phase="static"))
    assert a.config == b.config
    tokens = torch.randint(0, 50, (2, 7))
    assert torch.equal(a(tokens), b(tokens))
    # the config is all it takes to rebuild the model
    twin = MIPTLM(MIPTConfig.from_dict(a.config.to_dict()))
    twin.load_state_dict(a.state_dict())
    assert torch.equal(twin(tokens), a(tokens))


def test_classifier_keyword_defaults_and_config_fields():
    clf = MIPTClassifier(50, 3, 16, 1)
    assert (clf.config.n_classes, clf.config.pad_id, clf.config.pos_embedding, clf.config.max_len) == (3, 0, "learned", 512)
    tc = TransformerClassifier(50, 3, 16, 1, n_heads=2)
    assert (tc.config.n_classes, tc.config.pad_id, tc.config.max_len) == (3, 0, 512)
    assert TransformerLM(TransformerConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2)).config.n_classes is None


@pytest.mark.parametrize("make, match", [
    (lambda: MIPTConfig(d_model=0), r"MIPTConfig\.d_model must be a positive int; got 0"),
    (lambda: MIPTConfig(d_model=30, cache_heads=4), r"cache_heads must be a positive int dividing d_model=30; got 4"),
    (lambda: MIPTConfig(cache_slots=-1), r"cache_slots must be .*; got -1"),
    (lambda: MIPTConfig(p_init=(0.5, 0.1)), r"p_init must be .*0 < low <= high < 1; got \(0\.5, 0\.1\)"),
    (lambda: MIPTConfig(dropout=float("nan")), r"dropout must be a number in \[0, 1\); got nan"),
    (lambda: MIPTConfig(phase="rotary"), r"phase must be 'input' .*; got 'rotary'"),
    (lambda: MIPTConfig(d_state=64, d_model=32), r"d_state must be None or d_model=32 with readout='real'"),
    (lambda: MIPTConfig(cache_slots=None, cache_method="blocked"), r"cache_method must be 'auto' or 'dense'"),
    (lambda: MIPTConfig(fused_mixer="yes"), r"fused_mixer must be True or False; got 'yes'"),
    (lambda: MIPTConfig.from_dict({"d_modle": 3}), r"unknown MIPTConfig keys \['d_modle'\]; valid keys: \["),
    (lambda: TransformerConfig(n_heads=3), r"n_heads must be a positive int dividing d_model=128; got 3"),
    (lambda: TransformerConfig(attention="flash"), r"attention must be 'sdpa' .*; got 'flash'"),
    (lambda: MIPTLM(MIPTConfig(), d_model=8), r"either a MIPTConfig or its fields"),
    (lambda: MIPTLM(50, 16, 2, 0, 4), r"at most 4 positional arguments"),
    (lambda: MIPTLM(MIPTConfig(n_classes=3)), r"n_classes must be None"),
    (lambda: MIPTClassifier(MIPTConfig()), r"needs MIPTConfig\.n_classes"),
])
def test_bad_values_name_the_field_and_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()

"""The training configuration (minimipt.train.config): values checked when made, with messages naming
the field and the value; JSON round trips; every model field reachable from ``train --set``."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from minimipt import MIPTConfig, TransformerConfig
from minimipt.train import make_config
from minimipt.train.tasks import model_config

pytestmark = pytest.mark.usefixtures("data_home")


def test_config_errors():
    with pytest.raises(ValueError, match="task must be"):
        make_config("mnist")
    with pytest.raises(ValueError, match="preset must be"):
        make_config("needle", "huge")
    with pytest.raises(ValueError, match="unknown config keys"):
        make_config("needle", "smoke", widht=3)
    with pytest.raises(ValueError, match="lr must be"):
        make_config("needle", "smoke", lr=0)


@pytest.mark.parametrize("key,value,text", [
    ("epochs", 0, "TrainConfig.epochs must be a finite number > 0; got 0"),
    ("max_steps", 0, "TrainConfig.max_steps must be None (use epochs) or a positive int; got 0"),
    ("eval_every", 0, "TrainConfig.eval_every must be a positive int"),
    ("grad_clip", float("nan"), "TrainConfig.grad_clip must be a finite number >= 0 (0: no clipping); got nan"),
    ("amp", "maybe", "TrainConfig.amp must be true or false; got 'maybe'"),
    ("batch_size", 2.0, "TrainConfig.batch_size must be a positive int; got 2.0"),
    ("warmup_frac", 0, "TrainConfig.warmup_frac must be a number in (0, 1)"),
    ("device", "bogus", "TrainConfig.device must be None"),
    ("extra", {"n_needle": 2}, "TrainConfig.extra has unknown keys ['n_needle'] for task 'needle'; valid keys: "
                               "['n_needles', 'n_distractors', 'needle_range', 'n_noise']"),
    ("extra", {"n_needles": 0}, "n_needles must be an int >= 1, got 0"),
    ("extra", {"needle_range": 0.5}, "TrainConfig.extra['needle_range'] must be a pair"),
    ("n_heads", 3, "TrainConfig.n_heads=3 is refused by the model: MIPTConfig.cache_heads must be a positive int "
                   "dividing d_model=32; got 3"),
    ("seq_len", 0, "TrainConfig.seq_len must be a positive int; got 0"),
    ("attention", "flash", "TrainConfig.attention='flash' is refused by the model"),  # checked for MIPT runs too
    ("train_split", "train", "TrainConfig.train_split, eval_split must be one of the pairs"),  # with sample-eval
])
def test_config_values_are_checked_when_made(key, value, text):
    """Each message names the field and the value; a model field is checked by the model config."""
    task = "ag_news" if key == "train_split" else "needle"
    with pytest.raises(ValueError) as err:
        make_config(task, "smoke", **{key: value})
    assert text in str(err.value)


def test_config_round_trips_and_normalises():
    cfg = make_config("needle", "smoke", p_init=(0.01, 0.2), eval_lengths=(128,), device=torch.device("cpu"),
                      extra={"n_distractors": 2})
    assert cfg.p_init == [0.01, 0.2] and cfg.eval_lengths == [128] and cfg.device == "cpu"
    assert make_config(**{k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items()}) == cfg


def test_every_model_field_can_be_set_from_the_training_config():
    """Each MIPTConfig/TransformerConfig field is reachable from `train --set` (the task supplies the
    vocabulary, the classes, the pad id and the length)."""
    from_task = {"vocab_size", "n_classes", "pad_id", "max_len", "causal"}
    non_default = {"cache_slots": 4, "write_threshold": 0.01, "write_penalty": 0.1, "cache_method": "dense",
                   "d_state": 24, "phase": "static", "readout": "proj", "scan_method": "sequential",
                   "p_init": [0.01, 0.2], "theta_init": 1.0, "fused_mixer": True, "ffn_mult": 2, "dropout": 0.1,
                   "pos_embedding": "none", "d_model": 16, "n_layers": 3, "n_heads": 2, "attention": "naive"}
    cfg = make_config("wikitext", "smoke", **non_default)
    for model, cls in (("mipt", MIPTConfig), ("transformer", TransformerConfig)):
        mc = model_config(cfg.replace(model=model), vocab_size=64, n_classes=None)
        for f in dataclasses.fields(cls):
            if f.name in from_task:
                continue
            want = non_default.get("n_heads" if f.name == "cache_heads" else f.name)
            got = list(getattr(mc, f.name)) if f.name == "p_init" else getattr(mc, f.name)
            assert got == want, (model, f.name, got, want)
    assert math.isclose(model_config(make_config("needle", "smoke"), 8, 4).theta_init, math.pi / 2)

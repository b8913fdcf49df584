"""Property-based tests (hypothesis) of the models and the training config.

Every call with generated input either equals a reference or raises ``ValueError``, never another
exception:

* the four models on token tensors of random shape (0-sized included), dtype, memory layout
  (contiguous, transposed storage, strided, broadcast) and ids (the extremes 0 and V - 1, and ids out
  of range); references: the token-by-token ``step`` path (language models), each row alone as a
  contiguous int64 batch, and a float64 twin with the same weights;
* ``make_config`` with a random value for a random field: a valid config that round-trips, or a
  ``ValueError`` naming the field.

The scan's own property tests live with the scan.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import minimipt
from minimipt.train import TrainConfig, make_config

V, MAX_LEN = 11, 12
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _build() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    models = {
        "mipt_lm": minimipt.MIPTLM(V, 8, 1),
        "mipt_lm_cache": minimipt.MIPTLM(V, 8, 2, cache_slots=2, pos_embedding="learned", max_len=MAX_LEN),
        "transformer_lm": minimipt.TransformerLM(V, 8, 1, n_heads=2, max_len=MAX_LEN),
        "mipt_classifier": minimipt.MIPTClassifier(V, 3, 8, 1, cache_slots=2, max_len=MAX_LEN),
        "transformer_classifier": minimipt.TransformerClassifier(V, 3, 8, 1, n_heads=2, max_len=MAX_LEN),
    }
    return {k: m.eval() for k, m in models.items()}


MODELS = _build()
TWINS = {}  # float64 copies with the same weights, built on first use


def _twin(name: str) -> torch.nn.Module:
    if name not in TWINS:
        m = MODELS[name]
        twin = type(m)(m.config)
        twin.load_state_dict(m.state_dict())
        TWINS[name] = twin.double().eval()
    return TWINS[name]


DTYPES = [torch.int64, torch.int32, torch.int16, torch.uint8, torch.float32, torch.bool]
LAYOUTS = ["contiguous", "transposed", "strided", "broadcast"]


@st.composite
def token_inputs(draw):
    """Mostly valid batches (ids in [0, V), the index dtypes), with some of every kind of fault."""
    # hypothesis favours a strategy's first values: the sizes that make a valid call come first
    B, L = draw(st.sampled_from([2, 1, 3, 0])), draw(st.sampled_from([*range(1, MAX_LEN + 3), 0]))
    ids = draw(st.lists(st.sampled_from([0, V - 1]) | st.integers(0, V - 1), min_size=B * L, max_size=B * L))
    ids = torch.tensor(ids, dtype=torch.int64).reshape(B, L)
    if B * L and draw(st.integers(0, 5)) == 5:  # one id out of range
        ids.view(-1)[draw(st.integers(0, B * L - 1))] = draw(st.sampled_from([-1, -2**40, V, V + 7]))
    dtype = draw(st.sampled_from(DTYPES[:2]) if draw(st.integers(0, 2)) else st.sampled_from(DTYPES))
    return ids, dtype, draw(st.sampled_from(LAYOUTS))


def _lay_out(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout."""
    if layout == "transposed":
        return x.t().contiguous().t()
    if layout == "strided":
        wide = torch.zeros(x.shape[0], 2 * x.shape[1], dtype=x.dtype)
        wide[:, ::2] = x
        return wide[:, ::2]
    if layout == "broadcast" and x.shape[0] > 0:
        return x[:1].expand(x.shape[0], -1)
    return x


def _valid(name: str, ids: torch.Tensor, dtype: torch.dtype) -> bool:
    model = MODELS[name]
    B, L = ids.shape
    if B == 0 or L == 0 or dtype not in (torch.int64, torch.int32):
        return False
    if bool(((ids < 0) | (ids >= V)).any()):
        return False
    if getattr(model.embed, "pos", None) is not None and L > MAX_LEN:
        return False
    if getattr(model, "pad_id", None) is not None and bool((ids == model.pad_id).all(1).any()):
        return False  # a row of padding only has nothing to pool
    return True


@SETTINGS
@given(name=st.sampled_from(sorted(MODELS)), inputs=token_inputs())
def test_models_equal_their_references_or_raise_value_error(name, inputs):
    ids, dtype, layout = inputs
    if layout == "broadcast" and ids.shape[0] > 0:
        ids = ids[:1].expand(ids.shape[0], -1).clone()
    x = _lay_out(ids.to(dtype), layout)
    ids = x.long()  # the ids as the model sees them (a cast to a narrow dtype wraps)
    model = MODELS[name]
    event(f"valid={_valid(name, ids, dtype)}")
    if not _valid(name, ids, dtype):
        with pytest.raises(ValueError):
            with torch.no_grad():
                model(x)
        return
    with torch.no_grad():
        out = model(x)  # (B, L, V) or (B, C)
        rows = torch.cat([model(ids[i:i + 1].contiguous()) for i in range(ids.shape[0])])
        torch.testing.assert_close(out, rows, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.double(), _twin(name)(ids), rtol=1e-4, atol=1e-4)
        if hasattr(model, "step"):  # the streaming path, one token at a time
            state, steps = model.init_state(ids.shape[0]), []
            for t in range(ids.shape[1]):
                logits, state = model.step(x[:, t], state)
                steps.append(logits)
            torch.testing.assert_close(out, torch.stack(steps, 1), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# the training config

FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("task", "preset")]
VALUES = (st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0, 1, 2, 64, 10**9])
          | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 0.5, 1.0, 1e-3, -1e-3])
          | st.text(max_size=6) | st.sampled_from(["cpu", "cuda:0", "auto", "none", "mipt", "transformer"])
          | st.lists(st.integers(-1, 600) | st.floats(0, 1), max_size=3)
          | st.dictionaries(st.sampled_from(["n_needles", "n_noise", "typo"]), st.integers(-1, 3), max_size=2))


@settings(SETTINGS, max_examples=300)
@given(task=st.sampled_from(["needle", "wikitext", "ag_news"]), key=st.sampled_from(FIELDS), value=VALUES)
def test_train_config_is_valid_or_a_value_error_naming_the_key(task, key, value):
    try:
        cfg = make_config(task, "smoke", **{key: value})
    except ValueError as err:
        text = str(err)
        named = key in text or (key == "extra" and "n_needles" in text)  # a task option names itself
        assert named, f"{key}={value!r}: {text}"
        return
    assert cfg.to_dict() == cfg.replace().to_dict()
    annotation = {f.name: f.type for f in dataclasses.fields(TrainConfig)}[key]
    assert _conforms(getattr(cfg, key), annotation), f"{key}={value!r} accepted for a field of type {annotation}"


def _conforms(v, annotation: str) -> bool:
    """Whether ``v`` has the type a TrainConfig annotation declares (numbers finite)."""
    ok = []
    for part in annotation.split(" | "):
        if part == "None":
            ok.append(v is None)
        elif part == "bool":
            ok.append(isinstance(v, bool))
        elif part == "int":
            ok.append(isinstance(v, int) and not isinstance(v, bool))
        elif part == "float":
            ok.append(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        elif part == "str":
            ok.append(isinstance(v, str))
        elif part.startswith("list["):
            inner = part[5:-1]
            ok.append(isinstance(v, list) and all(_conforms(x, inner) for x in v))
        elif part.startswith("dict["):
            ok.append(isinstance(v, dict))
        else:
            raise AssertionError(f"unknown annotation {part!r}")
    return any(ok)

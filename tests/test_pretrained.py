"""save_pretrained / from_pretrained for every model, and the cache_slots record in the weights."""

from __future__ import annotations

import json
import struct

import pytest
import torch

import minimipt
from minimipt import MIPTLM, MIPTClassifier, TransformerClassifier, TransformerLM

V = 31


def _models():
    torch.manual_seed(0)
    return [MIPTLM(V, 16, 2, cache_slots=4, cache_heads=2, write_threshold=0.02, phase="static"),
            MIPTClassifier(V, 3, 16, 2, cache_slots=None, cache_heads=2, max_len=32),
            TransformerLM(V, 16, 2, max_len=32),
            TransformerClassifier(V, 3, 16, 2, max_len=32)]


@pytest.mark.parametrize("index", range(4))
def test_round_trip_through_a_folder(tmp_path, index):
    model = _models()[index].eval()
    folder = model.save_pretrained(tmp_path / "m")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["class"] == type(model).__name__ and meta["config"] == model.config.to_dict()
    raw = (folder / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])  # the safetensors layout: no pickle
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    tokens = torch.randint(1, V, (2, 9))
    for twin in (type(model).from_pretrained(folder), minimipt.from_pretrained(folder)):
        assert type(twin) is type(model) and twin.config == model.config and not twin.training
        with torch.no_grad():
            assert torch.equal(twin(tokens), model(tokens))


def test_config_changes_at_load_time(tmp_path):
    model = _models()[0].eval()
    model.save_pretrained(tmp_path)
    twin = MIPTLM.from_pretrained(tmp_path, scan_method="sequential")
    assert twin.config.scan_method == "sequential"
    tokens = torch.randint(0, V, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(twin(tokens), model(tokens), atol=1e-5, rtol=1e-5)


def test_weights_of_another_cache_size_are_refused(tmp_path):
    torch.manual_seed(0)
    k4 = MIPTLM(V, 16, 2, cache_slots=4, cache_heads=2)
    k4.save_pretrained(tmp_path / "k4")
    with pytest.raises(ValueError, match="cache_slots=4"):
        MIPTLM.from_pretrained(tmp_path / "k4", cache_slots=64)
    # plain load_state_dict, and a training checkpoint read back with weights_only=True
    torch.save({"model": k4.state_dict()}, tmp_path / "checkpoint.pt")
    sd = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    for other in (64, None, 0):
        model = MIPTLM(V, 16, 2, cache_slots=other, cache_heads=2)
        before = [p.detach().clone() for p in model.parameters()]
        with pytest.raises(ValueError, match=f"trained with cache_slots=4.*built with cache_slots={other}"):
            model.load_state_dict(sd)
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # refused before any copy
    unbounded = MIPTLM(V, 16, 2, cache_slots=None, cache_heads=2).state_dict()
    with pytest.raises(ValueError, match="cache_slots=None"):
        MIPTLM(V, 16, 2, cache_slots=4, cache_heads=2).load_state_dict(unbounded)
    MIPTLM(V, 16, 2, cache_slots=4, cache_heads=2).load_state_dict(sd)  # the same K loads


def test_weights_without_the_record_still_load():
    """State dicts written before the record existed cannot be checked; they load as before."""
    torch.manual_seed(0)
    sd = MIPTLM(V, 16, 1, cache_slots=2, cache_heads=2).state_dict()
    del sd["_extra_state"]
    MIPTLM(V, 16, 1, cache_slots=2, cache_heads=2).load_state_dict(sd)


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MIPTLM.from_pretrained(tmp_path / "nothing")
    _models()[1].save_pretrained(tmp_path / "clf")
    with pytest.raises(ValueError, match="holds a MIPTClassifier"):
        MIPTLM.from_pretrained(tmp_path / "clf")
    (tmp_path / "clf" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MIPTClassifier.from_pretrained(tmp_path / "clf")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"class": "GPT2", "config": {}}))
    with pytest.raises(ValueError, match="known model classes"):
        minimipt.from_pretrained(tmp_path / "odd")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="folder"):
        _models()[0].save_pretrained(tmp_path / "file")

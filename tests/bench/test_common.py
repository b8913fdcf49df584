"""What the benchmarks share: the language models they compare and the decoder timer."""

from __future__ import annotations

import pytest
import torch

from minimipt.bench.common import VOCAB, lm_makers, median_ms, time_decoder


def test_lm_makers_build_each_named_model():
    makers = lm_makers(["mipt", "mipt-K4", "mipt-K4-blocked", "sdpa"], 16, 1, 32)
    models = {name: make() for name, make in makers.items()}
    assert models["mipt"].cache_slots == 0 and models["mipt-K4"].cache_slots == 4
    assert models["mipt-K4-blocked"].config.cache_method == "blocked"
    assert models["mipt-K4"].config.cache_method == "auto"
    assert all(m.vocab_size == VOCAB for m in models.values())


@pytest.mark.parametrize("name", ["gpt", "mipt-K", "mipt-Kx"])
def test_lm_makers_refuse_unknown_names(name):
    with pytest.raises(ValueError, match="unknown model"):
        lm_makers([name], 16, 1, 32)


def test_time_decoder_steps_every_fed_token():
    model = lm_makers(["mipt"], 16, 1, 32)["mipt"]().eval()
    _, state = model(torch.randint(0, VOCAB, (2, 8)), return_state=True)
    feed = torch.randint(0, VOCAB, (5, 2))
    with torch.no_grad():
        dec, setup_s, ms = time_decoder(model, state, "eager", feed, torch.device("cpu"), repeats=2)
    assert dec.mode == "eager" and setup_s > 0 and ms > 0
    assert median_ms(lambda: None, torch.device("cpu"), 3) >= 0

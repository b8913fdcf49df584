"""WikiText (minimipt.data.wikitext): the bundled sample's splits and the word count of perplexity per word."""

from __future__ import annotations

import minimipt.data as D
from minimipt.data import wikitext


def test_wikitext_sample_splits():
    parts = {s: D.load_wikitext("wikitext-2", f"sample-{s}") for s in ("train", "valid", "test")}
    for s, p in parts.items():
        assert p.text.startswith(" \n = ") and p.text.endswith(" \n")
        assert p.n_words == D.count_words(p.text) > 1000
    assert parts["valid"].text.splitlines()[1] == " = Homarus gammarus = "  # first valid article


def test_wikitext_count_words_convention():
    assert wikitext.count_words(" \n = T = \n a , b \n") == 0 + 3 + 3 + 3
    assert wikitext.count_words("a b", eos_per_line=False) == 2

"""The data package's loaders (minimipt.data): the splits smoke mode asks for, and bad arguments that
name themselves."""

from __future__ import annotations

import pytest

import minimipt.data as D


def test_default_splits_follow_smoke_mode():
    assert D.default_splits("ag_news", smoke=True) == ("sample-train", "sample-eval")
    assert D.default_splits("ag_news", smoke=False) == ("train", "test")
    assert D.default_splits("wikitext") == ("sample-train", "sample-valid", "sample-test")  # conftest: smoke
    with pytest.raises(ValueError, match="dataset"):
        D.default_splits("imdb")


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="split='dev'"):
        D.load_ag_news("dev")
    with pytest.raises(ValueError, match="name='wikitext-3'"):
        D.load_wikitext("wikitext-3", "train")
    with pytest.raises(ValueError, match="bundled"):
        D.load_wikitext("wikitext-103", "sample-train")
    with pytest.raises(ValueError, match="root"):
        D.load_ag_news("sample", root="/tmp")

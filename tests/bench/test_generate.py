"""`python -m minimipt.bench generate` in smoke mode on the CPU: the results file and its checks."""

from __future__ import annotations

import json

import pytest

from minimipt.bench.__main__ import main


def test_smoke_run_writes_every_row(tmp_path, capsys):
    out = tmp_path / "generate.json"
    assert main(["generate", "--d-model", "16", "--layers", "1", "--models", "mipt,mipt-K4", "--repeats", "1",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["config"]["smoke"] and res["config"]["prompts"] == [16, 64] and res["git_commit"]
    assert [(r["model"], r["n"]) for r in res["ttft"]] == [("mipt", 16), ("mipt", 64), ("mipt-K4", 16), ("mipt-K4", 64)]
    for r in res["ttft"]:
        assert r["parallel_ms"] > 0 and r["step_eager_ms"] > 0 and r["same_first_token_eager"]
        assert r["max_logit_diff_eager"] < 1e-4
    assert [(r["model"], r["batch"], r["mode"]) for r in res["decode"]] == [
        (m, b, "eager") for m in ("mipt", "mipt-K4") for b in (1, 4)]
    assert all(r["ms_per_token"] > 0 and r["decode_mode"] == "eager" for r in res["decode"])
    assert "time to first token" in capsys.readouterr().out


def test_unknown_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        main(["generate", "--models", "gpt", "--out", str(tmp_path / "x.json")])

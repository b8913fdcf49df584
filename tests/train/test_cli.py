"""`python -m minimipt train` (minimipt.train.cli) runs a task from the command line. Its usage errors:
tests/test_faults.py; its help: tests/test_cli.py."""

from __future__ import annotations

import json


def test_train_mqar_from_the_command_line(tmp_path):
    from minimipt.__main__ import main

    out = tmp_path / "cli"
    assert main(["train", "mqar", "--model", "transformer", "--out", str(out), "--quiet",
                 "--set", "max_steps=2", "--set", "n_train=32", "--set", "n_val=8", "--set", "n_test=8"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["task"] == "mqar" and res["complete"]

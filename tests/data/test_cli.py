"""`python -m minimipt data` (minimipt.data.cli) in a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("tokenizers")


def test_command_line(data_root):
    env = {**os.environ, "MINIMIPT_DATA": str(data_root)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "minimipt", "data", *args], env=env,
                                       capture_output=True, text=True, cwd=data_root)
    out = run("prepare", "ag_news-sample", "--quiet", "--split-seed", "2")
    assert out.returncode == 0, out.stderr
    assert (data_root / "prepared" / "ag_news-sample-seed2" / "meta.json").is_file()
    out = run("prepare", "not-a-dataset")
    assert out.returncode == 2 and "invalid choice" in out.stderr

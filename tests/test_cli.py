"""The command line explains itself: plain-text help, every option documented with its default."""

from __future__ import annotations

import argparse
import re

import pytest

from minimipt.__main__ import _load_commands, build_parser, main


def _parsers():
    _load_commands()
    top = build_parser()
    out = {"": top}

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out[f"{prefix}{name}".strip()] = sub
                    walk(sub, f"{prefix}{name} ")

    walk(top, "")
    return out


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0 and "``" not in text and ":func:" not in text
    assert "python -m minimipt train needle --preset smoke --out runs/needle" in text


@pytest.mark.parametrize("bench", ["", "scan", "scaling", "cache", "entry", "generate"])
def test_benchmark_help_is_plain_text(bench, capsys):
    from minimipt.bench.__main__ import main as bench_main

    with pytest.raises(SystemExit) as exit_:
        bench_main([bench, "--help"] if bench else ["--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0 and "python -m minimipt.bench" in text
    assert "``" not in text and not re.search(r":[a-z]+:`", text), text


def test_every_command_has_a_description_and_every_option_help():
    parsers = _parsers()
    assert {"train", "report", "data", "data prepare", "data verify", "info"} <= set(parsers)
    for name, parser in parsers.items():
        assert parser.description, f"`{name}` has no description"
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"`{name}` {action.option_strings or action.dest} has no help"


def test_train_help_shows_the_defaults():
    text = _parsers()["train"].format_help()
    for default in ("(default: mipt)", "(default: smoke)", "(default: 0)", "default: the preset's",
                    "default: MINIMIPT_DEVICE"):
        assert default in text, default
    assert "--overwrite" in text and "--resume" in text and "--debug" in text


def test_debug_is_accepted_before_and_after_the_command(capsys):
    assert main(["--debug", "info"]) == 0
    assert main(["info", "--debug"]) == 0

"""Command line: ``python -m minimipt <command> ...`` (also installed as ``minimipt``)."""

from __future__ import annotations

import argparse
import sys

from ._version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minimipt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"minimipt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="print versions, device and smoke mode")
    for register in _COMMANDS:
        register(sub)
    return parser


def _cmd_info(args: argparse.Namespace) -> int:
    from .env import setup

    setup(plots=False)
    return 0


# Subcommand modules add themselves here with a `register(subparsers)` function that sets
# `func` on its parser (see minimipt/data/cli.py, minimipt/train/cli.py).
_COMMANDS: list = []


def _load_commands() -> None:
    import importlib

    if _COMMANDS:  # already loaded in this process
        return
    for name in ("minimipt.data.cli", "minimipt.train.cli", "minimipt.course.report"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):  # that part is not written yet
                continue
            raise
        _COMMANDS.append(module.register)


def main(argv: list[str] | None = None) -> int:
    _load_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "info":
        return _cmd_info(args)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

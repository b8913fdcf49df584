"""Command line: ``python -m minimipt <command> ...`` (also installed as ``minimipt``).

Errors are one line on stderr: a usage error (an unknown option, a bad value) exits with status 2,
an error while a command runs (missing data, a corrupt file, a refused run folder, a diverged run)
with status 1. ``--debug`` shows the Python traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ._version import __version__

DESCRIPTION = """minimipt: train and evaluate MIPT-SSM (arXiv 2604.07716) and Transformer baselines,
prepare their data, and write the results report."""
EPILOG = """examples:
  python -m minimipt info
  python -m minimipt data prepare wikitext-2-sample
  python -m minimipt train needle --preset smoke --out runs/needle
  python -m minimipt train needle --preset smoke --out runs/needle --resume
  python -m minimipt report

Run `python -m minimipt COMMAND --help` for the options of a command."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (the full usage only with ``--debug``)."""

    debug = False  # set from the raw argv before parsing

    def error(self, message: str):
        if self.debug:
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see `{self.prog} --help`)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after an option's help unless the default is None or False, or the help
    already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if any(action.default is d for d in (None, False, argparse.SUPPRESS)) or "default" in text or action.required:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m minimipt", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"minimipt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="print versions, device and smoke mode",
                   description="Print the minimipt and torch versions, the device that would be used and "
                               "whether smoke mode (MINIMIPT_SMOKE) is on.")
    for register in _COMMANDS:
        register(sub)
    _finish(sub)
    return parser


def _finish(subparsers) -> None:
    """Every command's parser shows defaults and accepts ``--debug`` after the command too."""
    for p in subparsers.choices.values():
        p.formatter_class = _Formatter
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show Python tracebacks instead of one-line errors")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _finish(action)


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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"minimipt: warning: {_one_line(message)}", file=sys.stderr if file is None else file)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _Parser.debug = "--debug" in argv
    _load_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "info":
        return _cmd_info(args)
    try:
        with warnings.catch_warnings():
            if not args.debug:  # one line each, without the source line Python shows
                warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except argparse.ArgumentError as err:  # a bad option value found by the command itself
        if args.debug:
            raise
        prog = f"{parser.prog} {args.command}"
        print(f"{prog}: error: {_one_line(err)} (see `{prog} --help`)", file=sys.stderr)
        return 2
    except (ValueError, OSError, FloatingPointError) as err:  # bad input, files, a diverged run
        if args.debug:
            raise
        print(f"minimipt: error: {_one_line(err) or type(err).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("minimipt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``python -m minimipt.bench <benchmark> [options]``; ``--help`` lists the benchmarks."""

from __future__ import annotations

import argparse
import re
import sys


def plain(doc: str) -> str:
    """A docstring as plain text for ``--help``: ``code`` becomes `code`, and a cross-reference such as
    :class:`~minimipt.decoding.Decoder` its name (the last part after ``~``, else the whole path)."""
    doc = re.sub(r":[a-z]+:`(~?)([^`]+)`", lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", doc)
    return doc.replace("``", "`")


def main(argv: list[str] | None = None) -> int:
    from . import cache, entry, generate, scaling, scan

    benches = {"scan": scan, "scaling": scaling, "generate": generate, "cache": cache, "entry": entry}
    parser = argparse.ArgumentParser(prog="python -m minimipt.bench", description=plain(__doc__))
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, module in benches.items():
        module.add_arguments(sub.add_parser(name, help=plain(module.__doc__.splitlines()[0]),
                                            description=plain(module.__doc__),
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    return int(benches[args.bench].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m minimipt.bench <benchmark> [options]``; ``--help`` lists the benchmarks."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from . import cache, entry, generate, scaling, scan

    benches = {"scan": scan, "scaling": scaling, "generate": generate, "cache": cache, "entry": entry}
    parser = argparse.ArgumentParser(prog="python -m minimipt.bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, module in benches.items():
        module.add_arguments(sub.add_parser(name, help=module.__doc__.splitlines()[0],
                                            description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    return int(benches[args.bench].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

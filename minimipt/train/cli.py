"""``python -m minimipt train <task> --model mipt|transformer --preset smoke|offline|full ...``"""

from __future__ import annotations

import argparse

from .config import TASKS, make_config, parse_override


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model on ag_news, needle or wikitext",
                              description="Train one model; writes OUT/results.json and OUT/checkpoint.pt.")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--model", choices=("mipt", "transformer"), default="mipt")
    p.add_argument("--preset", choices=("smoke", "offline", "full"), default="smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder (results.json, checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop cleanly after this many minutes (resume later with --resume)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--cache-slots", default=None,
                   help="MIPT cache slots: an int, 0 (no cache) or 'none' (unbounded)")
    p.add_argument("--data-root", default=None, help="folder with the canonical raw data files")
    p.add_argument("--device", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field (repeatable), e.g. --set d_model=256")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .loop import train

    overrides = dict(parse_override(s) for s in args.set)
    if args.lr is not None:
        overrides["lr"] = args.lr
    if args.cache_slots is not None:
        overrides["cache_slots"] = None if args.cache_slots.lower() in ("none", "null", "inf") else int(args.cache_slots)
    if args.data_root is not None:
        overrides["data_root"] = args.data_root
    if args.device is not None:
        overrides["device"] = args.device
    for key in ("task", "preset", "model", "seed"):
        if key in overrides:
            raise ValueError(f"set {key} with its own option (--{key} / positional), not with --set")
    cfg = make_config(args.task, args.preset, model=args.model, seed=args.seed, **overrides)
    res = train(cfg, args.out, resume=args.resume, max_minutes=args.max_minutes, progress=not args.quiet)
    return 0 if res["complete"] or args.max_minutes else 1

"""``python -m minimipt train <task> --model mipt|transformer --preset smoke|offline|full --out DIR ...``"""

from __future__ import annotations

import argparse
import math

from .config import TASKS, make_config, parse_override


def _cache_slots(text: str) -> int | None:
    if text.strip().lower() in ("none", "null", "inf"):
        return None
    try:
        k = int(text)
    except ValueError:
        k = -1
    if k < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0 or 'none'; got {text!r}")
    return k


def _positive(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0; got {text!r}")
    return x


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model on ag_news, needle or wikitext",
        description="Train one model and write OUT/results.json (config, seed, git commit, versions, hardware, "
                    "wall time, training curve, final metrics) and OUT/checkpoint.pt (with its sha256 in "
                    "OUT/checkpoint.pt.sha256). OUT is locked while the run writes (OUT/run.lock); a folder that "
                    "holds another run is refused unless --resume or --overwrite. Any TrainConfig field can be "
                    "set with --set KEY=VALUE (VALUE is read as JSON when it parses).")
    p.add_argument("task", choices=TASKS, help="what to train on")
    p.add_argument("--model", choices=("mipt", "transformer"), default="mipt", help="the model family")
    p.add_argument("--preset", choices=("smoke", "offline", "full"), default="smoke",
                   help="smoke: tiny, CPU, seconds; offline: the reference runs' protocols; full: the standard "
                        "protocols")
    p.add_argument("--seed", type=int, default=0, help="seed of the model initialisation and the batches")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (results.json, checkpoint.pt)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--resume", action="store_true", help="continue the run in OUT from its checkpoint")
    what.add_argument("--overwrite", action="store_true",
                      help="delete the run already in OUT (results, checkpoint) and start again")
    p.add_argument("--max-minutes", type=_positive, default=None,
                   help="stop cleanly after this many minutes (continue later with --resume); default: no limit")
    p.add_argument("--lr", type=_positive, default=None, help="peak learning rate; default: the preset's")
    p.add_argument("--cache-slots", type=_cache_slots, default=argparse.SUPPRESS,
                   help="MIPT cache slots: an int, 0 (no cache) or 'none' (unbounded); default: the preset's (0)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder with the canonical raw data files; default: MINIMIPT_DATA or data/")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N ...; default: MINIMIPT_DEVICE, else CUDA when present, else the CPU")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config field (repeatable), e.g. --set d_model=256 --set extra.n_needles=2; "
                        "default: the preset's values")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import env
    from .loop import train

    try:
        overrides: dict = {}
        for text in args.set:
            key, value = parse_override(text)
            if key.startswith("extra."):  # one task option: --set extra.n_needles=2
                overrides.setdefault("extra", {})[key[len("extra."):]] = value
            else:
                overrides[key] = value
        for key in ("task", "preset", "model", "seed"):
            if key in overrides:
                raise ValueError(f"set {key} with its own option (--{key} / positional), not with --set")
        for key, value in (("lr", args.lr), ("data_root", args.data_root), ("device", args.device)):
            if value is not None:
                overrides[key] = value
        if hasattr(args, "cache_slots"):  # given (None: unbounded)
            overrides["cache_slots"] = args.cache_slots
        cfg = make_config(args.task, args.preset, model=args.model, seed=args.seed, **overrides)
        env.get_device(cfg.device)
    except ValueError as err:
        raise argparse.ArgumentError(None, str(err)) from err
    res = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, max_minutes=args.max_minutes,
                progress=not args.quiet)
    return 0 if res["complete"] or args.max_minutes else 1

"""``python -m minimipt data ...``: prepare token arrays, verify raw files, rebuild the samples."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``data`` command (with ``prepare``, ``verify``, ``make-samples``) to the CLI."""
    from .prepared import PREPARE_TARGETS

    data = subparsers.add_parser("data", help="prepare token arrays, verify raw files, rebuild samples",
                                 description="Data for the course: tokenize a dataset once into token arrays "
                                             "(prepare), check canonical raw files against the published sha256 "
                                             "manifests (verify), rebuild the bundled samples (make-samples).")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = sub.add_parser("prepare", help="train a tokenizer and write token arrays under <data>/prepared/",
                       description="Train the dataset's tokenizer and write its token arrays, the tokenizer and "
                                   "meta.json (sizes and sha256 of every file) to <data>/prepared/<name>/. An "
                                   "up-to-date folder is left alone; one whose files differ from meta.json is "
                                   "prepared again. The *-sample targets use the bundled samples and need no "
                                   "download.")
    p.add_argument("dataset", choices=sorted(PREPARE_TARGETS), help="what to prepare")
    p.add_argument("--from", dest="src", metavar="DIR",
                   help="folder with the canonical raw files (ag_news_csv/, wikitext-2/ ...); "
                        "they are verified and copied to <data>/raw/")
    p.add_argument("--root", metavar="DIR", help="data folder to write to (default: MINIMIPT_DATA or data/)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="BPE vocabulary (WikiText); default: 16384, 2048 for wikitext-2-sample")
    p.add_argument("--min-count", type=int, default=2, help="word-level vocabulary cut (AG News)")
    p.add_argument("--split-seed", type=int, default=0, help="stratified draw of the ag_news-offline/-sample splits")
    p.add_argument("--force", action="store_true", help="prepare again even if up to date")
    p.add_argument("--no-copy", action="store_true", help="do not copy --from files to <data>/raw/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_prepare)

    v = sub.add_parser("verify", help="hash the canonical raw files found against data/manifests/",
                       description="Hash every canonical raw file found and compare it with the sha256 in "
                                   "data/manifests/; exits 1 if any differs.")
    v.add_argument("--from", dest="src", metavar="DIR", help="folder to check; default: the data folders")
    v.set_defaults(func=_verify)

    s = sub.add_parser("make-samples", help="rebuild data/samples/ from the canonical files",
                       description="Rebuild the bundled samples (data/samples/) from the canonical files and "
                                   "print their sha256.")
    s.add_argument("--from", dest="src", metavar="DIR", required=True, help="folder with the canonical raw files")
    s.add_argument("--out", metavar="DIR", default=None,
                   help="folder to write; default: the repository's data/samples/")
    s.set_defaults(func=_make_samples)


def _prepare(args: argparse.Namespace) -> int:
    from .prepared import prepare

    prepare(args.dataset, src=args.src, root=args.root, vocab_size=args.vocab_size,
            min_count=args.min_count, split_seed=args.split_seed, force=args.force,
            progress=not args.quiet, copy_raw=not args.no_copy)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from . import sources

    hashes = sources.known_hashes()
    keys = sorted(set(hashes) - {k for k in hashes if k.startswith("samples/")}) + [
        "wikitext-103/wiki.train.tokens"] + [f"wikitext-{n}-raw/wiki.{s}.raw" for n in ("2", "103")
                                             for s in ("train", "valid", "test")]
    bad = 0
    for base in sources.search_roots(args.src):
        for key in keys:
            hit = next((base / r for r in sources._candidates(key) if (base / r).is_file()), None)
            if hit is None:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    status = sources.verify_file(hit, key, hashes)
            except sources.ChecksumError:
                status, bad = "MISMATCH", bad + 1
            print(f"{status:10s} {hit}")
    return 1 if bad else 0


def _make_samples(args: argparse.Namespace) -> int:
    from . import sources
    from .samples import build_samples

    out = Path(args.out) if args.out else sources.SAMPLES_DIR
    for key, digest in build_samples(args.src, out).items():
        print(f"{digest}  {key}")
    return 0

"""The thin command line: one subcommand per verb, each builds a config and calls one library function.

Only this module prints results; the library logs and shows tqdm progress.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

EXIT_USAGE = 2


class NotBuiltYet(RuntimeError):
    """A verb whose library part does not exist yet."""


# --- synth -----------------------------------------------------------------------------------------------------
def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a learnable synthetic FashionDataset (same layout as the real one)",
                       description="Write a synthetic FashionDataset: img/*.jpg and split/*.txt in exactly the real "
                                   "layout and byte formats, with the real image sizes and class imbalance. Each "
                                   "attribute is visibly rendered, so a model can learn it. Deterministic for --seed.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to create (must not exist or be empty)")
    p.add_argument("--train", type=int, default=5000, help="train images (default: %(default)s, like the real set)")
    p.add_argument("--val", type=int, default=1000, help="val images (default: %(default)s)")
    p.add_argument("--test", type=int, default=1000, help="test images, unlabelled (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from .synth import SynthConfig, synthesize
    cfg = SynthConfig(train=args.train, val=args.val, test=args.test, seed=args.seed)
    out = synthesize(args.out_dir, cfg, overwrite=args.overwrite)
    print(f"wrote {args.train + args.val + args.test} images to {out}")
    return 0


# --- verbs that are not built yet ----------------------------------------------------------------------------
def _not_built(verb: str):
    def run(args) -> int:
        raise NotBuiltYet(f"'fastfashion {verb}' is not built yet")
    return run


def _add_placeholder(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_ + " (not built yet)", description=help_ + ". Not built yet.")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_not_built(verb))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastfashion",
        description="Validated WebDataset shards and an NVIDIA DALI pipeline (GPU decode + augmentation) feeding a "
                    "ResNet-18 multi-head trainer for the fashion-attribute task.",
        epilog="Typical flow: fastfashion synth data/ (or use the real FashionDataset) -> fastfashion shard data/ "
               "-> fastfashion train --shards shards/data --out runs/r1 -> fastfashion evaluate / predict.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only, no progress bars")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    _add_synth(sub)
    for verb, help_ in [
        ("shard", "pack a FashionDataset folder into validated WebDataset shards with DALI indexes and a manifest"),
        ("inspect", "print a shard set's manifest summary and write class-histogram PNGs"),
        ("train", "train the ResNet-18 multi-head model on a shard set"),
        ("evaluate", "evaluate a checkpoint on a labelled split"),
        ("predict", "write prediction.txt (submission format) for a split"),
        ("bench", "measure loader throughput of every backend side by side"),
        ("demo", "synth -> shard -> bench -> short train -> evaluate, on a small synthetic set"),
    ]:
        _add_placeholder(sub, verb, help_)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        return int(args.func(args) or 0)
    except NotBuiltYet as e:
        print(f"fastfashion: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fastfashion: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:  # typed library errors are ValueError/OSError subclasses
        if args.verbose:
            raise
        print(f"fastfashion {args.verb}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

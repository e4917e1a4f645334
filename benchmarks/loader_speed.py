"""Loader throughput side by side in ONE run: the seed-style baseline vs dali-cpu vs torch (not a test).

    python benchmarks/loader_speed.py --source ../shared/FashionDataset [--shards DIR] [--rounds 5 --batches 15]

Without ``--shards`` the source is sharded into a temporary folder first (never into the repository). Every loader
reads the train split, batch 64, full train augmentation. Rounds are interleaved (round r of every loader, then
round r+1); each round starts a fresh iterator (worker processes / DALI pipeline start in ``--warmup`` batches) and
closes it, so nothing prefetches in the background while another loader is timed. The median images/s over rounds
is printed with the ratio to the baseline.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time


def _endless(loader, epoch: int):
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _timed(loader, round_index: int, warmup: int, batches: int) -> float:
    """One round on a fresh iterator (workers/pipeline started in the warm-up), closed afterwards so that no
    loader keeps prefetching in the background while the next one is timed."""
    it = _endless(loader, round_index)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += len(next(it).labels)
    rate = n / (time.perf_counter() - t0)
    it.close()
    return rate


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, help="raw FashionDataset folder (for the baseline and sharding)")
    ap.add_argument("--shards", help="shard folder (default: shard --source into a temporary folder)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (baseline and torch)")
    ap.add_argument("--loaders", default="seed,dali-cpu,torch")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from fastfashion.loader import make_loader
    from fastfashion.torch_backend import make_seed_loader

    tmp = None
    shards = args.shards
    if shards is None:
        from fastfashion.shard import ShardConfig, write_shards
        tmp = tempfile.TemporaryDirectory(prefix="ff-bench-")
        shards = f"{tmp.name}/shards"
        write_shards(args.source, shards, ShardConfig(workers=args.workers))
    common = dict(batch_size=args.batch_size, image_size=args.image_size)
    makers = {
        "seed": lambda: make_seed_loader(args.source, "train", workers=args.workers, augment=True, **common),
        "dali-cpu": lambda: make_loader(shards, "train", backend="dali", device="cpu", augment=True, **common),
        "torch": lambda: make_loader(shards, "train", backend="torch", device="cpu", augment=True,
                                     workers=args.workers, **common),
    }
    names = args.loaders.split(",")
    loaders = {n: makers[n]() for n in names}
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            rates[n].append(_timed(loaders[n], r, args.warmup, args.batches))
        print(f"round {r + 1}: " + "  ".join(f"{n} {rates[n][-1]:.0f}" for n in names), flush=True)
    base = statistics.median(rates[names[0]])
    print(f"\n{'loader':<10} {'img/s':>7} {'x ' + names[0]:>9}   (median of {args.rounds} rounds, "
          f"batch {args.batch_size}, train augmentation)")
    for n in names:
        med = statistics.median(rates[n])
        print(f"{n:<10} {med:7.0f} {med / base:9.2f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

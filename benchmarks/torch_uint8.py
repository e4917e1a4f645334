"""The torch backend, float output (today's torchvision transform, ColorJitter included) against uint8 output
(decode_jpeg + uint8 geometry, colour as a matrix), side by side in one process, rounds interleaved.

    python benchmarks/torch_uint8.py --shards SHARD_DIR --batch-size 64 --image-size 224 --workers 2 --rounds 5

Variants, each a loader of the same split, batch size, image size, workers and full train augmentation:

* ``float``: finished float32 images from the workers;
* ``uint8 (loader)``: uint8 images + colour matrices, nothing applied;
* ``uint8 + finished() (end to end)``: the same, each batch finished on the CPU in the main process
  (:meth:`fastfashion.loading.base.Batch.finished`, what the model's input would do): comparable with ``float``.

Each round takes a fresh pass of every variant in turn (DataLoader workers start with each pass), drops
``--warmup`` batches, then times ``--batches`` batches. Prints per variant the median img/s over the rounds after
the first (a warm-up round), the spread and the ratio to ``float``, and the cost of ``finished()`` alone on one
delivered batch (no loader running). The machine's load average is printed with it: on a shared machine only the
ratios mean something.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from fastfashion.loading.loader import make_loader

VARIANTS = ("float", "uint8 (loader)", "uint8 + finished() (end to end)")


def _round(loader, finish: bool, warmup: int, batches: int) -> tuple[float, float]:
    """``(img/s, seconds in finished() per batch)`` of one fresh pass's ``batches`` batches after ``warmup``."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, in_finish, t0 = 0, 0.0, time.perf_counter()
    for _ in range(batches):
        b = next(it)
        if finish:
            t = time.perf_counter()
            b.finished()
            in_finish += time.perf_counter() - t
        n += len(b.labels)
    seconds = time.perf_counter() - t0
    del it  # ends the pass and its workers before the next variant starts
    return n / seconds, in_finish / batches


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", required=True, help="a shard folder (fastfashion shard)")
    p.add_argument("--split", default="train")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="rounds; the first is a warm-up, not counted")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches at the start of each pass")
    p.add_argument("--batches", type=int, default=20, help="timed batches per pass")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    common = dict(batch_size=args.batch_size, backend="torch", device="cpu", image_size=args.image_size,
                  workers=args.workers, augment=True)
    loaders = {"float": make_loader(args.shards, args.split, output="float", **common),
               "uint8": make_loader(args.shards, args.split, output="uint8", **common)}
    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    finish_in_pass: list[float] = []
    for r in range(args.rounds):
        for v in VARIANTS:
            rate, in_finish = _round(loaders["float" if v == "float" else "uint8"], v.endswith("(end to end)"),
                                     args.warmup, args.batches)
            if r > 0:
                rates[v].append(rate)
                if v.endswith("(end to end)"):
                    finish_in_pass.append(in_finish)
    batch = next(iter(loaders["uint8"]))
    alone = []
    for _ in range(7):
        t = time.perf_counter()
        batch.finished()
        alone.append(time.perf_counter() - t)
    for loader in loaders.values():
        loader.close()
    load_after = os.getloadavg()
    base = statistics.median(rates["float"])
    print(f"torch backend, {args.split} split, batch {args.batch_size}, {args.image_size} px, {args.workers} workers, "
          f"full augmentation; {args.rounds - 1} rounds x {args.batches} batches (after a warm-up round); "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    for v in VARIANTS:
        med = statistics.median(rates[v])
        print(f"  {v:<34} {med:7.1f} img/s  x{med / base:.2f}  rounds {[round(x, 1) for x in rates[v]]}")
    ms_alone, ms_pass = statistics.median(alone) * 1e3, statistics.median(finish_in_pass) * 1e3
    print(f"  finished() on the CPU: {ms_alone:.1f} ms per batch alone ({ms_alone / args.batch_size:.3f} ms/img, "
          f"{torch.get_num_threads()} torch threads), {ms_pass:.1f} ms per batch while the workers run")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "images_per_s": rates, "finished_ms_alone": ms_alone,
                       "finished_ms_in_pass": ms_pass, "loadavg": [load_before, load_after],
                       "cpus": os.cpu_count()}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

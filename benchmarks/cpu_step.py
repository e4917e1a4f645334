"""One training step of ResNet-18 on the CPU, precisions, memory formats and thread counts side by side (rounds
interleaved).

    python benchmarks/cpu_step.py --image-size 112 --batch-size 64 --rounds 3 --steps 5 --threads 1,2

Measures the trainer's own step (:class:`fastfashion.train.trainer.TrainStep`) on an in-memory batch, for each torch
thread count: fp32 with the model and batch contiguous (``--precision auto`` on the CPU), fp32 channels_last, and
``--precision amp`` (bf16 autocast, channels_last; fp32 on a CPU without native bf16). Prints the median images/s of
each and the ratio to the first.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from fastfashion.schema import FASHION_SCHEMA
from fastfashion.train.trainer import TrainStep, build_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round (after 2 untimed)")
    p.add_argument("--threads", default="1,2", help="torch intra-op thread counts to compare")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    dev = torch.device("cpu")
    weights = [torch.ones(k) for k in FASHION_SCHEMA.num_classes]
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.stack([torch.randint(0, k, (args.batch_size,)) for k in FASHION_SCHEMA.num_classes], 1)
    variants = [(t, fmt) for t in map(int, args.threads.split(","))
                for fmt in ("contiguous", "channels_last", "amp (bf16, channels_last)")]
    res: dict[str, list[float]] = {f"{t} threads, {fmt}": [] for t, fmt in variants}
    for _ in range(args.rounds):
        for t, fmt in variants:
            torch.set_num_threads(t)
            torch.manual_seed(0)
            precision = "amp" if fmt.startswith("amp") else "fp32"
            model = build_model(FASHION_SCHEMA, dev, precision=precision)
            step = TrainStep(model, weights, dev, precision=precision)
            images = x.to(memory_format=torch.channels_last) if fmt != "contiguous" else x
            if fmt == "channels_last":
                model = model.to(memory_format=torch.channels_last)
            for i in range(2 + args.steps):
                if i == 2:
                    t0 = time.perf_counter()
                step.run(images, y)
            res[f"{t} threads, {fmt}"].append(args.batch_size * args.steps / (time.perf_counter() - t0))
    first = statistics.median(next(iter(res.values())))
    for name, r in res.items():
        print(f"{name:<38} {statistics.median(r):7.1f} img/s  x{statistics.median(r) / first:.2f}  rounds "
              f"{[round(v, 1) for v in r]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "images_per_s": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

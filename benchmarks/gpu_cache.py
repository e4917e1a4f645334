"""What DALI's GPU decoder cache buys: full train epochs with the cache on vs off, side by side (CUDA only).

    python benchmarks/gpu_cache.py SHARD_DIR [--epochs 3] [--batch-size 64] [--image-size 224] [--json FILE]
                                   [--device cpu]

Both loaders read the same order; their epochs alternate (cache on, off, on, off ...). Epoch 0 fills the cache;
the median of the later epochs is compared. Called by benchmarks/gpu_check.sh. ``--device cpu`` (its dry run) reads
with dali-cpu twice (there is no cache to turn on): the same timing and output path, no figure worth reading.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shards")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--json")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = ap.parse_args()
    import torch

    from fastfashion import make_loader
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        print("gpu_cache.py: no CUDA device", file=sys.stderr)
        return 1
    loaders = {name: make_loader(args.shards, split="train", batch_size=args.batch_size,
                                 backend="dali-gpu" if gpu else "dali-cpu", device=args.device,
                                 image_size=args.image_size, gpu_cache=cache if gpu else None)
               for name, cache in (("cache on", True), ("cache off", False))}
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for epoch in range(args.epochs):
        for name, loader in loaders.items():
            loader.set_epoch(epoch)
            sync()
            t0 = time.perf_counter()
            n = 0
            for batch in loader:
                n += batch.images.shape[0]
            sync()
            times[name].append(n / (time.perf_counter() - t0))
    result = {name: {"images_per_s_per_epoch": v, "images_per_s_after_first": statistics.median(v[1:] or v)}
              for name, v in times.items()}
    on, off = (result[k]["images_per_s_after_first"] for k in ("cache on", "cache off"))
    result["speedup_after_first_epoch"] = on / off
    result["device"] = args.device
    for name in loaders:
        print(f"{name:<10} " + " ".join(f"{x:8.0f}" for x in times[name]) + "  img/s per epoch")
    print(f"decoder cache speed-up after the first epoch: {on / off:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""uint8 delivery against float delivery, side by side in one run (issue: "ship uint8, finish on the device").

Every variant reads the same split with the same batch size and the full train augmentation; rounds are interleaved
(round 1 of every variant, then round 2 ...), each after ``--warmup`` batches; the figures are medians over rounds.

    python benchmarks/uint8.py SHARD_DIR [--source RAW_FOLDER] [--device cpu|cuda] [--backends dali-cpu,torch]
        [--batch-size 64] [--image-size 224] [--rounds 5] [--batches 20] [--warmup 3] [--workers 2] [--json FILE]
        [--train-steps N [--precision auto|amp|fp32]]

Variants, per backend: ``float`` (the loader finishes the images; the batch is moved to ``--device``) and ``uint8``
(uint8 images and the colour matrices are moved, then finished on ``--device`` by ``Batch.finished``). Each round of
a variant is two passes: the loader's own rate (batches taken, nothing else) and end to end (each batch moved to
``--device`` and finished there, in this process, as a trainer does). Reported: both img/s, the move + finish cost
per batch, and the bytes per batch moved host -> device. ``roofline`` (dali backends): the same uint8 graph with
every colour jitter off, i.e. decode + warp only: the full augmentation's share of it is what the colour work
costs. ``seed`` (with
``--source``): the seed-style loader (PIL + torchvision over the raw folder), the baseline of the ratios. On the
CPU "moving" is a no-op and the finish runs on the CPU: on a GPU machine it runs on the GPU.

``--train-steps N``: then ResNet-18 training (the trainer's step, ``--precision``) on ``--device`` fed by an
in-memory batch (the ceiling) and by each backend's float and uint8 loaders, ``N`` timed steps per feeder and round
after ``--warmup`` steps, rounds interleaved: images/s and the share of the ceiling (the uint8 feeders' finish runs
inside the step, at the model's input, as in ``fastfashion train``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastfashion.bench.baseline import make_baseline_loader  # noqa: E402
from fastfashion.bench.throughput import batch_bytes, endless, sync  # noqa: E402
from fastfashion.loading.augment import AugmentConfig  # noqa: E402
from fastfashion.loading.base import LoaderConfig  # noqa: E402
from fastfashion.loading.loader import FashionLoader  # noqa: E402
from fastfashion.shardset import ShardSet  # noqa: E402


def _round(loader, device: torch.device, args, r: int, finish: bool) -> tuple[float, float, int, int]:
    """One round: ``(wall seconds, move + finish seconds, images, bytes per batch)``. Without ``finish`` the
    batches are only taken (the loader's own rate: timing ``next()`` while finishing in between would credit the
    loader with the pipeline's prefetching); with it each is moved to ``device`` and finished, as a trainer would."""
    it = endless(loader, start_epoch=r)
    for _ in range(args.warmup):
        next(it)
    t_finish = 0.0
    images = size = 0
    t_start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(it)
        if finish:
            t1 = time.perf_counter()
            moved = batch._replace(images=batch.images.to(device, non_blocking=True),
                                   colour=None if batch.colour is None else batch.colour.to(device,
                                                                                            non_blocking=True))
            sync(moved.finished())
            t_finish += time.perf_counter() - t1
        images += batch.images.shape[0]
        size = batch_bytes(batch)
    sync(batch.images)
    wall = time.perf_counter() - t_start
    it.close()
    return wall, t_finish, images, size


def train_rounds(args, shards, device: torch.device) -> dict:
    """images/s of the training step fed by the ceiling and by each backend's float and uint8 loaders."""
    from fastfashion.bench.throughput import BenchConfig
    from fastfashion.bench.training import CEILING, _in_memory, _new_step, _time_training
    from fastfashion.train.loss import loss_weights
    cfg = BenchConfig(shard_dir=args.shard_dir, batch_size=args.batch_size, image_size=args.image_size,
                      precision=args.precision, seed=0)
    weights, _ = loss_weights(shards.manifest, device)
    feeders = {CEILING: None}
    for b in args.backends.split(","):
        for output in ("float", "uint8"):
            feeders[f"{b} {output}"] = FashionLoader(shards, LoaderConfig(
                split=args.split, batch_size=args.batch_size, backend=b, device=device, workers=args.workers,
                image_size=args.image_size, augment=True, output=output, seed=0, rank=0, world_size=1))
    ips: dict[str, list[float]] = {k: [] for k in feeders}
    for r in range(args.rounds):
        for name, loader in feeders.items():
            it = _in_memory(cfg, shards.schema, device) if loader is None else endless(loader, r)
            ips[name].append(_time_training(it, _new_step(cfg, shards, device, weights), args.warmup,
                                            args.train_steps)[0])
            if hasattr(it, "close"):
                it.close()
            print(f"training round {r + 1}/{args.rounds} {name}: {ips[name][-1]:.1f} img/s", file=sys.stderr)
    for loader in feeders.values():
        if loader is not None:
            loader.close()
    ceiling = statistics.median(ips[CEILING])
    return {name: {"images_per_s": statistics.median(v), "rounds": v,
                   "share_of_ceiling": statistics.median(v) / ceiling} for name, v in ips.items()}


def _cell(row: dict, key: str, fmt: str) -> str:
    return format(row[key], fmt) if key in row else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shard_dir")
    ap.add_argument("--source", help="the raw folder: adds the seed-style baseline")
    ap.add_argument("--device", default="cpu", help="where batches are finished (cpu or cuda)")
    ap.add_argument("--backends", default="dali-cpu,torch")
    ap.add_argument("--split", default="train")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of torch and seed")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--train-steps", type=int, default=0, help="then time training fed by each (0: skip)")
    ap.add_argument("--precision", default="auto", help="the training step's, as train --precision")
    args = ap.parse_args()
    device = torch.device(args.device)
    shards = ShardSet.open(args.shard_dir)
    full = AugmentConfig.train(image_size=args.image_size)
    plain = dataclasses.replace(full, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    loaders = {}
    if args.source:
        loaders["seed"] = make_baseline_loader(args.source, shards.schema, args.split, batch_size=args.batch_size,
                                               image_size=args.image_size, workers=args.workers)
    for b in args.backends.split(","):
        # dali-gpu decodes on the GPU: its batches are there already; the others deliver to the CPU
        where = device if b == "dali-gpu" else torch.device("cpu")
        common = dict(split=args.split, batch_size=args.batch_size, backend=b, device=where, workers=args.workers,
                      image_size=args.image_size, seed=0, rank=0, world_size=1)
        loaders[f"{b} float"] = FashionLoader(shards, LoaderConfig(augment=full, output="float", **common))
        loaders[f"{b} uint8"] = FashionLoader(shards, LoaderConfig(augment=full, output="uint8", **common))
        if b.startswith("dali"):
            loaders[f"{b} roofline"] = FashionLoader(shards, LoaderConfig(augment=plain, output="uint8", **common))
    rows: dict[str, dict] = {k: {"loader": [], "e2e": [], "finish": [], "bytes": 0} for k in loaders}
    for r in range(args.rounds):
        for name, loader in loaders.items():
            row = rows[name]
            wall, _, n, row["bytes"] = _round(loader, device, args, 2 * r, finish=False)
            row["loader"].append(n / wall)
            wall, t_finish, n, _ = _round(loader, device, args, 2 * r + 1, finish=True)
            row["e2e"].append(n / wall)
            row["finish"].append(1000 * t_finish * args.batch_size / n)
            print(f"round {r + 1}/{args.rounds} {name}: {row['loader'][-1]:.0f} img/s loader, {row['e2e'][-1]:.0f} "
                  f"finished, {row['finish'][-1]:.1f} ms per batch move + finish", file=sys.stderr)
    out = {"device": str(device), "batch_size": args.batch_size, "image_size": args.image_size,
           "rounds": args.rounds, "batches": args.batches, "variants": {}}
    for name, row in rows.items():
        out["variants"][name] = {
            "loader_images_per_s": statistics.median(row["loader"]),
            "end_to_end_images_per_s": statistics.median(row["e2e"]),
            "finish_ms_per_batch": statistics.median(row["finish"]), "bytes_per_batch": row["bytes"],
            "rounds": {k: row[k] for k in ("loader", "e2e", "finish")}}
    seed = out["variants"].get("seed", {}).get("loader_images_per_s")
    for name, v in out["variants"].items():
        if seed:
            v["x_seed_loader"] = v["loader_images_per_s"] / seed
            v["x_seed_end_to_end"] = v["end_to_end_images_per_s"] / seed
        backend, _, kind = name.partition(" ")
        roof = out["variants"].get(f"{backend} roofline")
        if roof and kind in ("float", "uint8"):
            v["share_of_roofline"] = v["loader_images_per_s"] / roof["loader_images_per_s"]
            v["share_of_roofline_end_to_end"] = v["end_to_end_images_per_s"] / roof["end_to_end_images_per_s"]
    print(f"| variant | loader img/s | x seed | move + finish ms/batch on {device} | end-to-end img/s | x seed "
          "| share of decode + warp | MB per batch to the device |")
    print("|---|---|---|---|---|---|---|---|")
    for name, v in out["variants"].items():
        print(f"| {name} | {v['loader_images_per_s']:,.0f} | {_cell(v, 'x_seed_loader', '.2f')} | "
              f"{v['finish_ms_per_batch']:.1f} | {v['end_to_end_images_per_s']:,.0f} | "
              f"{_cell(v, 'x_seed_end_to_end', '.2f')} | {_cell(v, 'share_of_roofline', '.0%')} | "
              f"{v['bytes_per_batch'] / 1e6:.2f} |")
    for loader in loaders.values():
        if hasattr(loader, "close"):
            loader.close()
    if args.train_steps:
        out["train"] = train_rounds(args, shards, device)
        print(f"\n| training on {device} fed by | img/s | share of the in-memory ceiling |\n|---|---|---|")
        for name, v in out["train"].items():
            print(f"| {name} | {v['images_per_s']:.1f} | {v['share_of_ceiling']:.1%} |")
    shards.close()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

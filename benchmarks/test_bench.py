"""pytest-benchmark suite: loader backends, shard conversion, one train step. Run with `make bench`.

Each loader benchmark times `BATCHES` batches of 64 with the full train augmentation; pytest-benchmark reports
min/median/max over rounds after a warm-up round and saves machine information with the JSON.
Ratios between backends belong to one run: compare rows of the same results file, not across files.
"""
from __future__ import annotations

import os

import pytest

from fastfashion.bench.throughput import BenchConfig, endless, make_bench_loader, open_bench_set, sync

BATCHES = int(os.environ.get("FASTFASHION_BENCH_BATCHES", "20"))


@pytest.mark.parametrize("backend", ["seed", "torch", "dali-cpu", "dali-gpu"])
def test_loader_throughput(benchmark, backend, source_dir, shard_dir):
    cfg = BenchConfig(shard_dir=str(shard_dir), source=str(source_dir), batch_size=64, image_size=224, augment=True)
    try:
        loader = make_bench_loader(backend, cfg, open_bench_set(cfg))
    except (RuntimeError, ImportError) as e:
        pytest.skip(f"{backend}: {e}")
    epoch = iter(range(10**6))

    def run():
        it = endless(loader, next(epoch))
        n = 0
        for _ in range(BATCHES):
            x = next(it).images
            n += x.shape[0]
        sync(x)  # GPU batches: time until the work is done, not until it is queued
        it.close()
        return n

    n = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(images=n, backend=backend, images_per_s=n / benchmark.stats.stats.median)


def test_shard_conversion(benchmark, source_dir, tmp_path):
    from fastfashion.data.shard import ShardConfig, write_shards
    runs = iter(range(10**6))

    def run():
        return write_shards(source_dir, tmp_path / f"s{next(runs)}", ShardConfig())

    manifest = benchmark.pedantic(run, rounds=3, warmup_rounds=0)
    n = sum(s["num_samples"] for s in manifest["splits"].values())
    benchmark.extra_info.update(images=n, images_per_s=n / benchmark.stats.stats.median)


def test_train_step(benchmark):
    import torch

    from fastfashion import FASHION_SCHEMA
    from fastfashion.loading.base import Batch
    from fastfashion.train.model import FashionNet
    from fastfashion.train.trainer import TrainStep
    weights = [torch.ones(k) for k in FASHION_SCHEMA.num_classes]
    step = TrainStep(FashionNet(FASHION_SCHEMA), weights, torch.device("cpu"))  # the trainer's default optimizer
    x = torch.randn(16, 3, 224, 224)
    y = torch.stack([torch.randint(0, k, (16,)) for k in FASHION_SCHEMA.num_classes], 1)
    benchmark.pedantic(lambda: step(Batch(x, y)), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(images=16, images_per_s=16 / benchmark.stats.stats.median)

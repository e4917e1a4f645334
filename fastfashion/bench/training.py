"""End-to-end training throughput (CUDA): ResNet-18 trained for a few steps fed by each backend, against the same
model fed a synthetic batch already on the GPU (the ceiling).

Each run is the trainer's own step (:class:`~fastfashion.train.trainer.TrainStep`: AMP, channels_last, the
class-weighted multi-head loss, Adam), so the figures are what ``fastfashion train`` gets. Reported per feeder:
images/s, the share of the ceiling, the data-stall share (``1 - images/s / ceiling``) and the share of wall time
the host spent waiting in ``next(loader)`` plus the copy to the GPU.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterator

from .throughput import BenchConfig, endless, make_bench_loader

log = logging.getLogger(__name__)

CEILING = "synthetic (ceiling)"


def _time_training(cfg: BenchConfig, batches: Callable[[], Iterator], make_step: Callable) -> dict:
    """``cfg.warmup`` untimed steps, then ``cfg.train_steps`` timed ones of a fresh model and step."""
    import torch
    step = make_step()
    it, wait, n, t_start = batches(), 0.0, 0, None
    for i in range(cfg.warmup + cfg.train_steps):
        if i == cfg.warmup:
            torch.cuda.synchronize()
            t_start, wait, n = time.perf_counter(), 0.0, 0
        t0 = time.perf_counter()
        images, labels = step.prepare(next(it))  # the host waits for the loader and the copy to the GPU
        wait += time.perf_counter() - t0
        step.run(images, labels)
        n += labels.shape[0]
    torch.cuda.synchronize()
    total = time.perf_counter() - t_start
    return {"images_per_s": n / total, "host_wait_share": wait / total}


def run_train_bench(cfg: BenchConfig, names: list[str]) -> dict[str, dict]:
    """CUDA only: training images/s fed by each backend in ``names`` and by a synthetic on-GPU batch."""
    import torch

    from ..format.manifest import manifest_schema
    from ..loading.augment import image_hw
    from ..loading.base import Batch
    from ..remote.cache import open_manifest
    from ..train.trainer import TrainStep, build_model, loss_weights
    manifest = open_manifest(cfg.shard_dir, cfg.remote)
    schema = manifest_schema(manifest)
    dev = torch.device("cuda")
    weights = loss_weights(manifest, dev)

    def make_step() -> TrainStep:
        torch.manual_seed(cfg.seed)
        return TrainStep(build_model(schema, dev), weights, dev)  # the trainer's default optimizer settings

    def synthetic():
        x = torch.randn(cfg.batch_size, 3, *image_hw(cfg.image_size), device=dev)
        y = torch.stack([torch.randint(0, k, (cfg.batch_size,), device=dev) for k in schema.num_classes], 1)
        while True:
            yield Batch(x, y)

    out: dict[str, dict] = {CEILING: _time_training(cfg, synthetic, make_step)}
    for name in names:
        try:
            loader = make_bench_loader(name, cfg, for_training=True)
            out[name] = _time_training(cfg, lambda: endless(loader, 0), make_step)
        except Exception as e:  # one backend failing (a DALI error, out of memory) must not lose the others' figures
            log.error("bench: training fed by %s failed: %s", name, e)
            out[name] = {"status": "failed", "reason": str(e).strip().splitlines()[0] if str(e).strip() else repr(e)}
    ceiling = out[CEILING]["images_per_s"]
    for v in out.values():
        if "images_per_s" in v:
            v["share_of_ceiling"] = v["images_per_s"] / ceiling
            # data stall: the share of step time lost to the input pipeline, against the same model on on-GPU data
            v["data_stall_share"] = max(0.0, 1.0 - v["share_of_ceiling"])
    return out

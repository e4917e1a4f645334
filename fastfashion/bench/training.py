"""End-to-end training throughput, on CUDA or the CPU: ResNet-18 trained for a few steps fed by each loader,
against the same model fed one batch already in place (in GPU memory, or in host memory on the CPU): the ceiling.

Each run is the trainer's own step (:class:`~fastfashion.train.trainer.TrainStep`: on CUDA AMP and channels_last,
the class-weighted multi-head loss, Adam), so the figures are what ``fastfashion train`` gets. Rounds are
interleaved (round 1 of the ceiling and of every loader, then round 2 ...), each a fresh model and optimizer,
``cfg.warmup`` untimed steps, then ``cfg.train_steps`` timed ones. Reported per feeder: the median images/s and
spread, the share of the ceiling (median over rounds of the ratio to the ceiling *in the same round*), the data
stall (``1 - share``) and the share of wall time the host spent waiting in ``next(loader)`` plus the copy to the
device. On the CPU the loader and the model share the cores: the stall is the CPU time the loader takes from
training, which is what a CPU-only user pays.
"""
from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator

from ..progress import progress
from .throughput import BenchConfig, endless, make_bench_loader, open_bench_set, sync

log = logging.getLogger(__name__)

CEILING = "in-memory batch (ceiling)"


def _time_training(cfg: BenchConfig, batches: Iterator, step) -> tuple[float, float]:
    """``cfg.warmup`` untimed steps, then ``cfg.train_steps`` timed ones; returns (images/s, host wait share)."""
    wait, n, t_start, images = 0.0, 0, time.perf_counter(), None
    for i in range(cfg.warmup + cfg.train_steps):
        if i == cfg.warmup:
            if images is not None:
                sync(images)  # the warm-up steps' GPU work is done before the clock starts
            t_start, wait, n = time.perf_counter(), 0.0, 0
        t0 = time.perf_counter()
        images, labels = step.prepare(next(batches))  # the host waits for the loader and the copy to the device
        wait += time.perf_counter() - t0
        step.run(images, labels)
        n += labels.shape[0]
    sync(images)
    total = time.perf_counter() - t_start
    return n / total, wait / total


def _feeders(cfg: BenchConfig, names: list[str], shards, device) -> dict[str, Callable[[int], Iterator]]:
    """Per feeder, ``round -> batches``: the in-memory batch, then each loader that can be built for training."""
    import torch

    from ..loading.augment import image_hw
    from ..loading.base import Batch

    def in_memory(_round: int) -> Iterator:
        g = torch.Generator().manual_seed(cfg.seed)
        x = torch.randn(cfg.batch_size, 3, *image_hw(cfg.image_size), generator=g).to(device)
        y = torch.stack([torch.randint(0, k, (cfg.batch_size,), generator=g) for k in shards.schema.num_classes], 1)
        batch = Batch(x, y.to(device))
        while True:
            yield batch

    feeders: dict[str, Callable[[int], Iterator]] = {CEILING: in_memory}
    for name in names:
        try:
            loader = make_bench_loader(name, cfg, shards, for_training=True)
        except (RuntimeError, ImportError, OSError) as e:
            log.error("bench: training fed by %s skipped: %s", name, e)
            continue
        feeders[name] = lambda r, loader=loader: endless(loader, r)
    return feeders


def run_train_bench(cfg: BenchConfig, names: list[str], shards=None) -> dict[str, dict]:
    """Training images/s fed by each loader in ``names`` and by an in-memory batch, rounds interleaved, on CUDA
    when available, else on the CPU (``shards``: the opened set, else ``cfg.shard_dir`` is opened)."""
    import torch

    from ..train.loss import loss_weights
    from ..train.trainer import TrainStep, build_model
    if shards is None:
        with open_bench_set(cfg) as opened:
            return run_train_bench(cfg, names, opened)
    schema = shards.schema
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    weights, _ = loss_weights(shards.manifest, device)  # the seed's class weights
    feeders = _feeders(cfg, names, shards, device)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in feeders}
    failed: dict[str, str] = {}
    bar = progress(total=cfg.rounds * len(feeders), desc="bench training", unit="run")
    for r in range(cfg.rounds):
        for name, batches in feeders.items():
            bar.set_postfix_str(name)
            bar.update()
            if name in failed:
                continue
            torch.manual_seed(cfg.seed)
            step = TrainStep(build_model(schema, device, precision=cfg.precision), weights, device,
                             precision=cfg.precision)  # the trainer's default optimizer
            it = batches(r)
            try:
                rounds[name].append(_time_training(cfg, it, step))
            except Exception as e:  # one loader failing (a DALI error, out of memory) must not lose the others
                log.error("bench: training fed by %s failed: %s", name, e)
                failed[name] = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            finally:
                if hasattr(it, "close"):
                    it.close()  # shuts DataLoader workers down before the next feeder runs
    bar.close()
    return _summarize(rounds, failed, device, cfg.precision)


def _summarize(rounds: dict[str, list[tuple[float, float]]], failed: dict[str, str], device,
               precision: str = "auto") -> dict[str, dict]:
    import torch

    from ..train.device import amp_dtype
    arith = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype(device, precision), "fp32")
    ceiling = [ips for ips, _ in rounds[CEILING]]
    out: dict[str, dict] = {}
    for name, runs in rounds.items():
        if name in failed or not runs:
            out[name] = {"status": "failed", "reason": failed.get(name, "no round ran")}
            continue
        ips = [x for x, _ in runs]
        share = statistics.median(x / c for x, c in zip(ips, ceiling))
        out[name] = {"status": "ok", "device": device.type, "precision": arith, "images_per_s": statistics.median(ips),
                     "images_per_s_min": min(ips), "images_per_s_max": max(ips), "rounds": ips,
                     "share_of_ceiling": share, "data_stall_share": max(0.0, 1.0 - share),
                     "host_wait_share": statistics.median(w for _, w in runs)}
    return out

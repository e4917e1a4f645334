"""End-to-end training throughput, on CUDA or the CPU: ResNet-18 trained for a few steps fed by each loader,
against the same model fed one batch already in place (in GPU memory, or in host memory on the CPU): the ceiling.

Each run is the trainer's own step (:class:`~fastfashion.train.trainer.TrainStep`: on CUDA AMP and channels_last,
the class-weighted multi-head loss, Adam), so the figures are what ``fastfashion train`` gets. Rounds are
interleaved (round 1 of the ceiling and of every loader, then round 2 ...), each a fresh model and optimizer,
``cfg.warmup`` untimed steps, then ``steps`` timed ones (``cfg.train_steps``, or what
:func:`fastfashion.bench.budget.plan_train_steps` fits in the budget from :func:`measure_step`). Reported per feeder
(:mod:`fastfashion.bench.rounds`): the median images/s and spread, the share of the ceiling (the ratio of the two
medians; the median of same-round ratios beside it), the data stall (``1 - share``), the share of wall time the host
spent waiting in ``next(loader)`` plus the copy to the device, and warnings when the rounds are too noisy (a share
above 100 %: a loader-fed run cannot beat the in-memory batch). On the CPU the loader and the model share the cores:
the stall is the CPU time the loader takes from training, which is what a CPU-only user pays.
"""
from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator

from .budget import FULL_TRAIN_STEPS
from .rounds import ceiling_warning, noise_warnings, ratios, summarize
from .throughput import BenchConfig, endless, make_bench_loader, open_bench_set, sync

log = logging.getLogger(__name__)

CEILING = "in-memory batch (ceiling)"


def _time_training(batches: Iterator, step, warmup: int, steps: int) -> tuple[float, float]:
    """``warmup`` untimed steps, then ``steps`` timed ones; returns (images/s, host wait share)."""
    wait, n, t_start, images = 0.0, 0, time.perf_counter(), None
    for i in range(warmup + steps):
        if i == warmup:
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


def _in_memory(cfg: BenchConfig, schema, device) -> Iterator:
    """One random batch already on ``device``, forever: the ceiling's feeder."""
    import torch

    from ..loading.augment import image_hw
    from ..loading.base import Batch
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.batch_size, 3, *image_hw(cfg.image_size), generator=g).to(device)
    y = torch.stack([torch.randint(0, k, (cfg.batch_size,), generator=g) for k in schema.num_classes], 1)
    batch = Batch(x, y.to(device))
    while True:
        yield batch


def _device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _new_step(cfg: BenchConfig, shards, device, weights):
    import torch

    from ..train.trainer import TrainStep, build_model
    torch.manual_seed(cfg.seed)
    return TrainStep(build_model(shards.schema, device, precision=cfg.precision), weights, device,
                     precision=cfg.precision)  # the trainer's default optimizer


def measure_step(cfg: BenchConfig, shards) -> float:
    """Seconds one training step of the bench's model takes on its device, fed the in-memory batch (one untimed
    step first): what :func:`fastfashion.bench.budget.plan_train_steps` sizes the training part by."""
    from ..train.loss import loss_weights
    device = _device()
    weights, _ = loss_weights(shards.manifest, device)
    ips, _ = _time_training(_in_memory(cfg, shards.schema, device), _new_step(cfg, shards, device, weights), 1, 1)
    return cfg.batch_size / ips


def _feeders(cfg: BenchConfig, names: list[str], shards, device) -> dict[str, Callable[[int], Iterator]]:
    """Per feeder, ``round -> batches``: the in-memory batch, then each loader that can be built for training."""
    feeders: dict[str, Callable[[int], Iterator]] = {CEILING: lambda _round: _in_memory(cfg, shards.schema, device)}
    for name in names:
        try:
            loader = make_bench_loader(name, cfg, shards, for_training=True)
        except (RuntimeError, ImportError, OSError) as e:
            log.error("bench: training fed by %s skipped: %s", name, e)
            continue
        feeders[name] = lambda r, loader=loader: endless(loader, r)
    return feeders


def run_train_bench(cfg: BenchConfig, names: list[str], shards=None, *, steps: int | None = None, clock=None,
                    estimate: Callable[[str], float] | None = None) -> dict[str, dict]:
    """Training images/s fed by each loader in ``names`` and by an in-memory batch, rounds interleaved, on CUDA
    when available, else on the CPU (``shards``: the opened set, else ``cfg.shard_dir`` is opened). ``steps``: timed
    steps per feeder and round (default ``cfg.train_steps``, else the long form's). ``clock``
    (:class:`~fastfashion.bench.budget.RunClock`) shows the runs, ``estimate(feeder)`` being the seconds one run is
    expected to take until one has been measured."""
    from ..train.loss import loss_weights
    if shards is None:
        with open_bench_set(cfg) as opened:
            return run_train_bench(cfg, names, opened, steps=steps, clock=clock, estimate=estimate)
    steps = steps if steps is not None else (cfg.train_steps if cfg.train_steps is not None else FULL_TRAIN_STEPS)
    device = _device()
    weights, _ = loss_weights(shards.manifest, device)  # the seed's class weights
    feeders = _feeders(cfg, names, shards, device)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in feeders}
    took: dict[str, list[float]] = {name: [] for name in feeders}
    failed: dict[str, str] = {}

    def left(r: int, done: set) -> float:  # seconds the runs still take: each feeder's mean so far, else estimate
        est = {n: sum(t) / len(t) if t else (estimate(n) if estimate else 0.0) for n, t in took.items()
               if n not in failed}
        return sum(est.values()) * (cfg.rounds - r - 1) + sum(v for n, v in est.items() if n not in done)

    for r in range(cfg.rounds):
        done: set = set()
        for name, batches in feeders.items():
            if name in failed:
                continue
            if clock is not None:
                clock.left = lambda r=r, done=done: left(r, done)
                clock.tick(f"training round {r + 1}/{cfg.rounds}: {name}")
            t0 = time.perf_counter()
            step = _new_step(cfg, shards, device, weights)
            it = batches(r)
            try:
                rounds[name].append(_time_training(it, step, cfg.warmup, steps))
            except Exception as e:  # one loader failing (a DALI error, out of memory) must not lose the others
                log.error("bench: training fed by %s failed: %s", name, e)
                failed[name] = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            finally:
                if hasattr(it, "close"):
                    it.close()  # shuts DataLoader workers down before the next feeder runs
            took[name].append(time.perf_counter() - t0)
            done.add(name)
    if clock is not None:
        clock.left = lambda: 0.0
        clock.phase(f"training done ({len(feeders)} feeders x {cfg.rounds} rounds x {steps} steps)")
    return _summarize(rounds, failed, device, cfg.precision)


def _summarize(rounds: dict[str, list[tuple[float, float]]], failed: dict[str, str], device,
               precision: str = "auto") -> dict[str, dict]:
    import torch

    from ..train.device import amp_dtype
    arith = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype(device, precision), "fp32")
    ceiling = [ips for ips, _ in rounds[CEILING]]
    ceiling_noise = noise_warnings(ceiling) if ceiling else []
    out: dict[str, dict] = {}
    for name, runs in rounds.items():
        if name in failed or not runs:
            out[name] = {"status": "failed", "reason": failed.get(name, "no round ran")}
            continue
        ips = [x for x, _ in runs]
        share, paired, _ = ratios(ips, ceiling)
        warnings = noise_warnings(ips, ratio=share, paired=paired, what="share")
        if name != CEILING:
            warnings += ceiling_warning(share) + [f"the ceiling's {w}" for w in ceiling_noise]
        out[name] = {"status": "ok", "device": device.type, "precision": arith, **summarize(ips), "rounds": ips,
                     "share_of_ceiling": share, "share_of_ceiling_paired": paired,
                     "data_stall_share": max(0.0, 1.0 - share),
                     "host_wait_share": statistics.median(w for _, w in runs), "warnings": warnings}
    return out

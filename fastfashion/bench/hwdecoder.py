"""The hardware JPEG decoder sweep: dali-gpu read with each ``hw_decoder_load`` in turn (the share of JPEGs DALI's
``mixed`` decoder gives the A100/H100/H200 hardware engine, the rest going to nvJPEG on the CUDA cores).

Per value: images/s over the timed batches and the p50/p99 latency of one batch (each batch waited for on the GPU,
so a latency is the time to the batch being ready). The decoder cache is off (a cached image skips the decoder), the
rounds are interleaved as in :mod:`.throughput`. Without CUDA, DALI, or an engine on the GPU (a T4: everything on
the CUDA cores, the knob does nothing), the sweep is skipped with the reason; nothing else changes. The best value
of a GPU family goes into :data:`fastfashion.loading.backends.jpeg_engine.HW_DECODER_LOAD` by hand, with the run
that measured it.
"""
from __future__ import annotations

import logging
import statistics
import time

from ..loading.backends.jpeg_engine import default_load, has_engine
from .throughput import BenchConfig, endless, sync

log = logging.getLogger(__name__)


def sweep_skip_reason(gpu_name: str | None, dali: bool) -> str | None:
    """Why the sweep cannot run on a machine with GPU ``gpu_name`` (None: no CUDA device) and DALI importable or
    not; None when it can."""
    if gpu_name is None:
        return "no CUDA device: the hw_decoder_load sweep needs a GPU with a hardware JPEG decoder (CPU side unchanged)"
    if not dali:
        return "NVIDIA DALI is not importable"
    if not has_engine(gpu_name):
        return (f"{gpu_name} has no hardware JPEG decoder (A100/H100/H200 have one): every JPEG decodes on the CUDA "
                "cores, hw_decoder_load changes nothing")
    return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run_hw_decoder_sweep(cfg: BenchConfig, shards) -> dict:
    """``{"status": "ok", "gpu", "default", "best", "loads": {value: {"images_per_s", "p50_ms", "p99_ms"}}}`` or
    ``{"status": "skipped", "reason"}`` (see the module docstring)."""
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        import nvidia.dali  # noqa: F401
        dali = True
    except ImportError:
        dali = False
    reason = sweep_skip_reason(gpu, dali)
    if reason is not None:
        log.info("bench: hw_decoder_load sweep skipped: %s", reason)
        return {"status": "skipped", "reason": reason, "gpu": gpu}
    from ..loading.base import LoaderConfig
    from ..loading.loader import FashionLoader
    loaders = {load: FashionLoader(shards, LoaderConfig(
        split=cfg.split, batch_size=cfg.batch_size, backend="dali-gpu", device="cuda", augment=cfg.augment,
        image_size=cfg.image_size, seed=cfg.seed, rank=0, world_size=1, verify=cfg.verify, gpu_cache=False,
        dali_threads=cfg.dali_threads, hw_decoder_load=load)) for load in cfg.hw_decoder_loads}
    latencies: dict[float, list[float]] = {load: [] for load in loaders}
    for r in range(cfg.rounds):
        for load, loader in loaders.items():
            it = endless(loader, start_epoch=r)
            for _ in range(cfg.warmup):
                sync(next(it).images)
            for _ in range(cfg.batches):
                t0 = time.perf_counter()
                sync(next(it).images)
                latencies[load].append(time.perf_counter() - t0)
            it.close()
    for loader in loaders.values():
        loader.close()
    loads = {str(load): {"hw_decoder_load": load, "images_per_s": cfg.batch_size * len(ts) / sum(ts),
                         "p50_ms": 1000 * statistics.median(ts), "p99_ms": 1000 * _percentile(ts, 99)}
             for load, ts in latencies.items()}
    best = max(loads.values(), key=lambda v: v["images_per_s"])["hw_decoder_load"]
    return {"status": "ok", "gpu": gpu, "default": default_load(gpu), "best": best, "loads": loads}


def format_sweep(sweep: dict) -> str:
    """Lines for :func:`fastfashion.bench.report.format_table`."""
    if sweep["status"] != "ok":
        return f"hw_decoder_load sweep skipped: {sweep['reason']}"
    lines = [f"hw_decoder_load sweep on {sweep['gpu']} (dali-gpu, decoder cache off; loader default "
             f"{sweep['default']}, best here {sweep['best']}):",
             f"  {'load':>5} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8}"]
    for v in sweep["loads"].values():
        lines.append(f"  {v['hw_decoder_load']:>5.2f} {v['images_per_s']:>8.0f} {v['p50_ms']:>8.2f} "
                     f"{v['p99_ms']:>8.2f}")
    return "\n".join(lines)

"""A remote shard set beside its local copy: the cold-cache epoch, then warm-cache epochs interleaved with epochs of
the same loader over a local copy (``fastfashion bench --shards URL``).

Everything is measured in one run: a local copy of the set is downloaded first (into a temporary folder, not
timed), then a loader over the URL with an empty temporary cache reads one full epoch (cold: downloads, checks and
reading, overlapped as the order allows), then ``rounds`` rounds each read one full epoch through the now warm
cache and one through the local copy, alternating, same order and settings. Reported: the cold epoch's seconds and
bytes downloaded, the images/s of each, and the median per-round ratio warm / local.
"""
from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path

from ..remote.cache import ShardCache
from .throughput import BenchConfig

log = logging.getLogger(__name__)


def _loader(shard_dir, cfg: BenchConfig, backend: str, remote):
    from ..loading.base import LoaderConfig
    from ..loading.loader import FashionLoader
    return FashionLoader(shard_dir, LoaderConfig(
        split=cfg.split, batch_size=cfg.batch_size, backend=backend, device="cpu", augment=cfg.augment,
        image_size=cfg.image_size, seed=cfg.seed, rank=0, world_size=1, workers=cfg.workers, verify=cfg.verify,
        order=cfg.order, window=cfg.window, remote=remote))


def _epoch(loader, epoch: int) -> tuple[float, int]:
    """Seconds and images of one full pass of ``epoch``."""
    loader.set_epoch(epoch)
    t0, n = time.perf_counter(), 0
    for batch in loader:
        n += batch.images.shape[0]
    return time.perf_counter() - t0, n


def local_copy(cfg: BenchConfig, folder: Path) -> Path:
    """Every split of the set at ``cfg.shard_dir`` downloaded (verified) into ``folder``; returns the set's local
    folder (a complete shard folder)."""
    cache = ShardCache(cfg.shard_dir, dataclasses.replace(cfg.remote, cache_dir=folder, cache_limit=None,
                                                          offline=False))
    try:
        for split in cache.manifest["splits"]:
            cache.fetch_split(split)
    finally:
        cache.close()
    return cache.dir


def run_remote_bench(cfg: BenchConfig, backend: str) -> dict:
    """See the module docstring; ``backend``: the loader backend measured (dali-cpu, torch ...)."""
    with tempfile.TemporaryDirectory(prefix="fastfashion-bench-remote-") as tmp:
        local = local_copy(cfg, Path(tmp) / "local")
        remote = dataclasses.replace(cfg.remote, cache_dir=Path(tmp) / "cache", offline=False)
        t0 = time.perf_counter()
        loader = _loader(cfg.shard_dir, cfg, backend, remote)
        seconds, images = _epoch(loader, 0)
        cold = time.perf_counter() - t0
        cold_bytes = loader.remote.downloaded_bytes
        other = _loader(local, cfg, backend, remote)
        warm, here, ratios = [], [], []
        for r in range(cfg.rounds):
            before = loader.remote.downloaded_bytes
            (ws, n), (ls, _) = _epoch(loader, r + 1), _epoch(other, r + 1)
            warm.append(n / ws)
            here.append(n / ls)
            ratios.append(ls / ws)
            log.info("remote bench round %d: warm %.0f img/s (%.1f MB downloaded), local %.0f img/s", r,
                     n / ws, (loader.remote.downloaded_bytes - before) / 1e6, n / ls)
        result = {"backend": backend, "order": loader.order, "streaming": loader.streaming,
                  "cache_limit": cfg.remote.cache_limit, "images_per_epoch": images,
                  "cold_epoch_s": cold, "cold_pass_s": seconds, "cold_bytes": cold_bytes,
                  "cold_mb_per_s": cold_bytes / 1e6 / cold, "warm_images_per_s": statistics.median(warm),
                  "local_images_per_s": statistics.median(here), "warm_to_local": statistics.median(ratios),
                  "warm_to_local_rounds": ratios, "downloaded_bytes_total": loader.remote.downloaded_bytes}
        loader.close()
        other.close()
    return result


def format_remote(r: dict) -> str:
    """Two lines for the bench table."""
    return (f"remote ({r['backend']}, {r['order']} order{', streamed' if r['streaming'] else ''}): cold epoch "
            f"{r['cold_epoch_s']:.2f} s ({r['cold_bytes'] / 1e6:.1f} MB, {r['cold_mb_per_s']:.1f} MB/s)\n"
            f"  warm cache {r['warm_images_per_s']:.0f} img/s vs local copy {r['local_images_per_s']:.0f} img/s: "
            f"{r['warm_to_local']:.2f} x (median of {len(r['warm_to_local_rounds'])} rounds)")

"""Remote shards through a throttled HTTP server: does prefetch hide the network, and what does the windowed order
cost in class mix?

A small server of our own (python's http.server, every response delayed by ``--latency-ms`` and all responses
together limited to ``--mbps`` MB/s by one token bucket) serves a local shard set on 127.0.0.1. For each read mode
the loader over the URL is measured beside a local copy in the same run (``fastfashion.bench.remote``): the
cold-cache epoch against the bandwidth bound (split bytes / bandwidth) and the local epoch, then warm-cache epochs
interleaved with local ones (median ratio of ``--rounds`` rounds). Modes:

* ``whole``: the default blocked full shuffle; the split is downloaded (4 parallel requests) before the first
  batch, then read from the cache exactly as a local set;
* ``streamed``: ``order="windowed"`` with ``cache_limit`` at the working-set minimum (3 windows), so every epoch
  downloads its shards again while it reads, prefetching the next window.

Class mix (no server): for the blocked, windowed (windows of 1, 2, 4 shards) and sequential orders, how far a
batch's class distribution departs from the split's: total variation distance per attribute, averaged over
attributes and batches; on the shards as written (train shuffled at shard time) and on a class-sorted layout (the
same samples sorted by their first attribute before being cut into shards: a folder-per-class source).

Run (about 3 minutes on 2 cores with the real set)::

    python benchmarks/remote_throttle.py --shards SHARD_DIR --json benchmarks/results/remote-throttle.json
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np

from fastfashion.bench.remote import run_remote_bench
from fastfashion.bench.report import machine_info
from fastfashion.bench.throughput import BenchConfig
from fastfashion.format.manifest import manifest_schema, read_manifest
from fastfashion.format.reader import ShardFiles, read_split_samples
from fastfashion.loading.order import epoch_indices, windowed_indices
from fastfashion.remote.store import RemoteConfig


class Bucket:
    """A token bucket shared by every response: at most ``rate`` bytes per second in all."""

    def __init__(self, rate: float):
        self.rate, self.lock, self.t = rate, threading.Lock(), time.perf_counter()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.perf_counter()
            self.t = max(self.t, now) + n / self.rate  # when these n bytes have been "sent"
            wait = self.t - now
        if wait > 0:
            time.sleep(wait)


def handler(bucket: Bucket, latency: float):
    class Throttled(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def send_head(self):
            time.sleep(latency)  # per request: connection and first-byte delay of an object store
            return super().send_head()

        def copyfile(self, src, dst) -> None:
            try:
                while chunk := src.read(64 << 10):
                    bucket.take(len(chunk))
                    dst.write(chunk)
            except OSError:
                pass
    return Throttled


@contextlib.contextmanager
def throttled_server(folder: Path, mbps: float, latency_ms: float):
    h = functools.partial(handler(Bucket(mbps * 1e6), latency_ms / 1e3), directory=str(folder))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def split_labels(shard_dir: Path, split: str) -> tuple[np.ndarray, list[int]]:
    """Labels [N, attributes] of a split in manifest order, and samples per shard."""
    m = read_manifest(shard_dir)
    schema = manifest_schema(m)
    samples = read_split_samples(shard_dir, m, split, schema)
    with ShardFiles() as f:
        labels = [struct.unpack(f"<{len(schema)}q", f.read(r.tar, r.lbl_offset, r.lbl_size)) for r in samples.refs]
    return np.array(labels, dtype=np.int64), samples.sizes


def class_mix(labels: np.ndarray, order: np.ndarray, batch_size: int) -> float:
    """Mean over batches and attributes of the total variation distance between a batch's class distribution and
    the split's."""
    out = []
    for a in range(labels.shape[1]):
        k = int(labels[:, a].max()) + 1
        split = np.bincount(labels[:, a], minlength=k) / len(labels)
        for s in range(0, len(order) - batch_size + 1, batch_size):
            batch = np.bincount(labels[order[s:s + batch_size], a], minlength=k) / batch_size
            out.append(0.5 * np.abs(batch - split).sum())
    return float(np.mean(out))


def mix_table(labels: np.ndarray, sizes: list[int], batch_size: int, epochs: int = 3) -> dict:
    """:func:`class_mix` of every order, averaged over ``epochs`` epochs."""
    orders = {"blocked (default)": lambda e: epoch_indices(sizes, seed=0, epoch=e, shuffle=True, batch_size=batch_size,
                                                           drop_last=True),
              **{f"windowed, {w} shard{'s' if w > 1 else ''}": functools.partial(
                  lambda e, w: windowed_indices(sizes, seed=0, epoch=e, batch_size=batch_size, drop_last=True,
                                                window=w), w=w) for w in (1, 2, 4)},
              "sequential (no shuffle)": lambda e: np.arange(len(labels))}
    return {name: float(np.mean([class_mix(labels, f(e), batch_size) for e in range(epochs)]))
            for name, f in orders.items()}


def class_sorted(labels: np.ndarray) -> np.ndarray:
    """The same labels laid out as a folder-per-class source would be sharded: sorted by the first attribute."""
    return labels[np.argsort(labels[:, 0], kind="stable")]


def modes(manifest: dict, split: str, window: int) -> dict:
    shards = manifest["splits"][split]["shards"]
    tars = sorted((sh["bytes"] for sh in shards), reverse=True)
    limit = sum(tars[:3 * window]) + 64 * 1024 * len(shards)  # the 3-window minimum plus room for the .idx files
    return {"whole": {"order": None, "window": window, "cache_limit": None},
            "streamed": {"order": "windowed", "window": window, "cache_limit": limit}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", required=True, help="a local shard set (served from its parent folder)")
    p.add_argument("--split", default="train")
    p.add_argument("--mbps", type=float, default=50.0, help="server bandwidth, MB/s in all (default 50)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="delay per request (default 20)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=int, default=2)
    p.add_argument("--backend", default="dali-cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    local = Path(args.shards).resolve()
    manifest = read_manifest(local)
    split_bytes = sum(sh["bytes"] for sh in manifest["splits"][args.split]["shards"])
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_info(), "args": vars(args),
              "split_bytes": split_bytes, "bandwidth_bound_s": split_bytes / (args.mbps * 1e6), "modes": {}}
    with throttled_server(local.parent, args.mbps, args.latency_ms) as base:
        for name, m in modes(manifest, args.split, args.window).items():
            cfg = BenchConfig(shard_dir=f"{base}/{local.name}", split=args.split, backends=(args.backend,),
                              batch_size=args.batch_size, image_size=args.image_size, rounds=args.rounds,
                              order=m["order"], window=m["window"],
                              remote=RemoteConfig(cache_limit=m["cache_limit"]))
            r = run_remote_bench(cfg, args.backend)
            local_epoch = r["images_per_epoch"] / r["local_images_per_s"]
            r["cold_to_bandwidth_bound"] = r["cold_epoch_s"] / result["bandwidth_bound_s"]
            r["cold_to_max_bound"] = r["cold_epoch_s"] / max(result["bandwidth_bound_s"], local_epoch)
            r["cold_to_sum_bound"] = r["cold_epoch_s"] / (result["bandwidth_bound_s"] + local_epoch)
            result["modes"][name] = r
            print(f"{name:>8}: cold epoch {r['cold_epoch_s']:.2f} s = {r['cold_to_bandwidth_bound']:.2f} x the "
                  f"bandwidth bound ({result['bandwidth_bound_s']:.2f} s), {r['cold_to_max_bound']:.2f} x "
                  f"max(bound, local epoch {local_epoch:.2f} s); warm {r['warm_images_per_s']:.0f} img/s vs local "
                  f"{r['local_images_per_s']:.0f}: {r['warm_to_local']:.2f} x "
                  f"(rounds {', '.join(f'{x:.2f}' for x in r['warm_to_local_rounds'])})", flush=True)
    labels, sizes = split_labels(local, args.split)
    result["class_mix"] = {"as_sharded": mix_table(labels, sizes, args.batch_size),
                           "class_sorted": mix_table(class_sorted(labels), sizes, args.batch_size)}
    for layout, t in result["class_mix"].items():
        print(f"class mix ({layout}): " + ", ".join(f"{k} {v:.3f}" for k, v in t.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

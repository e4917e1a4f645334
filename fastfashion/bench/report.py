"""One benchmark run and its report: :func:`run_bench` (loader throughput, plus end-to-end training),
what it was measured on (:func:`machine_info`) and the plain-text table the CLI prints (:func:`format_table`)."""
from __future__ import annotations

import dataclasses
import datetime
import os
import platform

from .throughput import BASELINE, BenchConfig, open_bench_set, run_loader_bench


def machine_info() -> dict:
    """What the figures were measured on: CPU, cores, memory, GPU, library versions."""
    import torch
    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        info["cpu"] = platform.processor() or None
    try:
        from nvidia import dali
        info["dali"] = dali.__version__
    except ImportError:
        info["dali"] = None
    return info


def run_bench(cfg: BenchConfig) -> dict:
    """Loader benchmark, plus the end-to-end training benchmark (``cfg.train_steps`` > 0; on CUDA when present,
    else on the CPU). Returns a JSON-able dict."""
    with open_bench_set(cfg) as shards:  # opened once for every loader of the run
        result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
                  "config": dataclasses.asdict(cfg), "baseline": BASELINE, "loaders": run_loader_bench(cfg, shards)}
        ok = [n for n, r in result["loaders"].items() if r["status"] == "ok"]
        if shards.url and ok and ok[-1] != BASELINE:  # cold and warm cache beside a local copy
            from .remote import run_remote_bench
            result["remote"] = run_remote_bench(cfg, result["loaders"][ok[-1]]["backend"])
        if "dali-gpu" in cfg.backends and cfg.hw_decoder_loads:  # where the GPU has a hardware JPEG decoder
            from .hwdecoder import run_hw_decoder_sweep
            result["hw_decoder"] = run_hw_decoder_sweep(cfg, shards)
        if cfg.train_steps > 0 and ok:
            from .training import run_train_bench
            result["train"] = run_train_bench(cfg, ok, shards)
    return result


def format_table(result: dict) -> str:
    """A plain-text table of :func:`run_bench`'s result (what the CLI prints)."""
    m = result["machine"]
    lines = [f"{result['date']}  {m.get('cpu')} x{m['cpu_count']}  GPU: {m.get('gpu') or 'none'}  "
             f"batch {result['config']['batch_size']}, {result['config']['image_size']} px, "
             f"augment={'train' if result['config']['augment'] else 'eval'}, split {result['config']['split']}",
             f"{'backend':<10} {'img/s':>8} {'min-max':>13} {'x seed':>7} {'CPU s/1k':>9} {'peak MB':>8} "
             f"{'1st batch s':>11}"]
    for name, r in result["loaders"].items():
        if r["status"] != "ok":
            lines.append(f"{name:<10} skipped: {r['reason']}")
            continue
        ratio = f"{r['ratio_to_baseline']:.2f}" if "ratio_to_baseline" in r else "-"
        lines.append(f"{name:<10} {r['images_per_s']:>8.0f} {r['images_per_s_min']:>6.0f}-{r['images_per_s_max']:<6.0f}"
                     f" {ratio:>7} {r['cpu_s_per_1000_images']:>9.2f} {r['peak_rss_mb']:>8.0f}"
                     f" {r['time_to_first_batch_s']:>11.2f}")
    if "hw_decoder" in result:
        from .hwdecoder import format_sweep
        lines.append(format_sweep(result["hw_decoder"]))
    if "remote" in result:
        from .remote import format_remote
        lines.append(format_remote(result["remote"]))
    if "train" in result:
        ok = [r for r in result["train"].values() if "images_per_s" in r]
        where = "CUDA" if any(r.get("device") == "cuda" for r in ok) else "CPU"
        arith = ok[0].get("precision", "fp32") if ok else "fp32"
        how = f"{where}, {arith}" + ("" if arith == "fp32" else " autocast, channels_last")
        lines.append(f"end-to-end ResNet-18 training ({how}; "
                     f"{result['config']['train_steps']} steps per round):")
        for name, r in result["train"].items():
            if "images_per_s" not in r:
                lines.append(f"  {name:<26} failed: {r['reason']}")
                continue
            lines.append(f"  {name:<26} {r['images_per_s']:>7.1f} img/s ({r['images_per_s_min']:.1f}-"
                         f"{r['images_per_s_max']:.1f})  {100 * r['share_of_ceiling']:5.1f}% of ceiling  host wait "
                         f"{100 * r['host_wait_share']:5.1f}%")
    return "\n".join(lines)

"""One benchmark run and its report: :func:`run_bench` (loader throughput, plus end-to-end training sized to the
time budget), what it was measured on (:func:`machine_info`) and the plain-text table the CLI prints
(:func:`format_table`), noisy rows flagged."""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform

from .budget import FULL_TRAIN_STEPS, RunClock, plan_train_steps, train_cost_s
from .throughput import BASELINE, BenchConfig, open_bench_set, open_loaders, summarize_loaders, time_loaders

log = logging.getLogger(__name__)


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


def _train_plan(cfg: BenchConfig, clock: RunClock, shards, loaders: dict[str, dict], ok: list[str]):
    """The training part's plan: a dict for the result, and ``steps(seconds the loader rounds still take)`` ->
    timed steps per feeder and round (0: none). Measures one step of the model first unless ``--train-steps 0``."""
    plan: dict = {"mode": "fixed" if cfg.train_steps is not None else "full" if cfg.full else "budget",
                  "budget_s": cfg.budget_s, "steps": 0, "reason": None}
    if cfg.train_steps == 0 or not ok:
        plan["reason"] = "--train-steps 0" if cfg.train_steps == 0 else "no loader ran"
        return plan, lambda _left: 0
    from .training import CEILING, measure_step
    clock.tick("measuring one training step")
    plan["step_s"] = step_s = measure_step(cfg, shards)
    starts = {CEILING: 0.0, **{n: loaders[n]["time_to_first_batch_s"] for n in ok}}  # a fresh iterator per run
    plan.update(feeders=len(starts), rounds=cfg.rounds, warmup=cfg.warmup,
                start_s=sum(starts.values()) / len(starts))
    log.info("bench: one training step takes %.2f s here (batch %d, %s)", step_s, cfg.batch_size,
             "CUDA" if _cuda() else "CPU")

    def steps(loader_left: float) -> int:
        if plan["mode"] != "budget":
            return cfg.train_steps if cfg.train_steps is not None else FULL_TRAIN_STEPS
        n, plan["reason"] = plan_train_steps(step_s=step_s, feeders=plan["feeders"], rounds=cfg.rounds,
                                             warmup=cfg.warmup, start_s=plan["start_s"],
                                             seconds_left=cfg.budget_s - clock.elapsed() - loader_left)
        return n
    plan["estimate"] = lambda name: (cfg.warmup + plan["steps"]) * step_s + starts[name]
    return plan, steps


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def run_bench(cfg: BenchConfig) -> dict:
    """Loader benchmark, plus the end-to-end training benchmark (on CUDA when present, else on the CPU) sized by
    ``cfg.train_steps``, ``cfg.full`` or, by default, what fits ``cfg.budget_s`` (:mod:`fastfashion.bench.budget`),
    with one progress bar and ETA over the whole run. Returns a JSON-able dict."""
    clock = RunClock()
    try:
        with open_bench_set(cfg) as shards:  # opened once for every loader of the run
            result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
                      "config": dataclasses.asdict(cfg), "baseline": BASELINE}
            clock.tick("starting the loaders")
            loaders, running = open_loaders(cfg, shards)
            ok = [n for n in loaders if n in running]
            plan, steps = _train_plan(cfg, clock, shards, loaders, ok)
            feeders, warmup = plan.get("feeders", 0), cfg.warmup

            def training_left(loader_left: float) -> float:
                n = steps(loader_left)
                return train_cost_s(n, step_s=plan["step_s"], feeders=feeders, rounds=cfg.rounds, warmup=warmup,
                                    start_s=plan["start_s"]) if n else 0.0
            time_loaders(cfg, loaders, running, clock, after=training_left)
            result["loaders"] = summarize_loaders(loaders)
            if shards.url and ok and ok[-1] != BASELINE:  # cold and warm cache beside a local copy
                from .remote import run_remote_bench
                clock.tick("remote: cold and warm cache")
                result["remote"] = run_remote_bench(cfg, result["loaders"][ok[-1]]["backend"])
            if "dali-gpu" in cfg.backends and cfg.hw_decoder_loads:  # where the GPU has a hardware JPEG decoder
                from .hwdecoder import run_hw_decoder_sweep
                clock.tick("hw_decoder_load sweep")
                result["hw_decoder"] = run_hw_decoder_sweep(cfg, shards)
            plan["steps"] = steps(0.0)
            estimate = plan.pop("estimate", None)
            result["train_plan"] = plan
            if plan["steps"] > 0:
                from .training import run_train_bench
                result["train"] = run_train_bench(cfg, ok, shards, steps=plan["steps"], clock=clock,
                                                  estimate=estimate)
            elif plan["reason"] and plan["mode"] == "budget":
                log.info("bench: training part not run: %s", plan["reason"])
    finally:
        clock.close()
    result["warnings"] = [f"{part} {name}: {w}" for part in ("loaders", "train") for name, r in
                          result.get(part, {}).items() for w in r.get("warnings", ())]
    result["seconds"] = round(clock.elapsed(), 1)
    return result


NOISY = "  NOISY"  # the mark of a row whose rounds are too noisy to report (fastfashion.bench.rounds)


def _warning_lines(rows: dict[str, dict], indent: str, advice: str) -> list[str]:
    lines = [f"{indent}! {name}: {w}" for name, r in rows.items() for w in r.get("warnings", ())]
    return lines + [f"{indent}! noisy rows are not valid measurements: {advice}"] if lines else []


def format_table(result: dict) -> str:
    """A plain-text table of :func:`run_bench`'s result (what the CLI prints). Each ratio is the ratio of the
    medians printed beside it; a row whose rounds were too noisy ends in ``NOISY`` and its reasons follow the table."""
    m, cfg = result["machine"], result["config"]
    lines = [f"{result['date']}  {m.get('cpu')} x{m['cpu_count']}  GPU: {m.get('gpu') or 'none'}  "
             f"batch {cfg['batch_size']}, {cfg['image_size']} px, "
             f"augment={'train' if cfg['augment'] else 'eval'}, split {cfg['split']}",
             f"{'backend':<10} {'img/s':>8} {'min-max':>13} {'x seed':>7} {'CPU s/1k':>9} {'peak MB':>8} "
             f"{'1st batch s':>11}"]
    for name, r in result["loaders"].items():
        if r["status"] != "ok":
            lines.append(f"{name:<10} skipped: {r['reason']}")
            continue
        ratio = f"{r['ratio_to_baseline']:.2f}" if "ratio_to_baseline" in r else "-"
        lines.append(f"{name:<10} {r['images_per_s']:>8.0f} {r['images_per_s_min']:>6.0f}-{r['images_per_s_max']:<6.0f}"
                     f" {ratio:>7} {r['cpu_s_per_1000_images']:>9.2f} {r['peak_rss_mb']:>8.0f}"
                     f" {r['time_to_first_batch_s']:>11.2f}" + (NOISY if r.get("warnings") else ""))
    lines += _warning_lines(result["loaders"], "", "more --rounds or --batches, or a quieter machine")
    if "hw_decoder" in result:
        from .hwdecoder import format_sweep
        lines.append(format_sweep(result["hw_decoder"]))
    if "remote" in result:
        from .remote import format_remote
        lines.append(format_remote(result["remote"]))
    plan = result.get("train_plan", {})
    if "train" in result:
        ok = [r for r in result["train"].values() if "images_per_s" in r]
        where = "CUDA" if any(r.get("device") == "cuda" for r in ok) else "CPU"
        arith = ok[0].get("precision", "fp32") if ok else "fp32"
        how = f"{where}, {arith}" + ("" if arith == "fp32" else " autocast, channels_last")
        lines.append(f"end-to-end ResNet-18 training ({how}; {plan.get('steps', cfg['train_steps'])} steps per "
                     "round):")
        for name, r in result["train"].items():
            if "images_per_s" not in r:
                lines.append(f"  {name:<26} failed: {r['reason']}")
                continue
            lines.append(f"  {name:<26} {r['images_per_s']:>7.1f} img/s ({r['images_per_s_min']:.1f}-"
                         f"{r['images_per_s_max']:.1f})  {100 * r['share_of_ceiling']:5.1f}% of ceiling  host wait "
                         f"{100 * r['host_wait_share']:5.1f}%" + (NOISY if r.get("warnings") else ""))
        lines += _warning_lines(result["train"], "  ", "more --train-steps or --rounds, or a quieter machine")
    elif plan.get("mode") == "budget" and plan.get("reason"):
        lines.append(f"end-to-end ResNet-18 training not run: {plan['reason']}")
    return "\n".join(lines)

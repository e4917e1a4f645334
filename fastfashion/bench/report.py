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


class _TrainPlan:
    """The training part's plan (:mod:`fastfashion.bench.budget`): ``--train-steps N`` ("fixed"), ``--full``, or by
    default as many steps as fit what the loader rounds leave of the budget ("budget"). ``info`` goes into the
    result as ``train_plan``. In the budget mode the one-step measurement waits for the loader rounds and is skipped
    when they used the whole budget; the other modes measure it first, for the ETA."""

    def __init__(self, cfg: BenchConfig, clock: RunClock, shards, starts: dict[str, float]):
        self.cfg, self.clock, self.shards, self.starts = cfg, clock, shards, starts  # feeder -> iterator start s
        self.mode = "fixed" if cfg.train_steps is not None else "full" if cfg.full else "budget"
        self.info: dict = {"mode": self.mode, "budget_s": cfg.budget_s, "steps": 0, "reason": None}
        self.off = cfg.train_steps == 0 or len(starts) < 2  # asked for none, or no loader ran
        if self.off:
            self.info["reason"] = "--train-steps 0" if cfg.train_steps == 0 else "no loader ran"
        self.step_s: float | None = None

    def measure(self) -> None:
        from .training import measure_step
        self.clock.tick("measuring one training step")
        self.step_s = measure_step(self.cfg, self.shards)
        self.info.update(step_s=self.step_s, feeders=len(self.starts), rounds=self.cfg.rounds, warmup=self.cfg.warmup,
                         start_s=sum(self.starts.values()) / len(self.starts))
        log.info("bench: one training step takes %.2f s here (batch %d, %s)", self.step_s, self.cfg.batch_size,
                 "CUDA" if _cuda() else "CPU")

    def _left(self, loader_left: float) -> float:
        return self.cfg.budget_s - self.clock.elapsed() - loader_left

    def steps(self, loader_left: float) -> int:
        """Timed steps per feeder and round, the loader rounds still taking ``loader_left`` seconds."""
        if self.off or self.step_s is None:
            return 0
        if self.mode != "budget":
            return self.cfg.train_steps if self.cfg.train_steps is not None else FULL_TRAIN_STEPS
        n, self.info["reason"] = plan_train_steps(step_s=self.step_s, feeders=len(self.starts),
                                                  rounds=self.cfg.rounds, warmup=self.cfg.warmup,
                                                  start_s=self.info["start_s"], seconds_left=self._left(loader_left))
        return n

    def seconds(self, loader_left: float) -> float:
        """Seconds the training part is expected to take (for the ETA)."""
        if self.off:
            return 0.0
        if self.step_s is None:  # the budget mode before its measurement: at most what the budget leaves
            return max(0.0, self._left(loader_left))
        n = self.steps(loader_left)
        return train_cost_s(n, step_s=self.step_s, feeders=len(self.starts), rounds=self.cfg.rounds,
                            warmup=self.cfg.warmup, start_s=self.info["start_s"]) if n else 0.0

    def decide(self) -> int:
        """After the loader rounds: the steps to run (measuring one step first where still needed)."""
        if self.off:
            return 0
        if self.step_s is None:
            if self._left(0.0) <= 0:
                self.info["reason"] = (f"the loader rounds took {self.clock.elapsed():.0f} s of the "
                                       f"{self.cfg.budget_s:.0f} s budget, none is left to train; --full runs "
                                       f"{FULL_TRAIN_STEPS} steps, --train-steps N any number")
                return 0
            self.measure()
        self.info["steps"] = self.steps(0.0)
        return self.info["steps"]

    def estimate(self, feeder: str) -> float:
        """Seconds one run of ``feeder`` is expected to take."""
        return (self.cfg.warmup + self.info["steps"]) * (self.step_s or 0.0) + self.starts[feeder]


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def run_bench(cfg: BenchConfig) -> dict:
    """Loader benchmark, plus the end-to-end training benchmark (on CUDA when present, else on the CPU) sized by
    ``cfg.train_steps``, ``cfg.full`` or, by default, what fits ``cfg.budget_s`` (:mod:`fastfashion.bench.budget`),
    with one progress bar and ETA over the whole run. Returns a JSON-able dict."""
    from .training import CEILING
    clock = RunClock()
    try:
        with open_bench_set(cfg) as shards:  # opened once for every loader of the run
            result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
                      "config": dataclasses.asdict(cfg), "baseline": BASELINE}
            clock.tick("starting the loaders")
            loaders, running = open_loaders(cfg, shards)
            ok = [n for n in loaders if n in running]
            plan = _TrainPlan(cfg, clock, shards,  # a feeder's run starts a fresh iterator: its first batch's time
                              {CEILING: 0.0, **{n: loaders[n]["time_to_first_batch_s"] for n in ok}})
            if not plan.off and plan.mode != "budget":
                plan.measure()  # the training part runs whatever it costs: the ETA shows how long from the start
            time_loaders(cfg, loaders, running, clock, after=plan.seconds)
            result["loaders"] = summarize_loaders(loaders)
            if shards.url and ok and ok[-1] != BASELINE:  # cold and warm cache beside a local copy
                from .remote import run_remote_bench
                clock.tick("remote: cold and warm cache")
                result["remote"] = run_remote_bench(cfg, result["loaders"][ok[-1]]["backend"])
            if "dali-gpu" in cfg.backends and cfg.hw_decoder_loads:  # where the GPU has a hardware JPEG decoder
                from .hwdecoder import run_hw_decoder_sweep
                clock.tick("hw_decoder_load sweep")
                result["hw_decoder"] = run_hw_decoder_sweep(cfg, shards)
            steps = plan.decide()
            result["train_plan"] = plan.info
            if steps > 0:
                from .training import run_train_bench
                result["train"] = run_train_bench(cfg, ok, shards, steps=steps, clock=clock, estimate=plan.estimate)
            elif plan.mode == "budget" and not plan.off:
                log.info("bench: training part not run: %s", plan.info["reason"])
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


def _mb(row: dict) -> str:
    """MB per batch as delivered, and its kind (uint8 batches are finished on the training device)."""
    return f"{row['mb_per_batch']:.1f} {row.get('output', 'float')[0]}" if "mb_per_batch" in row else "-"


def format_table(result: dict) -> str:
    """A plain-text table of :func:`run_bench`'s result (what the CLI prints). Each ratio is the ratio of the
    medians printed beside it; a row whose rounds were too noisy ends in ``NOISY`` and its reasons follow the table."""
    m, cfg = result["machine"], result["config"]
    lines = [f"{result['date']}  {m.get('cpu')} x{m['cpu_count']}  GPU: {m.get('gpu') or 'none'}  "
             f"batch {cfg['batch_size']}, {cfg['image_size']} px, "
             f"augment={'train' if cfg['augment'] else 'eval'}, split {cfg['split']}, "
             f"output {cfg.get('output', 'float')} (MB/batch: u = uint8, finished on the model's device)",
             f"{'backend':<10} {'img/s':>8} {'min-max':>13} {'x seed':>7} {'CPU s/1k':>9} {'peak MB':>8} "
             f"{'1st batch s':>11} {'MB/batch':>9}"]
    for name, r in result["loaders"].items():
        if r["status"] != "ok":
            lines.append(f"{name:<10} skipped: {r['reason']}")
            continue
        ratio = f"{r['ratio_to_baseline']:.2f}" if "ratio_to_baseline" in r else "-"
        lines.append(f"{name:<10} {r['images_per_s']:>8.0f} {r['images_per_s_min']:>6.0f}-{r['images_per_s_max']:<6.0f}"
                     f" {ratio:>7} {r['cpu_s_per_1000_images']:>9.2f} {r['peak_rss_mb']:>8.0f}"
                     f" {r['time_to_first_batch_s']:>11.2f} {_mb(r):>9}" + (NOISY if r.get("warnings") else ""))
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

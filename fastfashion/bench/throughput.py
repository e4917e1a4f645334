"""Loader throughput, measured side by side in one run.

Every backend (the seed-style folder baseline, torch, DALI on CPU, DALI on GPU when CUDA is present) reads
the same split with the same batch size and augmentation. Rounds are interleaved (round 1 of every backend, then
round 2 ...) so that a noisy, shared machine slows all of them alike; each round starts a fresh epoch iterator, drops
``warmup`` batches, then times ``batches`` batches. Reported per backend (:mod:`fastfashion.bench.rounds`): the median
images/s and its spread over rounds, the ratio of that median to the baseline's (and, beside it, the median of the
same-round ratios), warnings when the rounds are too noisy to report, host CPU seconds per 1,000 images (the process
and its worker processes), the peak resident memory of the process tree while that backend ran, and the time from
constructing the loader to its first batch.

:func:`fastfashion.bench.report.run_bench` runs this and the training benchmark
(:mod:`fastfashion.bench.training`), sized to a time budget (:mod:`fastfashion.bench.budget`).

Names: ``seed`` is the seed-style baseline (:mod:`fastfashion.bench.baseline`); every other name is a loader backend
of :data:`fastfashion.loading.base.BACKENDS`, built with exactly that name.
"""
from __future__ import annotations

import dataclasses
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator

from ..errors import ConfigError, FastfashionError, fix_param, fixable
from ..format.spec import TRAIN
from ..hardware import PRECISIONS, DeviceError, available_cpus, bound_to_cpus
from ..loading.augment import check_image_size, parse_image_size
from ..loading.backends.jpeg_engine import SWEEP
from ..loading.base import BACKENDS, OUTPUTS
from ..loading.order import DEFAULT_WINDOW
from ..options import option
from ..remote.store import RemoteConfig
from .budget import DEFAULT_BUDGET_S, FULL_TRAIN_STEPS, MIN_TRAIN_STEPS
from .rounds import noise_warnings, ratios, summarize

log = logging.getLogger(__name__)

BASELINE = "seed"
ALL_BACKENDS = (BASELINE, *BACKENDS)
DESCRIPTIONS = {BASELINE: "seed-style baseline: PIL + torchvision transforms over the image folder, DataLoader workers",
                **{name: spec.description for name, spec in BACKENDS.items()}}


class BenchError(FastfashionError, RuntimeError):
    """One benchmark cannot run here as configured (no source folder for the baseline, a split smaller than a
    batch); :func:`run_loader_bench` records it as that backend's skip reason."""


def parse_loads(text: str) -> tuple[float, ...]:
    """``--hw-decoder-loads 0,0.5`` -> ``(0.0, 0.5)`` (checked by BenchConfig)."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"hw_decoder_loads must be numbers between 0 and 1, got {text!r}") from None


def parse_backends(text: str) -> tuple[str, ...]:
    """``--backends dali-cpu,torch`` -> ``("dali-cpu", "torch")`` (checked by BenchConfig)."""
    return tuple(b.strip() for b in text.split(",") if b.strip())


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchConfig:
    shard_dir: str = option(flag="--shards", metavar="SHARD_DIR", help="shard set written by `fastfashion shard`")
    source: str | None = option(None, metavar="SRC_DIR", help=(  # None: baseline skipped
        "raw FashionDataset folder the shards were made from, read by the seed-style baseline (without it the "
        "baseline is skipped and no ratios are reported)"))
    split: str = option(TRAIN, metavar="SPLIT", help="split to read (default: %(default)s)")
    backends: tuple[str, ...] = option(ALL_BACKENDS, metavar="LIST", parse=parse_backends, help=(
        "comma-separated subset of %(default)s (dali-gpu is skipped without CUDA)"))
    batch_size: int = option(64, help="default: %(default)s")
    image_size: int | tuple[int, int] = option(224, type=parse_image_size, metavar="N|HxW", help=(
        "square side, or HEIGHTxWIDTH (e.g. 64x48), each 8..1024 (default: %(default)s)"))
    augment: bool = option(True, flag="--no-augment", dest="no_augment", help=(  # the seed's set on every backend
        "eval transform instead of the full train augmentation"))
    output: str = option("uint8", flag="--loader-output", choices=OUTPUTS, help=(  # LoaderConfig.output
        "what the fastfashion backends deliver: uint8 images + a colour matrix per sample, finished on the model's "
        "device (the trainer's default), or float images finished by the loader; the seed-style baseline always "
        "delivers float (default: %(default)s)"))
    rounds: int = option(5, help="timed rounds per backend (default: %(default)s)")  # the median is reported
    batches: int = option(20, help="timed batches per round (default: %(default)s)")
    warmup: int = option(3, help="batches dropped per round (default: %(default)s)")  # pipeline fill
    workers: int = option(default_factory=available_cpus, help=(  # CPUs this process may use
        "DataLoader workers of the seed and torch backends (default: the CPUs available)"))
    train_steps: int | None = option(None, help=(  # per feeder and round; None: sized to the budget (budget.py)
        "then train ResNet-18 for N timed steps per feeder and round, fed by each backend and by an in-memory batch "
        "(the ceiling), rounds interleaved; on CUDA when present, else on the CPU (0: skip; default: as many as fit "
        f"--budget, at most {FULL_TRAIN_STEPS}, measured from one step of the model here; none when fewer than "
        f"{MIN_TRAIN_STEPS} fit, e.g. at 224 px on a 2-core CPU, where a step takes seconds)"))
    full: bool = option(False, help=(  # the long form, one flag away
        f"the long form: {FULL_TRAIN_STEPS} training steps per feeder and round whatever the budget (minutes on a "
        "GPU, most of an hour on 2 CPU cores at 224 px; the ETA shows which)"))
    budget_s: float = option(DEFAULT_BUDGET_S, flag="--budget", metavar="SECONDS", help=(
        "wall time the default run aims at: the loader rounds always run, the training part gets what is left "
        "(default: %(default)s)"))
    verify: bool = option(True, flag="--no-verify", help=(
        "skip checking the shard files against the manifest's sha256 before reading"))
    remote: RemoteConfig = RemoteConfig()     # shard_dir as a URL: storage options, cache folder and limit
    order: str | None = option(None, choices=("blocked", "windowed"), help=(
        "sample order (default: blocked; windowed when a remote split exceeds --cache-limit)"))
    window: int = option(DEFAULT_WINDOW, help="shards per window of the windowed order (default: %(default)s)")
    dali_threads: int | None = option(None, help=(
        "CPU threads per DALI pipeline (default: the loader's: the CPUs available, at most 8 on GPU)"))
    hw_decoder_loads: tuple[float, ...] = option(SWEEP, metavar="LIST", parse=parse_loads, help=(
        "hw_decoder_load values dali-gpu is read with in turn where the GPU has a hardware JPEG decoder "
        "(A100/H100/H200; skipped elsewhere), comma-separated, empty to skip (default: 0,0.5,0.75,0.9)"))
    precision: str = option("auto", choices=PRECISIONS, help=(  # train/device.py: amp also runs bf16 on a CPU
        "the training benchmark's step, as `train --precision` (default: %(default)s)"))
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", check_image_size(self.image_size))
        for name in ("batch_size", "rounds", "batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "train_steps", "workers"):
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        # the seed-style baseline's DataLoader takes workers as they are: bounded here like the loader's (no storm)
        object.__setattr__(self, "workers", bound_to_cpus("workers", self.workers, "loader workers of the bench"))
        if not self.budget_s > 0:
            raise ConfigError(f"budget_s must be > 0 seconds, got {self.budget_s}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if any(not 0.0 <= v <= 1.0 for v in self.hw_decoder_loads):
            raise ConfigError(f"hw_decoder_loads must be between 0 and 1, got {self.hw_decoder_loads}")
        unknown = [b for b in self.backends if b not in ALL_BACKENDS]
        if unknown:
            raise ConfigError(f"unknown backend {unknown[0]!r}; choose from {', '.join(ALL_BACKENDS)}")


class _PeakRSS:
    """Samples the resident memory of this process and its children in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.05):
        try:
            import psutil
            self._proc = psutil.Process()
        except ImportError:  # an offline GPU machine may lack psutil: peak RSS of this process alone
            self._proc = None
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        if self._proc is None:
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        total = 0
        for p in [self._proc, *self._proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # a worker that just exited
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self._interval)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process, its live children and its reaped children."""
    import resource
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    try:
        import psutil
    except ImportError:  # live worker processes are then not counted (reaped ones are)
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except Exception:
            pass
    return total


def open_bench_set(cfg: BenchConfig):
    """The :class:`~fastfashion.shardset.ShardSet` of ``cfg.shard_dir``, opened once for every loader of a run."""
    from ..shardset import ShardSet
    return ShardSet.open(cfg.shard_dir, remote=cfg.remote, verify=cfg.verify)


def make_bench_loader(name: str, cfg: BenchConfig, shards, *, for_training: bool = False):
    """The loader for one name of :data:`ALL_BACKENDS` over ``shards`` (:func:`open_bench_set`); raises
    RuntimeError when it cannot run here. ``for_training`` on CUDA: the torch backend delivers to the GPU from
    pinned memory, as for ``fastfashion train``."""
    if name == BASELINE:
        from .baseline import make_baseline_loader
        if cfg.source is None:
            raise fixable(BenchError("the seed-style baseline reads the raw image folder, and no source folder "
                                       "was given"), "source")
        return make_baseline_loader(cfg.source, shards.schema, cfg.split, batch_size=cfg.batch_size,
                                image_size=cfg.image_size, workers=cfg.workers, augment=cfg.augment)
    import torch

    from ..loading.base import LoaderConfig
    from ..loading.loader import FashionLoader
    needs_cuda = BACKENDS[name].needs_cuda
    if needs_cuda and not torch.cuda.is_available():
        raise DeviceError("no CUDA device")
    to_gpu = needs_cuda or (for_training and name == "torch" and torch.cuda.is_available())
    device = "cuda" if to_gpu else "cpu"
    return FashionLoader(shards, LoaderConfig(
        split=cfg.split, batch_size=cfg.batch_size, backend=name, device=device, augment=cfg.augment,
        image_size=cfg.image_size, seed=cfg.seed, rank=0, world_size=1,
        workers=cfg.workers, verify=cfg.verify, remote=cfg.remote, order=cfg.order,
        window=cfg.window, dali_threads=cfg.dali_threads, output=cfg.output))  # workers: the baseline's


def endless(loader, start_epoch: int) -> Iterator:
    """Batches across epoch boundaries (tiny sets have fewer batches than a round wants)."""
    epoch = start_epoch
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        n = 0
        for batch in loader:
            n += 1
            yield batch
        if n == 0:
            raise BenchError("the loader yielded no batch: the split is smaller than one batch")
        epoch += 1


def sync(images) -> None:
    """Wait for the GPU work behind ``images`` (a no-op for CPU tensors): time until done, not until queued."""
    if getattr(images, "is_cuda", False):
        import torch
        torch.cuda.synchronize()


def batch_bytes(batch) -> int:
    """Bytes of a batch as delivered (images, labels and, for uint8 output, the colour matrices): what a loader on
    the host moves to the training device per batch."""
    return sum(t.numel() * t.element_size() for t in (batch.images, batch.labels, getattr(batch, "colour", None))
               if t is not None)


def _time_round(loader, cfg: BenchConfig, round_index: int) -> tuple[float, float, int, int]:
    """One round: fresh iterator, warm-up, then ``cfg.batches`` timed batches. Returns (seconds, cpu s, images,
    bytes of a full batch)."""
    it = endless(loader, start_epoch=round_index)
    for _ in range(cfg.warmup):
        sync(next(it).images)
    images = 0
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    for _ in range(cfg.batches):
        batch = next(it)
        images += batch.images.shape[0]
    sync(batch.images)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    size = batch_bytes(batch)
    it.close()  # shuts DataLoader workers down before the next backend runs
    return seconds, cpu, images, size


PRIOR_IMAGES_PER_S = 300  # a round's guess before its first measurement (the seed-style loader on 2 cores: ~370)


def open_loaders(cfg: BenchConfig, shards) -> tuple[dict[str, dict], dict]:
    """Build every loader of ``cfg.backends`` and time its first batch: (results so far, the loaders that run).
    A loader that cannot run here is recorded as skipped, with the reason."""
    results: dict[str, dict] = {}
    loaders = {}
    for name in cfg.backends:
        res = results[name] = {"description": DESCRIPTIONS[name], "rounds": [], "cpu_s": [], "peak_rss": 0}
        t0 = time.perf_counter()
        try:
            loader = make_bench_loader(name, cfg, shards)
            with _PeakRSS() as mem:
                first = next(iter(loader), None)
                if first is None:
                    raise fixable(BenchError(f"the {cfg.split} split is smaller than one batch of {cfg.batch_size}"),
                                  "batch_size")
                sync(first.images)
        except (RuntimeError, ImportError, OSError) as e:
            res.update(status="skipped", reason=str(e).splitlines()[0], fix=fix_param(e))
            log.warning("bench: %s skipped: %s", name, res["reason"])
            continue
        if name == "dali-gpu":  # rounds stop mid-epoch, and a new pass rebuilds the pipeline: its cache starts empty
            res["decoder_cache"] = "cold (warm-cache full epochs: benchmarks/gpu_cache.py)"
        res.update(status="ok", backend=getattr(loader, "backend", name),
                   time_to_first_batch_s=time.perf_counter() - t0,
                   peak_rss=mem.peak)
        loaders[name] = loader
    return results, loaders


def time_loaders(cfg: BenchConfig, results: dict[str, dict], loaders: dict, clock=None,
                 after: Callable[[float], float] = lambda _left: 0.0) -> None:
    """The timed rounds of ``loaders`` (from :func:`open_loaders`), interleaved, into ``results``; then the loaders
    are closed. ``clock`` (:class:`~fastfashion.bench.budget.RunClock`) shows them, with ``after(seconds these
    rounds still take)`` the seconds expected after them."""
    took: dict[str, list[float]] = {name: [] for name in loaders}
    images = (cfg.warmup + cfg.batches) * cfg.batch_size

    def left(r: int, done: set) -> float:  # seconds the rounds still take: each loader's mean so far, else a guess
        est = {n: (sum(t) / len(t) if t else results[n]["time_to_first_batch_s"] + images / PRIOR_IMAGES_PER_S)
               for n, t in took.items()}
        rest = sum(est.values()) * (cfg.rounds - r - 1) + sum(v for n, v in est.items() if n not in done)
        return rest + after(rest)

    for r in range(cfg.rounds):
        done: set = set()
        for name, loader in loaders.items():
            if clock is not None:
                clock.left = lambda r=r, done=done: left(r, done)
                clock.tick(f"loaders round {r + 1}/{cfg.rounds}: {name}")
            t0 = time.perf_counter()
            with _PeakRSS() as mem:
                seconds, cpu, n, size = _time_round(loader, cfg, r)
            took[name].append(time.perf_counter() - t0)
            done.add(name)
            res = results[name]
            res["rounds"].append(n / seconds)
            res["cpu_s"].append(1000 * cpu / n)
            res["peak_rss"] = max(res["peak_rss"], mem.peak)
            res["mb_per_batch"] = size / 1e6
            res["output"] = "float" if name == BASELINE else cfg.output
    for loader in loaders.values():
        if hasattr(loader, "close"):
            loader.close()
    if clock is not None:
        clock.left = lambda: after(0.0)
        clock.phase(f"loader rounds done ({len(loaders)} loaders x {cfg.rounds} rounds)")


def summarize_loaders(results: dict[str, dict]) -> dict[str, dict]:
    """Median, spread, ratio to the baseline and noise warnings of every loader that ran (see
    :mod:`fastfashion.bench.rounds`), in place; returns ``results``."""
    base = results.get(BASELINE, {}).get("rounds") or None
    for res in results.values():
        if res["status"] != "ok":
            continue
        rounds = res["rounds"]
        res.update(**summarize(rounds), cpu_s_per_1000_images=statistics.median(res.pop("cpu_s")),
                   peak_rss_mb=res.pop("peak_rss") / 2**20)
        ratio = paired = None
        if base:
            ratio, paired, same_round = ratios(rounds, base)
            res.update(ratio_to_baseline=ratio, ratio_to_baseline_paired=paired,
                       ratio_to_baseline_rounds=same_round)
        res["warnings"] = noise_warnings(rounds, ratio=ratio, paired=paired)
    return results


def run_loader_bench(cfg: BenchConfig, shards=None, *, clock=None) -> dict[str, dict]:
    """Loader throughput of every backend in ``cfg.backends``, rounds interleaved (``shards``: the opened set,
    else ``cfg.shard_dir`` is opened). See the module docstring."""
    if shards is None:
        with open_bench_set(cfg) as opened:
            return run_loader_bench(cfg, opened, clock=clock)
    results, loaders = open_loaders(cfg, shards)
    time_loaders(cfg, results, loaders, clock)
    return summarize_loaders(results)

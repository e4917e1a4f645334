"""Training :class:`~fastfashion.train.model.FashionNet` on a shard set; evaluate/predict: :mod:`.inference`.

Pieces, as in torchvision's reference scripts: :class:`TrainStep` (one optimizer step), :func:`train_one_epoch`,
:func:`evaluate` (metrics over a loader) and :func:`train`, the thin driver (setup, resume, the epoch loop, saving).

The defaults are the seed report's recipe: Adam (lr 1e-4, weight decay 1e-3), ReduceLROnPlateau (factor 0.1,
patience 5) on validation average class accuracy, dropout 0.5, class-weighted cross-entropy; batch 64. On CUDA the
step runs under AMP with channels_last (dtype: :func:`~fastfashion.train.device.amp_dtype`; fp16 with a
GradScaler); on the CPU in fp32.
Under ``torchrun`` it runs DDP (see :mod:`fastfashion.train.distributed`): each rank reads its disjoint share of every
split, metrics are summed confusion matrices over ranks, and only rank 0 writes files.

Run directory: ``last.pt`` (every epoch), ``best.pt`` (best val average class accuracy), ``metrics.json`` (a list
of per-epoch dicts ``{"epoch", "train", "val", "images_per_s", "data_wait_share", "lr", "step", "train_seconds",
"val_seconds", "minutes", "cpu_minutes", "image_size", "run_id"}``; ``minutes``: training plus validation wall time
so far, across resumes; ``cpu_minutes``: the CPU time of the same, which other load on the machine inflates less) and
``curves.png`` (loss and accuracy curves, when matplotlib is installed). A folder holds one run: every checkpoint and
metrics row carries the run's id (:mod:`.checkpoint`); ``overwrite`` removes the previous run's files before the new
run writes anything, and a run that fails leaves no empty folder it created. Files are written atomically (temporary
file beside, then ``os.replace``); JSON holds ``null`` where a metric is undefined (see
:func:`fastfashion.train.metrics.json_safe`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import ConfigError, fixable
from ..format.atomic import write_file
from ..format.spec import TEST, TRAIN, VAL
from ..hardware import resolve_device
from ..loading.base import LoaderConfig
from ..loading.loader import FashionLoader
from ..progress import progress
from ..schema import Schema
from ..shardset import ShardSet
from . import checkpoint as ckpt_io
from . import distributed
from .config import REFERENCE_LR, REFERENCE_WEIGHT_DECAY, TTA_CHOICES, TrainConfig, TrainError
from .device import autocast as make_autocast
from .device import channels_last as use_channels_last
from .device import to_device
from .ema import WeightEMA
from .loss import loss_weights, multi_head_loss
from .metrics import MetricAccumulator, json_safe
from .model import FashionNet
from .preemption import CheckpointPolicy, Preempted, StopFlag, agree, poll
from .schedule import LRSchedule

log = logging.getLogger(__name__)


def build_model(schema: Schema, device: torch.device, *, weights=None, dropout: float = 0.5,
                precision: str = "auto") -> FashionNet:
    """:class:`FashionNet` on ``device`` (channels_last where mixed precision runs: :mod:`.device`), initial
    ``weights`` as :class:`FashionNet` takes."""
    model = FashionNet(schema, weights=weights, dropout=dropout).to(device)
    return model.to(memory_format=torch.channels_last) if use_channels_last(device, precision) else model


class TrainStep:
    """One optimizer step of the trainer: AMP autocast (GradScaler for fp16), class-weighted multi-head loss, Adam.
    :func:`train` and the training benchmark both run it."""

    def __init__(self, model: torch.nn.Module, weights: Sequence[torch.Tensor | None], device: torch.device, *,
                 lr: float = REFERENCE_LR, weight_decay: float = REFERENCE_WEIGHT_DECAY, label_smoothing: float = 0.0,
                 net: torch.nn.Module | None = None, optimizer: str = "adam", precision: str = "auto",
                 log_priors: Sequence[torch.Tensor] | None = None):
        self.model, self.net = model, net if net is not None else model  # net: the DDP wrapper, if any
        self.weights, self.device, self.label_smoothing = list(weights), device, label_smoothing
        self.log_priors = log_priors  # the logit-adjusted loss (loss_weights)
        self.channels_last = use_channels_last(device, precision)
        if device.type == "cuda":  # every step has the same input size: let cuDNN time and keep the fastest kernels
            torch.backends.cudnn.benchmark = True
        opt = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt(model.parameters(), lr=lr, weight_decay=weight_decay,
                             fused=True)  # fused: ~10x faster step on the CPU than foreach
        self.autocast, needs_scaler = make_autocast(device, precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler)

    def prepare(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of a batch on the step's device and memory format."""
        return to_device(batch, self.device, self.channels_last)

    def run(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Forward, loss, backward and optimizer step on prepared tensors; returns ``(logits, labels, loss)``."""
        with self.autocast():
            logits = self.net(images)
            loss = multi_head_loss(logits, labels, self.weights, self.label_smoothing, self.log_priors)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return logits, labels, loss

    def __call__(self, batch) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Train on one batch: :meth:`prepare` then :meth:`run`."""
        return self.run(*self.prepare(batch))


@dataclasses.dataclass
class EpochResult:
    metrics: dict            # train metrics (summed over ranks)
    steps: int               # optimizer steps taken
    images: int              # images trained on by this rank
    seconds: float
    data_wait: float         # seconds spent waiting for the loader


def train_one_epoch(step: TrainStep, loader: FashionLoader, schema: Schema, *, max_steps: int | None = None,
                    acc: MetricAccumulator | None = None, on_step=None, carried: dict | None = None,
                    desc: str = "train", disable_bar: bool = False) -> EpochResult:
    """One pass over the rest of ``loader``'s epoch (at most ``max_steps`` steps) with ``step``; metrics summed
    over ranks. ``acc`` and ``carried`` (``{"steps", "images", "seconds", "wait"}``) continue an epoch resumed from a
    checkpoint; ``on_step(acc, partial EpochResult)`` runs after every step (the trainer's checkpoints)."""
    step.net.train()
    acc = acc if acc is not None else MetricAccumulator(schema)
    c = carried or {}
    wait, images, steps = c.get("wait", 0.0), c.get("images", 0), c.get("steps", 0)
    t_start = time.perf_counter() - c.get("seconds", 0.0)
    done = steps
    # a checkpoint taken after the epoch's last step (before validation) leaves nothing of this epoch to train: the
    # loader's state is then the next epoch's start, and iterating would train the epoch a second time
    it = iter(loader) if steps < len(loader) else iter(())
    with progress(total=len(loader), initial=steps, desc=desc, leave=False, off=disable_bar) as bar:
        while max_steps is None or steps - done < max_steps:
            t0 = time.perf_counter()
            batch = next(it, None)
            wait += time.perf_counter() - t0
            if batch is None:
                break
            logits, labels, loss = step(batch)
            steps += 1
            images += labels.shape[0]
            acc.update(logits, labels, loss.detach())
            bar.update(1)
            if steps % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if on_step is not None:
                on_step(acc, EpochResult({}, steps, images, time.perf_counter() - t_start, wait))
    del it
    elapsed = time.perf_counter() - t_start
    acc.all_reduce()
    return EpochResult(acc.compute(), steps, images, elapsed, wait)


def infer(model, images: torch.Tensor, tta: str = "none") -> list[torch.Tensor]:
    """The model's logits per attribute; ``tta="flip"``: the mean of the logits of the images and of their mirror
    images (test-time flip; twice the compute)."""
    logits = model(images)
    if tta == "flip":
        logits = [(a + b) / 2 for a, b in zip(logits, model(images.flip(3)))]
    elif tta != "none":
        raise ConfigError(f"tta must be one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    return logits


def evaluate(model, loader, schema: Schema, device: torch.device, *, class_weights=None, desc: str = "eval",
             disable_bar: bool = False, tta: str = "none", precision: str = "auto", log_priors=None) -> dict:
    """Metrics of ``model`` over ``loader`` (this rank's share), summed over ranks (see
    :mod:`fastfashion.train.metrics`); with ``class_weights`` (one tensor per attribute) also the weighted loss;
    ``tta`` as :func:`infer` takes it; ``precision`` as :mod:`.device` takes it; ``log_priors`` as
    :func:`multi_head_loss` takes them (the loss only: predictions are the model's own logits)."""
    autocast, _ = make_autocast(device, precision)
    cl = use_channels_last(device, precision)
    acc = MetricAccumulator(schema)
    model.eval()
    with torch.inference_mode(), autocast():
        for batch in progress(loader, desc=desc, leave=False, off=disable_bar):
            images, labels = to_device(batch, device, cl)
            logits = infer(model, images, tta)
            loss = (multi_head_loss(logits, labels, class_weights, log_priors=log_priors)
                    if class_weights is not None else None)
            acc.update(logits, labels, loss)
    acc.all_reduce()
    return acc.compute()


@dataclasses.dataclass
class TrainState:
    epoch: int = 0            # completed epochs
    step: int = 0             # optimizer steps taken
    best: float = -math.inf   # best val average class accuracy
    history: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Run:
    """Everything one training run holds: model, step, loaders, scheduler, state."""

    cfg: TrainConfig
    out: Path
    schema: Schema
    device: torch.device
    dinfo: distributed.DistInfo
    model: FashionNet
    step: TrainStep
    scheduler: LRSchedule
    train_loader: FashionLoader
    val_loader: FashionLoader
    state: TrainState
    shards: ShardSet | None = None  # the set both loaders read
    stop: StopFlag = dataclasses.field(default_factory=StopFlag)
    policy: CheckpointPolicy | None = None
    progress: dict | None = None  # a mid-epoch checkpoint's epoch progress, to continue that epoch
    ema: WeightEMA | None = None  # the averaged weights that are validated and saved as best.pt
    run_id: str = dataclasses.field(default_factory=ckpt_io.new_run_id)  # kept across resumes

    def close(self) -> None:
        """Release both loaders (pipelines, workers, mappings)."""
        self.train_loader.close()
        self.val_loader.close()

    @property
    def judged(self) -> torch.nn.Module:
        """The model that is validated and kept as best.pt: the weight average when the run keeps one."""
        return self.ema.module if self.ema is not None else self.model


def train(cfg: TrainConfig, *, shards: ShardSet | None = None) -> dict:
    """Train per ``cfg``; returns ``{"best_avg_class_accuracy", "epochs", "steps", "out", "history"}``.

    ``shards``: the opened set to train on (the caller closes it); None opens ``cfg.shard_dir`` once (with
    ``cfg.remote`` and ``cfg.verify``) for both loaders and closes it at the end.

    Raises :class:`TrainError` for a shard set that cannot be trained on (unlabelled val, no full batch, another
    schema than the checkpoint to resume), what the loader and checkpoint readers raise, RuntimeError for an
    unavailable device. ``resume`` continues from ``last.pt`` and ends where an uninterrupted run ends (a run cut
    short by ``max_steps`` resumes at the next epoch).
    """
    device = resolve_device(cfg.device)
    dinfo = distributed.setup(device.type)
    opened, run, created = None, None, []
    try:
        created = _check_out(Path(cfg.out), dinfo)  # before any work
        if shards is None:
            shards = opened = ShardSet.open(cfg.shard_dir, remote=cfg.remote, verify=cfg.verify)
        run = _start(cfg, device, dinfo, shards)
        with run.stop.installed():
            result = _train(run)
    except BaseException:
        # no barrier: the other ranks may be blocked in a collective this rank will never join
        distributed.teardown(dinfo, failed=True)
        _remove_empty(created)
        raise
    finally:
        if run is not None:
            run.close()
        if opened is not None:
            opened.close()
    distributed.teardown(dinfo)
    return result


def _start(cfg: TrainConfig, device: torch.device, dinfo: distributed.DistInfo, shards: ShardSet) -> _Run:
    """Build the model, the step, the loaders and the scheduler; resume from ``last.pt`` when asked."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # under torchrun: the local rank's GPU
    manifest, schema = shards.manifest, shards.schema
    if not manifest["splits"].get(VAL, {}).get("labelled", False):
        raise TrainError(f"{shards}: the {VAL} split is missing or unlabelled; training validates every epoch")
    _seed_everything(cfg.seed)
    # resuming overwrites every weight: do not fetch the initial ones (e.g. imagenet while offline)
    model = build_model(schema, device, weights=None if cfg.resume else cfg.weights, dropout=cfg.dropout,
                        precision=cfg.precision)
    net = model
    if dinfo.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                        else None)
    weights, log_priors = loss_weights(manifest, device, cfg.class_balance)
    step = TrainStep(model, weights, device, lr=cfg.lr, weight_decay=cfg.weight_decay, log_priors=log_priors,
                     label_smoothing=cfg.label_smoothing, net=net, optimizer=cfg.optimizer, precision=cfg.precision)
    common = LoaderConfig(batch_size=cfg.batch_size, backend=cfg.backend, device=device,
                          image_size=cfg.image_size, seed=cfg.seed, rank=dinfo.rank, world_size=dinfo.world_size,
                          workers=cfg.workers, verify=cfg.verify, remote=cfg.remote, output=cfg.loader_output)
    train_loader = FashionLoader(shards, dataclasses.replace(
        common, split=TRAIN, augment=cfg.train_augment(), shuffle=True, drop_last=True))
    val_loader = FashionLoader(shards, dataclasses.replace(
        common, split=VAL, augment=False, shuffle=False, drop_last=False))
    if shards.cache is not None:  # a URL: cache what predict reads by default too, so that predict --offline works
        shards.cache.fetch_also(TEST)
    if len(train_loader) == 0:
        n = manifest["splits"][TRAIN]["num_samples"] // dinfo.world_size
        raise fixable(TrainError(f"{shards}: {n} train samples per rank make no full batch of {cfg.batch_size}"),
                      "batch_size")
    log.info("training on %s (%s loader, %d rank(s)), %d train batches per epoch, recipe %s", device,
             train_loader.backend, dinfo.world_size, len(train_loader), cfg.recipe)
    scheduler = LRSchedule(step.optimizer, cfg.schedule, total_steps=cfg.epochs * len(train_loader),
                           warmup_steps=round(cfg.warmup_epochs * len(train_loader)), factor=cfg.lr_factor,
                           patience=cfg.lr_patience)
    run = _Run(cfg, Path(cfg.out), schema, device, dinfo, model, step, scheduler, train_loader, val_loader,
               TrainState(), shards=shards,
               policy=CheckpointPolicy(minutes=cfg.checkpoint_minutes, every=cfg.checkpoint_every))
    if cfg.ema_halflife is not None:  # the decay per step whose weight halves after ema_halflife epochs
        run.ema = WeightEMA(model, 0.5 ** (1 / max(1.0, cfg.ema_halflife * len(train_loader))))
    held = [n for n in ckpt_io.RUN_FILES[:3] if (run.out / n).exists()]  # last.pt, best.pt, metrics.json
    if cfg.resume:
        _resume(run)
    elif held and not cfg.overwrite:
        raise fixable(TrainError(f"{run.out} already holds a run ({', '.join(held)}); refusing to overwrite it"),
                      "resume_or_overwrite")
    elif held and dinfo.is_main:  # overwrite: no file of the old run may outlive the start of the new one
        removed = ckpt_io.clear_run_files(run.out)
        log.info("%s: removed the previous run's %s (overwrite); this is run %s", run.out, ", ".join(removed),
                 run.run_id)
    return run


def _check_out(out: Path, dinfo: distributed.DistInfo) -> list[Path]:
    """The run folder can be written: checked before any work, not after the first epoch. Returns the folders it
    created (deepest last), for :func:`_remove_empty` when the run fails."""
    if out.exists() and not out.is_dir():
        raise fixable(TrainError(f"{out} exists and is not a folder (the run folder for checkpoints)"), "out")
    if not dinfo.is_main:
        return []
    missing = [p for p in (out, *out.parents) if not p.exists()][::-1]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_empty(missing)
        raise fixable(TrainError(f"{out}: cannot create the run folder: {e.strerror or e}"), "out") from None
    if not os.access(out, os.W_OK):
        raise fixable(TrainError(f"{out}: the run folder is not writable"), "out")
    return missing


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders a failed run created, deepest first, as long as they are empty (nothing else is
    touched: a folder holding a checkpoint, or anything another process put there, stays)."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:  # not empty (a checkpoint was written), or already gone
            return
        log.debug("removed the empty run folder %s", d)


def _resume(run: _Run) -> None:
    """Restore model, optimizer, scheduler, scaler, state, loader position and RNGs from ``last.pt``."""
    path = run.out / "last.pt"
    last = ckpt_io.load_checkpoint(path)
    if Schema.from_dict(last["schema"]) != run.schema:
        raise TrainError(f"{path} was trained on another schema than {run.cfg.shard_dir}")
    defaults = {"optimizer": "adam", "schedule": "plateau"}  # checkpoints from before these options
    defaults["class_balance"] = "weights"
    for key in ("batch_size", "image_size", "optimizer", "schedule", "class_balance"):
        if last["config"].get(key, defaults.get(key)) != getattr(run.cfg, key):
            raise TrainError(f"cannot resume {path}: it was trained with {key} {last['config'].get(key)}, this run "
                             f"asks for {getattr(run.cfg, key)}")
    run.model.load_state_dict(last["model"])
    if run.ema is not None:
        if not last.get("ema"):
            raise TrainError(f"cannot resume {path} with ema_halflife: it was trained without a weight average")
        run.ema.load_state_dict(last["ema"])
    run.step.optimizer.load_state_dict(last["optimizer"])
    run.scheduler.load_state_dict(last["scheduler"])
    _load_scaler_state(run.step.scaler, last["scaler"])
    run.state = TrainState(last["epoch"], last["step"], last["best"], list(last["history"]))
    run.run_id = last.get("run_id") or run.run_id  # a checkpoint from before run ids: the run gets one now
    try:
        run.train_loader.load_state_dict(last["loader"])
    except ValueError as e:  # another shard set, split or order: name both values
        raise TrainError(f"cannot resume {path} on {run.cfg.shard_dir}: {e}") from None
    run.progress = last.get("progress")
    rngs = last["rng"]
    ckpt_io.set_rng_state(rngs[run.dinfo.rank] if len(rngs) == run.dinfo.world_size else rngs[0])
    log.info("resumed run %s from %s at epoch %d, step %d%s", run.run_id, path, run.state.epoch + 1, run.state.step,
             f" ({run.progress['steps']} steps into the epoch)" if run.progress else "")


def _load_scaler_state(scaler: torch.amp.GradScaler, state: dict) -> None:
    """Restore GradScaler state unless the checkpoint's is empty (saved by a bf16 or CPU run, whose scaler was
    disabled): an fp16 run resuming it starts from a fresh scale, which GradScaler recalibrates within a few steps."""
    if state:
        scaler.load_state_dict(state)
    elif scaler.is_enabled():
        log.info("the checkpoint has no GradScaler state (bf16 or CPU run); starting from a fresh scale")


def _train(run: _Run) -> dict:
    """The epoch loop: train one epoch, validate, step the scheduler, save, log."""
    cfg, state, dinfo = run.cfg, run.state, run.dinfo
    bar_off = not dinfo.is_main
    for epoch in range(state.epoch, cfg.epochs):
        if cfg.max_steps is not None and state.step >= cfg.max_steps:
            break
        lr = run.step.optimizer.param_groups[0]["lr"]
        run.train_loader.set_image_size(cfg.image_size_at(epoch))
        run.train_loader.set_epoch(epoch)
        acc, carried = MetricAccumulator(run.schema), None
        if run.progress is not None and run.progress["epoch"] == epoch:  # a checkpoint taken during this epoch
            carried = run.progress
            if dinfo.is_main:  # the saved counts are the sum over ranks: one rank carries them
                acc.load_state_dict(carried["acc"])
        run.progress = None
        left = None if cfg.max_steps is None else cfg.max_steps - state.step
        cpu0 = _cpu_seconds()
        res = train_one_epoch(run.step, run.train_loader, run.schema, max_steps=left, acc=acc, carried=carried,
                              on_step=functools.partial(_after_step, run, epoch),
                              desc=f"epoch {epoch + 1}/{cfg.epochs}", disable_bar=bar_off)
        distributed.broadcast_buffers(run.model, dinfo)
        if run.ema is not None:
            distributed.broadcast_buffers(run.ema.module, dinfo)
        t_val = time.perf_counter()
        val_m = evaluate(run.judged, run.val_loader, run.schema, run.device, class_weights=run.step.weights,
                         desc=f"val {epoch + 1}", disable_bar=bar_off, precision=cfg.precision,
                         log_priors=run.step.log_priors)
        run.scheduler.after_epoch(val_m["avg_class_accuracy"])
        state.epoch = epoch + 1
        _end_epoch(run, lr, res, val_m, time.perf_counter() - t_val, _cpu_seconds() - cpu0)
    distributed.barrier(dinfo)
    return {"best_avg_class_accuracy": state.best, "epochs": state.epoch, "steps": state.step, "out": str(run.out),
            "history": state.history}


def _after_step(run: _Run, epoch: int, acc: MetricAccumulator, partial: EpochResult) -> None:
    """After every optimizer step: count it; write a checkpoint when one is due; stop after one on a signal."""
    run.state.step += 1
    run.scheduler.after_step()
    if run.ema is not None:
        run.ema.update(run.model)
    stop, due = poll(run.state.step, bool(run.stop.signum), run.policy, run.dinfo)  # no collective per step
    if not (stop or due):
        return
    progress = {"epoch": epoch, "acc": acc.reduced_state(), "steps": partial.steps, "images": partial.images,
                "seconds": partial.seconds, "wait": partial.data_wait}
    _checkpoint(run, is_best=False, progress=progress)
    if stop:
        _stop(run)


def _stop(run: _Run) -> None:
    signum = run.stop.signum or signal.SIGTERM  # another rank's signal: stop as if terminated
    raise Preempted(f"stopped by {signal.Signals(signum).name} after step {run.state.step}; checkpoint "
                    f"{run.out / 'last.pt'} written; run the same command with --resume to continue", signum)


def _cpu_seconds() -> float:
    """CPU seconds of this process (every thread, DALI's included) and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _end_epoch(run: _Run, lr: float, res: EpochResult, val_m: dict, val_seconds: float, cpu_seconds: float) -> None:
    """The epoch's metrics row, best score, checkpoint and log line; then stop if a signal came meanwhile."""
    state, dinfo = run.state, run.dinfo
    last = state.history[-1] if state.history else {}
    row = {"epoch": state.epoch, "step": state.step, "lr": lr, "train": _slim(res.metrics), "val": _slim(val_m),
           "images_per_s": res.images * dinfo.world_size / res.seconds if res.seconds > 0 else math.nan,
           "data_wait_share": res.data_wait / res.seconds if res.seconds > 0 else math.nan,
           "image_size": run.train_loader.augment.image_size, "train_seconds": res.seconds,
           "val_seconds": val_seconds,
           "minutes": last.get("minutes", 0.0) + (res.seconds + val_seconds) / 60,
           "cpu_minutes": last.get("cpu_minutes", 0.0) + cpu_seconds / 60, "run_id": run.run_id}
    state.history.append(row)
    is_best = val_m["avg_class_accuracy"] > state.best
    if is_best:
        state.best = val_m["avg_class_accuracy"]
    _checkpoint(run, is_best=is_best)
    log.info("epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f avg class acc %.4f | %.0f img/s, "
             "data wait %.0f%%", state.epoch, run.cfg.epochs, res.metrics["loss"], res.metrics["accuracy"],
             val_m["loss"], val_m["accuracy"], val_m["avg_class_accuracy"], row["images_per_s"],
             100 * row["data_wait_share"])
    if agree([bool(run.stop.signum)], dinfo)[0]:
        _stop(run)


def _checkpoint(run: _Run, *, is_best: bool, progress: dict | None = None) -> None:
    """Every rank's RNG state to rank 0, which writes ``last.pt`` (and ``best.pt``)."""
    rngs = distributed.all_gather_object(ckpt_io.rng_state(), run.dinfo)
    if run.dinfo.is_main:
        _save(run, rngs, is_best, progress)
    run.policy.saved()


def _slim(m: dict) -> dict:
    return {k: m[k] for k in ("loss", "accuracy", "avg_class_accuracy", "per_attribute")}


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _saved_config(cfg: TrainConfig) -> dict:
    """The config as the checkpoint keeps it: plain values, without ``remote`` (storage options may hold secrets,
    and the checkpoint must load with ``weights_only=True``)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "remote"}


def _save(run: _Run, rngs: list, is_best: bool, progress: dict | None = None) -> None:
    """``last.pt`` (and ``best.pt``), ``metrics.json`` and, when matplotlib is there, ``curves.png``."""
    state, step = run.state, run.step
    ckpt = {"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "model": run.model.state_dict(),
            "optimizer": step.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": step.scaler.state_dict(), "epoch": state.epoch, "step": state.step, "best": state.best,
            "history": state.history, "rng": rngs, "config": _saved_config(run.cfg),
            "schema": run.schema.to_dict(), "image_size": run.cfg.image_size, "loader": run.train_loader.state_dict(),
            "progress": progress, "ema": run.ema.state_dict() if run.ema is not None else None,
            "run_id": run.run_id}
    ckpt_io.save_atomic(ckpt, run.out / "last.pt")
    if is_best:
        ckpt_io.save_atomic(ckpt, run.out / "best.pt")
    text = json.dumps(json_safe(state.history), indent=1, allow_nan=False) + "\n"
    write_file(run.out / "metrics.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if progress is not None:
        return  # a checkpoint during an epoch: the figure changes only with the epoch's row
    try:
        from .curves import plot_training_curves
        plot_training_curves(state.history, run.out / "curves.png")
    except ImportError as e:  # a by-product: never a reason to lose a run
        log.info("curves.png skipped: %s", e)

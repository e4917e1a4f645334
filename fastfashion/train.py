"""Training :class:`~fastfashion.model.FashionNet` on a shard set; evaluation and prediction: :mod:`.inference`.

The defaults are the seed report's recipe: Adam (lr 1e-4, weight decay 1e-3), ReduceLROnPlateau (factor 0.1,
patience 5) on validation average class accuracy, dropout 0.5, class-weighted cross-entropy; batch 64. On CUDA the
step runs under AMP with channels_last (dtype: :func:`amp_dtype`; fp16 with a GradScaler); on the CPU in fp32.
Under ``torchrun`` it runs DDP (see :mod:`fastfashion.distributed`): each rank reads its disjoint share of every
split, metrics are summed confusion matrices over ranks, and only rank 0 writes files.

Run directory: ``last.pt`` (every epoch), ``best.pt`` (best val average class accuracy), ``metrics.json`` (a list
of per-epoch dicts ``{"epoch", "train", "val", "images_per_s", "data_wait_share", "lr", "step"}``) and
``curves.png`` (loss and accuracy curves). Files are written atomically (temporary file beside, then
``os.replace``); JSON holds ``null`` where a metric is undefined (see :func:`fastfashion.metrics.json_safe`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import checkpoint as ckpt_io
from .atomic import write_file
from . import distributed
from .loader import resolve_device
from .metrics import MetricAccumulator, class_weights, json_safe
from .model import FashionNet
from .schema import Schema
from .shard_format import read_manifest

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    shards: str                        # shard directory (manifest.json, tars, .idx)
    out: str                           # run directory: checkpoints, metrics.json, curves.png
    epochs: int = 45                   # the seed report trained 45 epochs
    batch_size: int = 64               # per rank
    lr: float = 1e-4                   # Adam
    weight_decay: float = 1e-3
    dropout: float = 0.5               # in every head
    label_smoothing: float = 0.0
    lr_factor: float = 0.1             # ReduceLROnPlateau on val average class accuracy
    lr_patience: int = 5
    image_size: int = 224
    augment: bool = True               # train-split augmentation (flip/crop per AugmentConfig.train)
    device: str = "auto"               # auto | cpu | cuda
    backend: str = "auto"              # auto | dali | torch (see make_loader)
    weights: str | None = None         # None (random), "imagenet" or a state-dict path
    resume: bool = False               # continue from OUT/last.pt
    max_steps: int | None = None       # stop after this many optimizer steps in total
    seed: int = 0                      # model init, data order, augmentation
    workers: int | None = None         # loader worker processes of the torch backend (None: the loader's default)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def multi_head_loss(logits: Sequence[torch.Tensor], labels: torch.Tensor, weights: Sequence[torch.Tensor],
                    label_smoothing: float = 0.0) -> torch.Tensor:
    """Sum over attributes ``i`` of the class-weighted cross-entropy ``CE(logits_i, labels[:, i]; w_i)``.

    ``w_i[c] = N_i / (K_i * n_ic)`` from the train class counts (:func:`~fastfashion.metrics.class_weights`; 0 for
    a class absent from train). Each term is PyTorch's weighted mean: ``sum_b w[y_b] * ce_b / sum_b w[y_b]``.
    """
    return sum(F.cross_entropy(lg.float(), labels[:, i], weight=w, label_smoothing=label_smoothing)
               for i, (lg, w) in enumerate(zip(logits, weights)))


def _make_loader(shards, **kwargs):
    from .loader import make_loader
    return make_loader(shards, **kwargs)


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of a step on ``device``: bf16 where the GPU has native bf16 (compute capability 8.0+),
    else fp16 (which needs a GradScaler); None on the CPU (fp32).

    Native only: ``torch.cuda.is_bf16_supported()`` also counts emulated bf16 by default (True on a T4, where bf16
    is slow and fp16 has tensor cores). Asks the current CUDA device unless ``device`` names an index.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    with torch.cuda.device(device.index) if device.index is not None else contextlib.nullcontext():
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def _autocast(device: torch.device):
    """AMP context factory and whether a GradScaler is needed (see :func:`amp_dtype`)."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext, False
    return (lambda: torch.autocast(device.type, dtype=dtype)), dtype == torch.float16


def _load_scaler_state(scaler: torch.amp.GradScaler, state: dict) -> None:
    """Restore GradScaler state unless the checkpoint's is empty (saved by a bf16 or CPU run, whose scaler was
    disabled): an fp16 run resuming it starts from a fresh scale, which GradScaler recalibrates within a few steps."""
    if state:
        scaler.load_state_dict(state)
    elif scaler.is_enabled():
        log.info("the checkpoint has no GradScaler state (bf16 or CPU run); starting from a fresh scale")


def _to_device(batch, device: torch.device, channels_last: bool):
    images = batch.images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch.labels.to(device, non_blocking=True)


def _bar_off(off: bool) -> dict:
    """tqdm kwargs: off only when asked; otherwise none at all, so that TQDM_DISABLE (``fastfashion -q``) applies
    (an explicit ``disable=False`` would override it)."""
    return {"disable": True} if off else {}


def run_eval(model, loader, schema: Schema, device: torch.device, *, loss_weights=None, channels_last=False,
             desc: str = "eval", disable_bar: bool = False) -> dict:
    """Metrics of ``model`` over ``loader`` (this rank's share), summed over ranks (see :mod:`fastfashion.metrics`)."""
    autocast, _ = _autocast(device)
    acc = MetricAccumulator(schema)
    model.eval()
    with torch.inference_mode(), autocast():
        for batch in tqdm(loader, desc=desc, leave=False, **_bar_off(disable_bar)):
            images, labels = _to_device(batch, device, channels_last)
            logits = model(images)
            loss = multi_head_loss(logits, labels, loss_weights) if loss_weights is not None else None
            acc.update(logits, labels, loss)
    acc.all_reduce()
    return acc.compute()


@dataclasses.dataclass
class _State:
    epoch: int = 0            # completed epochs
    step: int = 0             # optimizer steps taken
    best: float = -math.inf   # best val average class accuracy
    history: list = dataclasses.field(default_factory=list)


def train(cfg: TrainConfig) -> dict:
    """Train per ``cfg``; returns ``{"best_avg_class_accuracy", "epochs", "steps", "out", "history"}``.

    Raises ValueError/OSError for bad inputs (missing shards, unlabelled val, nothing to resume), RuntimeError for
    an unavailable device. ``--resume`` continues from ``last.pt`` and ends where an uninterrupted run ends (a run
    cut short by ``max_steps`` resumes at the next epoch).
    """
    device = resolve_device(cfg.device)
    dinfo = distributed.setup(device.type)
    try:
        result = _train(cfg, device, dinfo)
    except BaseException:
        # no barrier: the other ranks may be blocked in a collective this rank will never join
        distributed.teardown(dinfo, failed=True)
        raise
    distributed.teardown(dinfo)
    return result


def _train(cfg: TrainConfig, device: torch.device, dinfo: distributed.DistInfo) -> dict:
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    out = Path(cfg.out)
    manifest = read_manifest(cfg.shards)
    schema = Schema.from_dict(manifest["schema"])
    if not manifest["splits"].get("val", {}).get("labelled", False):
        raise ValueError(f"{cfg.shards}: the val split is missing or unlabelled; training validates every epoch")
    weights = [w.to(device) for w in class_weights(manifest["splits"]["train"]["class_counts"], schema)]

    _seed_everything(cfg.seed)
    # resuming overwrites every weight: do not fetch the initial ones (e.g. imagenet while offline)
    model = FashionNet(schema, weights=None if cfg.resume else cfg.weights, dropout=cfg.dropout).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if dinfo.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                        else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=True)  # fused: ~10x faster step on the CPU than foreach
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    autocast, use_scaler = _autocast(device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    common = dict(batch_size=cfg.batch_size, backend=cfg.backend, device=device.type, image_size=cfg.image_size,
                  seed=cfg.seed, rank=dinfo.rank, world_size=dinfo.world_size, workers=cfg.workers)
    train_loader = _make_loader(cfg.shards, split="train", augment=cfg.augment, shuffle=True, drop_last=True,
                                **common)
    val_loader = _make_loader(cfg.shards, split="val", augment=False, shuffle=False, drop_last=False, **common)
    if len(train_loader) == 0:
        n = manifest["splits"]["train"]["num_samples"] // dinfo.world_size
        raise ValueError(f"{cfg.shards}: {n} train samples per rank make no full batch of {cfg.batch_size}; "
                         f"lower --batch-size")
    log.info("training on %s (%s loader, %d rank(s)), %d train batches per epoch", device, train_loader.backend,
             dinfo.world_size, len(train_loader))

    state = _State()
    if cfg.resume:
        last = ckpt_io.load_checkpoint(out / "last.pt")
        if Schema.from_dict(last["schema"]) != schema:
            raise ValueError(f"{out / 'last.pt'} was trained on another schema than {cfg.shards}")
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        _load_scaler_state(scaler, last["scaler"])
        state = _State(last["epoch"], last["step"], last["best"], list(last["history"]))
        train_loader.load_state_dict(last["loader"])
        rngs = last["rng"]
        ckpt_io.set_rng_state(rngs[dinfo.rank] if len(rngs) == dinfo.world_size else rngs[0])
        log.info("resumed from %s after epoch %d (step %d)", out / "last.pt", state.epoch, state.step)
    elif dinfo.is_main and (out / "last.pt").exists():
        log.warning("%s exists and will be overwritten (use --resume to continue it)", out / "last.pt")

    bar_off = not dinfo.is_main
    for epoch in range(state.epoch, cfg.epochs):
        if cfg.max_steps is not None and state.step >= cfg.max_steps:
            break
        lr = optimizer.param_groups[0]["lr"]
        train_loader.set_epoch(epoch)
        net.train()
        acc = MetricAccumulator(schema)
        wait, images_seen, t_start = 0.0, 0, time.perf_counter()
        it = iter(train_loader)
        bar = tqdm(total=len(train_loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, **_bar_off(bar_off))
        while cfg.max_steps is None or state.step < cfg.max_steps:
            t0 = time.perf_counter()
            batch = next(it, None)
            wait += time.perf_counter() - t0
            if batch is None:
                break
            images, labels = _to_device(batch, device, channels_last)
            with autocast():
                logits = net(images)
                loss = multi_head_loss(logits, labels, weights, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            state.step += 1
            images_seen += images.shape[0]
            acc.update(logits, labels, loss.detach())
            bar.update(1)
            if state.step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        del it
        elapsed = time.perf_counter() - t_start
        acc.all_reduce()
        train_m = acc.compute()
        distributed.broadcast_buffers(model, dinfo)
        val_m = run_eval(model, val_loader, schema, device, loss_weights=weights, channels_last=channels_last,
                         desc=f"val {epoch + 1}", disable_bar=bar_off)
        scheduler.step(val_m["avg_class_accuracy"])
        state.epoch = epoch + 1
        row = {"epoch": state.epoch, "step": state.step, "lr": lr,
               "train": _slim(train_m), "val": _slim(val_m),
               "images_per_s": images_seen * dinfo.world_size / elapsed if elapsed > 0 else math.nan,
               "data_wait_share": wait / elapsed if elapsed > 0 else math.nan}
        state.history.append(row)
        is_best = val_m["avg_class_accuracy"] > state.best
        if is_best:
            state.best = val_m["avg_class_accuracy"]
        rngs = distributed.all_gather_object(ckpt_io.rng_state(), dinfo)
        if dinfo.is_main:
            _save(out, cfg, schema, model, optimizer, scheduler, scaler, state, rngs, train_loader, is_best)
        log.info("epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f avg class acc %.4f | %.0f img/s, "
                 "data wait %.0f%%", state.epoch, cfg.epochs, train_m["loss"], train_m["accuracy"], val_m["loss"],
                 val_m["accuracy"], val_m["avg_class_accuracy"], row["images_per_s"], 100 * row["data_wait_share"])
    distributed.barrier(dinfo)
    return {"best_avg_class_accuracy": state.best, "epochs": state.epoch, "steps": state.step, "out": str(out),
            "history": state.history}


def _slim(m: dict) -> dict:
    return {k: m[k] for k in ("loss", "accuracy", "avg_class_accuracy", "per_attribute")}


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _save(out: Path, cfg, schema, model, optimizer, scheduler, scaler, state: _State, rngs, loader, is_best) -> None:
    from .plots import plot_training_curves

    ckpt = {"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": state.epoch, "step": state.step, "best": state.best, "history": state.history, "rng": rngs,
            "config": dataclasses.asdict(cfg), "schema": schema.to_dict(), "image_size": cfg.image_size,
            "loader": loader.state_dict()}
    ckpt_io.save_atomic(ckpt, out / "last.pt")
    if is_best:
        ckpt_io.save_atomic(ckpt, out / "best.pt")
    text = json.dumps(json_safe(state.history), indent=1, allow_nan=False) + "\n"
    write_file(out / "metrics.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    plot_training_curves(state.history, out / "curves.png")

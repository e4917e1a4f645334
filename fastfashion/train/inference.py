"""Evaluation and prediction with a trained checkpoint: ``fastfashion evaluate`` and ``fastfashion predict``.

A checkpoint carries its schema, config and image size, so nothing but the checkpoint and the shard set is needed.
``predict`` writes the challenge's submission format: one line of class ids per image in split-file order.
"""
from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from pathlib import Path

import torch

from ..errors import FastfashionError, fixable
from ..format.atomic import write_file
from ..format.spec import TEST, VAL
from ..fsutil import unwritable
from ..hardware import resolve_device
from ..loading.base import LoaderConfig, LoaderError
from ..loading.loader import FashionLoader
from ..progress import progress
from ..remote.store import RemoteConfig
from ..schema import Schema
from ..shardset import ShardSet
from . import checkpoint as ckpt_io
from .device import autocast, channels_last, to_device
from .metrics import json_safe
from .model import FashionNet
from .trainer import evaluate, infer

log = logging.getLogger(__name__)


class InferenceError(FastfashionError, ValueError):
    """A checkpoint cannot be applied to this shard set or split (another schema, a missing or unlabelled split)."""


def load_model(checkpoint: str | os.PathLike, device: torch.device) -> tuple[FashionNet, dict]:
    """Rebuild the model of a checkpoint (schema, dropout and image size come from the checkpoint): its weight
    average when the run kept one (what it validated), else its weights. Inference runs in the checkpoint's
    precision (:func:`precision_of`). Refuses a ``best.pt`` of another run than the ``last.pt`` beside it
    (:func:`~.checkpoint.check_same_run`) and logs the run it uses."""
    ckpt = ckpt_io.load_checkpoint(checkpoint)
    ckpt_io.check_same_run(checkpoint, ckpt)
    log.info("checkpoint %s: run %s, epoch %s, step %s", checkpoint, ckpt.get("run_id") or "unknown (no run id)",
             ckpt.get("epoch"), ckpt.get("step"))
    schema = Schema.from_dict(ckpt["schema"])
    model = FashionNet(schema, dropout=ckpt["config"].get("dropout", 0.5))
    model.load_state_dict(ckpt["ema"]["module"] if ckpt.get("ema") else ckpt["model"])
    model.to(device).eval()
    if channels_last(device, precision_of(ckpt)):
        model = model.to(memory_format=torch.channels_last)
    return model, ckpt


def precision_of(ckpt: dict) -> str:
    """The ``precision`` the checkpoint's run trained and validated in (older checkpoints: ``auto``)."""
    return ckpt["config"].get("precision", "auto")


def _eval_setup(checkpoint, shards: ShardSet, split, device, need_labels):
    device = resolve_device(device)
    model, ckpt = load_model(checkpoint, device)
    if shards.schema != model.schema:
        raise InferenceError(f"{checkpoint} was trained on another schema than {shards}")
    if need_labels and not shards.entry(split)["labelled"]:
        raise fixable(InferenceError(f"split {split!r} of {shards} is unlabelled; evaluation needs labels"), "split")
    return device, model, ckpt


def _loader_config(ckpt: dict, split: str, batch_size: int, backend: str, device: torch.device,
                   with_keys: bool = False, verify: bool = True, output: str = "auto") -> LoaderConfig:
    """One pass over ``split`` in file order with the eval transform at the checkpoint's image size."""
    return LoaderConfig(split=split, batch_size=batch_size, backend=backend, device=device, augment=False,
                        shuffle=False, drop_last=False, image_size=ckpt["image_size"], rank=0, world_size=1,
                        with_keys=with_keys, verify=verify, output=output)


@contextlib.contextmanager
def _opened(shards, remote: RemoteConfig, verify: bool):
    """``shards`` as an opened set: a ShardSet as it is (its owner closes it), a path or URL opened and closed."""
    if isinstance(shards, ShardSet):
        yield shards
        return
    with ShardSet.open(shards, remote=remote, verify=verify) as opened:
        yield opened


def evaluate_checkpoint(checkpoint: str | os.PathLike, shards: ShardSet | str | os.PathLike, *, split: str = VAL,
                        batch_size: int = 64, device: str = "auto", backend: str = "auto",
                        verify: bool = True, remote: RemoteConfig = RemoteConfig(), tta: str = "none",
                        output: str = "auto") -> dict:
    """Metrics of a checkpoint on a labelled split (see :func:`fastfashion.train.metrics.summarize`; loss
    unweighted); ``tta="flip"`` averages the logits of each image and its mirror image. ``output``: what the
    loader delivers (:class:`~fastfashion.loading.base.LoaderConfig`; uint8 is finished at the model's input; auto:
    :func:`~fastfashion.loading.base.auto_output`).

    JSON-ready: an undefined metric (e.g. the average class accuracy when every class is absent) is None, not NaN
    (see :func:`fastfashion.train.metrics.json_safe`). ``shards``: an opened
    :class:`~fastfashion.shardset.ShardSet`, or a folder or URL opened here (``remote``: how to reach and cache it;
    ``verify``: check the split's files first).
    """
    with _opened(shards, remote, verify) as shards:
        device, model, ckpt = _eval_setup(checkpoint, shards, split, device, need_labels=True)
        with FashionLoader(shards, _loader_config(ckpt, split, batch_size, backend, device, verify=verify,
                                                             output=output)) as loader:
            ones = [torch.ones(k, device=device) for k in model.schema.num_classes]
            m = evaluate(model, loader, model.schema, device, class_weights=ones, desc=f"evaluate {split}", tta=tta,
                         precision=precision_of(ckpt))
    return json_safe({"split": split, "checkpoint": str(checkpoint), "run_id": ckpt.get("run_id"), "tta": tta, **m})


def predict(checkpoint: str | os.PathLike, shards: ShardSet | str | os.PathLike, out: str | os.PathLike, *,
            split: str = TEST, zip_: bool = False, batch_size: int = 64, device: str = "auto",
            backend: str = "auto", verify: bool = True, remote: RemoteConfig = RemoteConfig(),
            tta: str = "none", output: str = "auto") -> Path:
    """Write ``out`` in the submission format: one line of class ids per sample (schema order) in split-file
    order, LF endings; ``tta="flip"`` averages the logits of each image and its mirror image; ``output`` as
    :func:`evaluate_checkpoint` takes it.

    With ``zip_`` also writes ``out`` with suffix ``.zip`` holding ``prediction.txt`` alone. Raises
    :class:`InferenceError` when the shards lack samples of the split (skipped at shard
    time), since the file must match the split line by line. Both files are written atomically (temporary file
    beside, then ``os.replace``). Returns the path of the text file.
    """
    for target in (out, Path(out).with_suffix(".zip")) if zip_ else (out,):
        problem = unwritable(target)
        if problem:
            raise fixable(InferenceError(f"{target}: cannot write the predictions there: {problem}"), "out")
    with _opened(shards, remote, verify) as shards:
        device, model, ckpt = _eval_setup(checkpoint, shards, split, device, need_labels=False)
        skipped = [s for s in shards.manifest.get("skipped", []) if s.get("split") == split]
        if skipped:
            raise InferenceError(f"{len(skipped)} {split} samples were skipped when sharding (first: {skipped[0]}); "
                                 f"the predictions would not match split/{split}.txt line for line")
        preds: dict[str, list[int]] = {}
        precision = precision_of(ckpt)
        cl = channels_last(device, precision)
        with FashionLoader(shards, _loader_config(ckpt, split, batch_size, backend, device, with_keys=True,
                                                  verify=verify, output=output)) as loader, \
                torch.inference_mode(), autocast(device, precision)[0]():
            for batch in progress(loader, desc=f"predict {split}", leave=False):
                images, _ = to_device(batch, device, cl)
                p = torch.stack([lg.argmax(dim=1) for lg in infer(model, images, tta)], dim=1).cpu().tolist()
                preds.update(zip(batch.keys, p))
        order = shards.keys(split)
    if sorted(preds) != sorted(order):
        raise LoaderError(f"the loader yielded {len(preds)} distinct {split} keys, the shards hold {len(order)}")
    _write_predictions(Path(out), "".join(" ".join(map(str, preds[k])) + "\n" for k in order), zip_)
    log.info("wrote %d predictions to %s", len(order), out)
    return Path(out)


def _write_predictions(out: Path, text: str, zip_: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file(out, lambda tmp: tmp.write_bytes(text.encode("ascii")))
    if zip_:
        def write_zip(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("prediction.txt", text)
        write_file(out.with_suffix(".zip"), write_zip)

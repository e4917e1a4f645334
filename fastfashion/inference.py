"""Evaluation and prediction with a trained checkpoint: ``fastfashion evaluate`` and ``fastfashion predict``.

A checkpoint carries its schema, config and image size, so nothing but the checkpoint and the shard set is needed.
``predict`` writes the challenge's submission format: one ``a b c d e f`` line per image in split-file order.
"""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt_io
from .atomic import write_file
from .dali_index import read_index
from .metrics import json_safe
from .model import FashionNet
from .schema import Schema
from .shard_format import read_manifest
from .loader import resolve_device
from .train import _autocast, _make_loader, _to_device, run_eval

log = logging.getLogger(__name__)


def load_model(checkpoint: str | os.PathLike, device: torch.device) -> tuple[FashionNet, dict]:
    """Rebuild the model of a checkpoint (schema, dropout and image size come from the checkpoint)."""
    ckpt = ckpt_io.load_checkpoint(checkpoint)
    schema = Schema.from_dict(ckpt["schema"])
    model = FashionNet(schema, dropout=ckpt["config"].get("dropout", 0.5))
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, ckpt


def _eval_setup(checkpoint, shards, split, device, need_labels):
    device = resolve_device(device)
    model, ckpt = load_model(checkpoint, device)
    manifest = read_manifest(shards)
    if Schema.from_dict(manifest["schema"]) != model.schema:
        raise ValueError(f"{checkpoint} was trained on another schema than {shards}")
    info = manifest["splits"].get(split)
    if info is None:
        raise ValueError(f"{shards} has no split {split!r} (has: {', '.join(manifest['splits'])})")
    if need_labels and not info.get("labelled", False):
        raise ValueError(f"split {split!r} of {shards} is unlabelled; evaluate needs labels (use predict)")
    return device, model, ckpt, manifest


def evaluate(checkpoint: str | os.PathLike, shards: str | os.PathLike, *, split: str = "val", batch_size: int = 64,
             device: str = "auto", backend: str = "auto") -> dict:
    """Metrics of a checkpoint on a labelled split (see :func:`fastfashion.metrics.summarize`; loss unweighted).

    JSON-ready: an undefined metric (e.g. the average class accuracy when every class is absent) is None, not NaN
    (see :func:`fastfashion.metrics.json_safe`).
    """
    device, model, ckpt, _ = _eval_setup(checkpoint, shards, split, device, need_labels=True)
    loader = _make_loader(shards, split=split, batch_size=batch_size, backend=backend, device=device.type,
                          augment=False, shuffle=False, drop_last=False, image_size=ckpt["image_size"],
                          rank=0, world_size=1)
    ones = [torch.ones(k, device=device) for k in model.schema.num_classes]
    m = run_eval(model, loader, model.schema, device, loss_weights=ones, channels_last=device.type == "cuda",
                 desc=f"evaluate {split}")
    return json_safe({"split": split, "checkpoint": str(checkpoint), **m})


def predict(checkpoint: str | os.PathLike, shards: str | os.PathLike, out: str | os.PathLike, *,
            split: str = "test", zip_: bool = False, batch_size: int = 64, device: str = "auto",
            backend: str = "auto") -> Path:
    """Write ``out`` in the submission format: one ``a b c d e f`` line per sample in split-file order, LF endings.

    With ``zip_`` also writes ``out`` with suffix ``.zip`` holding ``prediction.txt`` alone. Raises ValueError when
    the shards lack samples of the split (skipped at shard time), since the file must match the split line by line.
    Both files are written atomically (temporary file beside, then ``os.replace``). Returns the path of the text file.
    """
    device, model, ckpt, manifest = _eval_setup(checkpoint, shards, split, device, need_labels=False)
    skipped = [s for s in manifest.get("skipped", []) if s.get("split") == split]
    if skipped:
        raise ValueError(f"{len(skipped)} {split} samples were skipped when sharding (first: {skipped[0]}); "
                         f"prediction.txt would not match split/{split}.txt line for line")
    loader = _make_loader(shards, split=split, batch_size=batch_size, backend=backend, device=device.type,
                          augment=False, shuffle=False, drop_last=False, image_size=ckpt["image_size"],
                          rank=0, world_size=1, with_keys=True)
    preds: dict[str, list[int]] = {}
    with torch.inference_mode(), _autocast(device)[0]():
        for batch in tqdm(loader, desc=f"predict {split}", leave=False):
            images, _ = _to_device(batch, device, device.type == "cuda")
            p = torch.stack([lg.argmax(dim=1) for lg in model(images)], dim=1).cpu().tolist()
            preds.update(zip(batch.keys, p))
    order = split_keys(shards, manifest, split)
    if sorted(preds) != sorted(order):
        raise RuntimeError(f"the loader yielded {len(preds)} distinct {split} keys, the shards hold {len(order)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(" ".join(map(str, preds[k])) + "\n" for k in order)
    write_file(out, lambda tmp: tmp.write_bytes(text.encode("ascii")))
    if zip_:
        def write_zip(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("prediction.txt", text)
        write_file(out.with_suffix(".zip"), write_zip)
    log.info("wrote %d predictions to %s", len(order), out)
    return out


def split_keys(shards: str | os.PathLike, manifest: dict, split: str) -> list[str]:
    """Sample keys of a split in shard order (= split-file order for val/test), read from the shards' DALI ``.idx``
    files (keys cut at the first dot of the member name, as DALI and the loader cut them).

    Raises :class:`~fastfashion.dali_index.IndexFormatError` naming file and line for a malformed index.
    """
    return [e.key.rsplit("/", 1)[-1] for shard in manifest["splits"][split]["shards"]
            for e in read_index(Path(shards) / shard["idx"])]

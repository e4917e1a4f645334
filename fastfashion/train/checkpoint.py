"""Training checkpoints: atomic writes, a versioned dict, RNG state capture/restore.

A checkpoint is a plain dict saved with :func:`torch.save` and loadable with ``weights_only=True``:
``{"format", "version", "model", "optimizer", "scheduler", "scaler", "epoch" (completed epochs), "step",
"best", "history", "rng" (one state per rank), "config", "schema", "image_size", "loader", "progress" (within an
epoch), "ema" (the weight average's ``{"module", "updates", "decay"}``, or None), "run_id"}``.
It carries the config, schema and image size, so evaluate/predict rebuild the model without extra flags.

Run ids. Every run gets a random id when it starts (kept across ``--resume``), recorded in each checkpoint, each
metrics row and so in ``metrics.json``: :func:`check_same_run` refuses a ``best.pt`` whose run differs from its
folder's ``last.pt`` (a folder that mixes two runs). Checkpoints written before run ids load with one warning.
"""
from __future__ import annotations

import io
import logging
import os
import random
import uuid
from pathlib import Path

import numpy as np
import torch

from ..errors import FastfashionError
from ..format.atomic import write_file

log = logging.getLogger(__name__)

FORMAT = "fastfashion-checkpoint"
VERSION = 2  # 2: the loader's position within an epoch ("loader") and the epoch's progress
RUN_FILES = ("last.pt", "best.pt", "metrics.json", "curves.png")  # what a run writes in its folder
_WARNED_NO_RUN_ID: set[str] = set()  # checkpoints without a run id already warned about (once per file)


class CheckpointError(FastfashionError, ValueError):
    """A checkpoint file is missing, unreadable or not a fastfashion checkpoint."""


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`~fastfashion.format.atomic.write_file` (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)  # in memory first: a full disk then raises OSError naming the path, not a zip-writer error
    write_file(path, lambda tmp: tmp.write_bytes(buf.getbuffer()))
    return path


def torch_load(path: str | os.PathLike, error: type[Exception], what: str = "checkpoint"):
    """``torch.load`` onto the CPU with ``weights_only`` (no arbitrary code); any failure raises ``error`` naming
    the file (a missing file, or one of the many zip/pickle error types)."""
    path = Path(path)
    if path.is_dir():
        inside = [path / n for n in ("best.pt", "last.pt") if (path / n).is_file()]
        hint = f"; did you mean {inside[0]}?" if inside else " (give the path of a .pt file)"
        raise error(f"{what} {path} is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip/pickle errors come in many types; their messages can be long and misleading
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise error(f"cannot read {what} {path}: not a valid torch file ({type(e).__name__}: {first[:200]})") from e


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint onto the CPU. Raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    ckpt = torch_load(path, CheckpointError)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fastfashion checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}, this code reads {VERSION}")
    if not ckpt.get("run_id") and str(path) not in _WARNED_NO_RUN_ID:
        _WARNED_NO_RUN_ID.add(str(path))
        log.warning("%s has no run id (written before fastfashion recorded one): whether it belongs to the same "
                    "run as the other files of its folder cannot be checked", path)
    return ckpt


def new_run_id() -> str:
    """A random id for a new run (12 hex digits)."""
    return uuid.uuid4().hex[:12]


def run_id_of(path: str | os.PathLike) -> str | None:
    """The run id of the checkpoint at ``path`` without reading its tensors (memory-mapped); None for a checkpoint
    without one. Raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - zip/pickle errors come in many types
        raise CheckpointError(f"cannot read checkpoint {path}: not a valid torch file ({type(e).__name__})") from e
    return ckpt.get("run_id") if isinstance(ckpt, dict) else None


def check_same_run(path: str | os.PathLike, ckpt: dict) -> None:
    """Refuse a ``best.pt`` whose run id differs from that of the ``last.pt`` beside it: the folder mixes two runs
    (a run started over there before it wrote its own ``best.pt``). Checkpoints without run ids pass (warned when
    loaded). Raises :class:`CheckpointError` naming both files and runs."""
    path = Path(path)
    last = path.with_name("last.pt")
    if path.name != "best.pt" or not last.is_file() or not ckpt.get("run_id"):
        return
    other = run_id_of(last)
    if other and other != ckpt["run_id"]:
        raise CheckpointError(f"{path} belongs to run {ckpt['run_id']}, {last} to run {other}: the folder mixes two "
                              f"runs; evaluate {last}, or train again into a new folder")


def clear_run_files(out: str | os.PathLike) -> list[str]:
    """Remove the files of a previous run (:data:`RUN_FILES`) from the run folder ``out``, before a new run writes
    any; returns the names removed."""
    removed = []
    for name in RUN_FILES:
        p = Path(out) / name
        if p.is_file():
            p.unlink()
            removed.append(name)
    return removed


def rng_state() -> dict:
    """This process's torch (CPU and CUDA), numpy and Python RNG states, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

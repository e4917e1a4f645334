"""Training checkpoints: atomic writes, a versioned dict, RNG state capture/restore.

A checkpoint is a plain dict saved with :func:`torch.save` and loadable with ``weights_only=True``:
``{"format", "version", "model", "optimizer", "scheduler", "scaler", "epoch" (completed epochs), "step",
"best", "history", "rng" (one state per rank), "config", "schema", "image_size", "loader", "progress" (within an
epoch), "ema" (the weight average's ``{"module", "updates", "decay"}``, or None)}``.
It carries the config, schema and image size, so evaluate/predict rebuild the model without extra flags.
"""
from __future__ import annotations

import io
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import FastfashionError
from ..format.atomic import write_file

FORMAT = "fastfashion-checkpoint"
VERSION = 2  # 2: the loader's position within an epoch ("loader") and the epoch's progress


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
    return ckpt


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

"""Choosing and building backends: the rule ``auto``/``dali`` follow, and lazy construction from the registry
(:data:`fastfashion.loading.base.BACKENDS`, the one list of names).

* ``dali-gpu``: the DALI graph of :mod:`.dali_graph` with ``mixed`` decoding; images and labels arrive on the GPU,
  handed to torch zero-copy (DLPack, DALI's dynamic executor).
* ``dali-cpu``: the same graph on CPU operators.
* ``torch``: PIL decode + torchvision transforms in a DataLoader with workers (portable fallback: no DALI needed).

DALI is imported only when a DALI backend is built or probed; when ``auto`` falls back, the log says why.
"""
from __future__ import annotations

import importlib
import logging

from ..base import BACKENDS, Backend, BackendContext

log = logging.getLogger(__name__)

def choose_backend(backend: str, device, gpu_cache: bool | None = None) -> str:
    """The backend name for a requested ``backend`` (see :data:`fastfashion.loading.base.BACKEND_CHOICES`) and a
    resolved torch ``device``. Raises RuntimeError when a requested DALI backend cannot run."""
    name = _choose(backend, device)
    if gpu_cache is not None and name != "dali-gpu":
        log.debug("gpu_cache=%s ignored: backend %s has no GPU decoder cache", gpu_cache, name)
    return name


def _choose(backend: str, device) -> str:
    cuda = device.type == "cuda"
    if backend == "torch":
        return "torch"
    if backend in BACKENDS and BACKENDS[backend].needs_cuda and not cuda:
        raise RuntimeError(f"backend {backend!r} delivers batches on the GPU, but device is {str(device)!r}")
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        if backend != "auto":
            raise RuntimeError(f"backend {backend!r} requested but NVIDIA DALI cannot be imported: {e}") from e
        log.warning("loader backend: torch (NVIDIA DALI is not importable: %s)", e)
        return "torch"
    if backend in ("dali-gpu", "dali-cpu"):
        name, why = backend, "requested"
    else:
        name = "dali-gpu" if cuda else "dali-cpu"
        why = ("CUDA is available" if cuda else "no CUDA device") if backend == "auto" else f"device {str(device)!r}"
    log.info("loader backend: %s (%s)", name, why)
    return name


def create_backend(name: str, ctx: BackendContext) -> Backend:
    """Build backend ``name`` (a key of :data:`~fastfashion.loading.base.BACKENDS`) for ``ctx``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    spec = BACKENDS[name]
    return getattr(importlib.import_module(spec.module), spec.cls)(name, ctx)

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

from ...errors import ConfigError
from ..base import BACKENDS, Backend, BackendContext, LoaderError

log = logging.getLogger(__name__)

def choose_backend(backend: str, device, gpu_cache: bool | None = None, *, facts=None) -> str:
    """The backend name for a requested ``backend`` (see :data:`fastfashion.loading.base.BACKEND_CHOICES`) and a
    resolved torch ``device``. ``facts`` (a :class:`~.dali_check.DaliCudaFacts`; default: this machine's) decide
    whether DALI can run on the GPU. Raises RuntimeError when a requested backend cannot run."""
    name = _choose(backend, device, facts)
    if gpu_cache is not None and name != "dali-gpu":
        log.debug("gpu_cache=%s ignored: backend %s has no GPU decoder cache", gpu_cache, name)
    return name


def _choose(backend: str, device, facts) -> str:
    """``auto``: dali-gpu with CUDA, else dali-cpu, else torch; ``dali``: DALI on ``device``. A GPU DALI cannot
    use (driver too old for the build, no device) makes ``auto`` fall back to dali-cpu with a warning, and is an
    error for ``dali`` or ``dali-gpu`` on CUDA (the user asked for the GPU explicitly)."""
    cuda = device.type == "cuda"
    if backend == "torch":
        return "torch"
    if backend in BACKENDS and BACKENDS[backend].needs_cuda and not cuda:
        raise LoaderError(f"backend {backend!r} delivers batches on the GPU, but device is {str(device)!r}")
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        if backend != "auto":
            raise LoaderError(f"backend {backend!r} requested but NVIDIA DALI cannot be imported: {e}") from e
        log.warning("loader backend: torch (NVIDIA DALI is not importable: %s)", e)
        return "torch"
    if backend == "dali-cpu" or not cuda:
        why = "requested" if backend == "dali-cpu" else "no CUDA device" if backend == "auto" else f"device {device}"
        log.info("loader backend: dali-cpu (%s)", why)
        return "dali-cpu"
    from .dali_check import gather_facts, gpu_problem
    problem = gpu_problem(facts if facts is not None else gather_facts())
    if problem is not None:
        if backend != "auto":
            raise LoaderError(f"backend {backend!r} on {device}: DALI cannot run on the GPU: {problem}")
        log.warning("loader backend: dali-cpu, batches copied to %s (DALI cannot run on the GPU: %s)", device,
                    problem)
        return "dali-cpu"
    log.info("loader backend: dali-gpu (%s)", "CUDA is available" if backend == "auto" else "requested")
    return "dali-gpu"


def create_backend(name: str, ctx: BackendContext) -> Backend:
    """Build backend ``name`` (a key of :data:`~fastfashion.loading.base.BACKENDS`) for ``ctx``."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    spec = BACKENDS[name]
    return getattr(importlib.import_module(spec.module), spec.cls)(name, ctx)

"""Process-group setup for ``torchrun`` (DDP): NCCL on GPU, gloo on CPU; single-process runs need nothing.

``torchrun --nproc_per_node=N -m fastfashion train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup` reads them, initialises the default process group once and pins the rank's GPU.

``FASTFASHION_DIST_BACKEND=gloo`` runs CUDA ranks over gloo instead of NCCL, and lets several ranks share a GPU
(rank ``LOCAL_RANK`` on GPU ``LOCAL_RANK % device count``): NCCL refuses two ranks on one device, gloo does not.
For smoke-testing DDP on a one-GPU machine (``benchmarks/gpu_check.sh``), not for speed.

Failure: when one rank raises, :func:`teardown` (``failed=True``) destroys the group without a barrier, and a rank
left waiting in a collective gives up after :data:`TIMEOUT` instead of torch's default (10 to 30 minutes); torchrun
also stops the other workers as soon as one exits with an error.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..hardware import cuda_device_for

log = logging.getLogger(__name__)

# How long a collective waits for the other ranks. Ranks run in lockstep (DDP all-reduces every step), so the longest
# legitimate wait is one rank's extra work between collectives: loader/DALI pipeline build, rank 0 saving checkpoints
# and curves -- seconds, not minutes. 5 minutes leaves a wide margin yet frees a hung job well before torch's default.
TIMEOUT = datetime.timedelta(minutes=5)


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # True when setup() created the process group (and teardown() destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_type: str) -> DistInfo:
    """Join the process group described by the torchrun environment (if any) for ``device_type`` "cuda"/"cpu"."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = dist_backend(device_type)
    if device_type == "cuda":
        count = torch.cuda.device_count()
        # before NCCL init, so each rank owns one GPU; a clear error when there are more ranks than GPUs (gloo: shared)
        torch.cuda.set_device(local_rank % max(1, count) if backend == "gloo" else cuda_device_for(local_rank, count))
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), owns_group=True)
    log.info("rank %d/%d joined the %s process group", info.rank, info.world_size, backend)
    return info


def dist_backend(device_type: str) -> str:
    """The process group's backend: NCCL on CUDA, gloo on the CPU; ``FASTFASHION_DIST_BACKEND`` (gloo or nccl)
    overrides it. Raises ConfigError for another value."""
    forced = os.environ.get("FASTFASHION_DIST_BACKEND", "").strip().lower()
    if forced and forced not in ("gloo", "nccl"):
        raise ConfigError(f"FASTFASHION_DIST_BACKEND must be gloo or nccl, got {forced!r}")
    return forced or ("nccl" if device_type == "cuda" else "gloo")


def teardown(info: DistInfo, *, failed: bool = False) -> None:
    """Destroy the process group :func:`setup` created (a no-op otherwise).

    On a normal exit (``failed=False``) first waits for every rank (so no rank returns before rank 0 wrote its
    files); after an exception it destroys the group at once: the other ranks may be blocked in a collective this
    rank will never join, so a barrier would only wait for :data:`TIMEOUT`.
    """
    if info.owns_group and dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def all_gather_object(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` when not distributed)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP syncs buffers at the start of each training forward, so after the last step each rank holds the statistics
    of its own last batch; evaluating with rank 0's (the ones saved) makes distributed metrics equal single-process
    ones.
    """
    if info.enabled:
        for b in module.buffers():
            dist.broadcast(b, src=0)

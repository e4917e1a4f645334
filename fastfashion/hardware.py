"""What this machine offers the library: CPUs this process may use and the torch device to run on.

A leaf module (no fastfashion imports; torch is imported only by :func:`resolve_device`), shared by every layer
that sizes a worker pool or picks a device.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .errors import ConfigError, FastfashionError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")  # what ``device`` accepts, besides an explicit ``cuda:N``
PRECISIONS = ("auto", "amp", "fp32")  # what ``precision`` accepts (fastfashion/train/device.py says what each means)


class DeviceError(FastfashionError, RuntimeError):
    """The device asked for is not here (CUDA requested but unavailable, more processes than GPUs)."""


def available_cpus() -> int:
    """CPUs this process may use (``sched_getaffinity`` where available, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def bound_to_cpus(name: str, value: int, what: str) -> int:
    """``value`` workers or threads (``name``, for ``what``), lowered with a warning to the CPUs this process may use
    (:func:`available_cpus`): more only compete for them, and a million would be a process storm. For every layer
    that sizes a pool (the loader's workers and DALI threads; a shard or synth pool may use it too)."""
    cpus = available_cpus()
    if value > cpus:
        log.warning("%s %d is more than the %d CPUs this process may use (%s): using %d", name, value, cpus, what,
                    cpus)
        return cpus
    return value


def resolve_device(device) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a torch.device. Raises ValueError
    for anything else and RuntimeError when CUDA is asked for but not available."""
    import torch
    dev = str(device) if device is not None else "auto"
    if dev not in ("auto", "cpu") and not dev.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    cuda = torch.cuda.is_available()
    if dev.startswith("cuda") and not cuda:
        raise DeviceError(f"device {dev!r} requested but CUDA is not available")
    return torch.device(("cuda" if cuda else "cpu") if dev == "auto" else dev)


def local_world_size() -> int:
    """Processes sharing this machine in a distributed run (``LOCAL_WORLD_SIZE``, set by torchrun), else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def cuda_device_for(local_rank: int, device_count: int) -> int:
    """The CUDA device index for process ``local_rank`` of a node that shows ``device_count`` devices to it.

    ``local_rank`` itself when it is in range; 0 when ``CUDA_VISIBLE_DEVICES`` gives this process exactly one device
    (a launcher that isolates every process's GPU). Raises RuntimeError naming both numbers otherwise (more
    processes than GPUs), instead of CUDA's "invalid device ordinal" or NCCL's "Duplicate GPU detected".
    """
    if device_count < 1:
        raise DeviceError("no CUDA device is visible to this process")
    if 0 <= local_rank < device_count:
        return local_rank
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if device_count == 1 and visible and "," not in visible:  # the launcher gave this process its own GPU
        return 0
    raise DeviceError(f"LOCAL_RANK={local_rank}, but this process sees only {device_count} CUDA devices: start at "
                       f"most {device_count} processes per node, or give each process its own GPU")


def available_memory() -> int | None:
    """Bytes of memory this process may still take: the kernel's ``MemAvailable``, lowered to what the cgroup
    (a container's or a SLURM job's ``memory.max``) leaves; None where neither can be read (not Linux)."""
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    found += [v for v in (_cgroup_left(),) if v is not None]
    return min(found) if found else None


def _cgroup_left() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); None
    without a limit or a readable cgroup."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            lines = [ln.strip().split(":", 2) for ln in f]
    except OSError:
        return None
    for _, controllers, group in (ln for ln in lines if len(ln) == 3):
        if controllers == "":  # v2: the unified hierarchy
            base = f"/sys/fs/cgroup{group.rstrip('/')}"
            files = (f"{base}/memory.max", f"{base}/memory.current")
        elif "memory" in controllers.split(","):
            base = f"/sys/fs/cgroup/memory{group.rstrip('/')}"
            files = (f"{base}/memory.limit_in_bytes", f"{base}/memory.usage_in_bytes")
        else:
            continue
        try:
            with open(files[0], encoding="ascii") as f:
                limit = f.read().strip()
            with open(files[1], encoding="ascii") as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit != "max" and int(limit) < 1 << 60:  # v1 says "no limit" with a huge number
            return max(0, int(limit) - used)
    return None

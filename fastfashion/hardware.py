"""What this machine offers the library: CPUs this process may use and the torch device to run on.

A leaf module (no fastfashion imports; torch is imported only by :func:`resolve_device`), shared by every layer
that sizes a worker pool or picks a device.
"""
from __future__ import annotations

import ctypes
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
    problem = None if cuda else cuda_build_problem("torch", torch.version.cuda, driver_cuda_version())
    if dev.startswith("cuda") and not cuda:
        raise DeviceError(f"device {dev!r} requested but CUDA is not available" + (f": {problem}" if problem else ""))
    if problem:  # a GPU is there, but this torch cannot use it: say so loudly instead of training on the CPU
        log.warning("running on the CPU although there is an NVIDIA GPU: %s", problem)
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


# The command that replaces CUDA-13 builds (torch, DALI) by CUDA-12 ones, for a driver that supports CUDA 12 only
# (a Colab T4 on driver 535); torch's cu126 wheels run on any CUDA 12 driver (minor version compatibility).
DALI12_INSTALL = 'pip uninstall -y nvidia-dali-cuda130 && pip install -e ".[dali-cu12]"'  # torch already fine
CUDA12_INSTALL = ('pip uninstall -y torch torchvision nvidia-dali-cuda130 && pip install torch torchvision '
                  '--index-url https://download.pytorch.org/whl/cu126 && pip install -e ".[dali-cu12]"')


def driver_version(version: int) -> tuple[int, int]:
    """``(major, minor)`` of a CUDA version as the driver reports it (``cuDriverGetVersion``: 1000 * major + 10 *
    minor, so 12020 = 12.2, 12080 = 12.8, 13000 = 13.0)."""
    return version // 1000, version % 1000 // 10


def build_cuda_major(version) -> int | None:
    """The CUDA major version of a build from its record: a dotted string (``torch.version.cuda`` "12.8",
    "13.0") or DALI's ``__cuda_version__``, the dotted toolkit version with the dots removed (12.2.140 -> 122140,
    12.8.93 -> 12893, 13.0.88 -> 13088: the major is its first two digits, as DALI itself reads it; dividing by
    1000 would give 122 for the first). None for None, 0 or something unreadable."""
    text = str(version or "").strip()
    if "." in text:
        head = text.split(".", 1)[0]
        return int(head) if head.isdigit() else None
    return int(text[:2]) if text.isdigit() and int(text) > 0 and len(text) >= 2 else None


def cuda_build_problem(what: str, build, driver: int | None) -> str | None:
    """Why ``what`` (a package name), built for CUDA ``build`` (see :func:`build_cuda_major`), cannot run on a driver
    reporting ``driver`` (:func:`driver_version`; None: no driver), with the command that fixes it; None when it can,
    or when there is no driver or no CUDA build to compare (a CPU-only machine, a CPU build)."""
    major = build_cuda_major(build)
    if driver is None or major is None:
        return None
    d_major, d_minor = driver_version(driver)
    if d_major >= major:  # CUDA minor version compatibility: any driver of the same major runs the build
        return None
    fix = f"; install the CUDA 12 builds: {CUDA12_INSTALL}" if d_major == 12 else \
        f"; update the NVIDIA driver to one for CUDA {major}"
    return f"{what} is built for CUDA {major}, but the NVIDIA driver supports CUDA {d_major}.{d_minor} only{fix}"


def driver_cuda_version() -> int | None:
    """The CUDA version the NVIDIA driver supports (``cuDriverGetVersion``, e.g. 12020), or None when no driver
    library (libcuda) can be loaded."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        version = ctypes.c_int(0)
        return version.value if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0 else None


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

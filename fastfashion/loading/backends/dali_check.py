"""Can DALI run on this GPU? Facts about the installed DALI build and the NVIDIA driver, and a pure decision on them.

``import nvidia.dali`` succeeds whether or not its GPU operators can run: a DALI build for CUDA 13
(``nvidia-dali-cuda130``) imports fine on a driver that only supports CUDA 12 (a Colab T4 on driver 535) and fails
only when a GPU pipeline is built. So ``auto`` asks :func:`gpu_problem` first and falls back to dali-cpu, naming the
package to install; an explicit request for the GPU gets the same advice as an error.
"""
from __future__ import annotations

import dataclasses
import logging
from importlib import metadata

from ...hardware import DALI12_INSTALL, build_cuda_major, driver_cuda_version, driver_version

log = logging.getLogger(__name__)

DALI_PACKAGES = {"nvidia-dali-cuda130": 13, "nvidia-dali-cuda120": 12, "nvidia-dali-cuda110": 11}
EXTRAS = {13: "dali-cu13", 12: "dali-cu12"}  # fastfashion's extras (pyproject.toml) per CUDA major


@dataclasses.dataclass(frozen=True)
class DaliCudaFacts:
    """``dali_cuda``: the CUDA major version the installed DALI wheel is built for (None: unknown, e.g. a source
    build); ``driver_cuda``: the CUDA version the NVIDIA driver supports, as ``cuDriverGetVersion`` reports it
    (12020 = 12.2; None: no driver library); ``devices``: the CUDA devices DALI sees."""

    dali_cuda: int | None
    driver_cuda: int | None
    devices: int


def gpu_problem(facts: DaliCudaFacts) -> str | None:
    """Why DALI's GPU operators cannot run with ``facts``, or None when nothing stands in the way."""
    if facts.driver_cuda is None:
        return "no NVIDIA driver library (libcuda) could be loaded"
    d_major, d_minor = driver_version(facts.driver_cuda)
    if facts.dali_cuda is not None and d_major < facts.dali_cuda:
        fix = EXTRAS.get(d_major)
        advice = f"; install fastfashion[{fix}] (the DALI build for CUDA {d_major})" if fix else ""
        if d_major == 12:
            advice += f": {DALI12_INSTALL}"
        return (f"the installed DALI is built for CUDA {facts.dali_cuda}, but the NVIDIA driver supports CUDA "
                f"{d_major}.{d_minor} only{advice}")
    if facts.devices < 1:
        return f"DALI sees no CUDA device (driver CUDA {d_major}.{d_minor})"
    return None


def _dali_cuda_major() -> int | None:
    try:  # the imported build's own record (13492 for CUDA 13.4.92), whatever package installed it
        import nvidia.dali as dali
        major = build_cuda_major(getattr(dali, "__cuda_version__", None))
        if major is not None:
            return major
    except ImportError:
        pass
    for name, major in DALI_PACKAGES.items():
        try:
            metadata.version(name)
            return major
        except metadata.PackageNotFoundError:
            continue
    return None


def _dali_devices() -> int:
    try:
        from nvidia.dali import backend
        return int(backend.GetCUDADeviceCount())
    except Exception as e:  # noqa: BLE001 - an old or broken build: count none, the caller reports it
        log.debug("DALI's device count is unavailable: %s", e)
        return 0


def gather_facts() -> DaliCudaFacts:
    """The facts of this machine (call only after ``import nvidia.dali`` succeeded)."""
    return DaliCudaFacts(_dali_cuda_major(), driver_cuda_version(), _dali_devices())


"""Device helpers of the training step: the AMP dtype, the autocast context, moving a batch to the device.

``precision`` (a :class:`~fastfashion.train.config.TrainConfig` field) picks where mixed precision runs:

- ``auto``: on CUDA (bf16 where the GPU has it natively, else fp16 with a GradScaler); fp32 on the CPU.
- ``amp``: also on the CPU, in bf16, where the CPU has native bf16 instructions (AMX or AVX512-BF16: Intel
  Sapphire Rapids and later, AMD Zen 4 and later); fp32 on other CPUs. On a 2-core Xeon with AMX a ResNet-18 step at
  112 px runs 2.15x faster than fp32 on one thread, 1.96x on two (``benchmarks/cpu_step.py``).
- ``fp32``: nowhere.

channels_last goes with mixed precision: on the CPU it is what makes the bf16 convolutions fast (1.26x over
contiguous bf16), with fp32 it gains 4 %, so fp32 on the CPU stays contiguous (the seed recipe's step unchanged).
"""
from __future__ import annotations

import contextlib
import functools

import torch

from ..errors import ConfigError
from ..hardware import PRECISIONS


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (AMX tiles or AVX512-BF16), which make bf16 autocast fast
    (asked once per process)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def amp_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a step on ``device`` with ``precision`` (see the module docstring): on CUDA bf16
    where the GPU has native bf16 (compute capability 8.0+), else fp16 (which needs a GradScaler); on the CPU
    bf16 with ``precision="amp"`` on a CPU with native bf16; else None (fp32).

    Native only: ``torch.cuda.is_bf16_supported()`` also counts emulated bf16 by default (True on a T4, where bf16
    is slow and fp16 has tensor cores). Asks the current CUDA device unless ``device`` names an index.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if device.type != "cuda":
        return torch.bfloat16 if precision == "amp" and cpu_has_bf16() else None
    with torch.cuda.device(device.index) if device.index is not None else contextlib.nullcontext():
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def autocast(device: torch.device, precision: str = "auto"):
    """``(context factory, needs a GradScaler)`` for a step on ``device`` (see :func:`amp_dtype`)."""
    dtype = amp_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext, False
    return (lambda: torch.autocast(device.type, dtype=dtype)), dtype == torch.float16


def channels_last(device: torch.device, precision: str = "auto") -> bool:
    """Whether to use the channels_last memory format on ``device``: on CUDA, and wherever mixed precision runs
    (faster convolutions with AMP on both)."""
    return device.type == "cuda" or amp_dtype(device, precision) is not None


def to_device(batch, device: torch.device, use_channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of a :class:`~fastfashion.loading.base.Batch` on ``device`` (asynchronous copies), the
    images float32, in the channels_last memory format when ``use_channels_last``: one ``to`` that converts while
    it copies, and returns the batch itself when it is already there in that format (dali-gpu delivers
    channels_last on the GPU: no copy at all). A uint8 batch (``batch.colour`` set) moves as uint8 (a quarter of
    the bytes) and is finished here, on ``device``: the colour matrices applied in one batched product, written in
    the wanted memory format (:func:`~fastfashion.loading.colour.apply_colour`)."""
    labels = batch.labels.to(device, non_blocking=True)
    if getattr(batch, "colour", None) is not None:
        from ..loading.colour import apply_colour
        images = batch.images.to(device, non_blocking=True)
        return apply_colour(images, batch.colour, channels_last=use_channels_last), labels
    fmt = torch.channels_last if use_channels_last else torch.preserve_format
    return batch.images.to(device, non_blocking=True, memory_format=fmt), labels

"""Device helpers of the training step: the AMP dtype, the autocast context, moving a batch to the device."""
from __future__ import annotations

import contextlib

import torch


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of a step on ``device``: bf16 where the GPU has native bf16 (compute capability 8.0+),
    else fp16 (which needs a GradScaler); None on the CPU (fp32).

    Native only: ``torch.cuda.is_bf16_supported()`` also counts emulated bf16 by default (True on a T4, where bf16
    is slow and fp16 has tensor cores). Asks the current CUDA device unless ``device`` names an index.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    with torch.cuda.device(device.index) if device.index is not None else contextlib.nullcontext():
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def autocast(device: torch.device):
    """``(context factory, needs a GradScaler)`` for a step on ``device`` (see :func:`amp_dtype`)."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext, False
    return (lambda: torch.autocast(device.type, dtype=dtype)), dtype == torch.float16


def channels_last(device: torch.device) -> bool:
    """Whether to use the channels_last memory format on ``device`` (CUDA: faster convolutions with AMP)."""
    return device.type == "cuda"


def to_device(batch, device: torch.device, use_channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of a :class:`~fastfashion.loading.base.Batch` on ``device`` (asynchronous copies)."""
    images = batch.images.to(device, non_blocking=True)
    if use_channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch.labels.to(device, non_blocking=True)

"""The hardware JPEG decoder (NVJPG engine) by GPU family, and the share of JPEGs DALI's ``mixed`` decoder gives it.

A100, H100 and H200 (and their variants) have a hardware JPEG engine beside the CUDA cores; DALI's ``mixed``
decoder splits each batch between the engine (``hw_decoder_load`` of the JPEGs) and nvJPEG on the CUDA cores (the
rest), so the share is the biggest single knob of decode throughput there. A T4 (and an A10, L40, consumer GPUs)
has no engine: everything decodes on the CUDA cores and the knob does nothing.

:data:`HW_DECODER_LOAD` is the one table of defaults: ``(family, engine, default share, measured)``. A share is
"measured" once ``fastfashion bench`` swept it (:mod:`fastfashion.bench.hwdecoder`) on that family and the best
value was put here (and in docs/loader.md); until then the default is DALI 1.x's own (0.65) and the row says
"not yet measured".
"""
from __future__ import annotations

import dataclasses

DEFAULT_HW_DECODER_LOAD = 0.65  # DALI's long-standing default share; the families below override it once measured
SWEEP = (0.0, 0.5, 0.75, 0.9)  # what `fastfashion bench` tries where there is an engine


@dataclasses.dataclass(frozen=True)
class JpegEngine:
    family: str          # matched against torch.cuda.get_device_name() (case-insensitive substring)
    engine: bool         # has the hardware JPEG decoder
    load: float          # the loader's default hw_decoder_load on this family
    measured: str | None  # where the default comes from ("bench on <GPU>, <date>") or None: not yet measured


HW_DECODER_LOAD = (
    JpegEngine("H200", True, DEFAULT_HW_DECODER_LOAD, None),
    JpegEngine("H100", True, DEFAULT_HW_DECODER_LOAD, None),
    JpegEngine("A100", True, DEFAULT_HW_DECODER_LOAD, None),
    JpegEngine("A30", True, DEFAULT_HW_DECODER_LOAD, None),
    JpegEngine("T4", False, 0.0, None),
)


def engine_for(gpu_name: str | None) -> JpegEngine | None:
    """The row of :data:`HW_DECODER_LOAD` for a GPU named ``gpu_name`` (None: not in the table, or no GPU)."""
    name = (gpu_name or "").upper()
    return next((row for row in HW_DECODER_LOAD if row.family in name), None) if name else None


def has_engine(gpu_name: str | None) -> bool:
    """Whether a GPU named ``gpu_name`` has the hardware JPEG decoder (unknown names: no)."""
    row = engine_for(gpu_name)
    return bool(row and row.engine)


def default_load(gpu_name: str | None) -> float:
    """The loader's ``hw_decoder_load`` on a GPU named ``gpu_name`` (its family's row, else the DALI default)."""
    row = engine_for(gpu_name)
    return row.load if row is not None else DEFAULT_HW_DECODER_LOAD

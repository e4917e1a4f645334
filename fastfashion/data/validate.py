"""Image validation before sharding: every JPEG is read and fully decoded once (by the validation tasks of
:mod:`fastfashion.data.tasks`, in parallel on the conversion's engine).

JPEG policy (the shards store the original bytes untouched, so we only accept bytes that every decoder we use --
DALI's CPU and GPU decoders, torchvision, PIL -- turns into the same RGB image):

* accepted: baseline or progressive JPEG, 3-channel (YCbCr/RGB) or 1-channel grayscale. Grayscale is kept: every
  decoder outputs it as RGB with R = G = B (checked against DALI's CPU decoder).
* rejected: anything that does not fully decode (truncated, corrupt), anything that is not a JPEG (PNG or other
  bytes named ``.jpg``, empty files), and CMYK/YCCK JPEGs: Adobe's inverted-CMYK convention is handled differently
  by different decoders (and some GPU decoders refuse it), so the colours would depend on the backend.
* rejected before decoding: what the loader's header check refuses (:mod:`fastfashion.format.jpeg`): a header
  claiming more than ``max_pixels`` pixels (default PIL's 89,478,485), a broken marker structure, stray markers
  inside a scan, no end-of-image marker after the scans. So a set this writes never holds an image the loader
  would refuse.

The real FashionDataset is 7,000 baseline RGB JPEGs; all pass.
"""
from __future__ import annotations

import dataclasses
import io
import logging

from PIL import Image

from ..format.jpeg import MAX_IMAGE_PIXELS, jpeg_problem

log = logging.getLogger(__name__)

ACCEPTED_MODES = ("RGB", "L")
JPEG_POLICY = ("accept baseline/progressive JPEG in RGB or grayscale; reject truncated/corrupt data, non-JPEG data "
               "(e.g. PNG named .jpg), CMYK/YCCK JPEGs and headers over the pixel limit")


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """Outcome for one file: ``reason`` is None when accepted; ``sha256`` of the bytes read (None if unreadable)."""

    reason: str | None
    sha256: str | None
    size: int


def check_jpeg(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Return None if ``data`` is an acceptable JPEG (see the module docstring), else a short reason.

    Reads the headers first (:func:`~fastfashion.format.jpeg.jpeg_problem`: at most ``max_pixels`` pixels, so a
    decompression bomb is refused before PIL allocates anything), then decodes the full image (no draft mode) so
    truncated and corrupt entropy-coded data is found.
    """
    if not data:
        return "empty file"
    if not data.startswith(b"\xff\xd8\xff"):
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return "PNG data named .jpg (not a JPEG)"
        return "not a JPEG (no start-of-image marker)"
    problem = jpeg_problem(data, max_pixels)
    if problem is not None:
        return f"JPEG {problem}"
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, mode = im.format, im.mode
            im.load()  # full decode; PIL raises OSError on truncated data
    except Exception as e:  # noqa: BLE001 - untrusted bytes: any decoder failure means "reject", with its message
        return f"cannot decode JPEG: {type(e).__name__}: {e}"
    if fmt not in ("JPEG", "MPO"):  # MPO: a JPEG with extra frames; decoders read the first, like PIL
        return f"not a JPEG ({fmt})"
    if mode not in ACCEPTED_MODES:
        return f"{mode} JPEG rejected (only RGB and grayscale: decoders disagree on CMYK/YCCK colours)"
    return None

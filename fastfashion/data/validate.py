"""Image validation before sharding: every JPEG is read and fully decoded once, in parallel worker processes.

JPEG policy (the shards store the original bytes untouched, so we only accept bytes that every decoder we use --
DALI's CPU and GPU decoders, torchvision, PIL -- turns into the same RGB image):

* accepted: baseline or progressive JPEG, 3-channel (YCbCr/RGB) or 1-channel grayscale. Grayscale is kept: every
  decoder outputs it as RGB with R = G = B (checked against DALI's CPU decoder).
* rejected: anything that does not fully decode (truncated, corrupt), anything that is not a JPEG (PNG or other
  bytes named ``.jpg``, empty files), and CMYK/YCCK JPEGs: Adobe's inverted-CMYK convention is handled differently
  by different decoders (and some GPU decoders refuse it), so the colours would depend on the backend.

The real FashionDataset is 7,000 baseline RGB JPEGs; all pass.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..errors import ConfigError
from ..hardware import available_cpus
from ..progress import progress

log = logging.getLogger(__name__)

ACCEPTED_MODES = ("RGB", "L")
JPEG_POLICY = ("accept baseline/progressive JPEG in RGB or grayscale; reject truncated/corrupt data, non-JPEG data "
               "(e.g. PNG named .jpg) and CMYK/YCCK JPEGs")
_CHUNK = 32  # images per worker task: amortises IPC, small enough for a smooth progress bar


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """Outcome for one file: ``reason`` is None when accepted; ``sha256`` of the bytes read (None if unreadable)."""

    reason: str | None
    sha256: str | None
    size: int


def check_jpeg(data: bytes) -> str | None:
    """Return None if ``data`` is an acceptable JPEG (see the module docstring), else a short reason.

    Decodes the full image (no draft mode) so truncated and corrupt entropy-coded data is found.
    """
    if not data:
        return "empty file"
    if not data.startswith(b"\xff\xd8\xff"):
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return "PNG data named .jpg (not a JPEG)"
        return "not a JPEG (no start-of-image marker)"
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


def check_file(path: str | os.PathLike) -> ImageCheck:
    """Read ``path`` and :func:`check_jpeg` it."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return ImageCheck(f"cannot read: {e.strerror or e}", None, 0)
    return ImageCheck(check_jpeg(data), hashlib.sha256(data).hexdigest(), len(data))


def _check_chunk(paths: Sequence[str]) -> list[ImageCheck]:
    return [check_file(p) for p in paths]


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: let only the parent handle it (it terminates the pool and cleans up).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_files(paths: Sequence[str | os.PathLike], workers: int | None = None, *,
                desc: str = "validate") -> list[ImageCheck]:
    """:func:`check_file` every path, in ``workers`` processes (None: all CPUs; 1: in this process), with a
    progress bar.

    Results are in the order of ``paths`` and never depend on ``workers``.
    """
    paths = [str(p) for p in paths]
    workers = available_cpus() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    workers = min(workers, len(chunks))
    out: list[ImageCheck] = []
    with progress(total=len(paths), desc=desc, unit="img", leave=False) as bar:
        if workers <= 1:
            for chunk in chunks:
                out.extend(_check_chunk(chunk))
                bar.update(len(chunk))
            return out
        # spawn, not fork: the caller may run threads (a background import), which fork does not copy safely;
        # a spawned worker only imports PIL and this module (~0.2 s, once).
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init) as pool:  # __exit__ terminates workers on any error
            for res in pool.imap(_check_chunk, chunks):
                out.extend(res)
                bar.update(len(res))
    log.debug("checked %d images with %d workers", len(paths), workers)
    return out

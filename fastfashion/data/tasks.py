"""The two units of work of a conversion, run by any executor (:mod:`fastfashion.data.engines`): a worker process
of the local pool or a Ray task, on this machine or another.

* :func:`check_chunk`: read and fully decode a few images (the JPEG policy of :mod:`fastfashion.data.validate`);
  returns each one's outcome and sha256. A bad image is data, not a failure: it is reported, never raised.
* :func:`write_task`: write one planned shard. Reads its images (from a folder or a URL: image bytes never pass
  through the driver), checks each against the sha256 taken at validation, writes the tar and ``.idx`` in a scratch
  folder (:func:`~fastfashion.format.writer.write_shard`, the same bytes whoever runs it), commits them to the
  output and then writes the shard's fragment record, which it returns.

Both are pure functions of their arguments apart from the files they read and write, and idempotent: a task run
twice (a retry after its worker died, Ray's lineage reconstruction) commits the same bytes under the same names.
"""
from __future__ import annotations

import hashlib
import os
import socket
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import FastfashionError
from ..format.jpeg import MAX_IMAGE_PIXELS
from ..format.writer import Sample, class_counts, write_shard
from ..remote.store import RemoteConfig, RemoteError, Store, is_url
from ..schema import Schema
from .plan import ShardTask
from .validate import ImageCheck, check_jpeg

READ_AHEAD = 16  # image requests in flight per task when the images are at a URL
MAX_IMAGE_BYTES = 256 << 20  # an image at a URL holding more is refused (a JPEG at the pixel limit is far smaller)


class SourceChangedError(FastfashionError, RuntimeError):
    """An image's bytes changed between validation and writing (another process is editing the source)."""


class ImageReader:
    """Reads images relative to a root: a local folder or a URL (through :class:`~fastfashion.remote.store.Store`,
    with its retries for transient failures)."""

    def __init__(self, root: str, config: RemoteConfig | None = None):
        self.root = root
        self.store = Store(root, config or RemoteConfig()) if is_url(root) else None

    def where(self, path: str) -> str:
        return self.store.where(path) if self.store is not None else str(Path(self.root) / path)

    def read(self, path: str) -> bytes:
        """The image's bytes; an OSError (local) or :class:`RemoteError` (URL) when it cannot be read."""
        if self.store is None:
            return (Path(self.root) / path).read_bytes()
        store, what = self.store, f"image {path}"
        if store.protocol in ("http", "https"):
            return store.read_bounded(path, what, MAX_IMAGE_BYTES)  # one streamed GET
        # an object store: one ranged GET (read_bounded would ask for the size first: twice the requests, and a
        # bucket's request rate is what bounds a conversion of many small images)
        data = store.call(what, path, lambda: store.fs.cat_file(store.path(path), start=0, end=MAX_IMAGE_BYTES + 1))
        if len(data) > MAX_IMAGE_BYTES:
            raise RemoteError(f"{store.where(path)}: {what}: more than the {MAX_IMAGE_BYTES} bytes an image may have")
        return data

    def read_all(self, paths: Sequence[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """``(path, bytes or the exception reading it raised)`` in order. At a URL, up to :data:`READ_AHEAD`
        requests are in flight (an object store's latency, not its bandwidth, bounds one request at a time), so at
        most that many images are held at once; a local folder is read one image at a time."""
        def one(path: str) -> bytes | Exception:
            try:
                return self.read(path)
            except (OSError, RemoteError) as e:
                return e

        if self.store is None:
            yield from ((p, one(p)) for p in paths)
            return
        with ThreadPoolExecutor(READ_AHEAD) as pool:
            window: deque = deque()
            for path in paths:
                window.append((path, pool.submit(one, path)))
                if len(window) >= READ_AHEAD:
                    p, f = window.popleft()
                    yield p, f.result()
            while window:
                p, f = window.popleft()
                yield p, f.result()


def check_chunk(root: str, paths: Sequence[str], config: RemoteConfig | None = None,
                max_pixels: int = MAX_IMAGE_PIXELS) -> list[ImageCheck]:
    """Each image's :class:`~fastfashion.data.validate.ImageCheck` (reason None: accepted; more than ``max_pixels``
    pixels is refused). An image that cannot be read (missing, access denied) is a bad image; a transfer that keeps
    failing after its retries raises."""
    out = []
    for _, data in ImageReader(root, config).read_all(paths):
        if isinstance(data, RemoteError):
            if getattr(data, "transient", False):
                raise data
            out.append(ImageCheck(f"cannot read: {str(data).rsplit(': ', 1)[-1]}", None, 0))
        elif isinstance(data, OSError):
            out.append(ImageCheck(f"cannot read: {data.strerror or data}", None, 0))
        else:
            out.append(ImageCheck(check_jpeg(data, max_pixels), hashlib.sha256(data).hexdigest(), len(data)))
    return out


def _samples(task: ShardTask, reader: ImageReader) -> Iterator[Sample]:
    """The task's samples, each image read when its turn comes (at most :data:`READ_AHEAD` in memory)."""
    for s, (_, data) in zip(task.samples, reader.read_all([s.path for s in task.samples])):
        if isinstance(data, FileNotFoundError) or (isinstance(data, RemoteError) and "(404)" in str(data)):
            raise SourceChangedError(f"{reader.where(s.path)} disappeared while sharding")
        if isinstance(data, Exception):
            raise data
        if hashlib.sha256(data).hexdigest() != s.sha256:
            raise SourceChangedError(f"{reader.where(s.path)} changed while sharding")
        yield Sample(s.key, s.path, data, s.labels)


def write_task(task: ShardTask, plan: str, schema: Schema, root: str, sink,
               config: RemoteConfig | None = None) -> dict:
    """Write, commit and record shard ``task`` (``plan``: its digest) into ``sink`` (a
    :class:`~fastfashion.data.output.LocalSink` or ``RemoteSink``). Returns the fragment record."""
    reader = ImageReader(root, config)
    with sink.scratch() as scratch:
        entry = write_shard(scratch, task.split, task.index, _samples(task, reader), schema)
        counts = class_counts((Sample(s.key, s.path, b"", s.labels) for s in task.samples), schema)
        fragment = {"name": task.name, "plan": plan, "entry": entry, "class_counts": counts,
                    "idx_bytes": (scratch / entry["idx"]).stat().st_size,
                    "by": f"{socket.gethostname()}:{os.getpid()}"}
        sink.commit(scratch, [entry["tar"], entry["idx"]], fragment)
    return fragment

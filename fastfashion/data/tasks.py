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
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import FastfashionError
from ..format.writer import Sample, class_counts, write_shard
from ..remote.store import RemoteConfig, RemoteError, Store, is_url
from ..schema import Schema
from .plan import ShardTask
from .validate import ImageCheck, check_jpeg


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
        return self.store.cat(path, f"image {path}")


def check_chunk(root: str, paths: Sequence[str], config: RemoteConfig | None = None) -> list[ImageCheck]:
    """Each image's :class:`~fastfashion.data.validate.ImageCheck` (reason None: accepted). An image that cannot be
    read (missing, access denied) is a bad image; a transfer that keeps failing after its retries raises."""
    reader, out = ImageReader(root, config), []
    for path in paths:
        try:
            data = reader.read(path)
        except RemoteError as e:
            if getattr(e, "transient", False):
                raise
            out.append(ImageCheck(f"cannot read: {str(e).rsplit(': ', 1)[-1]}", None, 0))
            continue
        except OSError as e:
            out.append(ImageCheck(f"cannot read: {e.strerror or e}", None, 0))
            continue
        out.append(ImageCheck(check_jpeg(data), hashlib.sha256(data).hexdigest(), len(data)))
    return out


def _samples(task: ShardTask, reader: ImageReader) -> Iterator[Sample]:
    """The task's samples, each image read when its turn comes (one image in memory at a time)."""
    for s in task.samples:
        try:
            data = reader.read(s.path)
        except FileNotFoundError:
            raise SourceChangedError(f"{reader.where(s.path)} disappeared while sharding") from None
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

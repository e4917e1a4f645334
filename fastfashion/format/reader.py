"""The sample reader, the reading half of the format: where each sample of a split lives (from the manifest and the
``.idx`` files, checked against the tars) and its member bytes read by offset. Every loader backend reads through
this; its writing half is :mod:`fastfashion.format.writer`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ..errors import FastfashionError
from ..schema import Schema
from .dali_index import IndexFormatError, index_line, read_index
from .jpeg import MAX_IMAGE_PIXELS, jpeg_problem
from .labels import decode_labels_member
from .spec import JPEG_START, UNLABELLED, label_problem, unpack_labels


class ShardReadError(FastfashionError, RuntimeError):
    """A shard or sample cannot be read; the message names the shard (tar or idx) and, where known, the key."""


class ShortReadError(FastfashionError, OSError):
    """A shard file ended before a member it lists (truncated while being read)."""


@dataclasses.dataclass(frozen=True)
class SampleRef:
    """Where one sample lives: its tar and the byte ranges of its ``.jpg`` and ``.lbl`` members."""

    key: str
    tar: str
    jpg_offset: int
    jpg_size: int
    lbl_offset: int
    lbl_size: int


@dataclasses.dataclass(frozen=True)
class SplitSamples:
    """The samples of one split in manifest order: ``refs[i]`` is global sample ``i``; ``shards`` lists per shard
    ``(tar path, idx lines)`` where ``idx_lines[j]`` is the shard's ``.idx`` line of its ``j``-th sample (what a
    per-epoch DALI index file copies); ``shard_sha256[k]``: the manifest's sha256 of shard ``k``'s tar (its
    content, for caches keyed by content). ``labels``: int64 ``[N, len(schema)]``, every sample's class ids
    (``-1``: unlabelled), decoded once from the label member (:mod:`fastfashion.format.labels`) and range-checked
    by :func:`check_samples`; ``checked[i]`` says whether sample ``i`` was (a split streamed through a bounded
    cache is checked segment by segment as its tars arrive)."""

    shards: list[tuple[str, list[str]]]
    refs: list[SampleRef]
    labels: np.ndarray
    checked: np.ndarray
    label_member: str = "lbl"
    shard_sha256: list[str] | None = None
    max_pixels: int = MAX_IMAGE_PIXELS  # the pixel limit check_samples applies to each JPEG header

    @property
    def sizes(self) -> list[int]:
        """Samples per shard."""
        return [len(lines) for _, lines in self.shards]


class ShardFiles:
    """Open shard tars (one read-only descriptor each, opened on first use) and read members by byte offset.

    Descriptors are not pickled: a DataLoader worker started by spawn (macOS, Windows) opens its own."""

    def __init__(self):
        self._fds: dict[str, int] = {}

    def read(self, path: str, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of ``path``. Raises OSError, also for a short read."""
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))  # O_BINARY: Windows
        if hasattr(os, "pread"):
            data = os.pread(fd, size, offset)
        else:  # Windows: no pread; each process has its own descriptors and reads from one thread
            os.lseek(fd, offset, os.SEEK_SET)
            data = os.read(fd, size)
        if len(data) != size:
            raise ShortReadError(f"short read ({len(data)} of {size} bytes at offset {offset})")
        return data

    def sample(self, ref: SampleRef) -> tuple[bytes, bytes]:
        """The ``.jpg`` and ``.lbl`` bytes of one sample."""
        return self.read(ref.tar, ref.jpg_offset, ref.jpg_size), self.read(ref.tar, ref.lbl_offset, ref.lbl_size)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass

    def __getstate__(self):
        return {"_fds": {}}

    def __enter__(self) -> ShardFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


def sample_key(member_key: str) -> str:
    """A sample's key as DALI and the loaders cut it: the part of the ``.idx`` key after the last ``/``."""
    return member_key.rsplit("/", 1)[-1]


def read_shard_samples(idx_path: Path, tar_path: Path, width: int, tar_size: int | None = None, *,
                       label_member: str | None = "lbl") -> tuple[list[str], list[SampleRef]]:
    """The ``.idx`` lines of a shard's samples and their :class:`SampleRef`; checks them against the tar size (the
    file's, or ``tar_size`` for a tar not downloaded yet) and the label width (``width`` int64 per ``.lbl``).
    Raises :class:`ShardReadError` naming the file (and key)."""
    try:
        entries = read_index(idx_path)
    except IndexFormatError as e:  # its message names the file and the line
        raise ShardReadError(str(e)) from e
    except OSError as e:
        raise ShardReadError(f"{idx_path}: cannot read the index: {e.strerror or e}") from e
    try:
        tar_size = os.path.getsize(tar_path) if tar_size is None else tar_size
    except OSError as e:
        raise ShardReadError(f"{tar_path}: shard is missing: {e}") from e
    lines, refs = [], []
    for n, entry in enumerate(entries, start=2):
        key = sample_key(entry.key)
        member = label_member if label_member in entry.members else None
        if "jpg" not in entry.members or member is None and label_member is not None:
            raise ShardReadError(f"{idx_path}:{n}: sample {key!r} lacks a .jpg or .{label_member} member")
        end = max(off + size for off, size in entry.members.values())
        if end > tar_size:
            raise ShardReadError(f"{tar_path}: shard is truncated: sample {key!r} ends at byte {end}, "
                                 f"the file has {tar_size}")
        (jo, js), (lo, ls) = entry.members["jpg"], entry.members.get(member, (0, 0))
        if member == "lbl" and ls != 8 * width:
            raise ShardReadError(f"{tar_path}: sample {key!r}: .lbl has {ls} bytes, expected {8 * width} "
                                 f"(int64 x {width})")
        refs.append(SampleRef(key, str(tar_path), jo, js, lo, ls))
        lines.append(index_line(entry))
    return lines, refs


def read_split_samples(shard_dir: str | os.PathLike, manifest: dict, split: str, schema: Schema, *,
                       tars: bool = True, max_pixels: int = MAX_IMAGE_PIXELS) -> SplitSamples:
    """:class:`SplitSamples` of ``split``: every shard's ``.idx`` read and checked against the manifest's counts and
    the tar's size, then (:func:`check_samples`) every sample's JPEG structure (:func:`~.jpeg.jpeg_problem`, at
    most ``max_pixels``) and labels read by offset, decoded and range-checked once. ``tars=False`` (a remote set
    streamed through a bounded cache: the tars arrive later): the manifest's tar sizes stand in and the samples are
    left for :func:`check_samples` once their tar is there. Raises :class:`ShardReadError` naming the file and the
    key."""
    d = Path(shard_dir)
    shards, refs = [], []
    kind = manifest.get("label_member", "lbl")  # the member holding the labels (format/labels.py)
    member = kind if kind == "lbl" or manifest["splits"][split]["labelled"] else None  # None: none to read
    entries = manifest["splits"][split]["shards"]
    for sh in entries:
        lines, shard_refs = read_shard_samples(d / sh["idx"], d / sh["tar"], len(schema),
                                               None if tars else sh["bytes"], label_member=member)
        if len(shard_refs) != sh["num_samples"]:
            raise ShardReadError(f"{d / sh['idx']}: {len(shard_refs)} samples, manifest says {sh['num_samples']}")
        shards.append((str(d / sh["tar"]), lines))
        refs.extend(shard_refs)
    if not tars and kind != "lbl":
        raise ShardReadError(f"{d}: labels in .{kind} members are decoded from the tars when a loader is made; "
                             "streaming needs a .lbl set")
    samples = SplitSamples(shards, refs, np.full((len(refs), len(schema)), UNLABELLED, dtype=np.int64),
                           np.zeros(len(refs), dtype=bool), kind, [sh["sha256"] for sh in entries],
                           max_pixels)
    if tars:
        check_samples(samples, range(len(refs)), schema)
    return samples


def check_samples(samples: SplitSamples, indices, schema: Schema) -> None:
    """Check the samples ``indices`` of ``samples`` not checked yet: raise :class:`ShardReadError` for the first
    whose ``.jpg`` is refused by :func:`~.jpeg.jpeg_problem` (not a JPEG, more than ``samples.max_pixels`` pixels,
    a broken marker structure, a truncated scan, stray markers in the scan) or whose labels are out of range (bytes
    a decoder would choke on, crash on, or silently turn into a grey image never reach it: every backend reads
    through here before decoding; a marker walk, no decode: ~25 us per image of the real set), and decode their
    labels into ``samples.labels`` (the one place labels are decoded and range-checked for reading)."""
    kind = samples.label_member
    with ShardFiles() as files:
        for i in indices:
            i = int(i)
            if samples.checked[i]:
                continue
            r = samples.refs[i]
            try:
                jpg = files.read(r.tar, r.jpg_offset, r.jpg_size)
                head = jpg[:len(JPEG_START)]
                jpeg = jpeg_problem(jpg, samples.max_pixels) if head == JPEG_START else None
                data = files.read(r.tar, r.lbl_offset, r.lbl_size)
                values = unpack_labels(data, len(schema)) if kind == "lbl" else \
                    decode_labels_member(kind, data, schema) if r.lbl_size else (UNLABELLED,) * len(schema)
            except OSError as e:
                raise ShardReadError(f"{r.tar}: sample {r.key!r} cannot be read: {e}") from e
            except ValueError as e:
                raise ShardReadError(f"{r.tar}: sample {r.key!r}: .{kind} member: {e}") from e
            if head != JPEG_START:
                raise ShardReadError(f"{r.tar}: sample {r.key!r}: the .jpg member is not JPEG data "
                                     f"(starts with {head.hex()})")
            if jpeg is not None:
                raise ShardReadError(f"{r.tar}: sample {r.key!r}: the .jpg member {jpeg}")
            problem = label_problem(values, schema)
            if problem:
                raise ShardReadError(f"{r.tar}: sample {r.key!r}: {problem}")
            samples.labels[i] = values
            samples.checked[i] = True


def split_keys(shard_dir: str | os.PathLike, manifest: dict, split: str) -> list[str]:
    """Sample keys of a split in shard order (= split-file order for val/test), read from the shards' ``.idx``
    files. Raises :class:`~fastfashion.format.dali_index.IndexFormatError` naming file and line."""
    return [sample_key(e.key) for shard in manifest["splits"][split]["shards"]
            for e in read_index(Path(shard_dir) / shard["idx"])]

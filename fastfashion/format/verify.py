"""Shard integrity: every tar and ``.idx`` is checked against the manifest's size and sha256 before its first read.

This is the one verification path of the library: a loader verifies a local shard set with it before reading,
and a download into a cache is verified with the same :func:`verify_file` before it is used. A file that passed
is remembered by its identity (device, inode, size, modification time in ns) and expected digest, in this
process and on disk (:func:`verified_cache_path`), so a warm start does not hash again; any change to the file
(a new mtime, another inode after a replace) makes it hash again. What it cannot see: a file modified after the
check while a loader reads it, or modified with its mtime restored. Readers therefore still check what is cheap
per sample (JPEG start marker, label range: :mod:`fastfashion.format.reader`).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from ..fsutil import cache_home
from .atomic import file_sha256, write_file
from .dali_index import IndexFormatError, read_index
from .manifest import ManifestError

log = logging.getLogger(__name__)

MAX_REMEMBERED = 20_000  # files remembered on disk (oldest forgotten first); a shard set has tens to thousands


class IntegrityError(ManifestError):
    """A shard file's size or sha256 differs from the manifest (corrupted, truncated or replaced)."""


def verified_cache_path() -> Path:
    """``$XDG_CACHE_HOME/fastfashion/verified.json`` (default ``~/.cache/...``): files that passed, by identity."""
    return cache_home() / "verified.json"


def file_identity(path: str | os.PathLike) -> list[int]:
    """``[device, inode, size, mtime_ns, ctime_ns]`` of a file (raises OSError when it is missing). The change time
    cannot be set back by tools that preserve mtime (``cp -p``, ``rsync -a``), so a replaced file never matches."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class VerifiedFiles:
    """Files that passed :func:`verify_file`: ``realpath -> (identity, sha256)``, in memory and in a JSON file."""

    _lock = threading.Lock()

    def __init__(self, path: Path | None = None):
        self.path = path
        self.entries: dict[str, dict] = {}
        self._dirty = False
        if path is not None:
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self.entries = {k: v for k, v in loaded.items()  # keep well-formed entries only
                                if isinstance(v, dict) and isinstance(v.get("t"), (int, float))
                                and isinstance(v.get("id"), list) and isinstance(v.get("sha256"), str)}
            except (OSError, ValueError, AttributeError):  # missing or damaged: start empty (it is only a cache)
                self.entries = {}

    def passed(self, path: str, identity: list[int], sha256: str) -> bool:
        e = self.entries.get(path)
        return isinstance(e, dict) and e.get("id") == identity and e.get("sha256") == sha256

    def remember(self, path: str, identity: list[int], sha256: str) -> None:
        self.entries[path] = {"id": identity, "sha256": sha256, "t": time.time()}
        self._dirty = True

    def save(self) -> None:
        """Write the remembered files (atomically; a failure to write the cache is logged, never raised)."""
        if self.path is None or not self._dirty:
            return
        items = sorted(self.entries.items(), key=lambda kv: kv[1].get("t", 0))[-MAX_REMEMBERED:]
        text = json.dumps(dict(items), separators=(",", ":"))
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_file(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
                self._dirty = False
            except OSError as e:
                log.warning("could not record verified shards in %s: %s", self.path, e)


_PROCESS = VerifiedFiles()  # this process's memory of files that passed


def verify_file(path: str | os.PathLike, size: int, sha256: str, known: VerifiedFiles | None = None, *,
                force: bool = False) -> bool:
    """Check ``path`` against ``size`` and ``sha256``; returns True when it was hashed, False when its identity had
    already passed (``force``: hash anyway). Raises :class:`IntegrityError` naming the file."""
    real = os.path.realpath(path)
    try:
        identity = file_identity(real)
    except OSError as e:
        raise IntegrityError(f"{path}: cannot read: {e.strerror or e}") from None
    if identity[2] != size:
        raise IntegrityError(f"{path}: {identity[2]} bytes, the manifest records {size} (truncated or replaced)")
    for memory in (_PROCESS, known):
        if memory is not None and memory.passed(real, identity, sha256) and not force:
            return False
    if file_sha256(real) != sha256:
        raise IntegrityError(f"{path}: sha256 differs from the manifest (corrupted or modified)")
    for memory in (_PROCESS, known):
        if memory is not None:
            memory.remember(real, identity, sha256)
    return True


def verify_download(tmp: str | os.PathLike, final: str | os.PathLike, size: int, sha256: str,
                    known: VerifiedFiles | None = None) -> None:
    """:func:`verify_file` a finished download under its temporary name, then rename it to ``final`` and remember
    ``final`` as verified (a rename changes the file's ctime, so it would be hashed a second time otherwise): a file
    appears under its real name only once it passed. Raises :class:`IntegrityError` naming ``tmp`` (left in place
    for the caller to remove)."""
    verify_file(tmp, size, sha256, known, force=True)
    os.replace(tmp, final)
    real = os.path.realpath(final)
    identity = file_identity(real)
    for memory in (_PROCESS, known):
        if memory is not None:
            memory.remember(real, identity, sha256)


def _verify_shard(d: Path, sh: dict, known: VerifiedFiles | None = None, *, force: bool = False
                  ) -> tuple[int, int]:
    """:func:`verify_file` one shard's tar and ``.idx``; returns (files hashed, bytes hashed)."""
    hashed = nbytes = 0
    idx = d / sh["idx"]
    idx_size = os.path.getsize(idx) if idx.is_file() else -1  # no .idx size in the manifest: the digest decides
    for p, size, sha in ((d / sh["tar"], sh["bytes"], sh["sha256"]), (idx, idx_size, sh["idx_sha256"])):
        if verify_file(p, size, sha, known, force=force):
            hashed, nbytes = hashed + 1, nbytes + size
    return hashed, nbytes


def verify_split(shard_dir: str | os.PathLike, manifest: dict, split: str, *, remember: bool = True) -> None:
    """:func:`verify_file` every tar and ``.idx`` of ``split``; with ``remember`` the results persist across
    processes in :func:`verified_cache_path`. Raises :class:`IntegrityError` naming the first bad file."""
    d = Path(shard_dir)
    known = VerifiedFiles(verified_cache_path()) if remember else None
    t0, hashed, nbytes = time.perf_counter(), 0, 0
    try:
        for sh in manifest["splits"][split]["shards"]:
            h, b = _verify_shard(d, sh, known)
            hashed, nbytes = hashed + h, nbytes + b
    finally:
        if known is not None:
            known.save()
    if hashed:
        log.info("verified %d files of %s split %r (%.0f MB) in %.2f s", hashed, d, split, nbytes / 1e6,
                 time.perf_counter() - t0)


def verify_shard_set(shard_dir: str | os.PathLike, manifest: dict) -> int:
    """Hash every tar and ``.idx`` of every split again (nothing taken from memory) and check each ``.idx``'s
    sample count against the manifest: what ``fastfashion inspect --verify`` does. Returns the number of files
    checked; raises :class:`IntegrityError` naming the first bad file."""
    d, n = Path(shard_dir), 0
    for s in manifest["splits"].values():
        for sh in s["shards"]:
            _verify_shard(d, sh, force=True)
            try:
                count = len(read_index(d / sh["idx"]))
            except IndexFormatError as e:
                raise IntegrityError(str(e)) from None
            if count != sh["num_samples"]:
                raise IntegrityError(f"{d / sh['idx']}: {count} samples, the manifest records {sh['num_samples']}")
            n += 2
    return n

"""The local cache of a remote shard set: verified, shared by the processes of a machine, bounded, filled ahead.

DALI's webdataset reader maps local files only, and the torch backend reads by offset, so both read a remote set
from a local folder: :class:`ShardCache` keeps one per set under the cache root
(``cache_dir``, default ``$XDG_CACHE_HOME/fastfashion/shards``), named by the digest of the set's
``manifest.json`` (the sha256 of its bytes: a replaced set gets a new folder, a stale file is never mistaken
for a new one). The folder holds ``manifest.json`` and the shard files under their own names, so it is itself a
shard folder.

* **Verified**: every tar and ``.idx`` is downloaded under a temporary name (``.NAME.tmpPID``), checked against the
  manifest's size and sha256 by :func:`fastfashion.format.verify.verify_download` (the one verification path of
  the library) and only then renamed: a killed download never leaves a complete-looking file, and the next run
  removes the temporary of the dead process. A hash that differs is downloaded once more, then refused naming the
  URL. An ``.idx`` (whose size the manifest does not record) may be at most :data:`IDX_BYTES_PER_SAMPLE` bytes per
  sample. No download reads more than the size it may have + 1 byte, and transient network failures are retried
  (:meth:`~fastfashion.remote.store.Store.download`).
* **Shared**: a file lock per shard file (``.locks/NAME.lock``) makes one download per shard per machine: a second
  process (another rank) waits for the first and then finds the verified file.
* **Bounded**: with ``cache_limit`` the folder's shard bytes plus this process's downloads in flight stay below
  the limit; the least recently used shards that are not pinned (the current and the next window of the epoch's
  order) are evicted first. Several processes sharing one bounded folder each keep to the limit with their own
  downloads; give each one its share.
* **Ahead**: :meth:`ShardCache.prefetch` hands shards to a pool of ``prefetch`` threads; :meth:`ShardCache.ensure`
  waits for them.
* **Offline**: the set is found through ``urls/`` (the URL's last known manifest digest) and read from the cache alone;
  missing shards are listed in one error. Online with the host unreachable (or timing out) and the set in the cache,
  the error says so, tagged ``use_offline`` (the command line: pass ``--offline``).
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import errno
import hashlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from ..errors import fixable, terminated
from ..format.atomic import clean_stale_files, write_file
from ..format.manifest import MAX_MANIFEST_BYTES, ManifestError, parse_manifest, read_manifest
from ..format.spec import MANIFEST
from ..format.verify import IntegrityError, VerifiedFiles, verified_cache_path, verify_download, verify_file
from ..fsutil import cache_home, register_temp
from ..progress import progress
from .store import RemoteConfig, RemoteError, Store, redact

log = logging.getLogger(__name__)

IDX_BYTES_PER_SAMPLE = 4096      # an .idx line is ~100 bytes; more than this per sample is refused as hostile
_PINS: dict[str, dict[int, set[str]]] = {}  # cache folder -> pin owner id -> tars it pinned (every loader of the
#                                             process: a val loader's download never evicts what train reads)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$XDG_CACHE_HOME/fastfashion/shards`` (default ``~/.cache/...``)."""
    return Path(cache_dir) if cache_dir is not None else cache_home() / "shards"


def manifest_digest(manifest_bytes: bytes) -> str:
    """The name of a set's cache folder: the first 16 hex digits of its manifest's sha256."""
    return hashlib.sha256(manifest_bytes).hexdigest()[:16]


def _url_key(url: str) -> str:
    return hashlib.sha256(redact(url.rstrip("/")).encode()).hexdigest()[:16]


def idx_limit(num_samples: int) -> int:
    """The most bytes the ``.idx`` of a shard of ``num_samples`` samples may have (:data:`IDX_BYTES_PER_SAMPLE`)."""
    return IDX_BYTES_PER_SAMPLE * num_samples + 65536


def shard_bytes(entries: Iterable[dict]) -> int:
    """Tar bytes of some manifest shard entries."""
    return sum(sh["bytes"] for sh in entries)


class ShardCache:
    """The local copy of the remote shard set at ``url`` (see the module docstring). Raises :class:`RemoteError`
    for a store that cannot be reached, a missing set (404) or, ``offline``, a set never cached;
    :class:`~fastfashion.format.manifest.ManifestError` for a bad manifest."""

    def __init__(self, url: str, config: RemoteConfig = RemoteConfig()):
        self.url, self.config = url.rstrip("/"), config
        self.root = cache_root(config.cache_dir)
        self.store = None if config.offline else Store(url, config)
        self.manifest, self.dir = self._open_manifest()
        (self.dir / ".locks").mkdir(parents=True, exist_ok=True)
        self.known = VerifiedFiles(verified_cache_path())
        self.downloaded: list[str] = []   # files this process downloaded (tests, benchmarks)
        self.downloaded_bytes = 0
        self._mutex = threading.Lock()
        self._reserved: dict[str, int] = {}  # downloads in flight -> their size
        self._lru: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._futures: dict[str, cf.Future] = {}
        self._pool: cf.ThreadPoolExecutor | None = None
        for p in sorted(self.dir.glob("*.tar"), key=lambda p: p.stat().st_atime):
            self._lru[p.name] = None

    # --- the manifest ------------------------------------------------------------------------------------
    def _open_manifest(self) -> tuple[dict, Path]:
        pointer = self.root / "urls" / _url_key(self.url)
        if self.store is None:
            cached = _cached_manifest(pointer)
            if cached is None:
                raise fixable(RemoteError(f"{redact(self.url)}: offline, and this set is not in the cache "
                                          f"{self.root}"), "offline")
            return cached
        try:
            data = self.store.read_bounded(MANIFEST, "the shard set's manifest", MAX_MANIFEST_BYTES)  # one request
        except RemoteError as e:
            cached = _cached_manifest(pointer)
            if e.transient and cached is not None:  # the host is down, but a copy is here: say how to read it
                raise fixable(RemoteError(f"{e}; this set is in the cache {cached[1]}"), "use_offline") from None
            raise
        manifest = parse_manifest(data, self.store.where(MANIFEST))
        folder = self.root / manifest_digest(data)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / MANIFEST).is_file():
                write_file(folder / MANIFEST, lambda tmp: tmp.write_bytes(data))
            pointer.parent.mkdir(parents=True, exist_ok=True)
            write_file(pointer, lambda tmp: tmp.write_text(folder.name, encoding="utf-8"))
        except OSError as e:
            raise _disk_error(e, folder, MANIFEST) from None
        return manifest, folder

    def shards(self, split: str) -> list[dict]:
        """The manifest's shard entries of ``split``; ManifestError for a split the set lacks."""
        if split not in self.manifest["splits"]:
            raise fixable(ManifestError(f"{redact(self.url)}: no split {split!r} (has "
                                        f"{sorted(self.manifest['splits'])})"), "split")
        return self.manifest["splits"][split]["shards"]

    # --- one file ----------------------------------------------------------------------------------------
    def _valid(self, name: str, size: int | None, sha256: str) -> bool:
        """Whether the cached ``name`` passes :func:`verify_file` (remembered: no hashing); a bad one is removed."""
        path = self.dir / name
        if not path.is_file():
            return False
        try:
            verify_file(path, path.stat().st_size if size is None else size, sha256, self.known)
            return True
        except IntegrityError as e:
            log.warning("%s; downloading it again", e)
            path.unlink(missing_ok=True)
            return False

    def _fetch(self, name: str, size: int | None, sha256: str, limit: int | None) -> bool:
        """Make ``name`` present and verified (download under the file lock); True when this call downloaded."""
        from filelock import FileLock
        with FileLock(str(self.dir / ".locks" / f"{name}.lock")):
            if self._valid(name, size, sha256):
                return False
            if self.store is None:
                raise fixable(RemoteError(f"{redact(self.url)}: offline, and shard file {name} is not in the "
                                          f"cache {self.dir}"), "offline")
            self._make_room(name, size or 0)  # an .idx (size None: not in the manifest) is small, counted once here
            try:
                for attempt in (1, 2):
                    tmp, got = self._download(name, size, limit)
                    try:
                        verify_download(tmp, self.dir / name, got, sha256, self.known)
                        break
                    except IntegrityError:
                        tmp.unlink(missing_ok=True)
                        if attempt == 2:
                            raise RemoteError(f"{self.store.where(name)}: shard file {name}: sha256 differs from "
                                              "the manifest in 2 downloads (corrupted in the store)") from None
                        log.warning("%s: sha256 differs from the manifest; downloading it once more",
                                    self.store.where(name))
            finally:
                with self._mutex:
                    self._reserved.pop(name, None)
            with self._mutex:
                self.downloaded.append(name)
                self.downloaded_bytes += got
                if name.endswith(".tar"):
                    self._lru[name] = None
            return True

    def _download(self, name: str, size: int | None, limit: int | None) -> tuple[Path, int]:
        """Stream object ``name`` into a temporary file beside its final name (:meth:`Store.download`: a tar must
        have exactly its manifest ``size``, an ``.idx`` at most ``limit`` bytes; at most one byte more is read;
        transient failures retried). Returns the temporary and its byte count."""
        final = self.dir / name
        clean_stale_files(final)  # the temporary of a killed download
        tmp = final.with_name(f".{name}.tmp{os.getpid()}")  # one download of a name per machine: the file lock
        register_temp(tmp)
        try:
            got = self.store.download(name, tmp, f"shard file {name}", size=size,
                                      limit=None if size is not None else limit)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, RemoteError):
                raise
            raise _disk_error(e, self.dir, name) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, got

    # --- the limit ---------------------------------------------------------------------------------------
    def used_bytes(self) -> int:
        """Bytes of the complete shard files in the folder (tars and ``.idx``; temporaries are counted by
        :meth:`_make_room` at their full size while their download runs)."""
        total = 0
        for p in self.dir.iterdir():
            if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):
                try:
                    total += p.stat().st_size
                except OSError:
                    pass
        return total

    def _make_room(self, name: str, size: int) -> None:
        """Reserve ``size`` bytes for ``name``, evicting least recently used unpinned tars to stay under the limit."""
        limit = self.config.cache_limit
        with self._mutex:
            if limit is not None:
                pinned = set().union(*_PINS.get(str(self.dir), {}).values())
                used = self.used_bytes() + sum(self._reserved.values())
                for victim in list(self._lru):
                    if used + size <= limit:
                        break
                    path = self.dir / victim
                    if victim in pinned or victim in self._reserved or not path.is_file():
                        continue
                    used -= path.stat().st_size
                    path.unlink(missing_ok=True)
                    del self._lru[victim]
                    log.debug("evicted %s from %s", victim, self.dir)
                if used + size > limit:
                    raise fixable(RemoteError(
                        f"{self.dir}: cache_limit {limit} bytes is full with shards in use; {name} needs {size} "
                        "more"), "cache_limit")
            self._reserved[name] = size

    def check_limit(self, split: str, hold: int | None) -> int:
        """The bytes the split needs in the cache at once: every ``.idx`` of the split plus all tars, or the
        ``hold`` largest tars (a streamed pass holds the previous, current and next window). Raises
        :class:`RemoteError` naming that minimum when ``cache_limit`` is below it."""
        entries = self.shards(split)
        idx = sum((self.dir / sh["idx"]).stat().st_size for sh in entries if (self.dir / sh["idx"]).is_file())
        tars = sorted((sh["bytes"] for sh in entries), reverse=True)
        need = idx + (sum(tars) if hold is None else sum(tars[:hold]))
        limit = self.config.cache_limit
        if limit is not None and limit < need:
            what = "the whole split" if hold is None else f"the {hold} largest shards held at once (3 windows)"
            raise fixable(RemoteError(f"{redact(self.url)} split {split!r}: cache_limit {limit} bytes is below "
                                      f"the {need} bytes {what} and its .idx files need; raise it to at least "
                                      f"{need}"), "cache_limit")
        return need

    # --- many files --------------------------------------------------------------------------------------
    def fetch_index(self, split: str) -> None:
        """Download (or find) every ``.idx`` of ``split``: small, kept, read by every pass."""
        entries = self.shards(split)
        jobs = [(sh["idx"], None, sh["idx_sha256"], idx_limit(sh["num_samples"])) for sh in entries]
        self._run(jobs, f"index files of {split}")

    def _run(self, jobs: list[tuple], desc: str) -> None:
        pool = self._executor()
        futures = [pool.submit(self._fetch, *job) for job in jobs]
        try:
            for f in progress(cf.as_completed(futures), total=len(futures), desc=desc, unit="file",
                              off=len(futures) < 8):
                f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def _executor(self) -> cf.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self.config.prefetch, thread_name_prefix="fastfashion-download")
        return self._pool

    def pin(self, entries: Iterable[dict], owner: object = None) -> None:
        """The shards the current and the next window of ``owner`` (a loader; None: this cache) need: never evicted
        until its next :meth:`pin` or :meth:`unpin`."""
        with self._mutex:
            _PINS.setdefault(str(self.dir), {})[id(self if owner is None else owner)] = {sh["tar"] for sh in entries}

    def unpin(self, owner: object = None) -> None:
        """Drop the pins of ``owner`` (a loader that closed)."""
        with self._mutex:
            _PINS.get(str(self.dir), {}).pop(id(self if owner is None else owner), None)

    def prefetch(self, entries: Iterable[dict]) -> None:
        """Start downloading the tars of ``entries`` in the background (already cached ones cost a stat)."""
        pool = self._executor()
        with self._mutex:
            for sh in entries:
                name = sh["tar"]
                if name not in self._futures:
                    self._futures[name] = pool.submit(self._fetch, name, sh["bytes"], sh["sha256"], None)

    def ensure(self, entries: Iterable[dict]) -> None:
        """Every tar of ``entries`` present and verified (waits for prefetches, raises their errors); marks them
        recently used."""
        entries = list(entries)
        if self.store is None:
            missing = [sh["tar"] for sh in entries if not self._valid(sh["tar"], sh["bytes"], sh["sha256"])]
            if missing:
                raise fixable(RemoteError(f"{redact(self.url)}: offline, and {len(missing)} shards are not in the "
                                          f"cache {self.dir}: {', '.join(missing[:20])}"), "offline")
        self.prefetch(entries)
        for sh in entries:
            future = self._futures[sh["tar"]]
            try:
                future.result()
            finally:
                with self._mutex:
                    if self._futures.get(sh["tar"]) is future:
                        del self._futures[sh["tar"]]
            with self._mutex:
                self._lru[sh["tar"]] = None
                self._lru.move_to_end(sh["tar"])

    def fetch_split(self, split: str) -> None:
        """Every tar and ``.idx`` of ``split`` in the cache (parallel downloads with a progress bar)."""
        self.fetch_index(split)
        entries = self.shards(split)
        self._run([(sh["tar"], sh["bytes"], sh["sha256"], None) for sh in entries], f"shards of {split}")
        with self._mutex:
            for sh in entries:
                self._lru[sh["tar"]] = None

    def fetch_also(self, split: str) -> bool:
        """Cache ``split`` whole besides the splits being read (the trainer asks for the test split, what
        ``predict`` reads by default, so that ``predict --offline`` works after training). Skipped, and logged,
        when the set has no such split, offline, or with a ``cache_limit`` (a bounded cache holds what is being
        read). Returns whether the split is now in the cache."""
        if not self.manifest["splits"].get(split, {}).get("shards") or self.store is None:
            return False
        if self.config.cache_limit is not None:
            log.info("%s: the %s split is not cached beside a bounded cache (cache_limit); predict --offline on it "
                     "needs one run of predict without --offline", redact(self.url), split)
            return False
        self.fetch_split(split)
        log.info("%s: the %s split is cached too (what predict reads by default)", redact(self.url), split)
        return True

    def close(self) -> None:
        """Stop the download threads (downloads in progress finish; queued ones are dropped) and save what was
        verified."""
        _PINS.get(str(self.dir), {}).pop(id(self), None)
        pool, self._pool = self._pool, None
        if pool is not None:  # after SIGTERM a download in progress is not waited for (the process is ending)
            pool.shutdown(wait=not terminated(), cancel_futures=True)
        self._futures.clear()
        self.known.save()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _disk_error(e: OSError, folder: Path, name: str) -> OSError:
    """A full or unwritable cache disk as one line naming the folder and the shard."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return fixable(RemoteError(f"{folder}: the cache disk is full while writing {name}"), "cache_dir")
    if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return fixable(RemoteError(f"{folder}: cannot write the cache ({e.strerror})"), "cache_dir")
    return e


def _cached_manifest(pointer: Path) -> tuple[dict, Path] | None:
    """The manifest and cache folder that ``pointer`` (a URL's last known set) names, when the folder holds a
    readable manifest (None otherwise)."""
    try:
        folder = pointer.parent.parent / pointer.read_text(encoding="utf-8").strip()
        return read_manifest(folder, check_files=False), folder
    except (OSError, ManifestError):
        return None


def pointer_folder(url: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cache folder of the last manifest seen at ``url`` (None when it was never cached)."""
    root = cache_root(cache_dir)
    try:
        return root / (root / "urls" / _url_key(url)).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def cached_summary(folder: Path) -> dict:
    """``{file name: bytes}`` of the shard files in a cache folder (tests and benchmarks)."""
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.suffix in (".tar", ".idx")}


__all__ = ["ShardCache", "cache_root", "manifest_digest", "shard_bytes",
           "pointer_folder", "cached_summary", "IDX_BYTES_PER_SAMPLE"]

"""Where a conversion writes: a local folder or a URL (anything fsspec reaches), as a work area that survives a
failed run so that the same command run again reuses every shard already committed.

Two halves. The driver holds a :class:`Target` (:class:`LocalTarget`, :class:`RemoteTarget`): it claims the work
area, reads the fragment records of earlier attempts, and at the end writes the wids indexes and ``manifest.json``
last. A worker holds the target's sink (:class:`LocalSink`, :class:`RemoteSink`; small and picklable: what a Ray
task or a pool process receives): it
writes one shard in a private scratch folder, commits the tar and its ``.idx`` (a rename into the work area, or one
object put each), and only then writes the shard's fragment record (counts, sizes, sha256s, the plan digest). A shard
without a fragment record is never listed, whatever its files say.

Local work area: ``.NAME.partial`` beside ``NAME``, locked (``flock``) by the driver for the whole run, renamed to
``NAME`` once complete (an existing set is replaced only then, and only with ``overwrite``). Each attempt writes in
its own ``.attempt-HOST-PID-HEX`` scratch folder inside it; the next run removes those of dead attempts. Remote work
area: the URL itself; fragment records under ``_fragments/``, removed once ``manifest.json`` is written; with
``overwrite`` the old ``manifest.json`` is removed first (the old set stops being a set at once: object stores have
no rename), and files of the old set that the new one does not list are removed at the end.
"""
from __future__ import annotations

import abc
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError, FastfashionError, fixable
from ..format.atomic import clean_stale, file_sha256, fsync, with_path
from ..format.manifest import MAX_MANIFEST_BYTES, parse_manifest
from ..format.spec import MANIFEST, wids_index, wids_name
from ..format.writer import check_target, commit_set
from ..fsutil import register_temp
from ..remote.store import RemoteConfig, RemoteError, Store, is_url
from ..remote.upload import put_file, set_files

log = logging.getLogger(__name__)

FRAGMENTS = "_fragments"        # fragment records: {FRAGMENTS}/{split}-{index:05d}.json
RUN = "_run"                    # the token of the run that owns the work area; a task of another run commits nothing
_MAX_FRAGMENT_BYTES = 1 << 20   # a fragment record is a few hundred bytes


class SupersededError(FastfashionError, RuntimeError):
    """A task of a run that another run has since taken over (its driver died): it commits nothing."""


def _attempt_name() -> str:
    return f".attempt-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


# --- the worker half ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LocalSink:
    """A local work area (a folder every worker can reach), owned by run ``run``."""

    folder: str
    run: str

    @contextmanager
    def scratch(self):
        """A private folder to write one shard in, removed afterwards."""
        path = Path(self.folder) / _attempt_name()
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, scratch: Path, names: list[str], fragment: dict) -> None:
        """Move the shard's files into the work area, then write its fragment record (the commit marker)."""
        folder = Path(self.folder)
        if (folder / RUN).read_text(encoding="utf-8") != self.run:
            raise SupersededError(f"{folder}: another run took over; shard {fragment['name']} not committed")
        for name in names:
            try:
                os.replace(scratch / name, folder / name)
            except OSError as e:
                raise with_path(e, folder / name) from e
        fsync(folder)
        frag_dir = folder / FRAGMENTS
        frag_dir.mkdir(exist_ok=True)
        tmp = scratch / "fragment.json"
        tmp.write_text(json.dumps(fragment, sort_keys=True), encoding="utf-8")
        fsync(tmp)
        os.replace(tmp, frag_dir / f"{fragment['name']}.json")
        fsync(frag_dir)


@dataclasses.dataclass(frozen=True)
class RemoteSink:
    """A work area at a URL: one object put per file; owned by run ``run``."""

    url: str
    config: RemoteConfig
    run: str

    @contextmanager
    def scratch(self):
        """A private local folder, recorded under this process: a worker killed meanwhile leaves it to the next
        fastfashion command on that machine (:func:`fastfashion.fsutil.register_temp`)."""
        path = Path(tempfile.mkdtemp(prefix="fastfashion-shard-"))
        register_temp(path)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, scratch: Path, names: list[str], fragment: dict) -> None:
        store = Store(self.url, self.config)
        if bytes(store.read_bounded(RUN, "the work area's run token", 64)) != self.run.encode():
            raise SupersededError(f"{store.where('')}: another run took over; shard {fragment['name']} not committed")
        for name in names:
            put_file(store, scratch / name, name)
        name = f"{FRAGMENTS}/{fragment['name']}.json"
        data = json.dumps(fragment, sort_keys=True).encode()
        store.call(f"fragment record {name}", name, lambda: store.fs.pipe_file(store.path(name), data))


# --- the driver half ---------------------------------------------------------------------------------------------
class Target(abc.ABC):
    """The driver's side of an output (see the module docstring)."""

    where: str
    is_local: bool
    sink: LocalSink | RemoteSink

    @abc.abstractmethod
    def claim(self) -> dict[str, dict]:
        """Claim the work area (refusing a set that exists without ``overwrite``) and return the fragment records
        found there, by shard name."""

    @abc.abstractmethod
    def reusable(self, fragment: dict) -> bool:
        """Whether the shard a fragment record describes is in the work area as recorded."""

    @abc.abstractmethod
    def finish(self, manifest: dict) -> None:
        """Write the wids indexes and the manifest (last) and make the set visible."""

    def release(self, failed: bool) -> None:  # noqa: B027 - a remote work area holds nothing to release
        """End of the run; after a failure the committed shards stay for the next run."""


class LocalTarget(Target):
    def __init__(self, out: Path, *, overwrite: bool):
        self.out, self.overwrite, self.is_local = Path(out), overwrite, True
        self.work = self.out.parent / f".{self.out.name}.partial"
        self.where = str(self.out)
        self.sink = LocalSink(str(self.work), secrets.token_hex(8))
        self._fd: int | None = None

    def claim(self) -> dict[str, dict]:
        clean_stale(self.out)  # the temporaries of a killed ShardWriter (an interrupted overwrite is put back)
        check_target(self.out, self.overwrite)  # fail fast, before any work
        try:
            self.work.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.work, os.O_RDONLY)
        except OSError as e:
            raise with_path(e, self.work) from e
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise ConfigError(f"{self.out}: another conversion is writing it (its work folder {self.work} is "
                              "locked); wait for it to end") from None
        (self.work / RUN).write_text(self.sink.run, encoding="utf-8")  # tasks of a dead run commit nothing now
        for stale in self.work.glob(".attempt-*"):  # attempts of dead runs (this run holds the lock)
            shutil.rmtree(stale, ignore_errors=True)
        fragments = {}
        for f in sorted((self.work / FRAGMENTS).glob("*.json")):
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
                fragments[doc["name"]] = doc
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable fragment record %s", f)
        return fragments

    def reusable(self, fragment: dict) -> bool:
        entry = fragment["entry"]
        for name, digest in ((entry["tar"], entry["sha256"]), (entry["idx"], entry["idx_sha256"])):
            p = self.work / name
            if not p.is_file() or file_sha256(p) != digest:
                return False
        return True

    def finish(self, manifest: dict) -> None:
        shutil.rmtree(self.work / FRAGMENTS, ignore_errors=True)
        keep = set(set_files(manifest))
        for p in self.work.iterdir():  # attempts of killed workers, shards of an older plan
            if p.name not in keep:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        commit_set(self.work, self.out, manifest, overwrite=self.overwrite)

    def release(self, failed: bool) -> None:
        if self._fd is None:
            return
        if failed and self.work.is_dir():
            for scratch in self.work.glob(".attempt-*"):  # of tasks stopped in flight (the engine has stopped)
                shutil.rmtree(scratch, ignore_errors=True)
            frags = list((self.work / FRAGMENTS).glob("*.json"))
            if frags:
                log.warning("kept %d committed shards in %s: the same command run again reuses them (remove the "
                            "folder to start afresh)", len(frags), self.work)
            else:
                shutil.rmtree(self.work, ignore_errors=True)
        os.close(self._fd)  # releases the lock
        self._fd = None


class RemoteTarget(Target):
    def __init__(self, url: str, *, overwrite: bool, config: RemoteConfig):
        self.url, self.overwrite, self.config, self.is_local = url.rstrip("/"), overwrite, config, False
        self.store = Store(self.url, config)
        self.where = self.store.where("")
        self.sink = RemoteSink(self.url, config, secrets.token_hex(8))
        self._old: list[str] = []
        self._sizes: dict[str, int] = {}

    def claim(self) -> dict[str, dict]:
        store = self.store
        if store.exists(MANIFEST):
            if not self.overwrite:
                raise fixable(RemoteError(f"{store.where(MANIFEST)}: a shard set already exists there"),
                              "overwrite")
            old = parse_manifest(store.read_bounded(MANIFEST, "the old manifest", MAX_MANIFEST_BYTES),
                                 store.where(MANIFEST))
            self._old = set_files(old)
            store.call("the old manifest", MANIFEST, lambda: store.fs.rm_file(store.path(MANIFEST)))
        token = self.sink.run.encode()
        store.call("the work area's run token", RUN, lambda: store.fs.pipe_file(store.path(RUN), token))
        found = store.call("listing", "", lambda: store.fs.find(store.root, detail=True)) if store.root else {}
        prefix = store.root + "/"
        self._sizes = {k.removeprefix(prefix): int(v.get("size") or 0) for k, v in found.items()}
        fragments = {}
        for name in sorted(n for n in self._sizes if n.startswith(FRAGMENTS + "/") and n.endswith(".json")):
            try:
                doc = json.loads(store.read_bounded(name, "fragment record", _MAX_FRAGMENT_BYTES))
                fragments[doc["name"]] = doc
            except (RemoteError, ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable fragment record %s", store.where(name))
        return fragments

    def reusable(self, fragment: dict) -> bool:
        entry = fragment["entry"]
        return (self._sizes.get(entry["tar"]) == entry["bytes"]
                and self._sizes.get(entry["idx"]) == fragment["idx_bytes"])

    def finish(self, manifest: dict) -> None:
        store = self.store
        for split, entry in manifest["splits"].items():
            if entry["shards"]:
                name, text = wids_name(split), wids_index(split, entry["shards"]).encode()
                store.call(f"wids index {name}", name, lambda n=name, t=text: store.fs.pipe_file(store.path(n), t))
        data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
        store.call("the manifest", MANIFEST, lambda: store.fs.pipe_file(store.path(MANIFEST), data))
        keep = set(set_files(manifest)) | {MANIFEST}
        for name in sorted({n for n in self._old if n not in keep} | set(self._fragments_now()) | {RUN}):
            store.call(f"old file {name}", name, lambda n=name: store.fs.rm_file(store.path(n)))

    def _fragments_now(self) -> list[str]:
        """The fragment records there now (the claim's listing predates this run's)."""
        store = self.store
        prefix = store.root + "/" if store.root else ""
        found = store.call("listing", FRAGMENTS, lambda: store.fs.glob(store.path(f"{FRAGMENTS}/*.json")))
        return [p.removeprefix(prefix) for p in found]


def make_target(out: str | os.PathLike, *, overwrite: bool, config: RemoteConfig | None = None) -> Target:
    """The target for ``out``: a URL (``s3://``, ``gs://``, ``file://`` ...) or a local folder."""
    if is_url(str(out)):
        return RemoteTarget(str(out), overwrite=overwrite, config=config or RemoteConfig())
    return LocalTarget(Path(out), overwrite=overwrite)

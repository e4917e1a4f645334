"""Crash-safe output files and folders, shared by every writer (synth, shard, train, predict, bench).

A writer builds into ``.NAME.tmp-PID-HEX`` beside the target and calls :func:`replace_dir` at the end: the target
either keeps its old content or gets the complete new one. An existing target is first renamed to
``.NAME.old-PID-HEX`` and deleted only after the new folder is in place. :func:`clean_stale` removes what a killed
process (SIGKILL) left behind, and puts an ``.old-`` folder back when the kill came between the two renames.

Owners: every temporary folder or file is recorded under the creating process (:func:`register_temp`, in
``$XDG_CACHE_HOME/fastfashion/owners/HOST_BOOT_PID_START``),
so that the next start of any command removes what dead processes
left anywhere (:func:`clean_dead_owners`), not only in the folder it writes to. A normal exit leaves none.
"""
from __future__ import annotations

import atexit
import hashlib
import logging
import os
import secrets
import shutil
import socket
from pathlib import Path

log = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owners_dir() -> Path:
    """``$XDG_CACHE_HOME/fastfashion/owners`` (default ``~/.cache/...``): one file per process listing its temps."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastfashion" / "owners"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "noboot"


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``); None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None if not _pid_alive(pid) else "0"  # no /proc (not Linux): alive or not is all we know
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def owner_record(pid: int | None = None) -> Path:
    """The file listing the temporaries of process ``pid`` (default: this one): named by host, boot, PID and
    start time, so that another machine sharing the cache folder, a reused PID or a PID of another container is
    never taken for the owner."""
    pid = os.getpid() if pid is None else pid
    host = socket.gethostname().replace("_", "-") or "host"
    return owners_dir() / f"{host}_{_boot_id()}_{pid}_{_start_time(pid) or 0}"


def register_temp(path: str | os.PathLike) -> None:
    """Record that this process owns the temporary ``path`` (removed by :func:`clean_dead_owners` once this
    process is gone, if it is still there). Failure to record is logged, never raised."""
    own = owner_record()
    try:
        own.parent.mkdir(parents=True, exist_ok=True)
        with open(own, "a", encoding="utf-8") as f:
            f.write(os.path.abspath(path) + "\n")
    except OSError as e:
        log.debug("could not record temporary %s: %s", path, e)
        return
    if not _REGISTERED:
        _REGISTERED.append(own)
        atexit.register(_forget_own, own)


_REGISTERED: list[Path] = []


def _forget_own(own: Path) -> None:
    """At a normal exit: the temps are gone (each writer removes its own), so is their record."""
    own.unlink(missing_ok=True)


def _owner_gone(name: str) -> bool:
    """Whether the process a record names is certainly gone: this host, and either another boot or no process
    with that PID and start time. Records of other hosts are left alone (their owners may be running)."""
    parts = name.split("_")
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    host, boot, pid, start = parts
    if host != (socket.gethostname().replace("_", "-") or "host"):
        return False
    return boot != _boot_id() or _start_time(int(pid)) != start


def clean_dead_owners() -> int:
    """Remove the temporary files and folders recorded by processes that no longer run on this machine; returns
    how many."""
    removed = 0
    try:
        records = list(owners_dir().iterdir())
    except OSError:
        return 0
    for own in records:
        if not _owner_gone(own.name):
            continue
        try:
            paths = own.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for p in map(Path, paths):
            if p.exists() and (".tmp" in p.name or p.name.startswith("fastfashion-")):  # only temps we name
                log.info("removing %s left by an interrupted run (%s)", p, own.name)
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed += 1
        own.unlink(missing_ok=True)
    return removed


def _side_name(out_dir: Path, kind: str) -> Path:
    return out_dir.parent / f".{out_dir.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def clean_stale(out_dir: Path) -> None:
    """Remove temporary folders of ``out_dir`` left by dead processes (a SIGKILLed run). A stale ``.old-`` folder
    (killed between the two renames of an overwrite) is put back if ``out_dir`` is missing, else removed."""
    parent = out_dir.parent
    if not parent.is_dir():
        return
    for p in parent.glob(f".{out_dir.name}.*-*-*"):
        kind, _, rest = p.name[len(out_dir.name) + 2:].partition("-")
        pid = rest.split("-")[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if kind == "old" and not out_dir.exists():
            log.warning("restoring %s from %s (an overwrite was interrupted)", out_dir, p)
            os.rename(p, out_dir)
        else:
            log.info("removing %s left by an interrupted run", p)
            shutil.rmtree(p, ignore_errors=True)


def make_temp_dir(out_dir: Path) -> Path:
    """A new empty ``.NAME.tmp-PID-HEX`` folder beside ``out_dir`` (stale ones of dead processes removed first)."""
    clean_stale(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _side_name(out_dir, "tmp")
    tmp.mkdir()
    register_temp(tmp)
    return tmp


def fsync(path: Path) -> None:
    """Flush a file's (or folder's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished ``tmp`` to ``out_dir``; an existing ``out_dir`` is replaced only once ``tmp`` is in place
    (an empty one is simply removed). The caller checks beforehand that replacing ``out_dir`` is allowed."""
    old = None
    if out_dir.exists():
        if any(out_dir.iterdir()):
            old = _side_name(out_dir, "old")
            os.rename(out_dir, old)
        else:
            out_dir.rmdir()
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)  # put the old content back
        raise
    fsync(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_file(path: str | os.PathLike, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then ``os.replace`` it: a crash never leaves half a file
    (and the next write to ``path`` removes a temporary a dead process left). An OSError without a file name (a
    full disk) is raised again naming ``path``."""
    path = Path(path)
    clean_stale_files(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        register_temp(tmp)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise with_path(e, path) from e
    finally:
        tmp.unlink(missing_ok=True)


def clean_stale_files(path: Path) -> None:
    """Remove ``.NAME.tmpPID`` files beside ``path`` whose process is gone (a kill during :func:`write_file`)."""
    try:
        stale = list(path.parent.glob(f".{path.name}.tmp*"))
    except OSError:
        return
    for p in stale:
        pid = p.name[len(path.name) + 5:]
        if pid.isdigit() and not _pid_alive(int(pid)):
            log.info("removing %s left by an interrupted run", p)
            p.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unwritable(path: str | os.PathLike) -> str | None:
    """Why a file cannot be written at ``path`` (None when it can): checked before long work, so that an output
    that cannot be written fails at once, not after it was computed. Missing parent folders count as writable
    when the nearest existing one is."""
    p = Path(path).absolute()
    if p.is_dir():
        return "it is a folder"
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable"
    return None


def with_path(err: OSError, path: str | os.PathLike) -> OSError:
    """``err`` naming ``path`` when it names no file (a full disk raises ``[Errno 28]`` without one)."""
    if err.filename is None and err.errno is not None:
        return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))
    return err

"""Filesystem helpers of no particular stage: the per-user cache folder, which process owns a temporary, and
whether a path can be written.

Owners: every temporary folder or file is recorded under the creating process (:func:`register_temp`, in
``cache_home()/owners/HOST_BOOT_PID_START``), so that the next start of any command removes what dead processes
left anywhere (:func:`clean_dead_owners`), not only in the folder it writes to. A normal exit leaves none.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
from pathlib import Path

log = logging.getLogger(__name__)


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/fastfashion`` (default ``~/.cache/fastfashion``): the root of every per-user cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastfashion"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owners_dir() -> Path:
    """``cache_home()/owners``: one file per process listing its temporaries."""
    return cache_home() / "owners"


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
        return None if not pid_alive(pid) else "0"  # no /proc (not Linux): alive or not is all we know
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _host() -> str:
    return socket.gethostname().replace("_", "-") or "host"  # "_" separates the fields of a record's name


def owner_record(pid: int | None = None) -> Path:
    """The file listing the temporaries of process ``pid`` (default: this one): named by host, boot, PID and
    start time, so that another machine sharing the cache folder, a reused PID or a PID of another container is
    never taken for the owner."""
    pid = os.getpid() if pid is None else pid
    return owners_dir() / f"{_host()}_{_boot_id()}_{pid}_{_start_time(pid) or 0}"


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
    if host != _host():
        return False
    return boot != _boot_id() or _start_time(int(pid)) != start


def _remove_recorded(own: Path, why: str, level: int = logging.INFO) -> int:
    """Remove the temporaries that the record ``own`` lists (only names we give temporaries), then the record."""
    removed = 0
    try:
        paths = own.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    for p in map(Path, paths):
        if p.exists() and (".tmp" in p.name or p.name.startswith("fastfashion-")):  # only temps we name
            log.log(level, "removing %s left by %s", p, why)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed += 1
    own.unlink(missing_ok=True)
    return removed


def clean_dead_owners() -> int:
    """Remove the temporary files and folders recorded by processes that no longer run on this machine; returns
    how many."""
    removed = 0
    try:
        records = list(owners_dir().iterdir())
    except OSError:
        return 0
    for own in records:
        if _owner_gone(own.name):
            removed += _remove_recorded(own, f"an interrupted run ({own.name})")
    return removed


def remove_own_temps() -> int:
    """Remove every temporary this process recorded, and its record (a process about to end without running its
    cleanup: :mod:`fastfashion.signals`); returns how many."""
    return _remove_recorded(owner_record(), "this process, ended by SIGTERM", logging.DEBUG)


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

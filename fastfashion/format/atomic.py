"""Crash-safe output files and folders, shared by every writer (synth, shard, train, predict, bench).

A writer builds into ``.NAME.tmp-PID-HEX`` beside the target and calls :func:`replace_dir` at the end: the target
either keeps its old content or gets the complete new one. An existing target is first renamed to
``.NAME.old-PID-HEX`` and deleted only after the new folder is in place. :func:`clean_stale` removes what a killed
process (SIGKILL) left behind, and puts an ``.old-`` folder back when the kill came between the two renames.
Every temporary is also recorded under its process (:func:`fastfashion.fsutil.register_temp`), so that the next
command removes it wherever it lies once that process is gone.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path

from ..fsutil import pid_alive, register_temp

log = logging.getLogger(__name__)


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
        if kind not in ("tmp", "old") or not pid.isdigit() or pid_alive(int(pid)):
            continue
        if kind == "old" and not out_dir.exists():
            log.warning("restoring %s from %s (an overwrite was interrupted)", out_dir, p)
            os.rename(p, out_dir)
        else:
            log.info("removing %s left by an interrupted run", p)
            shutil.rmtree(p, ignore_errors=True)


def make_temp_dir(out_dir: Path) -> Path:
    """A new empty ``.NAME.tmp-PID-HEX`` folder beside ``out_dir`` (its writer removed stale ones of dead processes
    first, :func:`clean_stale`)."""
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
        if pid.isdigit() and not pid_alive(int(pid)):
            log.info("removing %s left by an interrupted run", p)
            p.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def with_path(err: OSError, path: str | os.PathLike) -> OSError:
    """``err`` naming ``path`` when it names no file (a full disk raises ``[Errno 28]`` without one)."""
    if err.filename is None and err.errno is not None:
        return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))
    return err

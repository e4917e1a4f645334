"""SIGTERM ends a command within a second or two, whatever its main thread is doing.

Python runs a signal handler only between two bytecodes of the main thread, so a main thread inside a long C call (a
DALI pipeline building or running a huge batch, a blocking read) would not see SIGTERM until the call returns:
minutes, or never. :func:`install_watchdog` (the command line calls it) makes the C-level handler write the signal
number to a pipe (``signal.set_wakeup_fd``), which it does at once, and a daemon thread reads the pipe. When the
process still runs :data:`GRACE_S` seconds after SIGTERM and no Python handler has taken it (the main thread is
stuck), :data:`CLEANUP_S` seconds after one has without the command's last line (a cleanup that hangs), or
:data:`EXIT_AFTER_S` after that line (the interpreter waiting at exit for a download thread stalled in a socket
read), the watchdog ends the process itself: it stops the child processes (DataLoader workers), removes the
temporary files and folders this process recorded (:func:`fastfashion.fsutil.remove_own_temps`: its DALI files in
``/dev/shm``, half-written downloads), writes the command's one line (unless it was written) and exits with 143. A
training run stopping cleanly (it finishes its step and writes ``last.pt``: :mod:`fastfashion.train.preemption`)
asks for :data:`CLEAN_STOP_S` with :func:`clean_stop`.

The watchdog is a Python thread: it covers native calls that release the GIL (DALI's pipeline builds and runs do; so
do file and socket reads). A native call that holds the GIL stops every thread, the watchdog too.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from .errors import terminated
from .fsutil import remove_own_temps

log = logging.getLogger(__name__)

GRACE_S = 1.5      # SIGTERM not taken by a Python handler after this long: the main thread is stuck in a C call
CLEANUP_S = 10.0   # taken, but no last line after this long: its cleanup hangs (a pool may take seconds)
CLEAN_STOP_S = 30.0  # a training run finishing its step and writing last.pt (SLURM's default grace is 30 s)
EXIT_SIGTERM = 143

EXIT_AFTER_S = 1.0  # the last line written after SIGTERM, the process still runs after this long: threads hold the
#                    interpreter's exit (a download stalled in a socket read): end it

_STATE = {"line": "", "clean_stop": 0.0, "done": 0.0, "installed": False}


def clean_stop(seconds: float = CLEAN_STOP_S) -> None:
    """A Python handler took SIGTERM and stops cleanly within ``seconds`` (the trainer's checkpoint on SIGTERM)."""
    _STATE["clean_stop"] = max(_STATE["clean_stop"], seconds)


def finished() -> None:
    """The command wrote its last line: a watchdog that fires now exits without another one (and, after SIGTERM,
    within :data:`EXIT_AFTER_S`)."""
    _STATE["done"] = time.monotonic()


def install_watchdog(line: str) -> bool:
    """Watch for SIGTERM (see the module docstring); ``line`` is what the watchdog writes to stderr when it ends the
    process. Main thread only, once; False where it cannot be installed (another thread, a wakeup fd already in
    use, e.g. by an asyncio loop in the main thread), in which case SIGTERM is left to the Python handlers."""
    if _STATE["installed"] or threading.current_thread() is not threading.main_thread():
        return False
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(r), os.close(w)
        return False
    if old != -1:  # someone else's: put it back
        signal.set_wakeup_fd(old)
        os.close(r), os.close(w)
        return False
    _STATE.update(line=line, installed=True)
    threading.Thread(target=_watch, args=(r,), name="fastfashion-sigterm-watchdog", daemon=True).start()
    return True


def _watch(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data:
            return
        if signal.SIGTERM in data:
            break
    received = time.monotonic()
    while True:
        time.sleep(0.05)
        waited = time.monotonic() - received
        taken = terminated() or _STATE["clean_stop"] > 0
        limit = max(CLEANUP_S, _STATE["clean_stop"]) if taken else GRACE_S
        done = _STATE["done"]
        if waited >= limit or (taken and done and time.monotonic() - done >= EXIT_AFTER_S):
            _end(taken)


def _end(taken: bool) -> None:
    """Stop the children, remove this process's temporaries, one line, exit 143 (no Python cleanup: the main
    thread is stuck)."""
    import multiprocessing
    for child in multiprocessing.active_children():  # DataLoader workers and pools
        try:
            child.terminate()
        except Exception:  # noqa: BLE001 - already gone
            pass
    removed = remove_own_temps()
    if not _STATE["done"]:
        try:
            why = "its cleanup did not finish in time" if taken else "the main thread was inside a native call"
            sys.stderr.write(f"{_STATE['line']}; temporary files removed ({removed}; {why}: ended by the "
                             "watchdog)\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - stderr closed
            pass
    os._exit(EXIT_SIGTERM)

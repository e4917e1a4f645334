"""The library's error family, and errors a caller fixes by changing one parameter.

Every error fastfashion raises on purpose is a :class:`FastfashionError`, and also the built-in it has always been
(``ManifestError`` is a ValueError, ``RemoteError`` an OSError, ``LoaderError`` a RuntimeError), so ``except
ValueError`` keeps working. Anything else escaping the library is a bug, or the operating system's own OSError (a
full disk, a missing file): the command line prints one line for those two and a traceback for the rest.

Library errors say what is wrong in the library's terms; :func:`fixable` tags one with the parameter that would
avoid it (``overwrite``, ``skip_bad``, ``batch_size`` ...), so that the command line can name its flag instead of
the library naming flags it does not have.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class FastfashionError(Exception):
    """Base of every error the library raises on purpose: the message is one line naming the culprit, and the
    command line prints just that line (plus the advice for its :func:`fix_param`) and exits with ``exit_code``."""

    exit_code = 1  # the command line's exit status for this error


class ConfigError(FastfashionError, ValueError):
    """A parameter outside what it accepts (a config field, a size, a choice); the message names both."""


class TargetExistsError(FastfashionError, FileExistsError):
    """An output path exists and is not something the call may replace (or ``overwrite`` was not given)."""


EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE: the command line's exit status for an internal error (a bug)


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is the machine running out of memory: MemoryError, or torch's OutOfMemoryError (CUDA; told
    by name, so that this leaf module does not import torch)."""
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"


def user_facing(err: BaseException) -> bool:
    """Whether ``err`` is the caller's or the environment's problem, which the command line states in one line: a
    :class:`FastfashionError`, an OSError carrying the operating system's errno (a missing file, a full disk, a
    refused permission or connection), or running out of memory. Anything else escaping the library is a bug."""
    return isinstance(err, FastfashionError) or (isinstance(err, OSError) and err.errno is not None) \
        or out_of_memory(err)


def fixable(err: E, param: str) -> E:
    """``err`` with ``err.param = param`` (the library parameter that would avoid it); returns ``err``."""
    err.param = param  # type: ignore[attr-defined]
    return err


def fix_param(err: BaseException) -> str | None:
    """The parameter :func:`fixable` tagged ``err`` with, or None."""
    return getattr(err, "param", None)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``kill``), raised like Ctrl-C so that every ``finally`` and cleanup runs; the command
    line exits with 143 (128 + SIGTERM) after one line."""


_TERMINATED: list[int] = []  # the signal, once received (the command line checks it even if the raise was lost)


def _raise_terminated(signum, frame) -> None:
    if _TERMINATED:  # a second SIGTERM during the cleanup the first one started
        return
    _TERMINATED.append(signum)
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_terminated() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`Terminated`, so ``kill`` cleans up like Ctrl-C; the previous handler
    is put back afterwards (main thread only; elsewhere a no-op). For library code that writes files."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _TERMINATED.clear()  # a SIGTERM handled earlier in this process does not silence this block
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def terminate_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread (no-op elsewhere), once: a second SIGTERM
    during the cleanup the first one started is ignored. Python drops an exception raised inside a ``__del__``
    (a DataLoader iterator's shutdown, say), so :func:`terminated` tells whether one came anyway."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _raise_terminated)


def terminated() -> bool:
    """Whether SIGTERM arrived since :func:`terminate_on_sigterm` (even if its exception was swallowed)."""
    return bool(_TERMINATED)

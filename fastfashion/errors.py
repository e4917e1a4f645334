"""Errors a caller fixes by changing one parameter.

Library errors say what is wrong in the library's terms; :func:`fixable` tags one with the parameter that would
avoid it (``overwrite``, ``skip_bad``, ``batch_size`` ...), so that the command line can name its flag instead of
the library naming flags it does not have.
"""
from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


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


def terminate_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread (no-op elsewhere), once: a second SIGTERM
    during the cleanup the first one started is ignored. Python drops an exception raised inside a ``__del__``
    (a DataLoader iterator's shutdown, say), so :func:`terminated` tells whether one came anyway."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        if _TERMINATED:
            return
        _TERMINATED.append(signum)
        raise Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def terminated() -> bool:
    """Whether SIGTERM arrived since :func:`terminate_on_sigterm` (even if its exception was swallowed)."""
    return bool(_TERMINATED)

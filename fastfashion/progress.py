"""Progress bars for long library work (tqdm), with one switch for the whole library.

By default a bar is drawn only when stderr is a terminal (tqdm's ``disable=None``): a log file gets no
carriage-return frames, only the log lines. ``TQDM_DISABLE=1`` in the environment or :func:`set_enabled(False)`
(what ``fastfashion -q`` does) turns every bar off; :func:`set_enabled(True)` forces them on.
"""
from __future__ import annotations

import os

_enabled: bool | None = None


def set_enabled(enabled: bool | None) -> None:
    """True: always draw bars; False: never; None: only on a terminal (the default)."""
    global _enabled
    _enabled = enabled


def _disable(off: bool) -> bool | None:
    if off or _enabled is False or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        return True
    return False if _enabled else None  # None: tqdm turns the bar off when stderr is not a terminal


def progress(iterable=None, *, off: bool = False, **kwargs):
    """A tqdm bar (``kwargs`` as tqdm's) that follows the library switch; ``off`` silences this one bar (e.g. on
    every rank but rank 0)."""
    from tqdm.auto import tqdm
    return tqdm(iterable, disable=_disable(off), **kwargs)

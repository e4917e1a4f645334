"""Preemption: checkpoints during an epoch, and a clean stop on SIGTERM/SIGINT (spot instances, SLURM, Colab).

While training, SIGTERM or SIGINT only raises a flag; the trainer finishes the current step, writes ``last.pt``
with the loader's position, and raises :class:`Preempted`, which the command line turns into one line and exit
code 128 + the signal (143 for SIGTERM, 130 for Ctrl-C). Under torchrun every rank sees the flag at the same step
(:func:`agree`), so the ranks stop together and rank 0 writes.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

import torch

from ..errors import Terminated
from ..signals import clean_stop
from . import distributed


class Preempted(Terminated):
    """Training stopped on a signal after writing a checkpoint; ``signum`` is the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopFlag:
    """Set by SIGTERM/SIGINT while :meth:`installed`; ``signum`` is the first signal received (0: none)."""

    def __init__(self) -> None:
        self.signum = 0

    def _handler(self, signum, frame) -> None:
        self.signum = self.signum or signum
        if signum == signal.SIGTERM:
            clean_stop()  # the SIGTERM watchdog (fastfashion.signals) gives the step and last.pt their time

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Catch SIGTERM and SIGINT as a flag inside the block (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


class CheckpointPolicy:
    """When to write a checkpoint during an epoch: every ``every`` steps and/or every ``minutes`` of wall time
    (None/0: never by that rule; the end of every epoch always writes one)."""

    def __init__(self, *, minutes: float | None, every: int | None, clock=time.monotonic):
        self.minutes, self.every, self.clock = minutes, every, clock
        self.last = clock()

    def due(self, step: int) -> bool:
        by_steps = bool(self.every) and step % self.every == 0
        by_time = bool(self.minutes) and self.clock() - self.last >= 60 * self.minutes
        return by_steps or by_time

    def saved(self) -> None:
        self.last = self.clock()


def agree(flags: list[bool], info: distributed.DistInfo) -> list[bool]:
    """Each flag true on any rank becomes true on every rank (a max all-reduce; no-op on one rank)."""
    if not info.enabled:
        return flags
    import torch.distributed as dist
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]

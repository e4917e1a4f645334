"""Preemption: checkpoints during an epoch, and a clean stop on SIGTERM/SIGINT (spot instances, SLURM, Colab).

While training, SIGTERM or SIGINT only raises a flag; the trainer finishes the current step, writes ``last.pt``
with the loader's position, and raises :class:`Preempted`, which the command line turns into one line and exit
code 128 + the signal (143 for SIGTERM, 130 for Ctrl-C). Under torchrun every rank sees the flag at the same step
(:func:`poll`), so the ranks stop together and rank 0 writes. The ranks compare their flags (and their clocks, for a
time-based checkpoint) every :data:`POLL_EVERY` steps, not every step: a collective per step would cost a host sync
per step on NCCL. A stop then waits at most that many steps (seconds on a GPU; a preemption notice gives 30 s or
more); on one process there is no collective and the flag is read every step.
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

POLL_EVERY = 16  # steps between the ranks' agreement on a stop or a time-based checkpoint (one tiny all-reduce)


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
        return self.due_by_steps(step) or self.due_by_time()

    def due_by_steps(self, step: int) -> bool:
        """The step rule: the same answer on every rank (no agreement needed)."""
        return bool(self.every) and step % self.every == 0

    def due_by_time(self) -> bool:
        """The time rule: each rank's own clock (ranks agree on it in :func:`poll`)."""
        return bool(self.minutes) and self.clock() - self.last >= 60 * self.minutes

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


def poll(step: int, signalled: bool, policy: CheckpointPolicy, info: distributed.DistInfo,
         every: int = POLL_EVERY) -> tuple[bool, bool]:
    """``(stop, checkpoint due)`` after optimizer step ``step`` (counted from the run's start, the same on every
    rank), the same on every rank. One process: the flag and the policy as they are, no collective. Several: the
    step rule every step (deterministic), the signal flag and the time rule agreed (:func:`agree`) only on steps
    that are a multiple of ``every`` or write a checkpoint by the step rule anyway (which gathers from every rank:
    one more tiny collective there costs nothing)."""
    by_steps = policy.due_by_steps(step)
    if not info.enabled:
        return signalled, by_steps or policy.due_by_time()
    if step % every and not by_steps:
        return False, False
    stop, by_time = agree([signalled, policy.due_by_time()], info)
    return stop, by_steps or by_time

"""How long a bench run takes: the training part sized to a time budget, and one progress bar with an ETA.

The loader rounds are the bench's main product and always run as configured. The training part (ResNet-18 fed by
each loader and by an in-memory batch) costs ``rounds x feeders x (warmup + steps)`` model steps: on a GPU about a
minute, on 2 CPU cores at 224 px (4 s a step) about 45 minutes for the 30 steps the long form runs. By default
(``train_steps=None``) the bench measures one step of the model on the device first, and :func:`plan_train_steps`
picks the most steps (at most :data:`FULL_TRAIN_STEPS`) that fit what is left of ``budget_s``; below
:data:`MIN_TRAIN_STEPS` timed steps per feeder and round the figures would be noise, so the training part is left
out, with the reason and the cost of ``--full`` in the report.

:class:`RunClock` is the run's one bar: its unit is the second, its total the seconds spent plus the seconds still
expected, so tqdm's remaining time is the estimate of the whole run; each phase's end is also logged with that
estimate (a log file gets no bar).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from ..progress import progress

log = logging.getLogger(__name__)

FULL_TRAIN_STEPS = 30   # timed steps per feeder and round of the long form (`--full`), the bench's default before
MIN_TRAIN_STEPS = 10    # fewer timed steps per round and a round's few seconds of jitter swamp a loader's cost
DEFAULT_BUDGET_S = 180  # about 3 minutes for the whole default run


def train_cost_s(steps: int, *, step_s: float, feeders: int, rounds: int, warmup: int,
                 start_s: float = 0.0) -> float:
    """Seconds the training part takes: every feeder, every round, warm-up and timed steps, plus ``start_s`` per
    feeder and round (a loader's fresh iterator)."""
    return rounds * feeders * ((warmup + steps) * step_s + start_s)


def plan_train_steps(*, step_s: float, feeders: int, rounds: int, warmup: int, seconds_left: float,
                     start_s: float = 0.0) -> tuple[int, str | None]:
    """Timed steps per feeder and round that fit ``seconds_left``: at most :data:`FULL_TRAIN_STEPS`; ``(0, why)``
    when fewer than :data:`MIN_TRAIN_STEPS` fit."""
    per_step = rounds * feeders * step_s
    fixed = train_cost_s(0, step_s=step_s, feeders=feeders, rounds=rounds, warmup=warmup, start_s=start_s)
    steps = min(FULL_TRAIN_STEPS, math.floor((seconds_left - fixed) / per_step)) if per_step > 0 else FULL_TRAIN_STEPS
    if steps >= MIN_TRAIN_STEPS:
        return steps, None

    def minutes(n: int) -> str:
        cost = train_cost_s(n, step_s=step_s, feeders=feeders, rounds=rounds, warmup=warmup, start_s=start_s)
        return f"{cost / 60:.0f} min" if cost >= 90 else f"{cost:.0f} s"
    return 0, (f"one training step takes {step_s:.2f} s here: {MIN_TRAIN_STEPS} timed steps per feeder and round "
               f"({feeders} feeders x {rounds} rounds) would take about {minutes(MIN_TRAIN_STEPS)}, past the "
               f"budget ({max(0.0, seconds_left):.0f} s left of it); --full runs {FULL_TRAIN_STEPS} steps (about "
               f"{minutes(FULL_TRAIN_STEPS)}), --train-steps N any number")


def clock_text(seconds: float) -> str:
    """``75`` -> ``01:15``, ``3725`` -> ``1:02:05``."""
    m, sec = divmod(int(round(max(0.0, seconds))), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class RunClock:
    """The progress bar of a whole bench run, in seconds, with the run's ETA (see the module docstring).

    ``left`` is asked for the seconds still expected whenever the bar moves; :meth:`tick` moves it to now."""

    def __init__(self, desc: str = "bench", *, off: bool = False):
        self._t0 = time.perf_counter()
        self.left: Callable[[], float] = lambda: 0.0
        self._what = ""
        self._bar = progress(total=1, off=off, bar_format=desc + ": {percentage:3.0f}%|{bar}| {desc}")  # desc: the ETA

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def eta_text(self) -> str:
        """What the bar shows after it: time spent, time left (the estimate), the work now running."""
        return (f"{clock_text(self.elapsed())} elapsed, about {clock_text(self.left())} left"
                + (f": {self._what}" if self._what else ""))

    def tick(self, what: str = "") -> None:
        """Move the bar to now; ``what``: the piece of work now running."""
        spent, left = self.elapsed(), max(0.0, self.left())
        self._what = what or self._what
        self._bar.total = max(spent + left, 1e-9)
        self._bar.n = spent
        self._bar.set_description_str(self.eta_text(), refresh=True)

    def phase(self, done: str) -> None:
        """Log the end of a phase with the time spent and the estimate of what is left."""
        self.tick()
        log.info("bench: %s; %.0f s so far, about %.0f s left", done, self.elapsed(), max(0.0, self.left()))

    def close(self) -> None:
        self.left = lambda: 0.0
        self._what = "done"
        self.tick()
        self._bar.close()

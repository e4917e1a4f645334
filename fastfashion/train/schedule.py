"""What changes over a training run: the learning rate (:class:`LRSchedule`) and the image size (progressive
resizing, :func:`image_size_at`). Both are functions of the position in the run, so a resumed run follows the same
curve as an uninterrupted one.

Learning-rate schedules (``TrainConfig.schedule``):

- ``plateau``: the seed report's ReduceLROnPlateau on val average class accuracy (factor, patience), stepped per epoch.
- ``linear``: a linear ramp from ``lr / steps_warmup`` up to ``lr`` over the warm-up epochs, then a linear decay to 0
  at the last step (FFCV's "triangular" schedule), stepped per optimizer step.
- ``cosine``: the same warm-up, then a half cosine down to 0.

Progressive resizing (FFCV's ResNet recipes): the train split is read at ``resize_start * image_size`` until
``ramp[0] * epochs``, grows linearly to ``image_size`` at ``ramp[1] * epochs``, in steps of :data:`SIZE_STEP` pixels,
and stays there. Validation always runs at ``image_size``: the size the model is judged and used at.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from ..errors import ConfigError

SCHEDULES = ("plateau", "linear", "cosine")
SIZE_STEP = 16  # sizes are multiples of 16 (ResNet's stride 32 halves them evenly until the last stage)


def image_size_at(epoch: int, epochs: int, image_size: int | tuple[int, int], resize_start: float | None,
                  ramp: tuple[float, float]) -> int | tuple[int, int]:
    """The train image size of ``epoch`` (0-based) in a run of ``epochs``: from ``resize_start * image_size``
    (each side rounded to :data:`SIZE_STEP`) to ``image_size``; ``image_size`` throughout when ``resize_start`` is
    None. A ``(height, width)`` size keeps its form."""
    if resize_start is None:
        return image_size
    lo, hi = ramp[0] * epochs, ramp[1] * epochs
    frac = 1.0 if epoch >= hi else 0.0 if epoch <= lo else (epoch - lo) / (hi - lo)

    def side(full: int) -> int:
        start = max(SIZE_STEP, int(round(resize_start * full / SIZE_STEP)) * SIZE_STEP)
        if start >= full:
            return full
        size = int(round((start + frac * (full - start)) / SIZE_STEP)) * SIZE_STEP
        return max(start, min(full, size))

    return side(image_size) if isinstance(image_size, int) else (side(image_size[0]), side(image_size[1]))


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """The multiplier of the peak learning rate before optimizer step ``step`` (0-based) of ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return 1.0 - t if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))


class LRSchedule:
    """The trainer's learning-rate schedule: :meth:`after_step` after every optimizer step, :meth:`after_epoch`
    with the epoch's val average class accuracy; checkpointed through :meth:`state_dict`."""

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, *, total_steps: int, warmup_steps: int = 0,
                 factor: float = 0.1, patience: int = 5):
        import torch  # here, not at module level: the CLI reads SCHEDULES without loading torch
        if kind not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
        self.kind = kind
        if kind == "plateau":
            self._sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=factor,
                                                                     patience=patience)
        else:
            self._sched = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, kind))

    def after_step(self) -> None:
        if self.kind != "plateau":
            self._sched.step()

    def after_epoch(self, score: float) -> None:
        if self.kind == "plateau":
            self._sched.step(score)

    def state_dict(self) -> dict:
        return self._sched.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._sched.load_state_dict(state)

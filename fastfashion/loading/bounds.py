"""A loader's resource bounds: batch size, workers and threads checked against the split and the machine before
anything starts, so that no argument makes a loader grow without bound or start a process storm.

* **Batch size**: a split read without ``drop_last`` (val, test) never needs a batch larger than this rank's
  samples: a larger one is lowered to them, with a log line (the batches, and so every metric, are the same). What
  is left (at most this rank's samples) must fit in memory: :func:`batch_memory` estimates the bytes a backend
  holds in flight per sample (:data:`IN_FLIGHT` batches of the float output, its uint8 copy and a decoded source
  image), and a batch whose estimate passes :data:`MEMORY_FRACTION` of the memory this process may still take
  (:func:`fastfashion.hardware.available_memory`, the cgroup's limit included) is refused, naming the largest
  batch that fits.
* **Workers and threads**: DataLoader workers and DALI threads beyond the CPUs this process may use only compete
  for them: :func:`fastfashion.hardware.bound_to_cpus` lowers them to that number, with a warning (the loader
  calls it). (Download threads: ``RemoteConfig.prefetch``, at most ``MAX_PREFETCH``.)
"""
from __future__ import annotations

import logging

from ..errors import ConfigError, fixable
from ..hardware import available_memory
from .augment import image_hw

log = logging.getLogger(__name__)

MEMORY_FRACTION = 0.5  # of the available memory, for the batches in flight: the model, the optimizer and the
#                        rest of the process need the other half
DECODED_SOURCE = 1 << 20  # bytes of one decoded source image (RGB, 0.35 megapixel: 600x580; the real set's photos
#                          are 300x400, 0.36 MB)
IN_FLIGHT = {"dali-cpu": 3, "dali-gpu": 3, "torch": 2}  # batches held at once: DALI's prefetch queue of 2 and
#                                                         the batch being read (measured on dali-cpu: 1.1 batches
#                                                         on a one-batch split); torch: this batch and the next,
#                                                         plus one per worker prefetch slot (counted below)
TORCH_PREFETCH = 4  # the torch backend's prefetch_factor (batches per worker)


def bound_batch_to_split(batch_size: int, samples: int, *, drop_last: bool, where: str) -> int:
    """``batch_size``, lowered (logged) to this rank's ``samples`` when the split is read whole (no ``drop_last``):
    one batch of everything gives the same batches as a larger batch size."""
    if drop_last or batch_size <= max(1, samples):
        return batch_size
    log.info("%s: batch_size %d is more than the %d samples this rank reads: using %d", where, batch_size,
             samples, max(1, samples))  # info, not a warning: the batches are the same (a small val split's usual case)
    return max(1, samples)


def batch_memory(image_size, backend: str, workers: int = 0) -> int:
    """Estimated bytes the ``backend`` holds in flight per sample of a batch: the float32 output and its uint8
    copy at ``image_size``, plus a decoded source image, times the batches held at once."""
    h, w = image_hw(image_size)
    per_sample = 3 * h * w * (4 + 1) + DECODED_SOURCE
    in_flight = IN_FLIGHT.get(backend, 4) + (TORCH_PREFETCH * workers if backend == "torch" else 0)
    return per_sample * in_flight


def check_batch_memory(batch_size: int, image_size, backend: str, workers: int = 0, *,
                       available: int | None = None, where: str = "") -> None:
    """Refuse a batch whose estimated memory in flight (:func:`batch_memory`) passes :data:`MEMORY_FRACTION` of
    ``available`` bytes (None: :func:`~fastfashion.hardware.available_memory`; unknown: no check). Raises
    :class:`~fastfashion.errors.ConfigError` (tagged ``batch_size``) naming the estimate, the limit and the
    largest batch size that fits."""
    available = available_memory() if available is None else available
    if available is None:
        return
    per_sample = batch_memory(image_size, backend, workers)
    budget = int(MEMORY_FRACTION * available)
    if batch_size * per_sample <= budget:
        return
    h, w = image_hw(image_size)
    raise fixable(ConfigError(
        f"{where}{': ' if where else ''}batch_size {batch_size} at {h}x{w} needs about "
        f"{batch_size * per_sample / 1e9:.1f} GB in flight on {backend} ({per_sample / 1e6:.1f} MB per sample), "
        f"more than the {budget / 1e9:.1f} GB limit ({MEMORY_FRACTION:.0%} of the {available / 1e9:.1f} GB this "
        f"process may still take); use at most {max(1, budget // per_sample)}"), "batch_size")

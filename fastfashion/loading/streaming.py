"""A loader over a remote shard set: its local cache, and passes read window by window through a bounded cache.

:func:`open_remote` makes the :class:`~fastfashion.remote.cache.ShardCache` of a URL and decides how the split is
read:

* **whole** (the blocked full shuffle, the default when the split fits ``cache_limit``): every tar and ``.idx``
  of the split is downloaded and verified first (in parallel, once per machine), then the loader reads the cache
  folder exactly as a local shard folder: the same batches as the local set.
* **streamed** (``order="windowed"``, chosen automatically when the split does not fit ``cache_limit``): only the
  ``.idx`` files are fetched at start; :func:`stream_pass` cuts each pass into segments
  (:func:`~fastfashion.loading.order.segments`), and before a segment waits for its shards while the pool
  downloads the next window's (after the last segment: the next epoch's first), pins both against eviction and
  checks the new samples (JPEG start, labels). The DALI backend builds one pipeline per segment (~0.3 s on the
  CPU, most of it the old pipeline's shutdown; building the next one ahead in a thread was tried and gave no
  measurable gain on the 2-core team machine, where every core is busy anyway).
"""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

from ..format.reader import ShardReadError, SplitSamples, check_samples
from ..remote.cache import ShardCache
from ..remote.store import RemoteError
from ..schema import Schema
from .base import LoaderConfig, LoaderError
from .order import segments

log = logging.getLogger(__name__)

ORDERS = ("blocked", "windowed")


def open_remote(url: str, config: LoaderConfig) -> tuple[ShardCache, str]:
    """The cache of ``url`` with the split's files fetched as its order needs; returns ``(cache, order)``.
    Raises :class:`~fastfashion.remote.store.RemoteError` (unreachable, 403, 404, offline and not cached, a
    ``cache_limit`` below the working set, naming the minimum)."""
    cache = ShardCache(url, config.remote)
    try:
        cache.shards(config.split)
        order = config.order
        if order is None:
            order = "blocked"
            if config.remote.cache_limit is not None:
                try:
                    cache.check_limit(config.split, None)
                except RemoteError:
                    order = "windowed"
                    log.info("%s split %r does not fit cache_limit %d bytes: windowed order (window %d shards)",
                             url, config.split, config.remote.cache_limit, config.window)
        hold = 3 * config.window if order == "windowed" else None
        cache.check_limit(config.split, hold)  # before any download (the tars alone), then with the .idx files
        cache.fetch_index(config.split)
        cache.check_limit(config.split, hold)
        if order != "windowed":
            cache.fetch_split(config.split)
        return cache, order
    except BaseException:
        cache.close()
        raise


def stream_pass(backend, cache: ShardCache, split: str, samples: SplitSamples, schema: Schema,
                indices: np.ndarray, epoch: int, *, batch_size: int, window: int, then: np.ndarray | None = None
                ) -> Iterator[tuple]:
    """The backend's batches of ``indices``, one segment at a time, each segment's shards in the cache first.
    ``then``: the next epoch's indices, whose first window is downloaded during the last segment."""
    entries = cache.shards(split)
    checked: set[int] = set()
    cuts = segments(indices, samples.sizes, batch_size=batch_size, window=window)
    if cuts and then is not None and len(then):
        first = segments(then, samples.sizes, batch_size=batch_size, window=window)[0]
        cuts[-1] = (*cuts[-1][:3], sorted(set(first[2]) - set(cuts[-1][2])))
    for a, b, shards, nxt in cuts:
        cache.pin([entries[s] for s in sorted(set(shards) | set(nxt))])
        cache.ensure([entries[s] for s in shards])
        cache.prefetch([entries[s] for s in nxt])
        new = [i for i in indices[a:b] if int(i) not in checked]
        try:
            check_samples([samples.refs[int(i)] for i in new], schema)
        except ShardReadError as e:
            raise LoaderError(str(e)) from e
        checked.update(int(i) for i in new)
        yield from backend.epoch(indices[a:b], epoch)

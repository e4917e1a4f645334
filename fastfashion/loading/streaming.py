"""A loader over a remote shard set: the split fetched into the set's cache, or passes read window by window.

:func:`prepare_remote` decides how a split of a URL set (:class:`~fastfashion.shardset.ShardSet` with a cache) is
read:

* **whole** (the blocked full shuffle, the default when the split fits ``cache_limit``): every tar and ``.idx``
  of the split is downloaded and verified first (in parallel, once per machine), then the loader reads the cache
  folder exactly as a local shard folder: the same batches as the local set.
* **streamed** (``order="windowed"``, chosen automatically when the split does not fit ``cache_limit``): only the
  ``.idx`` files are fetched at start; :func:`stream_pass` cuts each pass into segments
  (:func:`~fastfashion.loading.order.segments`), and before a segment waits for its shards while the pool
  downloads the next window's (after the last segment: the next epoch's first), pins both against eviction and
  checks the new samples (JPEG start, labels). The DALI backend builds one pipeline per segment (~0.3 s on the
  CPU, most of it the old pipeline's shutdown), synchronously: on a 2-core machine every core is busy anyway.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from ..format.reader import ShardReadError, SplitSamples, check_samples
from ..remote.store import RemoteError
from ..schema import Schema
from ..shardset import ShardSet
from .base import LoaderConfig, LoaderError
from .order import segments

log = logging.getLogger(__name__)


def prepare_remote(shards: ShardSet, config: LoaderConfig) -> str:
    """Fetch what a loader of ``config.split`` needs from the cache of the URL set ``shards`` and decide its order:
    returns ``config.order``, or when None ``blocked`` if the split fits ``cache_limit`` (then every file is
    fetched now) else ``windowed`` (only the ``.idx`` files now). Raises
    :class:`~fastfashion.remote.store.RemoteError` (unreachable, 403, 404, offline and not cached, a
    ``cache_limit`` below the working set, naming the minimum)."""
    cache = shards.cache
    cache.shards(config.split)
    order = config.order
    if order is None:
        order = "blocked"
        if cache.config.cache_limit is not None:
            try:
                cache.check_limit(config.split, None)
            except RemoteError:
                order = "windowed"
                log.info("%s split %r does not fit cache_limit %d bytes: windowed order (window %d shards)",
                         shards, config.split, cache.config.cache_limit, config.window)
    hold = 3 * config.window if order == "windowed" else None
    cache.check_limit(config.split, hold)  # before any download (the tars alone), then with the .idx files
    cache.fetch_index(config.split)
    cache.check_limit(config.split, hold)
    if order != "windowed":
        cache.fetch_split(config.split)
    return order


def stream_pass(backend, shards: ShardSet, split: str, samples: SplitSamples, schema: Schema,
                indices: np.ndarray, epoch: int, *, batch_size: int, window: int, then: np.ndarray | None = None,
                owner: object = None) -> Iterator[tuple]:
    """The backend's batches of ``indices``, one segment at a time, each segment's shards in the cache first and
    its samples checked (:func:`~fastfashion.format.reader.check_samples`). ``then``: the next epoch's indices,
    whose first window is downloaded during the last segment; ``owner``: whose pins these are (the loader)."""
    cache = shards.cache
    entries = cache.shards(split)
    cuts = segments(indices, samples.sizes, batch_size=batch_size, window=window)
    if cuts and then is not None and len(then):
        first = segments(then, samples.sizes, batch_size=batch_size, window=window)[0]
        cuts[-1] = (*cuts[-1][:3], sorted(set(first[2]) - set(cuts[-1][2])))
    for a, b, parts, nxt in cuts:
        cache.pin([entries[s] for s in sorted(set(parts) | set(nxt))], owner)
        cache.ensure([entries[s] for s in parts])
        cache.prefetch([entries[s] for s in nxt])
        try:
            check_samples(samples, indices[a:b], schema)
        except ShardReadError as e:
            raise LoaderError(str(e)) from e
        yield from backend.epoch(indices[a:b], epoch)

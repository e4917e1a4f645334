"""Sample order: which samples a rank reads in an epoch, and in what order — pure functions, no I/O.

Samples of a split are numbered globally ``0..N-1`` in manifest order (shard 0's samples, then shard 1's ...).
Everything here is a function of ``(sizes, seed, epoch, rank, world_size, batch_size, drop_last, block)`` only,
so every backend, every rank and every test computes the same order without talking to each other.

Shuffle (train): a *blocked* full permutation. Each shard's samples are permuted, cut into blocks of ``block``
consecutive samples, and all blocks of all shards are permuted together. ``block=1`` is a uniform permutation;
larger blocks keep runs of samples from one shard together, which bounds the number of (tar, index file)
entries the DALI reader needs per epoch to about ``N / block`` (see :mod:`fastfashion.loading.backends.dali`).
Because the per-shard permutation is redrawn every epoch, block membership changes every epoch too.

Ranks, training (``drop_last=True``): the epoch's order is cut into batches dealt out to the ranks in turn (batch
``g`` to rank ``g % world_size``), so that every rank gets the same number of whole batches and, after each rank
took ``c`` batches, the samples delivered are exactly a prefix of the order. That prefix is what a checkpoint
records (``start``): a run resumes from it on the same or another number of ranks with no sample delivered twice
or skipped. The remainder dropped (fewer than ``world_size * batch_size`` samples) is the tail of this epoch's
permutation, so a different set of samples each epoch.

Ranks, evaluation (``drop_last=False``): shares are contiguous ``numpy.array_split`` of the order, all ``N`` samples
each exactly once, share sizes differing by at most one sample (so ranks may yield a different number of batches;
the last batch may be smaller): no sample is padded or duplicated.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError

DEFAULT_BLOCK = 8  # samples per shuffle block: ~N/8 reader entries per epoch; a batch of 64 mixes >= 8 blocks


def num_batches(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch for ``num_samples`` samples."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def shard_starts(sizes: Sequence[int]) -> np.ndarray:
    """Global index of each shard's first sample, plus the total at the end (length ``len(sizes) + 1``)."""
    return np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))]).astype(np.int64)


def permutation(sizes: Sequence[int], *, seed: int, epoch: int, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """The blocked permutation of all global sample indices for ``(seed, epoch)`` (see module docstring)."""
    if block < 1:
        raise ConfigError(f"block must be >= 1, got {block}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5EED])
    starts = shard_starts(sizes)
    blocks = []
    for s, n in enumerate(sizes):
        local = rng.permutation(int(n)) + starts[s]
        blocks.extend(local[i:i + block] for i in range(0, int(n), block))
    if not blocks:
        return np.zeros(0, dtype=np.int64)
    order = rng.permutation(len(blocks))
    return np.concatenate([blocks[i] for i in order]).astype(np.int64)


def rank_share(order: np.ndarray, *, rank: int, world_size: int, batch_size: int, drop_last: bool,
               start: int = 0) -> np.ndarray:
    """This rank's share of an epoch's ``order`` from position ``start`` on (see the module docstring).

    ``drop_last``: whole batches dealt out in turn (global batch ``g`` of the remaining order goes to rank
    ``g % world_size``), the tail that does not fill a batch on every rank dropped; after each rank took ``c``
    batches, exactly the first ``start + c * world_size * batch_size`` samples of ``order`` were delivered, so a run
    can resume from that prefix on any number of ranks. Otherwise ``numpy.array_split`` (every sample once;
    ``start`` must be 0).
    """
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} out of range for world_size {world_size}")
    if not 0 <= start <= len(order):
        raise ConfigError(f"start {start} outside the epoch's {len(order)} samples")
    if drop_last:
        rest = order[start:]
        per_round = world_size * batch_size
        batches = rest[:len(rest) // per_round * per_round].reshape(-1, batch_size)
        return batches[rank::world_size].reshape(-1)
    if start:
        raise ConfigError("resuming mid-epoch (start > 0) needs drop_last (evaluation passes are not resumed)")
    return np.array_split(order, world_size)[rank]


def epoch_order(sizes: Sequence[int], *, seed: int, epoch: int, shuffle: bool, block: int = DEFAULT_BLOCK
                ) -> np.ndarray:
    """The whole epoch's order of global sample indices, before it is shared among ranks."""
    total = int(np.sum(np.asarray(sizes, dtype=np.int64))) if len(sizes) else 0
    return permutation(sizes, seed=seed, epoch=epoch, block=block) if shuffle else np.arange(total, dtype=np.int64)


def epoch_indices(sizes: Sequence[int], *, seed: int, epoch: int, shuffle: bool, rank: int = 0,
                  world_size: int = 1, batch_size: int, drop_last: bool, block: int = DEFAULT_BLOCK,
                  start: int = 0, window: int | None = None) -> np.ndarray:
    """Global sample indices this rank delivers in ``epoch`` from the epoch's position ``start`` on (the samples
    all ranks delivered before an interruption), in delivery order (int64). ``window`` (with ``shuffle``): the
    windowed order of :func:`windowed_indices` instead of the blocked full shuffle."""
    if shuffle and window is not None:
        return windowed_indices(sizes, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                                batch_size=batch_size, drop_last=drop_last, window=window, start=start)
    order = epoch_order(sizes, seed=seed, epoch=epoch, shuffle=shuffle, block=block)
    return rank_share(order, rank=rank, world_size=world_size, batch_size=batch_size, drop_last=drop_last,
                      start=start)


DEFAULT_WINDOW = 4  # shards per window of the windowed order: samples mix across 4 shards; 8 shards held at most


def window_plan(sizes: Sequence[int], *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                window: int = DEFAULT_WINDOW) -> list[tuple[list[int], np.ndarray]]:
    """The windowed order (``order="windowed"``, for sets larger than a cache): ``[(shards, samples)]`` of this
    rank's windows in reading order, before any batch cut.

    The shards are permuted per ``(seed, epoch)``; rank ``r`` takes every ``world_size``-th of them from ``r`` on
    (about ``1/world_size`` of the shards, whole), cuts its shards into windows of ``window`` consecutive ones, and
    shuffles the samples within each window (seeded by the epoch and the window's shards). So a machine reads only
    its shards in an epoch and needs at most the current and the next window on disk; the price is a batch mixing
    samples of ``window`` shards instead of the whole split (measured in the README, "Remote shards")."""
    if window < 1:
        raise ConfigError(f"window must be >= 1, got {window}")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} out of range for world_size {world_size}")
    starts = shard_starts(sizes)
    mine = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x3A1D]).permutation(len(sizes))[
        rank::world_size]
    plan = []
    for w in range(0, len(mine), window):
        shards = [int(s) for s in mine[w:w + window]]
        samples = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in shards]).astype(np.int64)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x3A1D, *shards])
        plan.append((shards, samples[rng.permutation(len(samples))]))
    return plan


def windowed_indices(sizes: Sequence[int], *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                     batch_size: int, drop_last: bool, window: int = DEFAULT_WINDOW, start: int = 0) -> np.ndarray:
    """This rank's samples of ``epoch`` in the windowed order (:func:`window_plan`, concatenated). ``drop_last``:
    every rank keeps the same number of whole batches (the smallest share's; a rank's share is whole shards, so
    shares differ), the rest of its last window dropped. ``start``: samples all ranks delivered before an
    interruption (``world_size`` equal batches each); this rank skips its ``start / world_size`` first ones, so a
    resume needs the same number of ranks."""
    def share(r: int) -> np.ndarray:
        plan = window_plan(sizes, seed=seed, epoch=epoch, rank=r, world_size=world_size, window=window)
        return np.concatenate([s for _, s in plan]) if plan else np.zeros(0, dtype=np.int64)

    mine = share(rank)
    if drop_last:
        shortest = min(len(share(r)) if r != rank else len(mine) for r in range(world_size))
        mine = mine[:shortest // batch_size * batch_size]
    if start:
        if not drop_last or start % (world_size * batch_size):
            raise ConfigError(f"start {start} is not a whole number of rounds of {world_size} x {batch_size} "
                             "(the windowed order resumes only training passes on the same number of ranks)")
        mine = mine[start // world_size:]
    return mine.astype(np.int64)


def segments(indices: np.ndarray, sizes: Sequence[int], *, batch_size: int, window: int
             ) -> list[tuple[int, int, list[int], list[int]]]:
    """Cut a pass into segments read one after another from a bounded cache: ``[(a, b, shards, next_shards)]``.

    Shards are grouped into windows of ``window`` in the order they first appear (for :func:`window_plan`'s order
    exactly its windows; for a sequential order ``window`` consecutive shards). A batch belongs to the window of
    its last sample, so segment ``k`` = positions ``a:b`` of the batches ending in window ``k`` (whole batches but
    the last), ``shards`` = the shards those samples need (window ``k``, plus the previous window's shards of a
    batch that began there), ``next_shards`` = window ``k + 1`` (what to download meanwhile)."""
    n = len(indices)
    if n == 0:
        return []
    shard = locate(np.asarray(indices, dtype=np.int64), sizes)[0]
    _, first = np.unique(shard, return_index=True)
    appear = shard[np.sort(first)]
    win_of = {int(s): k // window for k, s in enumerate(appear)}
    windows = [[int(s) for s in appear[k:k + window]] for k in range(0, len(appear), window)]
    ends = np.minimum(np.arange(batch_size, n + batch_size, batch_size), n)  # end position of each batch
    batch_win = np.array([win_of[int(shard[e - 1])] for e in ends])
    out, a = [], 0
    for j in range(len(ends)):
        if j + 1 < len(ends) and batch_win[j + 1] == batch_win[j]:
            continue
        b, w = int(ends[j]), int(batch_win[j])
        out.append((a, b, sorted({int(x) for x in shard[a:b]}), windows[w + 1] if w + 1 < len(windows) else []))
        a = b
    return out


def locate(indices: np.ndarray, sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(shard, local index within the shard)`` for each global index."""
    starts = shard_starts(sizes)
    shard = np.searchsorted(starts, indices, side="right") - 1
    return shard.astype(np.int64), (indices - starts[shard]).astype(np.int64)


def runs(indices: np.ndarray, sizes: Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """Split an order into maximal runs of consecutive samples from one shard: ``[(shard, local indices)]``.

    Concatenating the runs gives back ``indices``; this is what the DALI reader is fed (one entry per run).
    """
    if len(indices) == 0:
        return []
    shard, local = locate(np.asarray(indices, dtype=np.int64), sizes)
    cuts = np.flatnonzero(np.diff(shard)) + 1
    bounds = np.concatenate([[0], cuts, [len(shard)]])
    return [(int(shard[a]), local[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def pad_to_batch(indices: np.ndarray, batch_size: int) -> np.ndarray:
    """Pad ``indices`` to a multiple of ``batch_size`` by repeating its first samples (the caller trims them).

    Fixed-size DALI batches need this for a partial last batch; the padded outputs are never delivered.
    """
    extra = (-len(indices)) % batch_size
    if extra == 0 or len(indices) == 0:
        return indices
    return np.concatenate([indices, np.resize(indices, extra)])

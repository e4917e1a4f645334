"""Pure sample-order functions: coverage, disjointness, determinism, reshuffling (no DALI, no I/O)."""
import numpy as np
import pytest

from fastfashion.loading import order

SIZES = [10, 7, 13, 1]  # 31 samples in 4 uneven shards
N = sum(SIZES)


@pytest.mark.parametrize("block", [1, 3, 8, 100])
def test_permutation_is_a_permutation(block):
    p = order.permutation(SIZES, seed=1, epoch=0, block=block)
    assert p.dtype == np.int64
    assert sorted(p.tolist()) == list(range(N))


def test_permutation_pure_and_reshuffled():
    a = order.permutation(SIZES, seed=3, epoch=5)
    assert np.array_equal(a, order.permutation(SIZES, seed=3, epoch=5))
    assert not np.array_equal(a, order.permutation(SIZES, seed=3, epoch=6))
    assert not np.array_equal(a, order.permutation(SIZES, seed=4, epoch=5))


def test_blocks_come_from_one_shard():
    p = order.permutation(SIZES, seed=0, epoch=2, block=4)
    shard, _ = order.locate(p, SIZES)
    # every run of one shard's samples is a multiple of whole blocks except a shard's last partial block
    assert len(order.runs(p, SIZES)) <= sum(-(-n // 4) for n in SIZES)
    assert sorted(np.unique(shard).tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_no_drop_last_covers_exactly_once(world_size, shuffle):
    shares = [order.epoch_indices(SIZES, seed=0, epoch=1, shuffle=shuffle, rank=r, world_size=world_size,
                                  batch_size=4, drop_last=False) for r in range(world_size)]
    allidx = np.concatenate(shares)
    assert sorted(allidx.tolist()) == list(range(N))  # all, disjoint, no padding duplicates
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1
    if not shuffle:
        assert allidx.tolist() == list(range(N))  # eval order is manifest order


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_drop_last_equal_disjoint_and_remainder_moves(world_size):
    bs = 4
    dropped = []
    for epoch in range(4):
        shares = [order.epoch_indices(SIZES, seed=0, epoch=epoch, shuffle=True, rank=r, world_size=world_size,
                                      batch_size=bs, drop_last=True) for r in range(world_size)]
        n = (N // world_size) // bs * bs
        assert all(len(s) == n for s in shares)
        allidx = np.concatenate(shares)
        assert len(set(allidx.tolist())) == len(allidx)  # disjoint
        dropped.append(frozenset(range(N)) - set(allidx.tolist()))
    assert len(set(dropped)) > 1  # the dropped remainder differs between epochs


def test_num_batches():
    assert order.num_batches(31, 4, drop_last=True) == 7
    assert order.num_batches(31, 4, drop_last=False) == 8
    assert order.num_batches(0, 4, drop_last=False) == 0
    with pytest.raises(ValueError):
        order.num_batches(3, 0, drop_last=False)


def test_runs_roundtrip_and_pad():
    p = order.permutation(SIZES, seed=0, epoch=0, block=2)
    rs = order.runs(p, SIZES)
    starts = order.shard_starts(SIZES)
    assert np.array_equal(np.concatenate([loc + starts[s] for s, loc in rs]), p)
    assert all(rs[i][0] != rs[i + 1][0] for i in range(len(rs) - 1))
    padded = order.pad_to_batch(p, 8)
    assert len(padded) == 32 and np.array_equal(padded[:N], p)
    assert len(order.pad_to_batch(p[:16], 8)) == 16


def test_rank_out_of_range():
    with pytest.raises(ValueError):
        order.rank_share(np.arange(4), rank=2, world_size=2, batch_size=1, drop_last=False)

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
    rs = order.runs(p, SIZES)
    assert len(rs) <= sum(-(-n // 4) for n in SIZES)  # at most one run per block (adjacent blocks may merge)
    for s, n in enumerate(SIZES):
        lengths = [len(loc) for r, loc in rs if r == s]
        assert sum(lengths) == n
        # whole blocks of 4, plus the shard's one partial block (n % 4 samples) in exactly one run
        assert sorted(m % 4 for m in lengths if m % 4) == ([n % 4] if n % 4 else [])
    assert sorted(np.unique(shard).tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_no_drop_last_covers_exactly_once(world_size, shuffle):
    shares = [order.epoch_indices(SIZES, seed=0, epoch=1, shuffle=shuffle, rank=r, world_size=world_size,
                                  batch_size=4, drop_last=False) for r in range(world_size)]
    allidx = np.concatenate(shares)
    assert sorted(allidx.tolist()) == list(range(N))  # all, disjoint, no padding duplicates
    # numpy.array_split: the first N % world_size ranks get one sample more
    assert [len(s) for s in shares] == [N // world_size + (r < N % world_size) for r in range(world_size)]
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
        assert [len(s) for s in shares] == [n] * world_size
        allidx = np.concatenate(shares)
        assert len(set(allidx.tolist())) == len(allidx)  # disjoint
        # whole batches of the epoch's permutation dealt out in turn; the dropped remainder is its tail
        perm = order.permutation(SIZES, seed=0, epoch=epoch)
        dealt = np.stack([s.reshape(-1, bs) for s in shares], axis=1).reshape(-1)  # batch 0 of each rank, batch 1 ...
        assert np.array_equal(dealt, perm[:world_size * n])
        dropped.append(frozenset(perm[world_size * n:].tolist()))
        assert len(dropped[-1]) == N - world_size * n
    assert len(set(dropped)) > 1  # the dropped remainder differs between epochs


def test_num_batches():
    assert order.num_batches(31, 4, drop_last=True) == 7
    assert order.num_batches(31, 4, drop_last=False) == 8
    assert order.num_batches(0, 4, drop_last=False) == 0
    with pytest.raises(ValueError, match="^batch_size must be >= 1, got 0$"):
        order.num_batches(3, 0, drop_last=False)


def test_runs_roundtrip_and_pad():
    p = order.permutation(SIZES, seed=0, epoch=0, block=2)
    rs = order.runs(p, SIZES)
    starts = order.shard_starts(SIZES)
    assert np.array_equal(np.concatenate([loc + starts[s] for s, loc in rs]), p)
    assert all(rs[i][0] != rs[i + 1][0] for i in range(len(rs) - 1))
    padded = order.pad_to_batch(p, 8)
    assert len(padded) == 32 and np.array_equal(padded[:N], p)
    assert padded[N:].tolist() == p[:1].tolist()  # padded by repeating the first sample(s)
    assert np.array_equal(order.pad_to_batch(p[:16], 8), p[:16])  # already whole batches: unchanged


def test_rank_out_of_range():
    with pytest.raises(ValueError, match="^rank 2 out of range for world_size 2$"):
        order.rank_share(np.arange(4), rank=2, world_size=2, batch_size=1, drop_last=False)


@pytest.mark.parametrize("old,new", [(2, 1), (2, 3), (3, 2), (1, 1)])
def test_resume_on_another_number_of_ranks_delivers_each_sample_once(old, new):
    """Interrupted after c batches per rank on ``old`` ranks, resumed from the delivered prefix on ``new`` ranks:
    the epoch's samples are delivered once each, apart from the drop_last tail (< new * batch_size)."""
    bs, c = 3, 2
    kw = dict(seed=5, epoch=1, shuffle=True, batch_size=bs, drop_last=True)
    before = [order.epoch_indices(SIZES, rank=r, world_size=old, **kw)[:c * bs] for r in range(old)]
    start = c * old * bs
    perm = order.permutation(SIZES, seed=5, epoch=1)
    assert sorted(np.concatenate(before).tolist()) == sorted(perm[:start].tolist())  # a prefix was delivered
    after = [order.epoch_indices(SIZES, rank=r, world_size=new, start=start, **kw) for r in range(new)]
    delivered = np.concatenate(before + after).tolist()
    assert len(delivered) == len(set(delivered))  # none twice
    dropped = set(range(N)) - set(delivered)
    assert dropped == set(perm[len(delivered):].tolist()) and len(dropped) < new * bs  # only the tail


def test_start_is_checked():
    with pytest.raises(ValueError, match="^start 99 outside the epoch's 4 samples$"):
        order.rank_share(np.arange(4), rank=0, world_size=1, batch_size=1, drop_last=True, start=99)
    with pytest.raises(ValueError, match=r"^resuming mid-epoch \(start > 0\) needs drop_last"):
        order.rank_share(np.arange(4), rank=0, world_size=1, batch_size=1, drop_last=False, start=1)

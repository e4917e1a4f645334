"""Epochs that survive the loops users write (issue 26): early breaks, ``zip(range(len(L)), L)``, repeated ``iter()``,
``set_epoch`` in any place, resume in the middle.

The rules (FashionLoader's docstrings, docs/loader.md): ``set_epoch(e)`` starts epoch e at sample 0 unless
``load_state_dict`` just set a position in e; a pass is complete once it delivered its last batch, exhausted or not;
a new ``iter()`` after an abandoned pass starts the next epoch from sample 0; ``state_dict()`` is the exact position
of the last pass. ``Model`` states them in a few lines; random programs of those operations on a real loader (torch
backend without workers, and dali-cpu) must deliver exactly the keys the model predicts, batch by batch.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import needs_dali

from fastfashion.errors import ConfigError
from fastfashion.loading.base import LoaderError
from fastfashion.loading.loader import make_loader

BATCH = 6  # 40 train samples: 6 batches per epoch, 4 samples dropped (a different 4 every epoch)


@pytest.fixture(scope="module")
def shards(tiny_dataset, tmp_path_factory):
    from fastfashion.data.shard import ShardConfig, write_shards
    out = tmp_path_factory.mktemp("epochs") / "tiny"
    write_shards(tiny_dataset, out, ShardConfig(samples_per_shard=16, workers=1, seed=0))
    return out


def loader_for(shards, backend="torch", split="train", **kw):
    return make_loader(shards, split, batch_size=BATCH, backend=backend, device="cpu", image_size=16,
                       with_keys=True, workers=0, seed=3, **kw)


def epoch_sizes(loader, epochs=3) -> list[int]:
    """Samples per epoch when each epoch takes exactly len(loader) batches without exhausting the iterator."""
    sizes = []
    for _ in range(epochs):
        sizes.append(sum(len(b.keys) for _, b in zip(range(len(loader)), loader)))
    return sizes


# --- the cases of the issue ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", pytest.param("dali", marks=needs_dali)])
def test_zip_range_len_delivers_every_epoch_in_full_and_reshuffled(shards, backend):
    loader = loader_for(shards, backend)
    got = []
    for _ in range(3):
        got.append([k for _, b in zip(range(len(loader)), loader) for k in b.keys])
    assert [len(k) for k in got] == [36, 36, 36]  # was [36, 0, 36]
    assert got == [loader.keys(e) for e in range(3)] and got[0] != got[1] != got[2]
    assert loader.state_dict()["epoch"] == 3 and loader.state_dict()["consumed"] == 0
    if backend == "dali":  # the loader ran the backend to its end: one pipeline served the 3 epochs (CPU horizon 4)
        assert loader.active_backend.epochs_planned == [0, 1, 2, 3]


def test_set_epoch_after_a_break_starts_at_sample_zero(shards):
    loader = loader_for(shards)
    for _ in loader:  # the loop users write: look at one batch, break
        break
    loader.set_epoch(1)
    assert [k for b in loader for k in b.keys] == loader.keys(1)  # was the last 30 of them
    loader.set_epoch(1)  # the same epoch again: from its start too
    it = iter(loader)
    next(it), next(it)
    loader.set_epoch(1)
    assert [k for b in loader for k in b.keys] == loader.keys(1)


def test_set_epoch_ends_a_started_pass_but_not_an_iterator_not_read_yet(shards):
    loader = loader_for(shards)
    it = iter(loader)
    loader.set_epoch(2)  # a framework's epoch-start hook after it made its iterator: applies to that iterator
    assert [k for b in it for k in b.keys] == loader.keys(2)
    it = iter(loader)
    next(it)
    loader.set_epoch(5)
    with pytest.raises(LoaderError, match="superseded"):
        next(it)
    assert [k for b in loader for k in b.keys] == loader.keys(5)


def test_load_state_dict_position_survives_set_epoch_of_its_epoch_only(shards):
    first = loader_for(shards)
    first.set_epoch(4)
    it = iter(first)
    head = [k for _ in range(2) for k in next(it).keys]
    state = first.state_dict()
    second = loader_for(shards)
    second.load_state_dict(state)
    second.set_epoch(4)  # the trainer's loop: load_state_dict, then set_epoch(the checkpoint's epoch)
    assert head + [k for b in second for k in b.keys] == first.keys(4)
    third = loader_for(shards)
    third.load_state_dict(state)
    third.set_epoch(5)  # another epoch: the position does not apply
    assert [k for b in third for k in b.keys] == first.keys(5)


def test_val_loader_zip_and_breaks_deliver_every_sample(shards):
    loader = loader_for(shards, split="val")  # 16 samples, no shuffle, no drop: batches of 6, 6, 4
    everything = loader.keys(0)
    assert epoch_sizes(loader) == [16, 16, 16]
    next(iter(loader))
    assert [k for b in loader for k in b.keys] == everything


# --- random programs against the model ----------------------------------------------------------------------------
@dataclasses.dataclass
class Model:
    """The epoch rules, for one rank with drop_last (train): what the next batches are and what state_dict says."""
    batches: int             # len(loader)
    epoch: int = 0
    start: int = 0           # samples of the epoch before the current or next pass
    delivered: int = 0       # batches of the current pass
    live: bool = False       # a pass started and has not delivered its last batch
    resumed: bool = False    # start came from load_state_dict

    def begin(self) -> None:  # the first next() of a new iterator
        if self.live and self.delivered:
            self.epoch, self.start = self.epoch + 1, 0
        self.delivered, self.live, self.resumed = 0, True, False

    def left(self) -> int:
        return self.batches - self.start // BATCH - self.delivered

    def deliver(self) -> tuple[int, int]:
        """(epoch, batch number in the epoch) of the next batch."""
        out = (self.epoch, self.start // BATCH + self.delivered)
        self.delivered += 1
        if self.left() == 0:
            self.epoch, self.start, self.delivered, self.live = self.epoch + 1, 0, 0, False
        return out

    def set_epoch(self, e: int) -> None:
        if not (self.resumed and e == self.epoch):
            self.start, self.resumed = 0, False
        self.epoch, self.delivered, self.live = e, 0, False

    def state(self) -> tuple[int, int]:
        return self.epoch, self.start + self.delivered * BATCH

    def load(self, state: tuple[int, int]) -> None:
        (self.epoch, self.start), self.delivered, self.live, self.resumed = state, 0, False, True


def run_program(shards, backend: str, rng: np.random.Generator, steps: int) -> list[str]:
    loader = loader_for(shards, backend)
    model, ops = Model(len(loader)), []
    keys = {e: loader.keys(e) for e in range(12)}

    def expect(batch) -> None:
        e, j = model.deliver()
        assert batch.keys == keys[e][j * BATCH:(j + 1) * BATCH], ops

    for _ in range(steps):
        op = rng.choice(["take", "take", "zip", "exhaust", "set_epoch", "resume", "iter_unread"])
        ops.append(str(op))
        if op == "take":  # a break after k batches (k may be all of them: the pass is complete, not exhausted)
            k = int(rng.integers(1, model.batches + 1))
            ops[-1] += f" {k}"
            it = iter(loader)
            for n in range(k):
                if n == 0:
                    model.begin()
                if model.live is False and n > 0:  # the pass ended with its last batch
                    assert next(it, None) is None, ops
                    break
                expect(next(it))
        elif op in ("zip", "exhaust"):
            model.begin()
            passed = list(zip(range(len(loader)), loader)) if op == "zip" else list(enumerate(loader))
            if not passed:  # zip asked once and got nothing: the generator did not deliver
                assert model.left() == 0, ops
            for _, b in passed:
                expect(b)
        elif op == "set_epoch":
            e = int(rng.integers(0, 4))
            ops[-1] += f" {e}"
            loader.set_epoch(e)
            model.set_epoch(e)
        elif op == "resume":  # the state through a new loader (a restarted process)
            state = loader.state_dict()
            assert (state["epoch"], state["consumed"]) == model.state(), ops
            loader.close()
            loader = loader_for(shards, backend)
            loader.load_state_dict(state)
            model.load(model.state())
        elif op == "iter_unread":  # Lightning's iterability check: iter() and never next()
            iter(loader)
        assert (loader.state_dict()["epoch"], loader.state_dict()["consumed"]) == model.state(), ops
    loader.close()
    return ops


@pytest.mark.parametrize("seed", range(12))
def test_random_loops_follow_the_epoch_rules_torch(shards, seed):
    run_program(shards, "torch", np.random.default_rng(seed), steps=10)


@needs_dali
@pytest.mark.parametrize("seed", range(2))
def test_random_loops_follow_the_epoch_rules_dali_cpu(shards, seed):
    run_program(shards, "dali", np.random.default_rng(100 + seed), steps=10)


@pytest.mark.parametrize("breaks", range(1, 6))
def test_resume_from_every_break_point_gives_the_rest_of_the_epoch(shards, breaks):
    first = loader_for(shards)
    it = iter(first)
    head = [k for _ in range(breaks) for k in next(it).keys]
    second = loader_for(shards)
    second.load_state_dict(first.state_dict())
    assert head + [k for b in second for k in b.keys] == first.keys(0)
    assert [k for b in first for k in b.keys] == first.keys(1)  # the first loader itself moves on


# --- ranks from the environment ---------------------------------------------------------------------------------
def test_ranks_from_torchrun_environment_without_a_process_group(shards, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    shares = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        loader = loader_for(shards)
        assert (loader.rank, loader.world_size) == (rank, 2)
        shares.append([k for b in loader for k in b.keys])
    assert len(shares[0]) == len(shares[1]) == 18 and not set(shares[0]) & set(shares[1])
    monkeypatch.delenv("RANK")
    with pytest.raises(ConfigError, match="WORLD_SIZE=2 is set but RANK is not"):
        loader_for(shards)
    assert loader_for(shards, rank=1, world_size=3).world_size == 3  # arguments win
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="RANK='one' is not an integer"):
        loader_for(shards)

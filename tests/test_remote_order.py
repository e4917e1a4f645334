"""The windowed order (pure functions of fastfashion.loading.order) and, at scale, what it bounds: 4 ranks as
processes reading a 200-shard set from an HTTP server through bounded caches."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from remote_servers import http_server

from fastfashion.loading.order import segments, window_plan, windowed_indices

SIZES = [5, 7, 6, 6, 3, 8, 5, 6, 7, 4, 6, 5, 6]


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_window_plan_deals_whole_shards_to_ranks(world_size):
    starts = np.concatenate([[0], np.cumsum(SIZES)])
    seen = []
    for rank in range(world_size):
        plan = window_plan(SIZES, seed=3, epoch=1, rank=rank, world_size=world_size, window=2)
        assert all(len(shards) <= 2 for shards, _ in plan)
        for shards, samples in plan:
            want = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in shards])
            assert sorted(samples.tolist()) == sorted(want.tolist())  # exactly the window's samples, shuffled
            seen.extend(shards)
    assert sorted(seen) == list(range(len(SIZES)))  # every shard on exactly one rank
    again = window_plan(SIZES, seed=3, epoch=1, rank=0, world_size=world_size, window=2)
    assert [s for s, _ in again] == [s for s, _ in window_plan(SIZES, seed=3, epoch=1, rank=0,
                                                                world_size=world_size, window=2)]
    assert [s for s, _ in again] != [s for s, _ in window_plan(SIZES, seed=3, epoch=2, rank=0,
                                                                world_size=world_size, window=2)]


def test_windowed_indices_equal_whole_batches_and_resume():
    shares = [windowed_indices(SIZES, seed=0, epoch=0, rank=r, world_size=3, batch_size=4, drop_last=True,
                               window=2) for r in range(3)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) % 4 == 0
    assert len(set(np.concatenate(shares).tolist())) == sum(len(s) for s in shares)  # disjoint
    tail = windowed_indices(SIZES, seed=0, epoch=0, rank=1, world_size=3, batch_size=4, drop_last=True, window=2,
                            start=2 * 3 * 4)
    assert tail.tolist() == shares[1][8:].tolist()
    evals = [windowed_indices(SIZES, seed=0, epoch=0, rank=r, world_size=3, batch_size=4, drop_last=False,
                              window=2) for r in range(3)]
    assert sorted(np.concatenate(evals).tolist()) == list(range(sum(SIZES)))
    with pytest.raises(ValueError, match="whole number of rounds"):
        windowed_indices(SIZES, seed=0, epoch=0, batch_size=4, drop_last=True, window=2, start=3)


def test_segments_cover_the_pass_in_whole_batches_within_two_windows():
    idx = windowed_indices(SIZES, seed=1, epoch=0, batch_size=4, drop_last=False, window=2)
    plan = window_plan(SIZES, seed=1, epoch=0, window=2)
    windows = [set(s) for s, _ in plan]
    segs = segments(idx, SIZES, batch_size=4, window=2)
    assert segs[0][0] == 0 and segs[-1][1] == len(idx)
    for k, (a, b, shards, nxt) in enumerate(segs):
        assert a % 4 == 0 and (b % 4 == 0 or b == len(idx))
        assert set(shards) <= windows[k] | (windows[k - 1] if k else set())  # this window + a batch begun before
        assert set(nxt) == (windows[k + 1] if k + 1 < len(windows) else set())
        if k + 1 < len(segs):
            assert segs[k + 1][0] == b


RANK = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    from fastfashion.loading.order import segments, windowed_indices
    from fastfashion.remote.cache import ShardCache
    from fastfashion.remote.store import RemoteConfig
    url, cache_dir, limit, rank, world, window = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:7])
    c = ShardCache(url, RemoteConfig(cache_dir=cache_dir, cache_limit=limit))
    c.fetch_index("train")
    need = c.check_limit("train", 3 * window)
    entries = c.shards("train")
    sizes = [sh["num_samples"] for sh in entries]
    peak, stop = 0, threading.Event()
    def sample():
        global peak
        while not stop.is_set():
            peak = max(peak, sum(p.stat().st_size for p in c.dir.iterdir() if p.is_file() and p.suffix != ".json"
                                 and p.name != "manifest.json" if p.exists()))
            time.sleep(0.001)
    t = threading.Thread(target=sample); t.start()
    idx = windowed_indices(sizes, seed=0, epoch=0, rank=rank, world_size=world, batch_size=4, drop_last=True,
                           window=window)
    for a, b, shards, nxt in segments(idx, sizes, batch_size=4, window=window):
        c.pin([entries[s] for s in sorted(set(shards) | set(nxt))])
        c.ensure([entries[s] for s in shards])
        c.prefetch([entries[s] for s in nxt])
        time.sleep(0.005)  # "reading"
    c.close(); stop.set(); t.join()
    print(json.dumps({"tars": [n for n in c.downloaded if n.endswith(".tar")], "peak": peak, "need": need}))
""")


def test_four_ranks_download_their_share_within_the_limit(tmp_path, tiny_dataset):
    from fastfashion.data.shard import ShardConfig, write_shards
    base = tmp_path / "one"
    write_shards(tiny_dataset, base, ShardConfig(samples_per_shard=2, workers=1))
    m = json.loads((base / "manifest.json").read_text())
    first = m["splits"]["train"]["shards"][0]
    big = tmp_path / "srv" / "big"
    big.mkdir(parents=True)
    shards = []
    for i in range(200):  # 200 shards: copies of one (the cache does not look inside them)
        sh = dict(first, tar=f"train-{i:05d}.tar", idx=f"train-{i:05d}.idx")
        shutil.copy(base / first["tar"], big / sh["tar"])
        shutil.copy(base / first["idx"], big / sh["idx"])
        shards.append(sh)
    m["splits"] = {"train": dict(m["splits"]["train"], shards=shards, num_samples=200 * first["num_samples"])}
    (big / "manifest.json").write_text(json.dumps(m))
    window, world = 2, 4
    idx_bytes = (big / first["idx"]).stat().st_size
    limit = 200 * idx_bytes + 3 * window * first["bytes"]  # exactly the minimum the cache asks for
    with http_server(tmp_path / "srv") as url:
        procs = [subprocess.Popen([sys.executable, "-c", RANK, f"{url}/big", str(tmp_path / f"cache{r}"), str(limit),
                                   str(r), str(world), str(window)], stdout=subprocess.PIPE, text=True)
                 for r in range(world)]
        outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    per_rank = [set(o["tars"]) for o in outs]
    for r, o in enumerate(outs):
        assert o["need"] == limit
        assert o["peak"] <= limit
        assert len(o["tars"]) <= 200 // world + window  # its share plus at most one window
        assert len(o["tars"]) == len(per_rank[r])  # no shard twice
    assert all(not (a & b) for i, a in enumerate(per_rank) for b in per_rank[i + 1:])  # ranks read disjoint shards

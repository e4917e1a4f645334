"""Data for the pytest-benchmark suite (`make bench`): the real set when present, else a synthetic one.

FASTFASHION_REAL_DATA points at a FashionDataset folder (default ../shared/FashionDataset beside the repo);
FASTFASHION_BENCH_SYNTH=N synthesizes N train images instead (default 512 when the real set is absent).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL = Path(os.environ.get("FASTFASHION_REAL_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "FashionDataset"))


@pytest.fixture(scope="session")
def source_dir(tmp_path_factory) -> Path:
    n = os.environ.get("FASTFASHION_BENCH_SYNTH")
    if REAL.is_dir() and not n:
        return REAL
    from fastfashion.data.synth import SynthConfig, synthesize
    n = int(n or 512)
    return synthesize(tmp_path_factory.mktemp("bench") / "synth", SynthConfig(train=n, val=n // 5, test=n // 5))


@pytest.fixture(scope="session")
def shard_dir(source_dir, tmp_path_factory) -> Path:
    from fastfashion.data.shard import ShardConfig, write_shards
    out = tmp_path_factory.mktemp("bench-shards") / "shards"
    write_shards(source_dir, out, ShardConfig())
    return out

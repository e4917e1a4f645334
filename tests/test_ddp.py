"""torchrun on the CPU (gloo, 2 processes): README's "Using it in your own DDP script" as written (the CLI's own
torchrun run, with its log of each INFO line once, is tests/test_train.py::test_torchrun_two_processes_gloo)."""
from __future__ import annotations

import collections
import os
import subprocess
import sys

import pytest
from helpers import make_shard_set, readme_script

N_TRAIN = 128  # the script's batch 32 on 2 ranks: 2 batches per rank, every sample once per epoch


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shard_set(tmp_path_factory.mktemp("ddp"), train=N_TRAIN, val=8, test=4, samples_per_shard=48)


def torchrun(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def once_each(lines: list[str]) -> None:
    twice = [line for line, n in collections.Counter(lines).items() if n > 1]
    assert lines and not twice, twice


def test_readme_ddp_script_under_torchrun(shards, tmp_path):
    script = readme_script("Using it in your own DDP script", shards, tmp_path)
    proc = torchrun([str(script)], tmp_path)
    # rank 0 prints the union of both ranks' keys per epoch: disjoint shares, every sample once
    assert proc.stdout.splitlines() == [f"epoch {e}: {N_TRAIN} samples, {N_TRAIN} distinct" for e in range(3)]
    once_each([line for line in proc.stderr.splitlines() if line.startswith("INFO:")])  # the script's logging

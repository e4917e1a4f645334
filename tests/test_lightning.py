"""PyTorch Lightning fed by make_loader (issue 26): README's "Using it with Lightning" script, run as written.

Lightning stops an epoch after len() batches (never exhausting the iterator) and never calls ``set_epoch`` on a
loader that is not a torch DataLoader: every epoch must still be complete and reshuffled, ``limit_train_batches``
must not make the next epoch continue the last one, and under ``strategy="ddp"`` the ranks' shares are disjoint.
128 train samples, batch 32 (the script's): 4 batches per epoch on one process, 2 per rank on two.
"""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import pytest
from helpers import make_shard_set, readme_script

from fastfashion.loading.loader import make_loader

L = pytest.importorskip("lightning")  # the dev extra installs it; a bare install skips these tests

N_TRAIN = 128


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shard_set(tmp_path_factory.mktemp("lightning"), train=N_TRAIN, val=8, test=4, samples_per_shard=48)


@pytest.fixture()
def script(shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever Lightning writes stays here
    return readme_script("Using it with Lightning", shards, tmp_path)


def keys(shards, epoch, **kw) -> list[str]:
    """What the script's loader delivers in ``epoch`` (its batch size and seed)."""
    with make_loader(shards, "train", batch_size=32, image_size=64, **kw) as loader:
        return loader.keys(epoch)


def test_every_epoch_complete_and_reshuffled(shards, script, capsys):
    model = runpy.run_path(str(script))["main"]()  # the script's main(), in this process
    assert [len(k) for k in model.seen] == [N_TRAIN] * 3  # the issue: {0: all, 1: none, 2: all, ...}
    assert model.seen == [keys(shards, e) for e in range(3)]
    assert model.seen[0] != model.seen[1] != model.seen[2] and sorted(model.seen[0]) == sorted(model.seen[1])
    assert "rank 0: samples per epoch [128, 128, 128]" in capsys.readouterr().out


def test_limit_train_batches_starts_each_epoch_at_sample_zero(shards, script):
    module = runpy.run_path(str(script))
    model = module["FashionModule"](str(shards))
    trainer = L.Trainer(max_epochs=3, limit_train_batches=3, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model)
    assert model.seen == [keys(shards, e)[:3 * 32] for e in range(3)]  # not the 4th batch of the epoch before


def test_ddp_on_two_cpu_processes_reads_disjoint_shares(shards, script, tmp_path):
    """strategy="ddp", accelerator cpu, devices=2 (gloo): Lightning starts the second process by running the same
    command again; each rank's loader, made in train_dataloader(), takes its rank from the process group."""
    runner = tmp_path / "run_ddp.py"  # the script's main(2); each rank writes the keys it trained on
    runner.write_text(f"import json, sys\nsys.path.insert(0, {str(tmp_path)!r})\nfrom {script.stem} import main\n"
                      "model = main(2)\n"
                      "json.dump(model.seen, open(f'seen-{model.global_rank}.json', 'w'))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(runner)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in range(2):  # both ranks and the progress bar share stdout, their writes interleaved: a substring
        assert f"rank {rank}: samples per epoch [64, 64, 64]" in proc.stdout, (proc.stdout[-2000:],
                                                                               proc.stderr[-2000:])
    seen = [json.loads((tmp_path / f"seen-{r}.json").read_text()) for r in range(2)]
    for e in range(3):
        assert seen[0][e] == keys(shards, e, rank=0, world_size=2)
        assert seen[1][e] == keys(shards, e, rank=1, world_size=2)
        assert not set(seen[0][e]) & set(seen[1][e]) and len(set(seen[0][e]) | set(seen[1][e])) == N_TRAIN
    assert seen[0][0] != seen[0][1]

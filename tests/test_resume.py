"""Preemption-safe training through the command line (CPU, torch backend without workers: deterministic): a run
killed at random steps and resumed ends with the weights of an uninterrupted run; SIGTERM writes a checkpoint and
exits 143; unsafe resumes and overwrites are refused."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import make_dataset

from fastfashion.data.shard import ShardConfig, write_shards

ARGS = ["--epochs", "2", "--batch-size", "4", "--image-size", "16", "--backend", "torch", "--workers", "0",
        "--lr", "1e-3", "--checkpoint-every", "2", "-q"]  # a checkpoint every 2 steps (each writes ~135 MB)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_shards(make_dataset(root / "data", train=24, val=8, test=4), root / "shards", ShardConfig(workers=1))
    return root / "shards"


def _train(shard_dir, out, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fastfashion", "train", "--shards", str(shard_dir), "--out",
                             str(out), *ARGS, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})


def _step(out: Path) -> int:
    """The step of the last checkpoint (0: none yet)."""
    try:
        return torch.load(out / "last.pt", map_location="cpu", weights_only=True)["step"]
    except Exception:  # noqa: BLE001 - missing, or being replaced right now
        return 0


def _wait_for_step(proc, out: Path, step: int) -> None:
    deadline = time.monotonic() + 120
    while _step(out) < step:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


@pytest.mark.long  # ~80 s: four training processes (make test-long)
def test_killed_twice_and_resumed_equals_an_uninterrupted_run(shard_dir, tmp_path):
    whole = tmp_path / "whole"
    p = _train(shard_dir, whole)
    assert p.wait(timeout=300) == 0, p.communicate()
    cut = tmp_path / "cut"
    rng = random.Random(7)
    p = _train(shard_dir, cut)
    for k in sorted(rng.sample(range(2, 11, 2), 2)):  # 6 steps per epoch, 12 in all: kill twice, at random
        _wait_for_step(p, cut, k)
        time.sleep(rng.random())  # somewhere after the checkpoint of step k: the resumed run replays from it
        p.send_signal(signal.SIGKILL)
        p.wait()
        p = _train(shard_dir, cut, "--resume")
    assert p.wait(timeout=300) == 0, p.communicate()
    a = torch.load(whole / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(cut / "last.pt", map_location="cpu", weights_only=True)
    assert a["step"] == b["step"] == 12 and a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # bitwise
    assert [r["val"] for r in a["history"]] == [r["val"] for r in b["history"]]


def test_sigterm_writes_a_checkpoint_exits_143_and_resumes(shard_dir, tmp_path):
    out = tmp_path / "run"
    p = _train(shard_dir, out)
    _wait_for_step(p, out, 2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143
    step = _step(out)
    assert err.strip().splitlines()[-1] == (f"fastfashion train: stopped by SIGTERM after step {step}; checkpoint "
                                            f"{out / 'last.pt'} written; run the same command with --resume to "
                                            "continue")
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["loader"]["consumed"] == (step % 6) * 4  # the position within the epoch
    p = _train(shard_dir, out, "--resume")
    assert p.wait(timeout=300) == 0, p.communicate()
    assert _step(out) == 12


def test_unsafe_resumes_and_overwrites_are_refused(shard_dir, tmp_path):
    out = tmp_path / "run"
    p = _train(shard_dir, out, "--max-steps", "2")
    assert p.wait(timeout=300) == 0, p.communicate()
    p = _train(shard_dir, out)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1 and err.strip().splitlines()[-1] == (
        f"fastfashion train: error: {out} already holds a run (last.pt, best.pt, metrics.json); refusing to overwrite "
        "it; pass --resume to continue it, or --overwrite to start over")
    p = subprocess.run([sys.executable, "-m", "fastfashion", "train", "--shards", str(shard_dir), "--out", str(out),
                        *[a if a != "4" else "2" for a in ARGS], "--resume"], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.strip().splitlines()[-1] == (
        f"fastfashion train: error: cannot resume {out / 'last.pt'}: it was trained with batch_size 4, this run "
        "asks for 2")
    other = tmp_path / "other"
    write_shards(make_dataset(tmp_path / "data2", train=24, val=8, test=4, seed=3), other, ShardConfig(workers=1))
    p = _train(other, out, "--resume")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1 and err.strip().splitlines()[-1].startswith(
        f"fastfashion train: error: cannot resume {out / 'last.pt'} on {other}: the loader state is for data "
        "'sha256:")


def _torchrun(nproc: int, shard_dir, out, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                             "-m", "fastfashion", "train", "--shards", str(shard_dir), "--out", str(out), *ARGS,
                             "--epochs", "1", "--batch-size", "2", "--device", "cpu", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})


@pytest.mark.long  # ~2 minutes: three torchrun launches (make test-long)
@pytest.mark.parametrize("new", [1, 3])
def test_torchrun_stopped_mid_epoch_resumes_on_another_number_of_processes(shard_dir, tmp_path, new):
    """2 processes stopped by SIGTERM mid-epoch (torchrun passes it on; the ranks agree on the step), resumed with
    ``new`` processes: the epoch ends after exactly the batches its remaining samples make on ``new`` ranks."""
    out = tmp_path / "run"
    p = _torchrun(2, shard_dir, out)
    _wait_for_step(p, out, 2)  # 24 train samples, 2 ranks x batch 2: 6 steps per epoch; checkpoints every 2
    os.killpg(p.pid, signal.SIGTERM)
    p.communicate(timeout=120)
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    step, consumed = ckpt["step"], ckpt["loader"]["consumed"]
    assert ckpt["epoch"] == 0 and ckpt["loader"]["world_size"] == 2 and consumed == step * 2 * 2 and 0 < consumed < 24
    p = _torchrun(new, shard_dir, out, "--resume")
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-3000:]
    done = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert done["epoch"] == 1 and done["step"] == step + (24 - consumed) // (new * 2)  # the rest, dealt to `new`


@pytest.mark.parametrize("stop_after", [4, 6])  # mid-epoch, and after the epoch's last step (before validation)
def test_stopped_at_a_step_and_resumed_equals_an_uninterrupted_run(shard_dir, tmp_path, monkeypatch, stop_after):
    """In-process and fast: the run stops (as on SIGTERM) right after the checkpoint of step ``stop_after`` and is
    resumed; it ends with the uninterrupted run's steps, epochs and weights. After the epoch's last step the loader is
    already at the next epoch: the resumed run must validate, not train that epoch a second time."""
    from fastfashion.train import trainer
    from fastfashion.train.preemption import Preempted
    from fastfashion.train.recipes import recipe_config

    def cfg(out, **kw):
        return recipe_config("seed", shard_dir=str(shard_dir), out=str(out), epochs=2, batch_size=4, image_size=16,
                             backend="torch", workers=0, lr=1e-3, device="cpu", **kw)

    trainer.train(cfg(tmp_path / "whole"))
    real_poll = trainer.poll
    monkeypatch.setattr(trainer, "poll", lambda step, signalled, policy, info: (True, True) if step == stop_after
                        else real_poll(step, signalled, policy, info))
    with pytest.raises(Preempted):
        trainer.train(cfg(tmp_path / "cut"))
    monkeypatch.setattr(trainer, "poll", real_poll)
    assert torch.load(tmp_path / "cut" / "last.pt", map_location="cpu", weights_only=True)["step"] == stop_after
    trainer.train(cfg(tmp_path / "cut", resume=True))
    a = torch.load(tmp_path / "whole" / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", map_location="cpu", weights_only=True)
    assert a["step"] == b["step"] == 12 and a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # bitwise
    assert [r["val"] for r in a["history"]] == [r["val"] for r in b["history"]]


def test_preemption_polls_the_ranks_every_n_steps_not_every_step(monkeypatch):
    """Under DDP the stop flag and the time rule cost a collective (an all-reduce, a host sync on NCCL): `poll` makes
    one every POLL_EVERY steps and at the step rule's checkpoints, and none on one process; the step rule itself
    needs no agreement (the same on every rank)."""
    import torch.distributed as dist

    from fastfashion.train.distributed import DistInfo
    from fastfashion.train.preemption import POLL_EVERY, CheckpointPolicy, poll
    reduced = []
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: reduced.append(t.clone()))  # a lone rank's max
    two = DistInfo(rank=0, world_size=2)
    policy = CheckpointPolicy(minutes=None, every=10)
    decisions = [poll(step, step >= 5, policy, two) for step in range(1, 101)]
    polled = sorted({s for s in range(1, 101) if s % POLL_EVERY == 0} | set(range(10, 101, 10)))
    assert len(reduced) == len(polled) < 100 // 4  # not one per step
    first_stop = next(s for s, (stop, _) in zip(range(1, 101), decisions) if stop)
    assert first_stop == polled[0] == 10  # the signal of step 5 is seen at the next poll, a checkpoint step here
    assert [s for s, (_, due) in zip(range(1, 101), decisions) if due] == list(range(10, 101, 10))
    reduced.clear()
    alone = [poll(step, step >= 5, CheckpointPolicy(minutes=None, every=None), DistInfo()) for step in range(1, 40)]
    assert reduced == [] and [stop for stop, _ in alone].index(True) == 4  # one process: every step, no collective
    assert poll(POLL_EVERY * 3, True, CheckpointPolicy(minutes=None, every=None), two) == (True, False)
    assert poll(POLL_EVERY * 3 + 1, True, CheckpointPolicy(minutes=None, every=None), two) == (False, False)

"""The GPU path's correctness checks, each run twice: on the CPU (dali-cpu, in ``make test``: the same code path up
to the device) and on CUDA (dali-gpu: mixed decode, GPU augmentation, the decoder cache; marker ``gpu``, skipped
without CUDA; ``benchmarks/gpu_check.sh`` runs them on its GPU).

- the train graph with rotation and colour jitter off on solid-colour images keyed by colour: every image arrives
  with its own colour and labels (random crop, flip and resize keep a solid colour);
- labels from ``.lbl`` and ``.cls`` members (read by DALI's reader, or planned from the index);
- evaluate on DALI equals evaluate on the torch backend within 1 % on the same checkpoint;
- a 2-rank DDP run (gloo; on the GPU both ranks share it) with disjoint shares, then a resume.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import needs_dali
from second_set import labels_of as labels2
from second_set import samples, write_outside_shards
from test_loader import colour, decode_index, labels_of, write_source

from fastfashion.data.shard import ShardConfig, write_shards
from fastfashion.loading.augment import AugmentConfig
from fastfashion.loading.loader import make_loader

pytestmark = needs_dali
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = [pytest.param("cpu", id="dali-cpu"), pytest.param("cuda", id="dali-gpu", marks=[pytest.mark.gpu, CUDA])]
BACKEND = {"cpu": "dali-cpu", "cuda": "dali-gpu"}
N_TRAIN, N_VAL = 29, 11  # test_loader's colour set


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpupath")
    write_source(root / "src")
    write_shards(root / "src", root / "shards", ShardConfig(samples_per_shard=4, workers=1, seed=0))
    return root / "shards"


@pytest.mark.parametrize("device", DEVICES)
def test_train_graph_delivers_each_keys_colour_and_labels(colours, device):
    """Two epochs of the train graph (one pipeline): random resized crop + flip through the warp, no rotation, no
    jitter; each image's mean colour names its key, and its labels are that key's."""
    cfg = AugmentConfig.train(brightness=0, contrast=0, saturation=0, hue=0, rotation=0)
    loader = make_loader(colours, "train", batch_size=4, backend=BACKEND[device], device=device, augment=cfg,
                         with_keys=True, image_size=24)
    assert loader.backend == BACKEND[device]
    for epoch in range(2):
        loader.set_epoch(epoch)
        keys = []
        for b in loader:
            assert b.images.device.type == b.labels.device.type == device
            if device == "cuda":  # the training step's memory format, delivered without a copy
                assert b.images.is_contiguous(memory_format=torch.channels_last)
            assert [f"{k:05d}" for k in decode_index(b.images)] == b.keys
            assert b.labels.tolist() == [labels_of(int(k)) for k in b.keys]
            keys += b.keys
        assert keys == loader.keys(epoch) and len(keys) == N_TRAIN // 4 * 4
    assert colour(0) != colour(1)
    loader.close()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("member", ["lbl", "cls"])
def test_label_members_travel_with_their_images(tmp_path, device, member):
    """``.lbl`` labels are a member DALI's reader reads beside the JPEG; ``.cls`` labels come from the index,
    fed per batch in the reader's order. Either way each key gets its own labels, in the train graph too."""
    from fastfashion.data.adopt import index_shards
    d = write_outside_shards(tmp_path / "tars", member, per_tar=7)
    index_shards(d)
    width = 2 if member == "lbl" else 1
    expected = {k: list(labels2(i)[:width]) for s, k, i in samples() if s == "train"}
    loader = make_loader(d, "train", batch_size=4, backend=BACKEND[device], device=device, image_size=16,
                         with_keys=True, drop_last=False)
    got = {k: lab for b in loader for k, lab in zip(b.keys, b.labels.tolist())}
    assert got == expected
    loader.close()


@pytest.fixture(scope="module")
def checkpoint(colours, tmp_path_factory):
    """One epoch of training on the CPU (torch backend): the checkpoint both evaluations read."""
    from fastfashion.train.config import TrainConfig
    from fastfashion.train.trainer import train
    out = tmp_path_factory.mktemp("gpupath_ckpt") / "run"
    train(TrainConfig(shard_dir=str(colours), out=str(out), epochs=1, batch_size=8, image_size=32, backend="torch",
                      device="cpu", workers=0, checkpoint_minutes=None, lr=1e-3))
    return out / "last.pt"


@pytest.mark.parametrize("device", DEVICES)
def test_evaluate_on_dali_equals_torch_within_one_percent(colours, checkpoint, device):
    from fastfashion.train.inference import evaluate_checkpoint
    got = {b: evaluate_checkpoint(checkpoint, colours, batch_size=4, device=device, backend=b)
           for b in (BACKEND[device], "torch")}
    dali, ref = got[BACKEND[device]], got["torch"]
    assert dali["num_samples"] == ref["num_samples"] == N_VAL
    assert dali["loss"] == pytest.approx(ref["loss"], rel=0.01)
    assert dali["accuracy"] == pytest.approx(ref["accuracy"], abs=0.01)


def _torchrun(shards, out, device: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "FASTFASHION_DIST_BACKEND": "gloo",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastfashion",
           "train", "--shards", str(shards), "--out", str(out), "--batch-size", "4", "--image-size", "32",
           "--lr", "1e-3", "--device", device, "--backend", BACKEND[device], *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("device", [pytest.param("cpu", id="dali-cpu", marks=pytest.mark.long),
                                    pytest.param("cuda", id="dali-gpu", marks=[pytest.mark.gpu, CUDA])])
def test_ddp_two_ranks_disjoint_shares_then_resume(colours, tmp_path, device):
    """2 ranks over gloo (on one GPU: both share it; NCCL would refuse), 1 epoch: 29 train samples -> 14 per rank
    -> 3 steps of batch 4; val metrics summed over the disjoint shares equal one process's evaluate of the same
    weights. Then ``--resume`` to a second epoch on the same device."""
    from fastfashion.train.inference import evaluate_checkpoint
    out = tmp_path / "ddp"
    proc = _torchrun(colours, out, device, "--epochs", "1")
    assert "joined the gloo process group" in proc.stderr
    history = json.loads((out / "metrics.json").read_text())
    assert len(history) == 1 and history[0]["step"] == (N_TRAIN // 2) // 4
    single = evaluate_checkpoint(out / "last.pt", colours, device=device, backend=BACKEND[device])
    assert history[0]["val"]["avg_class_accuracy"] == pytest.approx(single["avg_class_accuracy"], abs=1e-6)
    _torchrun(colours, out, device, "--epochs", "2", "--resume")
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[-1]["step"] == 2 * ((N_TRAIN // 2) // 4)


@pytest.mark.parametrize("device", [pytest.param("cpu", id="dali-cpu", marks=pytest.mark.long),
                                    pytest.param("cuda", id="dali-gpu", marks=[pytest.mark.gpu, CUDA])])
def test_stopped_mid_epoch_and_resumed_on_the_device(colours, tmp_path, monkeypatch, device):
    """Resume on the GPU (AMP, the GradScaler's state, the loader's position in a dali-gpu epoch): a run stopped
    after step 3 (as on SIGTERM) and resumed ends at the uninterrupted run's step and epoch, with finite weights
    (bitwise equality is the CPU's: tests/test_resume.py)."""
    from fastfashion.train import trainer
    from fastfashion.train.config import TrainConfig
    from fastfashion.train.preemption import Preempted

    def cfg(out, **kw):
        return TrainConfig(shard_dir=str(colours), out=str(out), epochs=2, batch_size=4, image_size=32,
                           backend=BACKEND[device], device=device, checkpoint_minutes=None, **kw)
    whole = trainer.train(cfg(tmp_path / "whole"))
    real_poll = trainer.poll
    monkeypatch.setattr(trainer, "poll", lambda step, signalled, policy, info: (True, True) if step == 3
                        else real_poll(step, signalled, policy, info))
    with pytest.raises(Preempted):
        trainer.train(cfg(tmp_path / "cut"))
    monkeypatch.setattr(trainer, "poll", real_poll)
    cut = torch.load(tmp_path / "cut" / "last.pt", map_location="cpu", weights_only=True)
    assert (cut["step"], cut["epoch"], cut["loader"]["consumed"]) == (3, 0, 12)
    resumed = trainer.train(cfg(tmp_path / "cut", resume=True))
    assert (resumed["steps"], resumed["epochs"]) == (whole["steps"], whole["epochs"]) == (2 * (N_TRAIN // 4), 2)
    ckpt = torch.load(tmp_path / "cut" / "last.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())

"""The trainer end to end on tiny synthetic shards (CPU): run directory, resume, max-steps, evaluate/predict, DDP."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastfashion import make_loader
from fastfashion.cli import main as cli_main
from fastfashion.format.manifest import read_manifest
from fastfashion.format.reader import split_keys
from fastfashion.schema import FASHION_SCHEMA as S
from fastfashion.train import checkpoint as ckpt_io
from fastfashion.train import distributed
from fastfashion.train import trainer as train_mod
from fastfashion.train.device import amp_dtype
from fastfashion.train.inference import evaluate_checkpoint, predict
from fastfashion.train.metrics import avg_class_accuracy
from fastfashion.train.trainer import TrainConfig, multi_head_loss, train

# torch backend in-process here: the cheapest on 2 busy cores (evaluate/predict and the learning check use "auto",
# i.e. DALI on the CPU)
TINY = dict(epochs=2, batch_size=8, image_size=32, lr=1e-3, seed=7, backend="torch", workers=0)  # 5 steps/epoch on 40
TIMING = ("images_per_s", "data_wait_share", "train_seconds", "val_seconds", "minutes", "cpu_minutes")


@pytest.fixture(scope="module")
def shards(tiny_dataset, tmp_path_factory):
    from fastfashion.data.shard import ShardConfig, write_shards
    out = tmp_path_factory.mktemp("shards") / "tiny"
    write_shards(tiny_dataset, out, ShardConfig(samples_per_shard=16, workers=1, seed=0, skip_bad=False,
                                                overwrite=False))
    return out


@pytest.fixture(scope="module")
def run2(shards, tmp_path_factory):
    """An uninterrupted 2-epoch run."""
    out = tmp_path_factory.mktemp("run") / "r2"
    return out, train(TrainConfig(shard_dir=str(shards), out=str(out), **TINY))


def _strict_json(text):
    """``json.loads`` that rejects NaN/Infinity (not JSON; Python's parser accepts them by default)."""
    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=reject)


def _strip_timing(history):
    """The rows without their timings and run ids (two runs compared: different ids by design)."""
    return [{k: v for k, v in row.items() if k not in (*TIMING, "run_id")} for row in history]


# --- pure parts -------------------------------------------------------------------------------------------------
def test_loss_is_sum_of_weighted_cross_entropies():
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(5, k, generator=gen) for k in S.num_classes]
    labels = torch.stack([torch.randint(0, k, (5,), generator=gen) for k in S.num_classes], 1)
    weights = [torch.rand(k, generator=gen) + 0.1 for k in S.num_classes]
    expected = 0.0
    for i, (lg, w) in enumerate(zip(logits, weights)):
        ce = -F.log_softmax(lg, 1)[torch.arange(5), labels[:, i]]
        wy = w[labels[:, i]]
        expected += float((wy * ce).sum() / wy.sum())
    assert float(multi_head_loss(logits, labels, weights)) == pytest.approx(expected, rel=1e-5)


def test_config_is_keyword_only_and_validated():
    with pytest.raises(TypeError, match=r"takes 1 positional argument but 3 were given$"):
        TrainConfig("shards", "out")  # noqa
    with pytest.raises(ValueError, match="^batch_size must be >= 1, got 0$"):
        TrainConfig(shard_dir="s", out="o", batch_size=0)
    with pytest.raises(ValueError, match="^device must be auto, cpu, cuda or cuda:N, got 'tpu'$"):
        TrainConfig(shard_dir="s", out="o", device="tpu")


def test_checkpoint_write_is_atomic_and_rng_round_trips(tmp_path):
    path = tmp_path / "c.pt"
    ckpt_io.save_atomic({"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "x": torch.ones(2)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left
    assert torch.equal(ckpt_io.load_checkpoint(path)["x"], torch.ones(2))
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ckpt_io.CheckpointError,
                       match=f"^{re.escape(str(tmp_path / 'bad.pt'))} is not a fastfashion checkpoint$"):
        ckpt_io.load_checkpoint(tmp_path / "bad.pt")
    import random

    state = ckpt_io.rng_state()
    ckpt_io.save_atomic({"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "rng": state}, path)
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt_io.set_rng_state(ckpt_io.load_checkpoint(path)["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]


def test_amp_dtype_counts_native_bf16_only(monkeypatch):
    assert amp_dtype("cpu") is None and amp_dtype(torch.device("cpu")) is None
    # a T4 (sm75): bf16 only emulated, so is_bf16_supported() is True unless emulation is excluded
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert amp_dtype("cuda") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # sm80+
    assert amp_dtype("cuda") is torch.bfloat16 and amp_dtype("cuda", "amp") is torch.bfloat16
    assert amp_dtype("cuda", "fp32") is None


def test_precision_amp_runs_bf16_on_a_cpu_that_has_it(monkeypatch):
    from fastfashion.train import device as dev
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    assert dev.amp_dtype(cpu, "amp") is torch.bfloat16 and dev.channels_last(cpu, "amp")
    assert dev.amp_dtype(cpu, "auto") is None and not dev.channels_last(cpu, "auto")
    assert dev.amp_dtype(cpu, "fp32") is None and not dev.channels_last(cpu)
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)  # an older CPU: bf16 would be emulated, so fp32
    assert dev.amp_dtype(cpu, "amp") is None and not dev.channels_last(cpu, "amp")
    with pytest.raises(ValueError, match="precision must be one of auto, amp, fp32, got 'fp16'"):
        dev.amp_dtype(cpu, "fp16")
    with pytest.raises(ValueError, match="precision must be one of auto, amp, fp32, got 'half'"):
        TrainConfig(shard_dir="s", out="o", precision="half")


def test_amp_run_trains_in_bf16_and_evaluates_in_its_precision(shards, tmp_path, monkeypatch):
    """precision="amp" on the CPU: the step runs under bf16 autocast on channels_last tensors, evaluate reproduces
    the run's last validation exactly because it runs in the checkpoint's precision, and a run cut after epoch 1 and
    resumed ends with the uninterrupted run's weights, bit for bit."""
    from fastfashion.train import device as dev
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)  # bf16 autocast runs on any CPU, natively or not
    seen = []
    real_run = train_mod.TrainStep.run

    def spy(self, images, labels):
        with self.autocast():
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                         images.is_contiguous(memory_format=torch.channels_last)))
        return real_run(self, images, labels)
    monkeypatch.setattr(train_mod.TrainStep, "run", spy)
    out = tmp_path / "amp"
    result = train(TrainConfig(shard_dir=str(shards), out=str(out), precision="amp", **TINY))
    assert seen and set(seen) == {(True, torch.bfloat16, True)}
    last = ckpt_io.load_checkpoint(out / "last.pt")
    assert last["config"]["precision"] == "amp"
    assert all(v.dtype == torch.float32 for v in last["model"].values() if v.is_floating_point())
    m = evaluate_checkpoint(out / "last.pt", shards, backend="torch")
    assert m["avg_class_accuracy"] == pytest.approx(result["history"][-1]["val"]["avg_class_accuracy"], abs=1e-9)
    cut = tmp_path / "cut"
    for extra in ({"max_steps": 5}, {"resume": True}):  # 5 steps per epoch
        train(TrainConfig(shard_dir=str(shards), out=str(cut), precision="amp", **TINY, **extra))
    resumed = ckpt_io.load_checkpoint(cut / "last.pt")
    for k in last["model"]:
        assert torch.equal(last["model"][k], resumed["model"][k]), k


def test_empty_scaler_state_is_not_loaded():
    """A bf16/CPU run saves a disabled scaler's empty state; an fp16 run resuming it keeps its fresh scaler."""
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    with pytest.raises(RuntimeError, match="^The source state dict is empty, possibly because it was saved from a "
                                           "disabled instance of GradScaler\\.$"):
        fresh.load_state_dict({})  # what _load_scaler_state must avoid
    train_mod._load_scaler_state(fresh, torch.amp.GradScaler("cpu", enabled=False).state_dict())
    assert fresh.get_scale() == 2.0 ** 10
    train_mod._load_scaler_state(fresh, torch.amp.GradScaler("cpu", init_scale=4.0).state_dict())
    assert fresh.get_scale() == 4.0


def test_teardown_barriers_only_after_a_normal_exit(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    owned = distributed.DistInfo(0, 2, owns_group=True)
    distributed.teardown(owned)
    assert calls == ["barrier", "destroy"]
    calls.clear()
    distributed.teardown(owned, failed=True)
    assert calls == ["destroy"]
    # train() on a rank that raises: no barrier (the other ranks would never reach it)
    calls.clear()
    monkeypatch.setattr(distributed, "setup", lambda device_type: owned)

    def fail(*args):
        raise ValueError("this rank failed")
    from fastfashion.train.preemption import StopFlag
    monkeypatch.setattr(train_mod, "_start", lambda *args: types.SimpleNamespace(stop=StopFlag(), close=lambda: None))
    monkeypatch.setattr(train_mod, "_train", fail)
    shards = types.SimpleNamespace()  # an opened set, which _start (replaced) would read
    with pytest.raises(ValueError, match="^this rank failed$"):
        train(TrainConfig(shard_dir="s", out=str(tmp_path / "r"), device="cpu"), shards=shards)
    assert calls == ["destroy"]
    monkeypatch.setattr(train_mod, "_train", lambda *args: {"steps": 1})
    assert train(TrainConfig(shard_dir="s", out=str(tmp_path / "r"), device="cpu"), shards=shards) == {"steps": 1}
    assert calls == ["destroy", "barrier", "destroy"]


def test_split_keys_come_from_the_idx_files(shards, tiny_dataset):
    manifest = read_manifest(shards)
    for split in ("val", "test"):
        lines = (tiny_dataset / "split" / f"{split}.txt").read_text().splitlines()
        assert split_keys(shards, manifest, split) == [ln.rsplit("/", 1)[-1].split(".", 1)[0] for ln in lines]


# --- end to end on tiny shards ------------------------------------------------------------------------------------
def test_run_dir_holds_checkpoints_metrics_and_curves(run2):
    out, result = run2
    assert {p.name for p in out.iterdir()} == {"last.pt", "best.pt", "metrics.json", "curves.png"}
    assert not [p for p in out.iterdir() if "tmp" in p.name]
    history = _strict_json((out / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and result["steps"] == 10
    assert [r["step"] for r in history] == [5, 10]  # 40 train samples / batch 8
    for row in history:
        assert set(row) == {"epoch", "step", "train", "val", "images_per_s", "data_wait_share", "lr", "image_size",
                            "train_seconds", "val_seconds", "minutes", "cpu_minutes", "run_id"}
        for part in ("train", "val"):
            assert set(row[part]) == {"avg_class_accuracy", "accuracy", "per_attribute", "loss"}
            assert list(row[part]["per_attribute"]) == list(S.names)
        # measured timings: a share in [0, 1] and a positive rate are all that is knowable on a shared machine
        assert 0 <= row["data_wait_share"] <= 1 and row["images_per_s"] > 0 and row["lr"] == TINY["lr"]
        assert row["train_seconds"] > 0 and row["val_seconds"] > 0 and row["image_size"] == TINY["image_size"]
    assert 0 < history[0]["minutes"] < history[1]["minutes"]
    assert 0 < history[0]["cpu_minutes"] < history[1]["cpu_minutes"]
    assert history[1]["minutes"] * 60 == pytest.approx(sum(r["train_seconds"] + r["val_seconds"] for r in history))
    last = ckpt_io.load_checkpoint(out / "last.pt")
    assert last["epoch"] == 2 and last["image_size"] == 32 and last["schema"] == S.to_dict()
    best = ckpt_io.load_checkpoint(out / "best.pt")
    assert best["best"] == max(r["val"]["avg_class_accuracy"] for r in history)
    assert re.fullmatch(r"[0-9a-f]{12}", last["run_id"])  # one run: every file says which
    assert best["run_id"] == last["run_id"] and {r["run_id"] for r in history} == {last["run_id"]}


def test_resume_ends_where_an_uninterrupted_run_ends(run2, shards, tmp_path):
    """2 epochs uninterrupted == 1 epoch, then --resume for the 2nd: same weights, same metrics.

    Needs the loader's augmentation to be a function of (seed, epoch) in a fresh process (the torch and dali-cpu
    backends both are; the torch backend in-process is the cheaper one to run here).
    """
    out2, result2 = run2
    out = tmp_path / "resumed"
    train(TrainConfig(shard_dir=str(shards), out=str(out), **{**TINY, "epochs": 1}))
    result = train(TrainConfig(shard_dir=str(shards), out=str(out), resume=True, **TINY))
    a = ckpt_io.load_checkpoint(out2 / "last.pt")
    b = ckpt_io.load_checkpoint(out / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert b["epoch"] == 2 and b["step"] == 10
    assert _strip_timing(result["history"]) == _strip_timing(result2["history"])


def test_max_steps_bounds_the_run(shards, tmp_path):
    result = train(TrainConfig(shard_dir=str(shards), out=str(tmp_path / "r"), max_steps=3, **TINY))
    assert result["steps"] == 3 and result["epochs"] == 1


def test_evaluate_and_predict_agree_with_the_split_files(run2, shards, tiny_dataset, tmp_path, capsys):
    out, _ = run2
    ckpt = out / "best.pt"
    assert cli_main(["evaluate", "--shards", str(shards), "--checkpoint", str(ckpt), "--json"]) == 0
    m = _strict_json(capsys.readouterr().out)
    assert m["num_samples"] == 16 and set(m) == {"split", "checkpoint", "avg_class_accuracy", "accuracy",
                                                 "per_attribute", "class_recall", "absent_classes", "loss",
                                                 "num_samples", "tta", "run_id"}
    assert (m["split"], m["checkpoint"], m["tta"]) == ("val", str(ckpt), "none")
    assert m["avg_class_accuracy"] == evaluate_checkpoint(ckpt, shards)["avg_class_accuracy"]

    # predictions for val, in split-file order, scored against val_attr.txt, give evaluate's number
    val_pred = predict(ckpt, shards, tmp_path / "val.txt", split="val")
    lines = val_pred.read_bytes().decode().split("\n")
    assert lines[-1] == "" and len(lines) == 17
    preds = torch.tensor([[int(x) for x in ln.split(" ")] for ln in lines[:-1]])
    truth = torch.tensor([[int(x) for x in ln.split()] for ln in
                          (tiny_dataset / "split" / "val_attr.txt").read_text().splitlines()])
    assert avg_class_accuracy(preds, truth, S) == pytest.approx(m["avg_class_accuracy"], abs=1e-12)

    # test: the submission format, and the zip holds prediction.txt alone
    assert cli_main(["predict", "--shards", str(shards), "--checkpoint", str(ckpt), "--out",
                     str(tmp_path / "prediction.txt"), "--zip"]) == 0
    text = (tmp_path / "prediction.txt").read_bytes()
    assert b"\r" not in text and text.endswith(b"\n")
    assert all(re.fullmatch(r"\d \d \d \d \d \d", ln) for ln in text.decode().splitlines())
    assert len(text.decode().splitlines()) == len((tiny_dataset / "split" / "test.txt").read_text().splitlines())
    with zipfile.ZipFile(tmp_path / "prediction.zip") as z:
        assert z.namelist() == ["prediction.txt"] and z.read("prediction.txt") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prediction.txt", "prediction.zip", "val.txt"]  # no temp


def test_errors_are_one_clear_line(shards, tmp_path, capsys):
    assert cli_main(["evaluate", "--shards", str(shards), "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert f"fastfashion evaluate: error: checkpoint {tmp_path / 'none.pt'} does not exist" in \
        capsys.readouterr().err.splitlines()
    assert cli_main(["train", "--shards", str(shards), "--out", str(tmp_path / "r"), "--resume",
                     "--batch-size", "8"]) == 1
    assert f"fastfashion train: error: checkpoint {tmp_path / 'r' / 'last.pt'} does not exist" in \
        capsys.readouterr().err.splitlines()
    assert cli_main(["train", "--shards", str(shards), "--out", str(tmp_path / "r")]) == 1
    assert f"fastfashion train: error: {shards}: 40 train samples per rank make no full batch of 64; lower " \
        "--batch-size" in capsys.readouterr().err.splitlines()


def test_torchrun_two_processes_gloo(shards, tmp_path):
    """DDP on the CPU: 2 ranks, disjoint shares; val metrics reduced over ranks equal a single-process evaluate; each
    INFO line once (rank 0 logs INFO, the other ranks warnings and errors only)."""
    import collections
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastfashion",
           "train", "--shards", str(shards), "--out", str(out), "--epochs", "1", "--batch-size", "8",
           "--image-size", "32", "--lr", "1e-3", "--device", "cpu", "--backend", "torch", "--workers", "0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 1 epochs") == 1  # only rank 0 reports
    info = [line for line in proc.stderr.splitlines() if line.startswith("INFO ")]
    assert [line for line, n in collections.Counter(info).items() if n > 1] == []
    assert info and all(line.startswith("INFO rank 0 ") for line in info), info
    assert any("joined the gloo process group" in line for line in info)  # an INFO line every rank logs
    history = json.loads((out / "metrics.json").read_text())
    assert len(history) == 1 and history[0]["step"] == 2  # 40 train / 2 ranks / batch 8 -> 2 steps per rank
    single = evaluate_checkpoint(out / "last.pt", shards, backend="torch")  # the backend (and output) of train
    assert history[0]["val"]["avg_class_accuracy"] == pytest.approx(single["avg_class_accuracy"], abs=1e-9)
    assert history[0]["val"]["per_attribute"] == pytest.approx(single["per_attribute"], abs=1e-9)


@pytest.mark.slow
def test_a_short_run_learns(tmp_path):
    """Learning check: 4 epochs at 32 px on a small synthetic set (160 train / 64 val) lift val average class
    accuracy clearly above the majority-class baseline (6/26 ~ 0.23; a chance-level balanced guess scores the same)."""
    from helpers import make_dataset

    from fastfashion.data.shard import ShardConfig, write_shards
    src = make_dataset(tmp_path / "data", train=160, val=64, test=4, seed=1)
    write_shards(src, tmp_path / "shards", ShardConfig(samples_per_shard=64, workers=1, seed=0, skip_bad=False,
                                                       overwrite=False))
    # no augmentation and a higher lr: from scratch, 40 steps must show learning (this machine: 0.26 -> 0.39)
    result = train(TrainConfig(shard_dir=str(tmp_path / "shards"), out=str(tmp_path / "run"), epochs=4, batch_size=16,
                               image_size=32, lr=2e-3, augment=False, seed=0))
    curve = [round(r["val"]["avg_class_accuracy"], 3) for r in result["history"]]
    assert result["best_avg_class_accuracy"] > 0.32, curve


# --- recipes, schedules, progressive resizing, test-time flip -----------------------------------------------------
# 5 steps/epoch: 2 warm-up steps. fp32: bf16 with a size that changes between epochs was measured not to repeat bit
# for bit (two fresh runs in one process differ); the bf16 resume at a constant size is checked in
# test_amp_run_trains_in_bf16_and_evaluates_in_its_precision
FAST_TINY = dict(TINY, epochs=2, lr=2e-3, resize_start=0.5, warmup_epochs=0.4, precision="fp32")


def test_schedules_and_sizes_are_exact_functions_of_the_position():
    from fastfashion.train.schedule import image_size_at, lr_factor
    assert [lr_factor(s, 10, 2, "linear") for s in range(10)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    assert lr_factor(10, 10, 2, "linear") == 0 and lr_factor(10, 10, 2, "cosine") == pytest.approx(0)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert [image_size_at(e, 16, 112, 0.6, (0.1, 0.7)) for e in range(16)] == [64] * 4 + [80] * 3 + [96] * 3 + [112] * 6
    assert [image_size_at(e, 16, 112, None, (0.1, 0.7)) for e in range(16)] == [112] * 16


def test_recipes_are_data_that_options_override(capsys):
    from fastfashion.train.recipes import RECIPES, RecipeError, recipe_config
    fast = recipe_config("fast", shard_dir="s", out="o", lr=3e-3, dropout=None, optimizer="adamw")
    assert (fast.recipe, fast.lr, fast.optimizer, fast.schedule, fast.dropout) == ("fast", 3e-3, "adamw", "linear", 0.2)
    assert (fast.precision, fast.class_balance, fast.batch_size, fast.crop_scale, fast.rotation) == (
        "amp", "logit-adjust", 32, (0.35, 1.0), 0.0)
    assert recipe_config("seed", shard_dir="s", out="o") == TrainConfig(shard_dir="s", out="o")
    with pytest.raises(RecipeError, match="unknown recipe 'slow'; choose from seed, fast, demo"):
        recipe_config("slow", shard_dir="s", out="o")
    with pytest.raises(RecipeError, match="not a training option: 'speed'"):
        recipe_config("fast", shard_dir="s", out="o", speed=2)
    assert cli_main(["train", "--recipe", "seed", "--image-size", "64x48", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["image_size"] == [64, 48]
    assert cli_main(["train", "--recipe", "fast", "--lr", "0.003", "--image-size", "112", "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {**json.loads(json.dumps(dict(RECIPES["fast"]))), **{k: shown[k] for k in shown
                                                                          if k not in RECIPES["fast"]},
                     "lr": 0.003, "image_size": 112}
    assert shown["recipe"] == "fast" and shown["ema_halflife"] == 0.5 and shown["shard_dir"] is None


def test_fast_recipe_run_resizes_decays_and_resumes_exactly(shards, tmp_path):
    """Progressive resizing per epoch (16 then 32 px), warm-up then linear decay to 0, and a resume in the middle
    (after epoch 1 at 16 px) that ends with the same weights as the uninterrupted run."""
    from fastfashion.train.recipes import recipe_config
    out = tmp_path / "fast"
    result = train(recipe_config("fast", shard_dir=str(shards), out=str(out), **FAST_TINY))
    assert [r["image_size"] for r in result["history"]] == [16, 32]
    assert result["history"][0]["lr"] == pytest.approx(2e-3 / 2)  # the first warm-up step
    last = ckpt_io.load_checkpoint(out / "last.pt")
    assert last["optimizer"]["param_groups"][0]["lr"] == 0.0  # decayed to 0 at the last step
    assert last["config"]["recipe"] == "fast" and last["image_size"] == 32
    cut = tmp_path / "cut"
    train(recipe_config("fast", shard_dir=str(shards), out=str(cut), max_steps=5, **FAST_TINY))  # epoch 1 only
    train(recipe_config("fast", shard_dir=str(shards), out=str(cut), resume=True, **FAST_TINY))
    resumed = ckpt_io.load_checkpoint(cut / "last.pt")
    for k in last["model"]:
        assert torch.equal(last["model"][k], resumed["model"][k]), k
        assert torch.equal(last["ema"]["module"][k], resumed["ema"]["module"][k]), k
    assert last["ema"]["updates"] == resumed["ema"]["updates"] == 10
    with pytest.raises(train_mod.TrainError, match="it was trained with schedule linear, this run asks for plateau$"):
        train(TrainConfig(shard_dir=str(shards), out=str(cut), resume=True, **TINY))
    with pytest.raises(train_mod.TrainError, match="it was trained with optimizer adam, this run asks for adamw$"):
        train(recipe_config("fast", shard_dir=str(shards), out=str(cut), resume=True, optimizer="adamw", **FAST_TINY))


def test_test_time_flip_averages_the_mirror_images_logits(run2, shards, capsys):
    from fastfashion.train.inference import load_model
    from fastfashion.train.trainer import infer
    out, _ = run2
    model, _ = load_model(out / "best.pt", torch.device("cpu"))
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    sym = torch.cat([x[..., :16], x[..., :16].flip(3)], dim=3)  # its own mirror image
    with torch.inference_mode():
        plain, flipped, mirror = model(x), infer(model, x, "flip"), model(x.flip(3))
        for a, b, c in zip(plain, flipped, mirror):
            assert torch.allclose(b, (a + c) / 2) and not torch.allclose(a, b)
        for a, b in zip(model(sym), infer(model, sym, "flip")):
            assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="tta must be one of none, flip, got 'crop'"):
        infer(model, x, "crop")
    m = evaluate_checkpoint(out / "best.pt", shards, tta="flip", backend="torch")
    assert m["tta"] == "flip" and m["num_samples"] > 0
    assert cli_main(["evaluate", "--shards", str(shards), "--checkpoint", str(out / "best.pt"), "--tta", "flip",
                     "--backend", "torch"]) == 0
    assert "test-time flip" in capsys.readouterr().out


def test_weight_average_moves_towards_the_model_and_is_what_evaluate_uses(run2, shards, tmp_path):
    from fastfashion.train.ema import WeightEMA
    from fastfashion.train.inference import load_model
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(4, 3))  # moves the BatchNorm running statistics
    ema.update(model)
    d = 2 / 11  # the warm-up: min(0.9, (1 + 1) / (10 + 1))
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, d * before[k] + (1 - d) * model.state_dict()[k]), k
    with pytest.raises(ValueError, match="ema decay must be in"):
        WeightEMA(model, decay=1.0)
    # a run with a weight average validates it, keeps it in best.pt, and evaluate/predict load it
    out = tmp_path / "ema"  # at a (height, width) size, which evaluate takes from the checkpoint
    train(TrainConfig(shard_dir=str(shards), out=str(out), ema_halflife=0.5, **{**TINY, "epochs": 1,
                                                                               "image_size": (32, 24)}))
    assert evaluate_checkpoint(out / "best.pt", shards, backend="torch")["num_samples"] > 0
    best = ckpt_io.load_checkpoint(out / "best.pt")
    loaded, _ = load_model(out / "best.pt", torch.device("cpu"))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, best["ema"]["module"][k]), k
    assert any(not torch.equal(best["ema"]["module"][k], best["model"][k]) for k in best["model"])
    with pytest.raises(train_mod.TrainError, match="it was trained without a weight average$"):
        train(TrainConfig(shard_dir=str(shards), out=str(run2[0]), resume=True, ema_halflife=0.5, **TINY))


def test_class_balance_weights_sqrt_and_logit_adjustment(shards):
    from fastfashion.train.balance import class_weights
    manifest = read_manifest(shards)
    counts = manifest["splits"]["train"]["class_counts"]
    full_w = class_weights(counts, S)
    cpu = torch.device("cpu")
    w, lp = train_mod.loss_weights(manifest, cpu)
    assert lp is None
    for t, want in zip(w, full_w.values()):
        assert t.tolist() == pytest.approx(want)
    w, lp = train_mod.loss_weights(manifest, cpu, "sqrt")
    assert lp is None
    for t, want in zip(w, full_w.values()):
        assert t.tolist() == pytest.approx([x ** 0.5 for x in want])
    w, lp = train_mod.loss_weights(manifest, cpu, "logit-adjust")
    assert w == [None] * len(S.attributes)
    for a, p in zip(S.attributes, lp):
        c = torch.tensor(counts[a.name], dtype=torch.float32).clamp(min=1)  # an absent class: a count of 1
        assert torch.allclose(p, torch.log(c / c.sum())) and p.shape == (a.num_classes,)
    torch.manual_seed(0)
    logits = [torch.randn(5, k) for k in S.num_classes]
    labels = torch.stack([torch.randint(0, k, (5,)) for k in S.num_classes], 1)
    want = sum(F.cross_entropy(lg + p, labels[:, i]) for i, (lg, p) in enumerate(zip(logits, lp)))
    assert torch.allclose(multi_head_loss(logits, labels, w, log_priors=lp), want)
    assert not torch.allclose(multi_head_loss(logits, labels, w), want)
    with pytest.raises(ValueError, match="class_balance must be one of weights, sqrt, logit-adjust, got 'none'"):
        TrainConfig(shard_dir="s", out="o", class_balance="none")


def test_logit_adjusted_run_trains_and_refuses_a_resume_with_other_weights(shards, tmp_path, capsys):
    out = tmp_path / "la"
    result = train(TrainConfig(shard_dir=str(shards), out=str(out), class_balance="logit-adjust",
                               **{**TINY, "epochs": 1}))
    assert result["history"][0]["val"]["loss"] > 0 and result["steps"] == 5
    assert ckpt_io.load_checkpoint(out / "last.pt")["config"]["class_balance"] == "logit-adjust"
    with pytest.raises(train_mod.TrainError, match="it was trained with class_balance logit-adjust, this run asks "
                                                   "for weights$"):
        train(TrainConfig(shard_dir=str(shards), out=str(out), resume=True, **{**TINY, "epochs": 2}))
    assert cli_main(["train", "--class-balance", "sqrt", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["class_balance"] == "sqrt"


def test_uint8_and_float_loader_output_train_and_evaluate_alike(run2, shards, tmp_path):
    """dali-cpu: uint8 batches finished at the model's input (to_device) give the model the float graph's values
    (the same logits, to float rounding), both outputs train, and evaluate gives the same metrics."""
    pytest.importorskip("nvidia.dali")
    from fastfashion.loading.augment import AugmentConfig
    from fastfashion.train.device import to_device
    from fastfashion.train.model import FashionNet
    torch.manual_seed(0)
    model = FashionNet(S).eval()
    cfg = AugmentConfig.train(image_size=32, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
    logits = {}
    for o in ("float", "uint8"):
        batch = next(iter(make_loader(shards, batch_size=8, backend="dali-cpu", device="cpu", augment=cfg,
                                      image_size=32, output=o)))
        images, _ = to_device(batch, torch.device("cpu"), False)
        assert images.dtype == torch.float32
        with torch.inference_mode():
            logits[o] = torch.cat(model(images), dim=1)
    assert float((logits["float"] - logits["uint8"]).abs().max()) < 1e-4
    kw = {**TINY, "backend": "dali-cpu", "max_steps": 3, "epochs": 1}
    for o in ("float", "uint8"):  # Adam turns float rounding into small weight differences: losses close, not equal
        train(TrainConfig(shard_dir=str(shards), out=str(tmp_path / o), loader_output=o, **kw))
    losses = [json.loads((tmp_path / o / "metrics.json").read_text())[-1]["train"]["loss"] for o in ("float", "uint8")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-2)
    ckpt = run2[0] / "best.pt"
    m = {o: evaluate_checkpoint(ckpt, shards, backend="dali-cpu", output=o) for o in ("float", "uint8")}
    assert m["float"]["per_attribute"] == m["uint8"]["per_attribute"]
    assert m["float"]["loss"] == pytest.approx(m["uint8"]["loss"], rel=1e-5)

"""`fastfashion bench` and the demo on tiny data: structure and honesty of the report, not speed."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics

import pytest
import torch

from fastfashion import cli
from fastfashion.bench.report import format_table, run_bench
from fastfashion.bench.throughput import BenchConfig
from fastfashion.bench.training import CEILING
from fastfashion.data.shard import ShardConfig, write_shards
from fastfashion.data.source import MissingSplitFileError
from fastfashion.schema import FASHION_SCHEMA
from fastfashion.train.inference import predict
from fastfashion.train.metrics import avg_class_accuracy


@pytest.fixture(scope="module")
def shards(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "shards"
    write_shards(tiny_dataset, out, ShardConfig(samples_per_shard=16, workers=1))
    return out


def _cfg(shards, tiny_dataset, **kw):
    kw = {"backends": ("seed", "torch", "dali-cpu", "dali-gpu"), "batch_size": 8, "image_size": 32, "rounds": 2,
          "batches": 2, "warmup": 1, "workers": 0, "train_steps": 2, **kw}
    return BenchConfig(shard_dir=str(shards), source=str(tiny_dataset), **kw)


def test_every_backend_measured_side_by_side(shards, tiny_dataset):
    cfg = _cfg(shards, tiny_dataset)
    result = run_bench(cfg)
    loaders = result["loaders"]
    for name in ("seed", "torch", "dali-cpu"):
        r = loaders[name]
        assert r["status"] == "ok", r
        # measured timings and memory: only their sign is knowable, their values depend on the machine's load
        assert len(r["rounds"]) == 2 and all(x > 0 for x in r["rounds"])
        assert r["cpu_s_per_1000_images"] > 0 and r["peak_rss_mb"] > 0 and r["time_to_first_batch_s"] > 0
        # the summary figures are exact functions of the rounds
        assert r["images_per_s"] == statistics.median(r["rounds"])
        assert (r["images_per_s_min"], r["images_per_s_max"]) == (min(r["rounds"]), max(r["rounds"]))
        # the ratio is that of the reported medians (what a reader checks against the printed img/s); the median of
        # the same-round ratios is kept beside it
        assert r["ratio_to_baseline"] == r["images_per_s"] / loaders["seed"]["images_per_s"]
        assert r["ratio_to_baseline_rounds"] == pytest.approx([x / b for x, b in
                                                               zip(r["rounds"], loaders["seed"]["rounds"])])
        assert r["ratio_to_baseline_paired"] == statistics.median(r["ratio_to_baseline_rounds"])
        assert isinstance(r["warnings"], list)
    assert loaders["seed"]["ratio_to_baseline"] == 1.0 and loaders["seed"]["ratio_to_baseline_paired"] == 1.0
    assert loaders["dali-cpu"]["backend"] == "dali-cpu"
    if torch.cuda.is_available():
        assert loaders["dali-gpu"]["status"] == "ok"
    else:
        assert loaders["dali-gpu"] == {**loaders["dali-gpu"], "status": "skipped", "reason": "no CUDA device"}
    # training fed by every loader that ran, and by the in-memory batch: on the CPU too, rounds interleaved
    train = result["train"]
    assert set(train) == {CEILING, "seed", "torch", "dali-cpu"} | ({"dali-gpu"} if torch.cuda.is_available() else set())
    for name, r in train.items():
        assert r["status"] == "ok" and len(r["rounds"]) == 2 and all(x > 0 for x in r["rounds"]), (name, r)
        assert r["images_per_s"] == statistics.median(r["rounds"]) and 0 <= r["host_wait_share"] <= 1
        assert r["share_of_ceiling"] == r["images_per_s"] / train[CEILING]["images_per_s"]
        assert r["share_of_ceiling_paired"] == pytest.approx(statistics.median(
            x / c for x, c in zip(r["rounds"], train[CEILING]["rounds"])))
        assert r["data_stall_share"] == pytest.approx(max(0.0, 1 - r["share_of_ceiling"]))
        # a loader-fed run faster than the ceiling is flagged, never reported as a valid share
        assert r["share_of_ceiling"] <= 1.0 or any("in-memory ceiling" in w for w in r["warnings"])
    assert train[CEILING]["share_of_ceiling"] == 1.0
    # --train-steps 2: exactly that, no budget sizing; the one measured step is recorded
    plan = result["train_plan"]
    assert plan["mode"] == "fixed" and plan["steps"] == 2 and plan["reason"] is None and plan["step_s"] > 0
    assert result["warnings"] == [f"{part} {name}: {w}" for part in ("loaders", "train")
                                  for name, r in result[part].items() for w in r.get("warnings", ())]
    table = format_table(result)
    assert "end-to-end ResNet-18 training" in table and f"  {CEILING}" in table
    _check_printed_ratios(table, result)
    assert "dali-gpu   skipped: no CUDA device" in table.splitlines() or torch.cuda.is_available()
    assert result["machine"]["cpu_count"] == os.cpu_count() and result["config"]["batch_size"] == 8
    assert result["config"] == dataclasses.asdict(cfg)


def test_default_run_sizes_training_to_the_budget_and_shows_the_eta(shards, tiny_dataset, caplog):
    import logging
    small = {"backends": ("dali-cpu",), "rounds": 1, "train_steps": None, "image_size": 16}
    # the loader rounds used the whole budget: no step is measured, no training runs, and the report says why
    with caplog.at_level(logging.INFO, logger="fastfashion.bench"):
        result = run_bench(_cfg(shards, tiny_dataset, **small, budget_s=0.01))
    plan = result["train_plan"]
    assert plan["mode"] == "budget" and plan["steps"] == 0 and "step_s" not in plan and "train" not in result
    assert re.fullmatch(r"the loader rounds took \d+ s of the 0 s budget, none is left to train; --full runs 30 "
                        r"steps, --train-steps N any number", plan["reason"]), plan["reason"]
    assert format_table(result).splitlines()[-1] == f"end-to-end ResNet-18 training not run: {plan['reason']}"
    # the ETA of the whole run is logged at each phase's end (a log file gets no bar)
    assert any(re.fullmatch(r"bench: loader rounds done \(1 loaders x 1 rounds\); \d+ s so far, about 0 s left", m)
               for m in caplog.messages), caplog.messages
    # budget left after the loaders: one step measured, then as many steps as fit (here the most, 30)
    roomy = run_bench(_cfg(shards, tiny_dataset, **small, budget_s=10_000))
    assert roomy["train_plan"]["step_s"] > 0 and roomy["train_plan"]["steps"] == 30
    assert roomy["train_plan"]["reason"] is None and set(roomy["train"]) == {CEILING, "dali-cpu"}
    # the long form is one flag away: --full runs its 30 steps whatever the budget
    full = run_bench(_cfg(shards, tiny_dataset, **small, budget_s=0.01, full=True))
    assert full["train_plan"]["mode"] == "full" and full["train_plan"]["steps"] == 30
    assert all(len(r["rounds"]) == 1 for r in full["train"].values())


def _check_printed_ratios(table: str, result: dict) -> None:
    """Each printed ratio is the ratio of the printed img/s beside it (up to their rounding), and the chart's label
    shows the same figure."""
    from fastfashion.bench.plots import bar_label
    lines = table.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.split()[:1] in (["seed"], ["torch"], ["dali-cpu"])
            and not ln.startswith(" ")}  # the loader table; the training rows are indented
    assert set(rows) == {"seed", "torch", "dali-cpu"}
    seed_ips = float(rows["seed"][1])
    for name, cols in rows.items():
        ips, ratio = float(cols[1]), float(cols[3])
        # img/s printed to the unit, the ratio to 0.01: the printed ratio is the printed img/s ratio up to rounding
        assert abs(ratio - ips / seed_ips) <= (0.5 + 0.5 * ips / seed_ips) / (seed_ips - 0.5) + 0.005 + 1e-9, cols
        label = bar_label(result["loaders"][name])
        assert abs(float(label.split("x")[0]) - ratio) <= 0.05 + 1e-9, (label, cols)
        assert cols[-1] == "NOISY" if result["loaders"][name]["warnings"] else cols[-1] != "NOISY"
    train = {ln.strip().split("  ")[0]: ln for ln in lines if "% of ceiling" in ln}
    assert set(train) >= {CEILING, "seed", "torch", "dali-cpu"}

    def img_s(ln: str) -> float:
        return float(re.search(r" ([\d.]+) img/s", ln).group(1))
    top = img_s(train[CEILING])
    for name, ln in train.items():
        share = float(re.search(r"([\d.]+)% of ceiling", ln).group(1))  # 0.1 %, of img/s printed to 0.1
        assert abs(share - 100 * img_s(ln) / top) <= 100 * 0.05 * (1 + img_s(ln) / top) / (top - 0.05) + 0.05 + 1e-9
        assert abs(float(bar_label(result["train"][name], "share_of_ceiling").split("%")[0]) - share) <= 0.5 + 1e-9
        assert ln.endswith("NOISY") == bool(result["train"][name]["warnings"])


def test_unknown_backend_is_an_error(shards, tiny_dataset):
    with pytest.raises(ValueError, match="^unknown backend 'fast'; choose from seed, dali-gpu, dali-cpu, torch$"):
        run_bench(_cfg(shards, tiny_dataset, backends=("fast",)))


def test_baseline_without_source_is_skipped_loudly(shards, tiny_dataset):
    cfg = BenchConfig(**{**_cfg(shards, tiny_dataset, backends=("seed", "dali-cpu")).__dict__, "source": None})
    result = run_bench(cfg)
    assert result["loaders"]["seed"]["status"] == "skipped"
    assert result["loaders"]["seed"]["reason"] == ("the seed-style baseline reads the raw image folder, and no source "
                                                   "folder was given")
    assert "ratio_to_baseline" not in result["loaders"]["dali-cpu"]


def test_bad_source_is_an_error_naming_the_file(shards, tiny_dataset, tmp_path):
    cfg = BenchConfig(**{**_cfg(shards, tiny_dataset, backends=("seed",)).__dict__, "source": str(tmp_path / "nope")})
    with pytest.raises(MissingSplitFileError,
                       match=f"^{re.escape(str(tmp_path / 'nope' / 'split' / 'train.txt'))}: split file is missing$"):
        run_bench(cfg)


def test_cli_writes_json_and_png(shards, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli.main(["bench", "--shards", str(shards), "--source", str(tiny_dataset), "--backends", "seed,dali-cpu",
                   "--batch-size", "8", "--image-size", "32", "--rounds", "1", "--batches", "1", "--warmup", "1",
                   "--workers", "0", "--train-steps", "2", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "dali-cpu" in printed and "x seed" in printed
    data = json.loads(out.read_text())
    assert set(data["loaders"]) == {"seed", "dali-cpu"}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_bench_runs_the_step_in_the_precision_asked(shards, tiny_dataset, tmp_path, capsys, monkeypatch):
    from fastfashion.train import device
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)  # bf16 autocast runs on any CPU, natively or not
    out = tmp_path / "amp.json"
    assert cli.main(["bench", "--shards", str(shards), "--backends", "dali-cpu", "--batch-size", "8",
                     "--image-size", "32", "--rounds", "1", "--batches", "1", "--warmup", "1", "--train-steps", "2",
                     "--precision", "amp", "--json", str(out)]) == 0
    assert "end-to-end ResNet-18 training (CPU, bf16 autocast, channels_last;" in capsys.readouterr().out
    train = json.loads(out.read_text())["train"]
    assert {r["precision"] for r in train.values()} == {"bf16"} and set(train) == {"in-memory batch (ceiling)",
                                                                                    "dali-cpu"}
    with pytest.raises(ValueError, match="^precision must be one of auto, amp, fp32, got 'fp8'$"):
        _cfg(shards, tiny_dataset, precision="fp8")


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path):
    from fastfashion.bench.demo import DemoConfig, run_demo
    s = run_demo(DemoConfig(out=str(tmp_path / "demo"), train=48, val=16, test=16, epochs=1, batch_size=16,
                            image_size=32, bench_rounds=1, bench_batches=1))
    assert set(s["timings_s"]) == {"synth", "read", "shard", "bench", "train", "evaluate", "predict"}
    assert sum(s["class_counts"]["fit"]) == 48
    # the val score of best.pt (a trained model's, so not knowable in advance): its val predictions, scored against
    # val_attr.txt, give the same number
    demo = tmp_path / "demo"
    val_pred = predict(demo / "run" / "best.pt", demo / "shards", tmp_path / "val.txt", split="val")
    preds = torch.tensor([[int(x) for x in ln.split()] for ln in val_pred.read_text().splitlines()])
    truth = torch.tensor([[int(x) for x in ln.split()] for ln in
                          (demo / "data" / "split" / "val_attr.txt").read_text().splitlines()])
    assert s["evaluate"]["avg_class_accuracy"] == pytest.approx(avg_class_accuracy(preds, truth, FASHION_SCHEMA),
                                                                abs=1e-12)
    lines = (tmp_path / "demo" / "prediction.txt").read_text().splitlines()
    assert len(lines) == 16 and all(re.fullmatch(r"\d \d \d \d \d \d", line) for line in lines)


def test_demo_never_wipes_a_foreign_folder(tmp_path):
    from fastfashion.bench.demo import DemoConfig, run_demo
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=f"^{re.escape(str(tmp_path))} exists and was not written by the demo; "
                                              "refusing to replace it$"):
        run_demo(DemoConfig(out=str(tmp_path)))
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_split_smaller_than_a_batch_is_skipped_with_a_reason(shards, tiny_dataset):
    result = run_bench(_cfg(shards, tiny_dataset, backends=("dali-cpu", "seed"), batch_size=1000))
    for name in ("dali-cpu", "seed"):
        assert result["loaders"][name]["status"] == "skipped"
        assert result["loaders"][name]["reason"] == "the train split is smaller than one batch of 1000"


@pytest.mark.parametrize("field,value,bound", [("batches", 0, 1), ("rounds", 0, 1), ("batch_size", 0, 1),
                                               ("warmup", -1, 0)])
def test_bench_config_is_validated(shards, tiny_dataset, field, value, bound):
    with pytest.raises(ValueError, match=f"^{field} must be >= {bound}, got {value}$"):
        _cfg(shards, tiny_dataset, **{field: value})


def test_cli_exits_1_when_no_backend_ran(shards, capsys):
    rc = cli.main(["bench", "--shards", str(shards), "--backends", "seed", "--rounds", "1", "--batches", "1"])
    assert rc == 1
    assert "fastfashion bench: error: no backend could run (see the reasons above)" in \
        capsys.readouterr().err.splitlines()


def test_time_to_accuracy_compares_best_so_far_at_every_epoch_end(tmp_path):
    from fastfashion.bench.plots import accuracy_at, plot_time_to_accuracy, time_to_accuracy

    def rows(points):
        return [{"minutes": m, "val": {"avg_class_accuracy": a}} for m, a in points]
    fast, seed = rows([(1.0, 0.30), (2.0, 0.28), (3.0, 0.40)]), rows([(1.5, 0.29), (3.0, 0.33)])
    assert accuracy_at(fast, 0.5) is None and accuracy_at(fast, 2.5) == 0.30 and accuracy_at(fast, 3.0) == 0.40
    assert time_to_accuracy({"fast": fast, "seed": seed}) == [
        {"minutes": 1.0, "fast": 0.30, "seed": None}, {"minutes": 1.5, "fast": 0.30, "seed": 0.29},
        {"minutes": 2.0, "fast": 0.30, "seed": 0.29}, {"minutes": 3.0, "fast": 0.40, "seed": 0.33}]
    try:
        path = plot_time_to_accuracy({"fast": fast, "seed": seed}, tmp_path / "t.png", target=0.45)
    except ImportError:  # matplotlib is optional
        return
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

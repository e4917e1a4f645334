"""`fastfashion bench` without measuring: the training part's plan, the ETA bar, noisy rounds flagged in the table,
the JSON and the chart (result dicts built here, so every figure is known)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from fastfashion import progress
from fastfashion.bench import budget
from fastfashion.bench.budget import FULL_TRAIN_STEPS, MIN_TRAIN_STEPS, RunClock, clock_text, plan_train_steps
from fastfashion.bench.plots import bar_label, plot_bench
from fastfashion.bench.report import format_table
from fastfashion.bench.rounds import NOISY_DISAGREEMENT, NOISY_SPREAD, noise_warnings
from fastfashion.bench.throughput import summarize_loaders
from fastfashion.bench.training import CEILING, _summarize


def test_training_steps_fit_the_budget_or_are_left_out_with_the_cost_of_full():
    # a GPU-like step: the long form fits easily
    assert plan_train_steps(step_s=0.05, feeders=4, rounds=5, warmup=3, seconds_left=120) == (FULL_TRAIN_STEPS, None)
    # in between: the most that fit. 4 feeders x 5 rounds x (3 + n) x 0.5 s <= 300 s -> n = 27
    assert plan_train_steps(step_s=0.5, feeders=4, rounds=5, warmup=3, seconds_left=300) == (27, None)
    # a fresh iterator's start per feeder and round counts too: 20 x (1 + 3 + n) x 0.5 + ... <= 300 -> n = 26
    assert plan_train_steps(step_s=0.5, feeders=4, rounds=5, warmup=3, seconds_left=300, start_s=0.5)[0] == 26
    # a 2-core CPU at 224 px (4 s a step): none, and the report says why and what --full costs:
    # 4 x 5 x (3 + 10) x 4 s = 17 min for the minimum, 4 x 5 x 33 x 4 s = 44 min for the long form
    steps, why = plan_train_steps(step_s=4.0, feeders=4, rounds=5, warmup=3, seconds_left=60)
    assert steps == 0
    assert why == (f"one training step takes 4.00 s here: {MIN_TRAIN_STEPS} timed steps per feeder and round "
                   "(4 feeders x 5 rounds) would take about 17 min, past the budget (60 s left of it); --full runs "
                   "30 steps (about 44 min), --train-steps N any number")
    assert plan_train_steps(step_s=4.0, feeders=4, rounds=5, warmup=3, seconds_left=-5)[1].count("(0 s left of it)")


def test_clock_shows_elapsed_and_the_estimate_left(capsys, caplog, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(budget, "time", SimpleNamespace(perf_counter=lambda: now[0]))  # the clock's own time
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    progress.set_enabled(True)
    try:
        clock = RunClock()
        clock.left = lambda: 125.0
        now[0] = 105.0
        clock.tick("loaders round 1/5: seed")
        assert clock.eta_text() == "00:05 elapsed, about 02:05 left: loaders round 1/5: seed"
        with caplog.at_level(logging.INFO, logger="fastfashion.bench.budget"):
            now[0] = 160.0
            clock.left = lambda: 30.0
            clock.phase("loader rounds done")
        assert caplog.messages == ["bench: loader rounds done; 60 s so far, about 30 s left"]
        clock.close()
    finally:
        progress.set_enabled(None)
    err = capsys.readouterr().err
    assert "bench:   4%|" in err and "00:05 elapsed, about 02:05 left: loaders round 1/5: seed" in err
    assert "bench: 100%|" in err and "01:00 elapsed, about 00:00 left: done" in err
    assert clock_text(3725) == "1:02:05"


# rounds interleaved: the medians are 879 and 769 img/s, the median of the same-round ratios 756 / 400 = 1.89
ISSUE_CASE = {"seed": [400, 420, 800, 769, 1000], "dali-cpu": [756, 879, 1600, 300, 1200]}


def _loader_result(rounds: dict[str, list[float]]) -> dict:
    return {name: {"status": "ok", "description": name, "rounds": list(r), "cpu_s": [1.0] * len(r),
                   "peak_rss": 2**20, "time_to_first_batch_s": 0.5} for name, r in rounds.items()}


def test_ratios_are_of_the_medians_and_disagreeing_rounds_are_flagged():
    # the issue's case: the medians say 879 vs 769 img/s (1.14x) while the same-round ratios' median says 1.89
    res = summarize_loaders(_loader_result(ISSUE_CASE))
    d = res["dali-cpu"]
    assert (d["images_per_s"], res["seed"]["images_per_s"]) == (879, 769)
    assert d["ratio_to_baseline"] == 879 / 769  # what the table prints beside 879 and 769
    assert d["ratio_to_baseline_paired"] == pytest.approx(1.89, abs=0.01)  # 756/400
    assert d["warnings"] == [f"rounds spread 148 % of their median (limit {100 * NOISY_SPREAD:.0f} %)",
                             f"ratio of the medians 1.14 vs 1.89 as the median of same-round ratios (limit "
                             f"{100 * NOISY_DISAGREEMENT:.0f} % apart)"]
    assert res["seed"]["warnings"] == [f"rounds spread 78 % of their median (limit {100 * NOISY_SPREAD:.0f} %)"]
    # quiet rounds: no warning
    quiet = summarize_loaders(_loader_result({"seed": [370, 360, 380], "dali-cpu": [1400, 1380, 1450]}))
    assert quiet["dali-cpu"]["warnings"] == [] and quiet["seed"]["warnings"] == []
    assert noise_warnings([1.0]) == []


def _result(loaders: dict, train: dict | None = None) -> dict:
    out = {"date": "2026-12-06T10:00:00", "machine": {"cpu": "CPU", "cpu_count": 2, "gpu": None},
           "config": {"batch_size": 64, "image_size": 224, "augment": True, "split": "train", "train_steps": None},
           "baseline": "seed", "loaders": loaders}
    if train is not None:
        out["train"], out["train_plan"] = train, {"mode": "budget", "steps": 12, "reason": None}
    return out


def test_noisy_rows_are_flagged_in_the_table_the_json_and_the_chart(tmp_path):
    loaders = summarize_loaders(_loader_result(ISSUE_CASE))
    # a loader-fed run faster than the in-memory ceiling: noise, not a 103 % share
    train = _summarize({CEILING: [(30.0, 0.0), (31.0, 0.0), (32.0, 0.0)],
                        "dali-cpu": [(31.5, 0.01), (32.0, 0.01), (33.0, 0.01)],
                        "seed": [(28.0, 0.05), (29.0, 0.05), (30.0, 0.05)]}, {}, torch.device("cpu"))
    assert train["dali-cpu"]["share_of_ceiling"] == 32.0 / 31.0
    assert train["dali-cpu"]["warnings"] == ["103.2 % of the in-memory ceiling, which a loader-fed run cannot beat: "
                                             "the rounds are too noisy to show the loader's cost"]
    assert train["seed"]["warnings"] == [] and train[CEILING]["warnings"] == []
    table = format_table(_result(loaders, train)).splitlines()
    row = next(ln for ln in table if ln.startswith("dali-cpu "))
    assert row.endswith("  NOISY") and " 1.14 " in row and "  879 " in row
    assert "! dali-cpu: ratio of the medians 1.14 vs 1.89 as the median of same-round ratios (limit 10 % apart)" \
        in table
    assert "! noisy rows are not valid measurements: more --rounds or --batches, or a quieter machine" in table
    train_row = next(ln for ln in table if ln.startswith("  dali-cpu "))
    assert train_row.endswith("  NOISY") and "103.2% of ceiling" in train_row
    assert next(ln for ln in table if ln.startswith("  seed ")).endswith("host wait   5.0%")  # not flagged
    assert "  ! dali-cpu: 103.2 % of the in-memory ceiling, which a loader-fed run cannot beat: the rounds are too " \
           "noisy to show the loader's cost" in table
    assert table[-1] == ("  ! noisy rows are not valid measurements: more --train-steps or --rounds, or a quieter "
                         "machine")
    # the chart's labels: the same figures, marked
    assert bar_label(loaders["dali-cpu"]) == "1.1x noisy" and bar_label(train["dali-cpu"], "share_of_ceiling") == \
        "103% noisy"
    assert bar_label(train["seed"], "share_of_ceiling") == "94%" and bar_label({"status": "ok"}) == ""
    pytest.importorskip("matplotlib")
    assert plot_bench(_result(loaders, train), tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_a_noisy_ceiling_flags_every_loader_fed_row():
    train = _summarize({CEILING: [(10.0, 0.0), (30.0, 0.0), (31.0, 0.0)],
                        "torch": [(20.0, 0.1), (21.0, 0.1), (22.0, 0.1)]}, {}, torch.device("cpu"))
    assert train[CEILING]["warnings"] == ["rounds spread 70 % of their median (limit 50 %)"]
    assert train["torch"]["warnings"][-1] == "the ceiling's rounds spread 70 % of their median (limit 50 %)"


def test_a_skipped_training_part_says_why():
    result = _result(summarize_loaders(_loader_result({"dali-cpu": [900.0]})))
    result["train_plan"] = {"mode": "budget", "steps": 0, "reason": "one training step takes 4.00 s here: ..."}
    assert format_table(result).splitlines()[-1] == ("end-to-end ResNet-18 training not run: one training step takes "
                                                     "4.00 s here: ...")
    result["train_plan"] = {"mode": "fixed", "steps": 0, "reason": "--train-steps 0"}  # asked for: nothing to say
    assert "training" not in format_table(result)

"""benchmarks/gpu_check.sh --dry-run: the GPU check's steps on the CPU (dali-cpu, a tiny fresh synthetic set), through
the same timing, archiving and exit-status code as the GPU run. One archive and one summary come out; a step made to
fail (GPU_CHECK_FAIL_STEP) or run out of the budget fails the script, named. The whole dry run, every step, is the
`long` variant; the quick one skips the slow steps (bench, ddp, the fast recipe ...), which the long one covers."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import needs_dali

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = ["env", "synth", "shard", "tests", "bench", "dali", "uint8", "cache", "train", "resume", "evaluate", "predict",
         "ddp", "fast"]
pytestmark = needs_dali


def dry_run(out: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", **env}
    full.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], env=full, capture_output=True, text=True,
                          timeout=1800)


def steps_of(out: Path) -> dict[str, str]:
    with tarfile.open(out / "gpu_check.tar.gz") as tf:
        text = tf.extractfile("./steps.tsv").read().decode()
    return {row.split("\t")[0]: row.split("\t")[1] for row in text.splitlines()[1:]}


def only(*run: str) -> str:
    return " ".join(s for s in STEPS if s not in run)


def test_dry_run_quick(tmp_path):
    """env, synth, shard, the correctness tests on dali-cpu, train and evaluate; one archive and one summary."""
    out = tmp_path / "results"
    proc = dry_run(out, GPU_CHECK_SKIP=only("env", "synth", "shard", "tests", "train", "evaluate"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.tar.gz", "summary.txt"]
    assert steps_of(out) == {s: "ok" if s in ("env", "synth", "shard", "tests", "train", "evaluate") else "skipped"
                             for s in STEPS}
    with tarfile.open(out / "gpu_check.tar.gz") as tf:
        names = set(tf.getnames())
    assert {"./env.json", "./train_metrics.json", "./train.log", "./evaluate.log", "./tests.log"} <= names
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("GPU check (dry run (CPU, dali-cpu))")
    assert "| step | status | seconds | limit s |" in summary
    assert "| train + resume | 1 |" in summary and summary.rstrip().endswith("all steps passed")
    assert proc.stdout.rstrip().endswith("all steps passed")


@pytest.mark.parametrize("env,failed", [
    ({"GPU_CHECK_FAIL_STEP": "shard", "GPU_CHECK_SKIP": only("synth", "shard")}, "shard"),
    ({"GPU_CHECK_BUDGET": "0", "GPU_CHECK_SKIP": only("synth")}, "synth"),  # over the budget: a failure, not a pass
])
def test_a_failed_step_fails_the_script_naming_it(tmp_path, env, failed):
    out = tmp_path / "results"
    proc = dry_run(out, **env)
    assert proc.returncode == 1
    assert proc.stdout.rstrip().splitlines()[-1].endswith(f"FAILED steps: {failed}")
    assert (out / "summary.txt").read_text().rstrip().endswith(f"FAILED steps: {failed}")
    assert steps_of(out)[failed] in ("failed (3)", "no time left")
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.tar.gz", "summary.txt"]


@pytest.mark.long  # every step: several minutes on 2 cores
def test_dry_run_every_step(tmp_path):
    out = tmp_path / "results"
    proc = dry_run(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert steps_of(out) == {s: "ok" for s in STEPS}
    summary = (out / "summary.txt").read_text()
    for heading in ("Loaders (`fastfashion bench`", "End-to-end ResNet-18 training", "Decoder cache",
                    "uint8 vs float delivery", "| dali-cpu uint8 |",
                    "| ddp (2 ranks, gloo) |", "| fast recipe |", "hw_decoder_load sweep skipped: no CUDA device"):
        assert heading in summary

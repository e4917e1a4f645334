"""The end-to-end demo: synth -> shard -> bench -> short train -> evaluate -> predict, on a small synthetic set.

Sized to finish in a few minutes on 2 CPU cores; on a CUDA machine the same steps use the DALI GPU path.
Everything it writes lives under ``out`` (default ``demo_out/``), which is replaced on each run; a non-empty
folder the demo did not create is never touched.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

from ..options import option

log = logging.getLogger(__name__)

MARKER = ".fastfashion-demo"  # marks a folder the demo may replace


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    out: str = option("demo_out", metavar="DIR", help="output folder, replaced on each run (default: %(default)s)")
    train: int = option(512, help=(  # about a minute on 2 cores, end to end
        "synthetic train images (default: %(default)s)"))
    val: int = 128
    test: int = 128
    image_size: int = 64      # training resolution: the synthetic attributes stay visible at 64 px
    epochs: int = option(10, help=(  # the demo recipe's linear decay: about 0.5 val average class accuracy
        "training epochs (default: %(default)s)"))
    recipe: str = "demo"      # train/recipes.py
    batch_size: int = 32
    bench_rounds: int = 3
    bench_batches: int = 5
    bench_train_steps: int = 4  # training steps per feeder and round: a glimpse; `fastfashion bench` measures
    seed: int = 0


def run_demo(cfg: DemoConfig = DemoConfig()) -> dict:
    """Run every stage once; returns a summary dict (paths, bench table, metrics). Raises what a stage raises."""
    from ..data.shard import ShardConfig, write_shards
    from ..data.source import class_counts, read_source
    from ..data.synth import SynthConfig, synthesize
    from ..errors import TargetExistsError, fixable
    from ..format.spec import TEST, TRAIN, VAL
    from ..train.inference import evaluate_checkpoint, predict
    from ..train.recipes import recipe_config
    from ..train.trainer import train
    from .report import run_bench
    from .throughput import BenchConfig

    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():  # never wipe a folder the demo did not create
            raise fixable(TargetExistsError(f"{out} exists and was not written by the demo; refusing to replace it"),
                          "out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `fastfashion demo`; the next demo run replaces this folder\n")
    summary: dict = {"out": str(out), "timings_s": {}}

    def stage(name: str, fn):
        log.info("demo: %s", name)
        t0 = time.perf_counter()
        result = fn()
        summary["timings_s"][name] = round(time.perf_counter() - t0, 2)
        return result

    # balanced: every class drawn equally often, so that a few hundred images hold every class several times (at the
    # real frequencies the rarest classes get one image or none, and the average class accuracy measures luck)
    data = stage("synth", lambda: synthesize(out / "data", SynthConfig(train=cfg.train, val=cfg.val, test=cfg.test,
                                                                      seed=cfg.seed, balanced=True)))
    records = stage("read", lambda: read_source(data))
    summary["class_counts"] = class_counts(records[TRAIN])
    shard_dir = out / "shards"
    manifest = stage("shard", lambda: write_shards(data, shard_dir, ShardConfig(seed=cfg.seed)))
    summary["shards"] = {s: len(v["shards"]) for s, v in manifest["splits"].items()}
    summary["bench"] = stage("bench", lambda: run_bench(BenchConfig(
        shard_dir=str(shard_dir), source=str(data), batch_size=cfg.batch_size, image_size=cfg.image_size,
        rounds=cfg.bench_rounds, batches=cfg.bench_batches, warmup=1, train_steps=cfg.bench_train_steps,
        seed=cfg.seed)))
    run = out / "run"
    summary["train"] = stage("train", lambda: train(recipe_config(
        cfg.recipe, shard_dir=str(shard_dir), out=str(run), epochs=cfg.epochs, batch_size=cfg.batch_size,
        image_size=cfg.image_size, seed=cfg.seed)))
    summary["evaluate"] = stage("evaluate", lambda: evaluate_checkpoint(run / "best.pt", shard_dir, split=VAL))
    summary["prediction"] = str(stage("predict", lambda: predict(run / "best.pt", shard_dir, out / "prediction.txt",
                                                                  split=TEST)))
    return summary

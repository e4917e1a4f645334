"""The thin command line: one subcommand per verb, each builds a config and calls one library function.

Only this module prints results; the library logs and shows progress bars (:mod:`fastfashion.progress`: only when
stderr is a terminal, so a log file gets the one summary line per epoch or stage instead of bar frames). Library
errors state what is wrong, tagged with the parameter that fixes them (:mod:`fastfashion.errors`); :data:`ADVICE`
names the flag.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import traceback

from .format.spec import TEST, VAL
from .options import add_options, config_from_args, config_values

EXIT_USAGE = 2
EXIT_SIGINT = 130  # 128 + SIGINT, as a shell reports it
EXIT_SIGTERM = 143  # 128 + SIGTERM: schedulers treat it as 'terminated', not 'failed'


SYNTH_DESCRIPTION = ("Write a synthetic FashionDataset: img/*.jpg and split/*.txt in exactly the real layout and byte "
                     "formats, with the real image sizes and class imbalance. Each attribute is visibly rendered, so a "
                     "model can learn it. Deterministic for --seed.")


def _add_synth(sub) -> None:
    from .data.synth import SynthConfig
    p = sub.add_parser("synth", description=SYNTH_DESCRIPTION,
                       help="write a learnable synthetic FashionDataset (same layout as the real one)")
    p.add_argument("data_dir", metavar="DATA_DIR", help="data set folder to create (must not exist or be empty)")
    add_options(p, SynthConfig)
    p.add_argument("--overwrite", action="store_true", help="replace DATA_DIR if it exists")
    p.set_defaults(func=_run_synth)


def _add_shard(sub) -> None:
    from .data.shard import ShardConfig
    p = sub.add_parser(
        "shard", help="pack a folder (FashionDataset layout) or a CSV into validated WebDataset shards with DALI "
                      "indexes and a manifest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Validate SRC completely, then write per split {split}-NNNNN.tar (webdataset), a DALI\n"
                    "index {split}-NNNNN.idx beside each, {split}.wids.json and manifest.json. SRC is a folder with\n"
                    "img/ and split/ (the FashionDataset layout; schema: split/schema.json or\n"
                    "split/list_attr_cloth.txt) or a CSV with a header path,ATTRIBUTE,...[,split] (values: class\n"
                    "names or ids; schema: schema.json beside it, else inferred from the values). Train samples are\n"
                    "shuffled by --seed; val and test keep file order. SRC and SHARD_DIR may be URLs (s3://, gs://,\n"
                    "http(s):// for SRC). --engine ray runs the same tasks on a Ray cluster: the output is\n"
                    "byte-identical. A failed or interrupted run leaves no shard set; the same command run again\n"
                    "reuses every shard it committed (kept in .SHARD_DIR.partial beside a local SHARD_DIR).",
        epilog="Samples: KEY.jpg (original JPEG bytes), KEY.lbl (labels, little-endian int64 per attribute; all -1\n"
               "for an unlabelled sample), KEY.json ({\"path\": ..., \"labels\": {attribute: class name},\n"
               "\"label_ids\": {attribute: class id}}, null labels when unlabelled).\n\n"
               "JPEG policy: every image is fully decoded once. Accepted: baseline or progressive JPEG, RGB or "
               "grayscale\n(decoders expand grayscale to R=G=B). Rejected: truncated or corrupt data, non-JPEG data "
               "(e.g. PNG named .jpg),\nCMYK/YCCK JPEGs (decoders disagree on their colours). Rejected images, "
               "missing images and bad label lines\nare fatal (error names file:line) unless --skip-bad; structural "
               "problems (missing split files, line-count\nmismatch, duplicate keys) are always fatal.")
    p.add_argument("src_dir", metavar="SRC", help="a folder (img/, split/) or a labels .csv; a path or a URL")
    p.add_argument("shard_dir", metavar="SHARD_DIR", nargs="?", default=None,
                   help="shard folder to create, a path or a URL (default: shards/<name of SRC>)")
    add_options(p, ShardConfig)
    _add_remote(p, cache=False, title="storage (SRC or SHARD_DIR as a URL: s3://, gs://, https://, file://)")
    p.set_defaults(func=_run_shard)


def _add_index(sub) -> None:
    from .data.adopt import IndexConfig
    p = sub.add_parser("index", help="adopt WebDataset tars written by any tool: write their DALI indexes, wids "
                                     "indexes and a manifest",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Check every sample of the *.tar files in SHARD_DIR (a .jpg member that starts like "
                                   "a JPEG,\nlabels that fit the schema, unique keys), then write NAME.idx beside each "
                                   "tar, {split}.wids.json\nand manifest.json; the tars are not changed. Splits come "
                                   "from the tar names (train-*.tar,\nval-*.tar, test-*.tar) or --split. Labels: .lbl "
                                   "(int64 per attribute), .cls (one attribute) or\n.json (class ids or names); the "
                                   "schema from --schema, else inferred from the labels.")
    p.add_argument("shard_dir", metavar="SHARD_DIR", help="a folder of WebDataset .tar files")
    add_options(p, IndexConfig)
    p.set_defaults(func=_run_index)


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="print a shard set's manifest summary and write class-histogram PNGs",
                       description="Print the manifest summary of a shard set (source, options, per split samples, "
                                   "shards, class counts with the trainer's class weights, skipped samples) and write "
                                   "a class-histogram PNG per labelled split.")
    p.add_argument("shard_dir", metavar="SHARD_DIR", help="a shard folder written by 'fastfashion shard'")
    p.add_argument("--plots", metavar="DIR", default=None,
                   help="folder for the PNGs class-hist-{split}.png (default: SHARD_DIR)")
    p.add_argument("--verify", action="store_true", help="also check every tar's and idx's sha256 against the manifest "
                                                         "(a URL: every object is downloaded once and checked)")
    _add_remote(p, cache=False)
    p.set_defaults(func=_run_inspect)


def _add_train(sub) -> None:
    from .train.config import TrainConfig
    from .train.recipes import RECIPE_NOTES, RECIPE_OPTIONS, recipe_note
    recipes = "; ".join(f"{name} = {note}" for name, note in RECIPE_NOTES.items())
    p = sub.add_parser("train", help="train the ResNet-18 multi-head model on a shard set",
                       description="Train FashionNet (ResNet-18 trunk, one head per category) with a named recipe "
                                   f"(--recipe: {recipes}; the recipe options below show each recipe's values, every "
                                   "option overrides its recipe, --print-config shows the result). Multi-head "
                                   "cross-entropy (--class-balance); AMP + channels_last on CUDA. Writes "
                                   "RUN_DIR/last.pt every epoch, best.pt (best val average class accuracy), "
                                   "metrics.json and curves.png. Multi-GPU: torchrun --nproc_per_node=N -m "
                                   "fastfashion train ...")
    first = ("shard_dir", "out", "recipe")
    add_options(p, TrainConfig, first)
    p.add_argument("--print-config", action="store_true", help="print the resulting config as JSON and exit")
    add_options(p, TrainConfig, exclude=(*first, *RECIPE_OPTIONS, *LOADER_OPTIONS))
    recipe_group = p.add_argument_group("recipe options (default: the recipe's value)")
    add_options(recipe_group, TrainConfig, RECIPE_OPTIONS, unset=True, note=recipe_note)
    _add_device_backend(p)
    p.set_defaults(func=_run_train, subparser=p)


LOADER_OPTIONS = ("device", "verify", "backend", "loader_output")  # TrainConfig's: flags of train, evaluate, predict


def _add_device_backend(p) -> None:
    from .train.config import TrainConfig
    add_options(p, TrainConfig, LOADER_OPTIONS)
    _add_remote(p)


def _add_remote(p, *, cache: bool = True, title: str = "remote shards (SHARD_DIR as a URL: s3://, gs://, https://, "
                                                        "file://)") -> None:
    """Options of a shard set at a URL (s3://, gs://, https://, file://): how to reach it and where to cache it."""
    from .remote.store import RemoteConfig
    g = p.add_argument_group(title)
    add_options(g, RemoteConfig, exclude=() if cache else ("cache_dir", "cache_limit", "offline"))


def _remote_config(args):
    """The :class:`~fastfashion.remote.store.RemoteConfig` of the remote options."""
    from .remote.store import RemoteConfig
    return config_from_args(RemoteConfig, args)


def _add_eval_common(p, default_split: str) -> None:
    p.add_argument("--shards", required=True, metavar="SHARD_DIR", dest="shard_dir",
                   help="a shard folder written by 'fastfashion shard'")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by train (best.pt)")
    p.add_argument("--split", default=default_split, metavar="SPLIT", help="split (default: %(default)s)")
    p.add_argument("--batch-size", type=int, metavar="N", default=64, help="batch size (default: %(default)s)")
    from .train.config import TTA_CHOICES
    p.add_argument("--tta", choices=TTA_CHOICES, default="none",
                   help="test-time augmentation: flip = average the logits of each image and its mirror image "
                        "(twice the compute; default: %(default)s)")
    _add_device_backend(p)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a labelled split",
                       description="Print the official average class accuracy (flat mean of the per-class recalls; "
                                   "a class absent from the split is excluded and listed), accuracy, per-attribute "
                                   "accuracy and the (unweighted) loss of a checkpoint on a labelled split.")
    _add_eval_common(p, VAL)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_run_evaluate)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="write prediction.txt (submission format) for a split",
                       description="Write one line of class ids per image (one id per attribute, schema order), "
                                   "in split-file order, LF endings: the submission format.")
    _add_eval_common(p, TEST)
    p.add_argument("--out", required=True, metavar="prediction.txt", help="text file to write")
    p.add_argument("--zip", action="store_true", help="also write the .zip beside it (prediction.txt alone inside)")
    p.set_defaults(func=_run_predict)


def _add_bench(sub) -> None:
    from .bench.throughput import DESCRIPTIONS, BenchConfig
    backends = "\n".join(f"  {n:<9} {d}" for n, d in DESCRIPTIONS.items())
    p = sub.add_parser("bench", help="measure loader throughput of every backend side by side",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=f"backends:\n{backends}",
                       description=textwrap.fill(
                           "Measure images/s of every loader backend on the same split, batch size and augmentation, "
                           "rounds interleaved so a noisy machine slows all alike; report the median and spread, the "
                           "ratio of the medians to the seed-style baseline's, host CPU seconds per 1,000 images, "
                           "peak memory and time to first batch, and flag rows whose rounds are too noisy to report. "
                           "Then ResNet-18 training images/s fed by each backend against the same model fed an "
                           "in-memory batch (the ceiling), on CUDA or the CPU, with as many steps as fit --budget "
                           "(about 3 minutes in all) after measuring one step: on a GPU the full 30, on a 2-core CPU "
                           "at 224 px none (a step takes seconds; the report says what --full would cost). --full "
                           "runs the long form, --train-steps N exactly N steps, --train-steps 0 no training. A "
                           "progress bar shows the ETA of the whole run.", 100))
    add_options(p, BenchConfig)
    p.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    p.add_argument("--png", metavar="FILE", help="write a bar chart (default: beside --json, else none)")
    _add_remote(p)  # a URL --shards: also the cold-cache epoch and warm throughput beside the local copy
    p.set_defaults(func=_run_bench)


def _add_demo(sub) -> None:
    from .bench.demo import DemoConfig
    p = sub.add_parser("demo",
                       help="synth -> shard -> bench -> short train -> evaluate -> predict, small synthetic set",
                       description="Run every stage once on a small synthetic data set (about a minute on 2 CPU "
                                   "cores): synthesize, read back, shard, benchmark the loaders side by side, train "
                                   "ResNet-18 with the demo recipe at 64 px, evaluate on val and write test "
                                   "predictions. The synthetic classes are drawn uniformly, so that every class has "
                                   "images in a few hundred.")
    add_options(p, DemoConfig)
    p.epilog = "The output folder is replaced on each run, but only if an earlier demo wrote it."
    p.set_defaults(func=_run_demo)


def _add_common(p) -> None:
    """-v/-q, accepted before the verb and after it."""
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="log warnings only, no progress bars")


# what each verb runs
def _run_synth(args) -> int:
    from .data.synth import SynthConfig, synthesize
    cfg = config_from_args(SynthConfig, args)
    out = synthesize(args.data_dir, cfg, overwrite=args.overwrite)
    print(f"wrote {cfg.total} images to {out}")
    return 0


def _run_shard(args) -> int:
    import time

    from .data.shard import ShardConfig, default_shard_dir, write_shards
    from .format.manifest import ordered_splits
    cfg = config_from_args(ShardConfig, args)  # --schema FILE and --split-ratio text parsed here (errors exit 1)
    out = args.shard_dir or default_shard_dir(args.src_dir)
    t0 = time.perf_counter()
    m = write_shards(args.src_dir, out, cfg, remote=_remote_config(args))
    dt = time.perf_counter() - t0
    splits = ", ".join(f"{k} {v['num_samples']} in {len(v['shards'])} shards" for k, v in ordered_splits(m))
    n = sum(v["num_samples"] for v in m["splits"].values()) + len(m["skipped"])
    print(f"wrote {out}: {splits}; {len(m['skipped'])} skipped ({dt:.1f} s, {n / max(dt, 1e-9):.0f} img/s, "
          f"{cfg.engine} engine)")
    return 0


def _run_index(args) -> int:
    from .data.adopt import IndexConfig, index_shards
    from .format.manifest import ordered_splits
    cfg = config_from_args(IndexConfig, args)
    m = index_shards(args.shard_dir, cfg)
    splits = ", ".join(f"{k} {v['num_samples']} in {len(v['shards'])} shards" + ("" if v["labelled"] else
                       " (unlabelled)") for k, v in ordered_splits(m))
    attrs = ", ".join(f"{a['name']} ({len(a['classes'])})" for a in m["schema"]["attributes"])
    print(f"indexed {args.shard_dir}: {splits}; labels from .{m['label_member']}: {attrs}")
    return 0


def _run_inspect(args) -> int:
    from pathlib import Path

    from .shardset import ShardSet
    from .train.balance import train_class_weights
    with ShardSet.open(args.shard_dir, remote=_remote_config(args)) as shards:  # a URL: the manifest only
        weights = train_class_weights(shards.manifest)
        print(shards.summary(weights))
        if args.verify:
            shards.verify_all()
            print("verify: every tar and idx matches its sha256")
        if shards.url and not args.plots:  # no folder to put the histograms in: --plots DIR names one
            print("no class histograms written (the set is a URL): pass --plots DIR to write them there")
            return 0
        try:
            from .bench.plots import plot_class_histogram
        except ImportError as e:
            print(f"no class histograms: {e}", file=sys.stderr)
            return 0
        out = Path(args.plots or args.shard_dir)
        out.mkdir(parents=True, exist_ok=True)
        wrote = False
        for split in shards.splits:
            s = shards.entry(split)
            if s.get("class_counts"):
                path = plot_class_histogram(s["class_counts"], shards.schema, out / f"class-hist-{split}.png",
                                            weights=weights, title=f"{split}: {s['num_samples']} samples (dots: "
                                                                   "train class weights)")
                print(f"wrote {path}")
                wrote = True
        if not wrote:
            print("no class histograms written: no split is labelled")
    return 0


def _run_train(args) -> int:
    from .train.config import TrainConfig
    from .train.recipes import format_config, recipe_config
    values = config_values(TrainConfig, args)  # recipe options not given are left out: the recipe's value
    cfg = recipe_config(values.pop("recipe"), **{**values, "shard_dir": args.shard_dir, "out": args.out},
                        remote=_remote_config(args))
    if args.print_config:
        print(format_config(cfg))
        return 0
    missing = [flag for flag, v in (("--shards", args.shard_dir), ("--out", args.out)) if v is None]
    if missing:
        args.subparser.error(f"{' and '.join(missing)} required (unless --print-config)")
    from .train.trainer import train
    result = train(cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"trained {result['epochs']} epochs ({result['steps']} steps); best val average class accuracy "
              f"{result['best_avg_class_accuracy']:.4f}; checkpoints and metrics in {result['out']}")
    return 0


def _run_evaluate(args) -> int:
    import json

    from .train.inference import evaluate_checkpoint
    m = evaluate_checkpoint(args.checkpoint, args.shard_dir, split=args.split, batch_size=args.batch_size,
                            device=args.device, backend=args.backend, verify=args.verify,
                            remote=_remote_config(args), tta=args.tta, output=args.loader_output)
    if args.json:
        print(json.dumps(m, indent=1))
        return 0
    def num(v) -> str:  # None: undefined (no labelled sample of that kind)
        return "n/a" if v is None else f"{v:.4f}"

    tta = "" if m["tta"] == "none" else f", test-time {m['tta']}"
    print(f"{m['split']}: {m['num_samples']} samples, checkpoint {m['checkpoint']} (run {m['run_id'] or 'unknown'})"
          f"{tta}")
    print(f"  average class accuracy  {num(m.get('avg_class_accuracy'))}")
    print(f"  accuracy                {num(m.get('accuracy'))}")
    print(f"  loss                    {num(m.get('loss'))}")
    for name, acc in m["per_attribute"].items():
        print(f"  {name:<22}  {num(acc)}")
    if m["absent_classes"]:
        print(f"  absent from the split (excluded from the average): {', '.join(m['absent_classes'])}")
    return 0


def _run_predict(args) -> int:
    from .train.inference import predict
    out = predict(args.checkpoint, args.shard_dir, args.out, split=args.split, zip_=args.zip,
                  batch_size=args.batch_size, device=args.device, backend=args.backend, verify=args.verify,
                  remote=_remote_config(args), tta=args.tta, output=args.loader_output)
    print(f"wrote {out}" + (f" and {out.with_suffix('.zip')}" if args.zip else ""))
    return 0


def _run_bench(args) -> int:
    import json

    from .bench.report import format_table, run_bench
    from .bench.throughput import BenchConfig
    from .fsutil import unwritable
    for path in filter(None, (args.json, args.png)):  # checked before minutes of measuring, not after
        problem = unwritable(path)
        if problem:
            print(f"fastfashion bench: error: cannot write {path}: {problem}; choose another --json/--png",
                  file=sys.stderr)
            return 1
    cfg = config_from_args(BenchConfig, args, remote=_remote_config(args))
    result = run_bench(cfg)
    print(format_table(result))
    for name, r in result["loaders"].items():
        if r["status"] != "ok" and r.get("fix") in ADVICE:
            print(f"fastfashion bench: {name}: {ADVICE[r['fix']]}", file=sys.stderr)
    if not any(r["status"] == "ok" for r in result["loaders"].values()):
        print("fastfashion bench: error: no backend could run (see the reasons above)", file=sys.stderr)
        return 1
    if args.json:
        from .format.atomic import write_file
        write_file(args.json, lambda tmp: tmp.write_text(json.dumps(result, indent=2, sort_keys=True)))
        print(f"wrote {args.json}")
    png = args.png or (os.path.splitext(args.json)[0] + ".png" if args.json else None)
    if png:
        try:
            from .bench.plots import plot_bench
            print(f"wrote {plot_bench(result, png)}")
        except ImportError as e:  # matplotlib is optional on an offline GPU machine
            print(f"no bar chart: {e}", file=sys.stderr)
    return 0


def _run_demo(args) -> int:
    from .bench.demo import DemoConfig, run_demo
    from .bench.report import format_table
    s = run_demo(config_from_args(DemoConfig, args, val=max(16, args.train // 4), test=max(16, args.train // 4)))
    print("train class histogram (synthetic, classes drawn uniformly):")
    for attr, counts in s["class_counts"].items():
        print(f"  {attr:<9} {' '.join(f'{c:>4}' for c in counts)}")
    print(f"shards per split: {s['shards']}")
    print(format_table(s["bench"]))
    ev = s["evaluate"]
    print(f"val after {args.epochs} epochs of the demo recipe: avg class accuracy {ev['avg_class_accuracy']:.3f} "
          f"(one class per category: 0.231), accuracy {ev['accuracy']:.3f}")
    print(f"predictions: {s['prediction']}; stage seconds: {s['timings_s']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="fastfashion",
        description="Validated WebDataset shards and an NVIDIA DALI pipeline (GPU decode + augmentation) feeding a "
                    "ResNet-18 multi-head trainer for the fashion-attribute task.",
        epilog="Typical flow: fastfashion synth data/ (or use the real FashionDataset) -> fastfashion shard data/ "
               "-> fastfashion train --shards shards/data --out runs/r1 -> fastfashion evaluate / predict.")
    parser.add_argument("--version", action="version", version=f"fastfashion {__version__}")
    _add_common(parser)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for add in (_add_synth, _add_shard, _add_index, _add_inspect, _add_train, _add_evaluate, _add_predict, _add_bench,
                _add_demo):
        add(sub)
    for p in sub.choices.values():
        _add_common(p)
    return parser


ADVICE = {  # library parameter (errors.fixable) -> what to do on the command line
    "overwrite": "pass --overwrite to replace it",
    "skip_bad": "use --skip-bad to leave bad samples out",
    "weights": "pass --weights PATH with a local ResNet-18 or FashionNet state dict",
    "batch_size": "lower --batch-size",
    "source": "pass --source SRC_DIR to measure the seed-style baseline",
    "out": "choose another --out",
    "split": "choose another --split (evaluate needs a labelled one; predict reads any)",
    "shard_dir": "create one with 'fastfashion shard SRC_DIR SHARD_DIR'",
    "storage_options": "check --storage-option (endpoint_url, anon, region) and the credentials in the environment",
    "cache_limit": "raise --cache-limit (or drop it)",
    "cache_dir": "free space there or choose another --cache-dir",
    "offline": "run once without --offline to fill the cache",
    "use_offline": "pass --offline to read it from the cache",
    "resume_or_overwrite": "pass --resume to continue it, or --overwrite to start over",
    "index_split": "name the tars train-*.tar, val-*.tar, test-*.tar, or pass --split SPLIT",
    "schema": "pass --schema FILE",
}


def _advice(message: str, param: str | None) -> str:
    """The library's message, plus the command-line fix for the parameter it names (see errors.fixable)."""
    return f"{message}; {ADVICE[param]}" if param in ADVICE else message


def _torchrun_rank() -> tuple[int, bool]:
    """(this process's rank, whether it is one of several) from torchrun's RANK and WORLD_SIZE; (0, False) outside
    torchrun or when they are not integers (the loader reports those)."""
    try:
        return int(os.environ.get("RANK") or 0), int(os.environ.get("WORLD_SIZE") or 1) > 1
    except ValueError:
        return 0, False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return EXIT_USAGE
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    # under torchrun every rank runs this: INFO once per run (rank 0), warnings and errors from every rank, named
    rank, ranked = _torchrun_rank()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING if quiet or rank else logging.INFO,
                        format="%(levelname)s " + (f"rank {rank} " if ranked else "") + "%(name)s: %(message)s")
    from .errors import Terminated, terminate_on_sigterm, terminated
    from .fsutil import clean_dead_owners
    from .progress import set_enabled
    from .signals import finished, install_watchdog
    set_enabled(False if quiet else None)  # None: bars only when stderr is a terminal
    try:
        terminate_on_sigterm()  # SIGTERM cleans up like Ctrl-C
        install_watchdog(f"fastfashion {args.verb}: terminated (SIGTERM)")  # and within seconds even in a C call
        clean_dead_owners()  # temporaries of killed runs (only those whose process is gone)
        rc = int(args.func(args) or 0)
        if terminated():  # the exception was swallowed (raised inside a __del__): still a terminated run
            raise Terminated("signal 15")
        return rc
    except Terminated as e:
        if hasattr(e, "signum"):  # training stopped cleanly after writing a checkpoint (train.preemption)
            print(f"fastfashion {args.verb}: {e}", file=sys.stderr)
            return 128 + int(e.signum)
        print(f"fastfashion {args.verb}: terminated (SIGTERM); temporary files removed", file=sys.stderr)
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        print(f"fastfashion {args.verb}: interrupted; temporary files removed", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:  # the reader of our output went away (`... | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        # The caller's or the environment's problem (errors.user_facing: a FastfashionError, an OSError with the
        # OS's errno, out of memory) is one line and its exit_code (1); anything else is a bug in fastfashion: its
        # traceback, one line asking for a report, and 70 (EX_SOFTWARE). -v raises everything (a traceback, 1).
        if verbose:
            raise
        from . import __version__
        from .errors import EXIT_SOFTWARE, fix_param, out_of_memory, user_facing
        if not user_facing(e):
            traceback.print_exc()
            print(f"fastfashion {args.verb}: internal error (a bug in fastfashion {__version__}): please report it "
                  "with the traceback above", file=sys.stderr)
            return EXIT_SOFTWARE
        if out_of_memory(e):  # torch's message goes on for lines; its first says what was asked for
            text = (str(e).strip() or "out of memory").splitlines()[0]
            print(f"fastfashion {args.verb}: error: {_advice(text, fix_param(e) or 'batch_size')}", file=sys.stderr)
            return 1
        print(f"fastfashion {args.verb}: error: {_advice(str(e), fix_param(e))}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    finally:
        finished()  # the last line is written: a watchdog firing during the exit adds none


if __name__ == "__main__":
    sys.exit(main())

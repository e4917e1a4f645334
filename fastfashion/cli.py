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

from .format.spec import TEST, TRAIN, VAL

EXIT_USAGE = 2
EXIT_SIGINT = 130  # 128 + SIGINT, as a shell reports it
EXIT_SIGTERM = 143  # 128 + SIGTERM: schedulers treat it as 'terminated', not 'failed'


SYNTH_DESCRIPTION = ("Write a synthetic FashionDataset: img/*.jpg and split/*.txt in exactly the real layout and byte "
                     "formats, with the real image sizes and class imbalance. Each attribute is visibly rendered, so a "
                     "model can learn it. Deterministic for --seed.")


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", description=SYNTH_DESCRIPTION,
                       help="write a learnable synthetic FashionDataset (same layout as the real one)")
    p.add_argument("data_dir", metavar="DATA_DIR", help="data set folder to create (must not exist or be empty)")
    p.add_argument("--train", type=int, metavar="N", default=5000,
                   help="train images (default: %(default)s, like the real set)")
    p.add_argument("--val", type=int, metavar="N", default=1000, help="val images (default: %(default)s)")
    p.add_argument("--test", type=int, metavar="N", default=1000, help="test images, unlabelled (default: %(default)s)")
    p.add_argument("--seed", type=int, metavar="N", default=0, help="random seed (default: %(default)s)")
    p.add_argument("--workers", type=int, metavar="N", default=None,
                   help="processes (default: all CPU cores); the output does not depend on it")
    p.add_argument("--overwrite", action="store_true", help="replace DATA_DIR if it exists")
    p.set_defaults(func=_run_synth)


def _add_shard(sub) -> None:
    p = sub.add_parser(
        "shard", help="pack a folder (FashionDataset layout) or a CSV into validated WebDataset shards with DALI "
                      "indexes and a manifest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Validate SRC completely, then write per split {split}-NNNNN.tar (webdataset), a DALI\n"
                    "index {split}-NNNNN.idx beside each, {split}.wids.json and manifest.json. SRC is a folder with\n"
                    "img/ and split/ (the FashionDataset layout; schema: split/schema.json or\n"
                    "split/list_attr_cloth.txt) or a CSV with a header path,ATTRIBUTE,...[,split] (values: class\n"
                    "names or ids; schema: schema.json beside it, else inferred from the values). Train samples are\n"
                    "shuffled by --seed; val and test keep file order. Built in a temporary folder and renamed at\n"
                    "the end: a failed or interrupted run leaves nothing behind.",
        epilog="Samples: KEY.jpg (original JPEG bytes), KEY.lbl (labels, little-endian int64 per attribute; all -1\n"
               "for an unlabelled sample), KEY.json ({\"path\": ..., \"labels\": {attribute: class name},\n"
               "\"label_ids\": {attribute: class id}}, null labels when unlabelled).\n\n"
               "JPEG policy: every image is fully decoded once. Accepted: baseline or progressive JPEG, RGB or "
               "grayscale\n(decoders expand grayscale to R=G=B). Rejected: truncated or corrupt data, non-JPEG data "
               "(e.g. PNG named .jpg),\nCMYK/YCCK JPEGs (decoders disagree on their colours). Rejected images, "
               "missing images and bad label lines\nare fatal (error names file:line) unless --skip-bad; structural "
               "problems (missing split files, line-count\nmismatch, duplicate keys) are always fatal.")
    p.add_argument("src_dir", metavar="SRC", help="a folder (img/, split/) or a labels .csv")
    p.add_argument("shard_dir", metavar="SHARD_DIR", nargs="?", default=None,
                   help="shard folder to create (default: shards/<name of SRC>)")
    p.add_argument("--schema", metavar="FILE", default=None,
                   help="the attribute schema: JSON {\"attributes\": [{\"name\": ..., \"classes\": [...]}, ...]} "
                        "or a list_attr_cloth.txt (default: the source's own); a schema file in the source must agree")
    p.add_argument("--images", metavar="DIR", default=None,
                   help="CSV source: the folder its image paths are relative to (default: the CSV's folder)")
    p.add_argument("--split-ratio", metavar="TRAIN,VAL,TEST", default="0.8,0.1,0.1",
                   help="CSV without a split column: fractions of rows dealt to train, val and test by --seed "
                        "(default: %(default)s)")
    from .data.shard import DEFAULT_SAMPLES_PER_SHARD
    p.add_argument("--samples-per-shard", type=int, metavar="N", default=DEFAULT_SAMPLES_PER_SHARD,
                   help="samples per tar (default: %(default)s: the real train split becomes 10 shards of ~6 MB, "
                        "enough to spread whole shards over ranks x loader workers)")
    p.add_argument("--workers", type=int, metavar="N", default=None,
                   help="validation processes (default: all CPU cores); the output does not depend on it")
    p.add_argument("--seed", type=int, metavar="N", default=0,
                   help="seed of the train-order shuffle (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out bad samples (bad image, missing image, bad label line), listing each with its "
                        "reason under 'skipped' in manifest.json, instead of failing")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing shard set at SHARD_DIR (only after the new one is complete)")
    _add_remote(p, cache=False)
    p.set_defaults(func=_run_shard)


def _add_index(sub) -> None:
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
    p.add_argument("--schema", metavar="FILE", default=None,
                   help="the attribute schema (schema.json or list_attr_cloth.txt); default: inferred from the labels")
    p.add_argument("--split", metavar="SPLIT", default=None,
                   help="put every tar in this split (default: from the names: train-*, val-*, test-*)")
    p.add_argument("--check-images", action="store_true", help="also fully decode every JPEG (fastfashion shard's "
                                                               "JPEG policy)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing manifest.json and .idx files")
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
    from .train.recipes import RECIPES
    p = sub.add_parser("train", help="train the ResNet-18 multi-head model on a shard set",
                       description="Train FashionNet (ResNet-18 trunk, one head per category) with a named recipe "
                                   "(--recipe; every option below overrides it, --print-config shows the result): "
                                   "seed = the seed report's (Adam 1e-4, ReduceLROnPlateau, full augmentation), "
                                   "fast = for training from scratch (bf16 where the CPU has it, batch 32, "
                                   "Adam 5e-4, warm-up + linear decay to 0, logit-adjusted loss, label smoothing, "
                                   "lighter augmentation, a weight average, 16 epochs: README 'Time to accuracy'), "
                                   "demo = for a few hundred images (AdamW 2e-3, light augmentation, 10 epochs). "
                                   "Cross-entropy with class weights (seed) or logit adjustment (fast); "
                                   "AMP + channels_last on CUDA. Writes RUN_DIR/last.pt every epoch, "
                                   "best.pt (best val average class accuracy), metrics.json and curves.png. "
                                   "Multi-GPU: torchrun --nproc_per_node=N -m fastfashion train ...")
    p.add_argument("--shards", metavar="SHARD_DIR", dest="shard_dir",
                   help="a shard folder written by 'fastfashion shard' (required unless --print-config)")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder for checkpoints and metrics (required unless "
                                                    "--print-config)")
    p.add_argument("--recipe", choices=tuple(RECIPES), default="seed", help="named set of the options below "
                                                                          "(default: %(default)s)")
    p.add_argument("--print-config", action="store_true", help="print the resulting config as JSON and exit")
    _add_recipe_options(p)
    p.add_argument("--no-augment", action="store_true", help="no train-time augmentation")
    _add_device_backend(p)
    p.add_argument("--weights", metavar="PATH|imagenet", default=None,
                   help="initial weights: 'imagenet' (torchvision, needs the network) or a local state dict; "
                        "default: random init")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR/last.pt at the exact step it was written (same or another number of "
                        "processes)")
    p.add_argument("--overwrite", action="store_true", help="start over in a RUN_DIR that already holds a run")
    p.add_argument("--checkpoint-minutes", type=float, metavar="M", default=10.0,
                   help="also write last.pt during an epoch every M minutes (0: only at epoch ends; default: "
                        "%(default)s). SIGTERM/Ctrl-C: finish the step, write last.pt, exit 143/130")
    p.add_argument("--checkpoint-every", type=int, metavar="N", default=None,
                   help="also write last.pt every N optimizer steps")
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="stop after N optimizer steps in total")
    p.add_argument("--seed", type=int, metavar="N", default=0, help="seed of init, data order and augmentation "
                                                       "(default: %(default)s)")
    p.add_argument("--workers", type=int, metavar="N", default=None,
                   help="DataLoader worker processes of the torch backend (default: the loader's choice)")
    p.set_defaults(func=_run_train, subparser=p)


def _add_recipe_options(p) -> None:
    """The options a recipe sets (default None: the recipe's value)."""
    from .hardware import PRECISIONS
    from .train.config import CLASS_BALANCES, OPTIMIZERS
    from .train.schedule import SCHEDULES
    p.add_argument("--epochs", type=int, metavar="N", help="epochs (seed: 45, fast: 16)")
    p.add_argument("--batch-size", type=int, metavar="N", help="batch size per process (seed: 64, fast: 32)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="adam (L2 weight decay; both recipes) or adamw (decoupled)")
    p.add_argument("--lr", type=float, metavar="X", help="peak learning rate (seed: 1e-4, fast: 5e-4)")
    p.add_argument("--weight-decay", type=float, metavar="X", help="weight decay (recipes: 1e-3)")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule: plateau (seed; on val average "
                                                         "class accuracy), linear or cosine decay to 0 (fast: linear)")
    p.add_argument("--warmup-epochs", type=float, metavar="X", help="linear/cosine: epochs of linear warm-up "
                                                                    "(fast: 0.3)")
    p.add_argument("--label-smoothing", type=float, metavar="X", help="cross-entropy label smoothing (seed: 0, "
                                                                      "fast: 0.1)")
    p.add_argument("--dropout", type=float, metavar="X", help="dropout in every head (seed: 0.5, fast: 0.2)")
    p.add_argument("--class-balance", choices=CLASS_BALANCES, help="how the loss makes up for rare classes: weights "
                   "(seed: cross-entropy weighted N/(K n_c)), sqrt (the roots of those weights), logit-adjust (log "
                   "class priors added to the logits in the loss only; fast)")
    p.add_argument("--image-size", type=image_size_arg, metavar="N|HxW",
                   help="input size in pixels, 8..1024, square or HEIGHTxWIDTH: the final train size and the eval "
                        "size (default: 224)")
    p.add_argument("--resize-start", type=float, metavar="X", help="progressive resizing: train at X * image size "
                   "first, growing to the image size over epochs 10-70%% (off in both recipes: measured, it costs "
                   "early val accuracy)")
    p.add_argument("--ema-halflife", type=float, metavar="EPOCHS", help="validate and save an exponential moving "
                   "average of the weights with this half-life in epochs (fast: 0.5; seed: off)")
    p.add_argument("--crop-scale", type=fraction_pair_arg, metavar="LO,HI", help="random resized crop: the share of "
                   "the image area kept, drawn from [LO, HI] (seed: 0.08,1; fast: 0.35,1)")
    p.add_argument("--rotation", type=float, metavar="DEG", help="max rotation in degrees (seed: 15, fast: 0)")
    p.add_argument("--color-jitter", type=float, metavar="X", help="brightness/contrast/saturation jitter "
                                                                   "(hue: X/4; seed: 0.2, fast: 0.1)")
    p.add_argument("--precision", choices=PRECISIONS, help="auto: mixed precision on CUDA, fp32 on the CPU (seed); "
                   "amp (fast): also bf16 on a CPU with native bf16 (AMX/AVX512-BF16; about 2x faster steps there), "
                   "fp32 on other CPUs; fp32: never")


def _add_device_backend(p) -> None:
    from .hardware import DEVICES
    from .loading.base import BACKEND_CHOICES
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: CUDA if available, else the CPU (default: %(default)s)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip checking the shard files against the manifest's sha256 before reading (faster first "
                        "start on a huge set; corrupted shards may then deliver wrong data)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="loader backend; auto: dali-gpu with CUDA, else dali-cpu, else torch; dali: DALI on "
                        "--device (default: %(default)s)")
    _add_remote(p)


def _add_remote(p, *, cache: bool = True) -> None:
    """Options of a shard set at a URL (s3://, gs://, https://, file://): how to reach it and where to cache it."""
    g = p.add_argument_group("remote shards (SHARD_DIR as a URL: s3://, gs://, https://, file://)")
    g.add_argument("--storage-option", action="append", metavar="KEY=VALUE", dest="storage_options",
                   help="fsspec filesystem option, repeatable; a.b=V nests (e.g. client_kwargs.endpoint_url=http://"
                        "minio:9000, anon=true). Credentials: the library's own chain (environment, profiles)")
    g.add_argument("--retries", type=int, metavar="N", default=3, help="retries per request (default: %(default)s)")
    g.add_argument("--timeout", type=float, metavar="S", default=60.0,
                   help="seconds without progress before a request fails (default: %(default)s)")
    if cache:
        g.add_argument("--cache-dir", metavar="DIR", default=None,
                       help="local cache root (default: $XDG_CACHE_HOME/fastfashion/shards)")
        g.add_argument("--cache-limit", metavar="SIZE", default=None,
                       help="most bytes the set's cache may hold, e.g. 20G (default: no limit); a split larger "
                            "than it is read in the windowed order")
        g.add_argument("--offline", action="store_true", help="read the cache only, no network")


def _remote_config(args):
    """The :class:`~fastfashion.remote.store.RemoteConfig` of the remote options."""
    from .remote.store import RemoteConfig, parse_size, parse_storage_options
    limit = getattr(args, "cache_limit", None)
    return RemoteConfig(storage_options=parse_storage_options(args.storage_options), retries=args.retries,
                        timeout=args.timeout, cache_dir=getattr(args, "cache_dir", None),
                        cache_limit=parse_size(limit) if limit else None, offline=getattr(args, "offline", False))


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
    from .bench.throughput import ALL_BACKENDS, DESCRIPTIONS
    from .hardware import PRECISIONS
    backends = "\n".join(f"  {n:<9} {d}" for n, d in DESCRIPTIONS.items())
    p = sub.add_parser("bench", help="measure loader throughput of every backend side by side",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=f"backends:\n{backends}",
                       description=textwrap.fill(
                           "Measure images/s of every loader backend on the same split, batch size and augmentation, "
                           "rounds interleaved so a noisy machine slows all alike; report the median and spread, the "
                           "ratio to the seed-style baseline measured in the same rounds, host CPU seconds per 1,000 "
                           "images, peak memory and time to first batch. Then ResNet-18 training images/s fed by each "
                           "backend against the same model fed an in-memory batch (the ceiling), on CUDA or the "
                           "CPU.", 100))
    p.add_argument("--shards", required=True, metavar="SHARD_DIR", dest="shard_dir",
                   help="shard set written by `fastfashion shard`")
    p.add_argument("--source", metavar="SRC_DIR",
                   help="raw FashionDataset folder the shards were made from, read by the seed-style baseline "
                        "(without it the baseline is skipped and no ratios are reported)")
    p.add_argument("--backends", metavar="LIST", default=",".join(ALL_BACKENDS),
                   help="comma-separated subset of %(default)s (dali-gpu is skipped without CUDA)")
    p.add_argument("--split", default=TRAIN, metavar="SPLIT", help="split to read (default: %(default)s)")
    p.add_argument("--batch-size", type=int, metavar="N", default=64, help="default: %(default)s")
    p.add_argument("--image-size", type=image_size_arg, metavar="N|HxW", default=224,
                   help="square side, or HEIGHTxWIDTH (e.g. 64x48), each 8..1024 (default: %(default)s)")
    p.add_argument("--no-augment", action="store_true", help="eval transform instead of the full train augmentation")
    p.add_argument("--rounds", type=int, metavar="N", default=5, help="timed rounds per backend (default: %(default)s)")
    p.add_argument("--batches", type=int, metavar="N", default=20,
                   help="timed batches per round (default: %(default)s)")
    p.add_argument("--warmup", type=int, metavar="N", default=3,
                   help="batches dropped per round (default: %(default)s)")
    p.add_argument("--workers", type=int, metavar="N", default=None,
                   help="DataLoader workers of the seed and torch backends (default: the CPUs available)")
    p.add_argument("--dali-threads", type=int, metavar="N", default=None,
                   help="CPU threads per DALI pipeline (default: the loader's: the CPUs available, at most 8 on GPU)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip checking the shard files against the manifest's sha256 before reading")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the training benchmark's step, as `train --precision` (default: %(default)s)")
    p.add_argument("--train-steps", type=int, metavar="N", default=30,
                   help="then train ResNet-18 for N timed steps per feeder and round, fed by each backend and by an "
                        "in-memory batch (the ceiling), rounds interleaved; on CUDA when present, else on the CPU "
                        "(0: skip; default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    _add_remote(p)  # a URL --shards: also the cold-cache epoch and warm throughput beside the local copy
    p.add_argument("--order", choices=("blocked", "windowed"), default=None,
                   help="sample order (default: blocked; windowed when a remote split exceeds --cache-limit)")
    p.add_argument("--window", type=int, metavar="N", default=4, help="shards per window of the windowed order "
                                                                       "(default: %(default)s)")
    p.add_argument("--png", metavar="FILE", help="write a bar chart (default: beside --json, else none)")
    p.set_defaults(func=_run_bench)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo",
                       help="synth -> shard -> bench -> short train -> evaluate -> predict, small synthetic set",
                       description="Run every stage once on a small synthetic data set (about a minute on 2 CPU "
                                   "cores): synthesize, read back, shard, benchmark the loaders side by side, train "
                                   "ResNet-18 with the demo recipe at 64 px, evaluate on val and write test "
                                   "predictions. The synthetic classes are drawn uniformly, so that every class has "
                                   "images in a few hundred.")
    p.add_argument("--out", default="demo_out", metavar="DIR",
                   help="output folder, replaced on each run (default: %(default)s)")
    p.add_argument("--train", type=int, metavar="N", default=512, help="synthetic train images (default: %(default)s)")
    p.add_argument("--epochs", type=int, metavar="N", default=10, help="training epochs (default: %(default)s)")
    p.epilog = "The output folder is replaced on each run, but only if an earlier demo wrote it."
    p.set_defaults(func=_run_demo)


def image_size_arg(text: str):
    """argparse type of ``--image-size``: ``N`` or ``HEIGHTxWIDTH`` (:func:`fastfashion.loading.augment.parse_image_size`)."""
    from .loading.augment import parse_image_size
    try:
        return parse_image_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def fraction_pair_arg(text: str) -> tuple[float, float]:
    """argparse type of ``--crop-scale``: ``LO,HI``, two fractions with 0 < LO <= HI <= 1."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two fractions LO,HI such as 0.35,1, got {text!r}") from None
    if not 0 < lo <= hi <= 1:
        raise argparse.ArgumentTypeError(f"expected 0 < LO <= HI <= 1, got {text!r}")
    return lo, hi


def _add_common(p) -> None:
    """-v/-q, accepted before the verb and after it."""
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="log warnings only, no progress bars")


# what each verb runs
def _run_synth(args) -> int:
    from .data.synth import SynthConfig, synthesize
    cfg = SynthConfig(train=args.train, val=args.val, test=args.test, seed=args.seed,
                      workers=args.workers)
    out = synthesize(args.data_dir, cfg, overwrite=args.overwrite)
    print(f"wrote {cfg.total} images to {out}")
    return 0


def _run_shard(args) -> int:
    import time

    from .data.shard import ShardConfig, default_shard_dir, write_shards
    from .format.manifest import ordered_splits
    from .schema import Schema
    try:
        ratio = tuple(float(x) for x in args.split_ratio.split(","))
    except ValueError:
        raise ValueError(f"--split-ratio {args.split_ratio!r}: expected TRAIN,VAL,TEST fractions adding up to 1, "
                         "e.g. 0.8,0.1,0.1") from None
    cfg = ShardConfig(samples_per_shard=args.samples_per_shard, workers=args.workers, seed=args.seed,
                      skip_bad=args.skip_bad, overwrite=args.overwrite, images=args.images, split_ratio=ratio,
                      schema=Schema.load(args.schema) if args.schema else None)
    out = args.shard_dir or default_shard_dir(args.src_dir)
    t0 = time.perf_counter()
    from .remote.store import is_url
    if is_url(out):  # built locally, then uploaded with manifest.json last
        from .remote.upload import publish
        m = publish(lambda d: write_shards(args.src_dir, d, cfg), out, overwrite=args.overwrite,
                    config=_remote_config(args))
    else:
        m = write_shards(args.src_dir, out, cfg)
    splits = ", ".join(f"{k} {v['num_samples']} in {len(v['shards'])} shards" for k, v in ordered_splits(m))
    print(f"wrote {out}: {splits}; {len(m['skipped'])} skipped ({time.perf_counter() - t0:.1f} s)")
    return 0


def _run_index(args) -> int:
    from .data.adopt import IndexConfig, index_shards
    from .format.manifest import ordered_splits
    from .schema import Schema
    cfg = IndexConfig(schema=Schema.load(args.schema) if args.schema else None, split=args.split,
                      check_images=args.check_images, overwrite=args.overwrite)
    m = index_shards(args.shard_dir, cfg)
    splits = ", ".join(f"{k} {v['num_samples']} in {len(v['shards'])} shards" + ("" if v["labelled"] else
                       " (unlabelled)") for k, v in ordered_splits(m))
    attrs = ", ".join(f"{a['name']} ({len(a['classes'])})" for a in m["schema"]["attributes"])
    print(f"indexed {args.shard_dir}: {splits}; labels from .{m['label_member']}: {attrs}")
    return 0


def _run_inspect(args) -> int:
    from pathlib import Path

    from .format.manifest import (
        manifest_schema,
        ordered_splits,
        read_manifest,
        summarize_manifest,
        train_class_weights,
    )
    from .remote.store import is_url
    url = is_url(args.shard_dir)
    if url:
        from .remote.upload import read_remote_manifest
        m = read_remote_manifest(args.shard_dir, _remote_config(args))
    else:
        m = read_manifest(args.shard_dir)
    print(summarize_manifest(m))
    if args.verify:
        from .format.verify import verify_shard_set
        from .remote.upload import verify_remote
        verify_remote(args.shard_dir, _remote_config(args)) if url else verify_shard_set(args.shard_dir, m)
        print("verify: every tar and idx matches its sha256")
    if url and not args.plots:
        return 0  # no folder to put the histograms in: --plots DIR names one
    try:
        from .bench.plots import plot_class_histogram
    except ImportError as e:
        print(f"no class histograms: {e}", file=sys.stderr)
        return 0
    schema, weights = manifest_schema(m), train_class_weights(m)
    out = Path(args.plots or args.shard_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, s in ordered_splits(m):
        if s.get("class_counts"):
            path = plot_class_histogram(s["class_counts"], schema, out / f"class-hist-{split}.png", weights=weights,
                                        title=f"{split}: {s['num_samples']} samples (dots: train class weights)")
            print(f"wrote {path}")
    return 0


def _run_train(args) -> int:
    from .train.recipes import format_config, recipe_config
    from .train.trainer import train
    cfg = recipe_config(
        args.recipe, shard_dir=args.shard_dir, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, dropout=args.dropout,
        class_balance=args.class_balance, image_size=args.image_size, resize_start=args.resize_start,
        ema_halflife=args.ema_halflife,
        rotation=args.rotation, color_jitter=args.color_jitter, crop_scale=args.crop_scale, precision=args.precision,
        augment=False if args.no_augment else None, device=args.device,
        backend=args.backend, weights=args.weights, resume=args.resume, max_steps=args.max_steps, seed=args.seed,
        workers=args.workers, verify=args.verify, checkpoint_minutes=args.checkpoint_minutes or None,
        checkpoint_every=args.checkpoint_every, overwrite=args.overwrite, remote=_remote_config(args))
    if args.print_config:
        print(format_config(cfg))
        return 0
    missing = [flag for flag, v in (("--shards", args.shard_dir), ("--out", args.out)) if v is None]
    if missing:
        args.subparser.error(f"{' and '.join(missing)} required (unless --print-config)")
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
                            remote=_remote_config(args), tta=args.tta)
    if args.json:
        print(json.dumps(m, indent=1))
        return 0
    def num(v) -> str:  # None: undefined (no labelled sample of that kind)
        return "n/a" if v is None else f"{v:.4f}"

    tta = "" if m["tta"] == "none" else f", test-time {m['tta']}"
    print(f"{m['split']}: {m['num_samples']} samples, checkpoint {m['checkpoint']}{tta}")
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
                  remote=_remote_config(args), tta=args.tta)
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
    cfg = BenchConfig(shard_dir=args.shard_dir, source=args.source, split=args.split,
                      backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
                      batch_size=args.batch_size, image_size=args.image_size, augment=not args.no_augment,
                      rounds=args.rounds, batches=args.batches, warmup=args.warmup,
                      train_steps=args.train_steps, verify=args.verify, remote=_remote_config(args),
                      order=args.order, window=args.window, dali_threads=args.dali_threads,
                      precision=args.precision,
                      **({"workers": args.workers} if args.workers is not None else {}))
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
    s = run_demo(DemoConfig(out=args.out, train=args.train, val=max(16, args.train // 4),
                            test=max(16, args.train // 4), epochs=args.epochs))
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
    "resume_or_overwrite": "pass --resume to continue it, or --overwrite to start over",
    "index_split": "name the tars train-*.tar, val-*.tar, test-*.tar, or pass --split SPLIT",
    "schema": "pass --schema FILE",
}


def _advice(message: str, param: str | None) -> str:
    """The library's message, plus the command-line fix for the parameter it names (see errors.fixable)."""
    return f"{message}; {ADVICE[param]}" if param in ADVICE else message


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return EXIT_USAGE
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from .errors import Terminated, terminate_on_sigterm, terminated
    from .fsutil import clean_dead_owners
    from .progress import set_enabled
    set_enabled(False if quiet else None)  # None: bars only when stderr is a terminal
    try:
        terminate_on_sigterm()  # SIGTERM cleans up like Ctrl-C
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
    except (ValueError, OSError, RuntimeError) as e:  # typed library errors are ValueError/OSError subclasses
        if verbose:
            raise
        from .errors import fix_param
        print(f"fastfashion {args.verb}: error: {_advice(str(e), fix_param(e))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

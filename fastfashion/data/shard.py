"""Pack a source -- a FashionDataset-layout folder or a CSV, on a path or at a URL -- into validated WebDataset
shards with DALI indexes, wids indexes and a manifest, on one machine or a Ray cluster.

``write_shards`` runs in four steps, each a pure function of what came before:

1. read the source's listing (:mod:`fastfashion.data.source`, :mod:`fastfashion.data.csv_source`; a URL's listing
   through :mod:`fastfashion.data.remote_source`);
2. validate every image (:func:`~fastfashion.data.tasks.check_chunk` tasks): bad images fail the run, naming file and
   line, or are left out with ``skip_bad``; train is shuffled by the seed;
3. plan the shards (:mod:`fastfashion.data.plan`) and run one :func:`~fastfashion.data.tasks.write_task` per shard
   not already committed by an earlier run, on the engine (:mod:`fastfashion.data.engines`: a local process pool or
   Ray tasks); workers read the images and commit the shards themselves;
4. merge the fragment records into ``manifest.json``, written last (:mod:`fastfashion.data.output`).

The output is byte-identical whatever the engine and the number of workers (and identical to what
:class:`~fastfashion.data.pack.ShardWriter` writes given the same samples in the planned order).

Atomicity: a local set is built in ``.NAME.partial`` beside ``SHARD_DIR`` and renamed into place at the end; a
failed, interrupted (Ctrl-C, SIGTERM) or killed run never leaves a folder that looks like a shard set, and the same
command run again reuses every shard it committed ("reused N of M shards"). An existing ``SHARD_DIR`` is replaced
only with ``overwrite=True``, only if it is a shard set (or empty), and only after the new one is complete.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import time
from pathlib import Path

from ..errors import ConfigError, fixable, sigterm_as_terminated
from ..format.atomic import file_sha256
from ..format.jpeg import MAX_IMAGE_PIXELS
from ..format.spec import LABELLED_SPLITS, SPLITS, TRAIN, split_order
from ..format.writer import ShardSetWriteError, class_counts, manifest_doc, split_entry
from ..options import option
from ..progress import progress
from ..remote.store import RemoteConfig, is_url
from ..schema import Schema
from .csv_source import DEFAULT_SPLIT_RATIO, check_split_ratio, has_split_column, read_csv_source
from .engines import ENGINES, Engine, make_engine
from .output import Target, make_target
from .pack import DEFAULT_SAMPLES_PER_SHARD, ShardWriterError
from .plan import ShardTask, plan_shards
from .remote_source import mirrored
from .source import Record, SourceError, read_source, source_schema
from .tasks import SourceChangedError, check_chunk, write_task  # noqa: F401 - SourceChangedError: its old home
from .validate import JPEG_POLICY

log = logging.getLogger(__name__)


class BadImageError(SourceError):
    """An image failed validation (truncated, not a JPEG, CMYK ...); names the split file and line listing it."""


def parse_split_ratio(text: str) -> tuple[float, ...]:
    """``--split-ratio TRAIN,VAL,TEST`` -> the fractions (checked by the CSV reader). Raises ConfigError."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--split-ratio {text!r}: expected TRAIN,VAL,TEST fractions adding up to 1, "
                         "e.g. 0.8,0.1,0.1") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """Options of :func:`write_shards`. ``workers`` and ``overwrite`` do not affect the output."""

    samples_per_shard: int = option(DEFAULT_SAMPLES_PER_SHARD, help=(  # see DEFAULT_SAMPLES_PER_SHARD for why
        "samples per tar (default: %(default)s: the real train split becomes 10 shards of ~6 MB, enough to spread "
        "whole shards over ranks x loader workers)"))
    workers: int | None = option(None, help=(  # 1: no subprocesses
        "worker processes of the local engine, or CPUs of a local Ray started for the run (default: all CPU "
        "cores); the output does not depend on it"))
    engine: str = option("local", choices=ENGINES, help=(
        "who runs the validation and shard tasks: 'local' (processes on this machine) or 'ray' (Ray tasks on the "
        "cluster at --ray-address; pip install 'fastfashion[ray]'); the output is the same (default: "
        "%(default)s)"))
    ray_address: str | None = option(None, metavar="ADDRESS", help=(
        "the Ray cluster for --engine ray (default: $RAY_ADDRESS, else a running local cluster, else a local Ray "
        "started for the run)"))
    shared_output: bool = option(False, help=(
        "with a Ray cluster of several machines: the local source and output paths are on a file system every "
        "machine mounts at the same path (otherwise use URLs)"))
    seed: int = option(0, help=(  # also a CSV's split assignment without a split column
        "seed of the train-order shuffle (default: %(default)s)"))
    skip_bad: bool = option(False, help=(
        "leave out bad samples (bad image, missing image, bad label line), listing each with its reason under "
        "'skipped' in manifest.json, instead of failing"))
    max_image_pixels: int = option(MAX_IMAGE_PIXELS, help=(  # PIL's default; recorded in the manifest if changed
        "refuse an image whose header claims more pixels (default: %(default)s, PIL's limit)"))
    overwrite: bool = option(False, help=(
        "replace an existing shard set at SHARD_DIR (only after the new one is complete)"))
    schema: Schema | None = option(None, metavar="FILE", parse=Schema.load, help=(  # None: the source's own
        "the attribute schema: JSON {\"attributes\": [{\"name\": ..., \"classes\": [...]}, ...]} or a "
        "list_attr_cloth.txt (default: the source's own); a schema file in the source must agree"))
    images: str | os.PathLike | None = option(None, metavar="DIR", help=(
        "CSV source: the folder its image paths are relative to (default: the CSV's folder)"))
    split_ratio: tuple[float, float, float] = option(DEFAULT_SPLIT_RATIO, metavar="TRAIN,VAL,TEST",
                                                     parse=parse_split_ratio, help=(
        "CSV without a split column: fractions of rows dealt to train, val and test by --seed (default: "
        "%(default)s)"))

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if isinstance(self.max_image_pixels, bool) or not isinstance(self.max_image_pixels, int) \
                or self.max_image_pixels < 1:
            raise ConfigError(f"max_image_pixels must be a positive integer, got {self.max_image_pixels!r}")
        if self.samples_per_shard < 1:
            raise ConfigError(f"samples_per_shard must be >= 1, got {self.samples_per_shard}")
        check_split_ratio(self.split_ratio)

    def manifest_options(self) -> dict:
        recorded = {"samples_per_shard": self.samples_per_shard, "seed": self.seed, "skip_bad": self.skip_bad}
        if self.max_image_pixels != MAX_IMAGE_PIXELS:  # only a changed limit: the default is the JPEG policy's
            recorded["max_image_pixels"] = self.max_image_pixels
        return recorded


def default_shard_dir(src_dir: str | os.PathLike) -> Path:
    """``shards/<name of SRC_DIR>`` (of a CSV: its name without ``.csv``), relative to the current directory."""
    if is_url(str(src_dir)):
        return Path("shards") / str(src_dir).rstrip("/").rsplit("/", 1)[-1].removesuffix(".csv")
    src = Path(src_dir).resolve()
    return Path("shards") / (src.stem if src.is_file() else src.name)


# --- the whole job ---------------------------------------------------------------------------------------------
def _skip_entry(split: str, line: int, path: str, reason: str) -> dict:
    return {"split": split, "key": Path(path).stem, "path": path, "line": line, "reason": reason}


@dataclasses.dataclass(frozen=True)
class Source:
    """A source read and checked: its schema, records per split, the folder image paths are relative to, and the
    listing files (name relative to the source, path) that the source digest covers."""

    name: str
    schema: Schema
    records: dict[str, list[Record]]
    image_root: Path | str  # a folder, or a URL
    listings: tuple[tuple[str, Path], ...]
    is_csv: bool = False
    dealt: bool = False  # a CSV without a split column: its rows were dealt to the splits by split_ratio


def open_source(src: str | os.PathLike, cfg: ShardConfig, on_error=None, *, check_images: bool = True) -> Source:
    """A folder in the FashionDataset layout, or a ``.csv`` file (images under ``cfg.images``); ``check_images``:
    whether each listed image must exist (a source at a URL is checked when its images are read)."""
    src = Path(src)
    if src.suffix.lower() == ".csv" and not src.is_dir():
        schema, records = read_csv_source(src, cfg.images, cfg.schema, split_ratio=cfg.split_ratio, seed=cfg.seed,
                                          check_images=check_images, on_error=on_error)
        root = Path(cfg.images) if cfg.images is not None else src.parent
        return Source(src.resolve().stem, schema, records, root, ((src.name, src),), is_csv=True,
                      dealt=not has_split_column(src))
    if cfg.images is not None:
        raise ConfigError(f"images is only for a CSV source; {src} is a folder with img/ and split/")
    schema = source_schema(src, cfg.schema) if src.is_dir() else cfg.schema
    records = read_source(src, schema, check_images=check_images, on_error=on_error)
    listings = tuple((f"split/{f.name}", f) for f in sorted((src / "split").glob("*.txt")))
    return Source(src.resolve().name, schema, records, src, listings)


def _source_digest(source: Source, digests: dict[str, str]) -> str:
    """sha256 over the listing files' bytes and every listed image's sha256 (paths relative:
    location-independent)."""
    h = hashlib.sha256()
    records = source.records
    for name, f in source.listings:
        h.update(f"{name} {file_sha256(f)}\n".encode())
    for recs in records.values():
        for r in recs:
            h.update(f"{r.path} {digests.get(r.path, '-')}\n".encode())
    return "sha256:" + h.hexdigest()


def _check_paths(src: Path, out: Path, images: str | os.PathLike | None = None) -> None:
    """The output must not overlap the folder the images are read from: the source folder, or for a CSV its
    ``images`` folder (default: the CSV's folder); a CSV elsewhere may sit beside the output."""
    what = "source"
    if src.suffix.lower() == ".csv" and not src.is_dir():
        src, what = (Path(images) if images is not None else src.parent), "image folder"
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents \
            or out.resolve() in src.resolve().parents:
        raise ConfigError(f"output folder {out} must not contain or be inside the {what} {src}")


def _renamed(err: SourceError, rename) -> SourceError:
    """``err`` naming the URL instead of the local copy of a remote source's listing."""
    where = f"{err.path}:{err.line}" if err.line is not None else err.path
    new = type(err)(rename(err.path), err.line, str(err)[len(where) + 2:])
    new.__dict__.update({k: v for k, v in err.__dict__.items() if k not in ("path", "line")})
    return new


@contextlib.contextmanager
def _opened(src: str, cfg: ShardConfig, on_error, remote: RemoteConfig):
    """The :class:`Source` at ``src``: a local folder or CSV, or a URL (listing copied, images read in place)."""
    if not is_url(src):
        yield open_source(src, cfg, on_error)
        return
    csv = src.lower().rstrip("/").endswith(".csv")
    with mirrored(src, remote, csv=csv) as (local, rename):
        def on_err(split, line, path, err):
            on_error(split, line, path, _renamed(err, rename))
        try:
            source = open_source(local, dataclasses.replace(cfg, images=None), on_err if on_error else None,
                                 check_images=False)
        except SourceError as e:
            raise _renamed(e, rename) from None
        base = src.rstrip("/")
        root = str(cfg.images) if cfg.images is not None else (base.rsplit("/", 1)[0] if csv else base)
        records = {split: [dataclasses.replace(r, file=rename(r.file)) for r in recs]
                   for split, recs in source.records.items()}
        name = base.rsplit("/", 1)[-1].removesuffix(".csv").removesuffix(".CSV")
        yield dataclasses.replace(source, name=name, records=records, image_root=root)


def _validate_images(engine: Engine, source: Source, cfg: ShardConfig, remote: RemoteConfig | None,
                     skipped: list[dict]) -> tuple[dict[str, list[Record]], dict[str, str]]:
    """Fully decode every listed image (tasks of ``engine``). Returns the good records per split (train shuffled
    by ``cfg.seed``) and the sha256 of every readable image; a bad image raises :class:`BadImageError` or, with
    ``cfg.skip_bad``, is added to ``skipped``."""
    records = source.records
    all_recs = [r for s in records for r in records[s]]
    t0 = time.perf_counter()
    size = max(32, min(1024, len(all_recs) // (4 * engine.slots) + 1))  # any size gives the same results
    chunks = [all_recs[i:i + size] for i in range(0, len(all_recs), size)]
    root = str(source.image_root)
    with progress(total=len(all_recs), desc="validate", unit="img", leave=False) as bar:
        results = engine.map(check_chunk, [(root, [r.path for r in c], remote, cfg.max_image_pixels) for c in chunks],
                             [f"validation of {c[0].file}:{c[0].line}.." for c in chunks],
                             done=lambda i: bar.update(len(chunks[i])))
    checks = [c for res in results for c in res]
    log.info("validated %d images in %.1f s", len(all_recs), time.perf_counter() - t0)
    digests = {r.path: c.sha256 for r, c in zip(all_recs, checks) if c.sha256}
    bad = [(r, c.reason) for r, c in zip(all_recs, checks) if c.reason is not None]
    if bad and not cfg.skip_bad:
        r, reason = bad[0]
        more = f" (and {len(bad) - 1} more bad images)" if len(bad) > 1 else ""
        raise fixable(BadImageError(r.file, r.line, f"image {r.path!r}: {reason}{more}"), "skip_bad")
    for r, reason in bad:
        skipped.append(_skip_entry(r.split, r.line, r.path, f"{r.file}:{r.line}: image {r.path!r}: {reason}"))
        log.warning("skipping %s: %s", r.path, reason)
    bad_paths = {r.path for r, _ in bad}
    good = {s: [r for r in records[s] if r.path not in bad_paths] for s in records}
    random.Random(cfg.seed).shuffle(good[TRAIN])  # val/test keep split-file order
    skipped.sort(key=lambda k: (split_order(k["split"]), k["line"]))
    return good, digests


def _check_labelling(good: dict[str, list[Record]]) -> dict[str, bool]:
    """Whether each split's samples carry labels; a split that mixes both, or a train/val sample without labels,
    is refused (as :class:`~fastfashion.data.pack.ShardWriter` refuses it)."""
    labelled = {}
    for split, recs in good.items():
        for r in recs:
            where = f"split {split!r} key {r.key!r}"
            if r.labels is None and split in LABELLED_SPLITS:
                raise ShardWriterError(f"{where}: the {split} split needs labels")
            if labelled.setdefault(split, r.labels is not None) != (r.labels is not None):
                raise ShardWriterError(f"{where}: the split mixes labelled and unlabelled samples")
    return labelled


def _check_reach(engine: Engine, source: Source, target: Target, cfg: ShardConfig) -> None:
    """Workers on several machines read the images and write the shards themselves: a local path must be on a
    file system they all share."""
    if engine.hosts <= 1 or cfg.shared_output:
        return
    local = [str(p) for p, here in ((source.image_root, not is_url(str(source.image_root))),
                                    (target.where, target.is_local)) if here]
    if local:
        raise ConfigError(f"the {engine.name} cluster spans {engine.hosts} machines but {' and '.join(local)} "
                          "is a local path: give URLs (s3://, gs://), or shared_output if every machine mounts it "
                          "at the same path")


def _split_entries(tasks: list[ShardTask], fragments: list[dict], labelled: dict[str, bool],
                   schema: Schema) -> dict[str, dict]:
    """The manifest's splits from the fragment records, each checked against its planned shard."""
    shards: dict[str, list[dict]] = {}
    counts: dict[str, dict[str, list[int]]] = {}
    for task, frag in zip(tasks, fragments):
        entry = frag["entry"]
        if (frag["name"], entry["num_samples"]) != (task.name, len(task.samples)):
            raise ShardSetWriteError(f"{task.name}: its fragment record does not match the plan")
        shards.setdefault(task.split, []).append(entry)
        c = counts.setdefault(task.split, class_counts((), schema))
        for name, add in frag["class_counts"].items():
            c[name] = [a + b for a, b in zip(c[name], add)]
    return {split: split_entry(shards.get(split, []), labelled=labelled.get(split, split in LABELLED_SPLITS),
                               counts=counts.get(split, class_counts((), schema)))
            for split in sorted(set(SPLITS) | set(shards), key=split_order)}


def write_shards(src_dir: str | os.PathLike, shard_dir: str | os.PathLike | None = None,
                 cfg: ShardConfig = ShardConfig(), *, remote: RemoteConfig | None = None, **options) -> dict:
    """Validate the source ``src_dir`` (a FashionDataset-layout folder, or a ``.csv`` with ``cfg.images``; a path or
    a URL) and write its shard set to ``shard_dir`` (a folder or a URL; default :func:`default_shard_dir`), with the
    engine ``cfg.engine`` (``"local"``: a process pool; ``"ray"``: Ray tasks). ``remote``: how URLs are reached.
    ``options``: :class:`ShardConfig` fields overriding ``cfg`` (``write_shards(src, out, engine="ray")``).

    Returns the manifest. The output does not depend on the engine or the number of workers. Raises
    :class:`~fastfashion.data.source.SourceError` (naming file and line) for a bad source or image unless
    ``cfg.skip_bad`` (then per-sample problems are listed under ``"skipped"`` in the manifest; structural ones
    still raise), ``FileExistsError`` if ``shard_dir`` holds a shard set and ``cfg.overwrite`` is off. A failed
    run leaves no set; the shards it committed are reused by the same call run again.
    """
    cfg = dataclasses.replace(cfg, **options) if options else cfg
    src = str(src_dir)
    out = shard_dir if shard_dir is not None else default_shard_dir(src)
    remote = remote or RemoteConfig()
    if not is_url(src) and not is_url(str(out)):
        _check_paths(Path(src), Path(out), cfg.images)
    skipped: list[dict] = []

    def on_error(split: str, line: int, path: str, err: SourceError) -> None:
        skipped.append(_skip_entry(split, line, path, str(err)))
        log.warning("skipping: %s", err)

    with sigterm_as_terminated(), _opened(src, cfg, on_error if cfg.skip_bad else None, remote) as source:
        recorded = cfg.manifest_options()
        if source.dealt:  # only an option in effect is recorded: with a split column, the CSV says where each row goes
            recorded["split_ratio"] = list(cfg.split_ratio)
        num_listed = sum(len(v) for v in source.records.values()) + len(skipped)
        target = make_target(out, overwrite=cfg.overwrite, config=remote)
        found = target.claim()  # the target is checked here, before minutes of validation
        failed = True
        try:
            with make_engine(cfg.engine, workers=cfg.workers, ray_address=cfg.ray_address) as engine:
                _check_reach(engine, source, target, cfg)
                good, digests = _validate_images(engine, source, cfg, remote, skipped)
                labelled = _check_labelling(good)
                tasks, fragments = _write(engine, source, target, good, digests, found, cfg, remote)
            manifest = manifest_doc(source.schema, _split_entries(tasks, fragments, labelled, source.schema),
                                    source={"name": source.name, "fingerprint": _source_digest(source, digests),
                                            "num_listed": num_listed},
                                    options=recorded, skipped=skipped, extra={"jpeg_policy": JPEG_POLICY})
            target.finish(manifest)
            failed = False
        finally:
            target.release(failed)
    n = sum(s["num_samples"] for s in manifest["splits"].values())
    log.info("wrote %d samples (%d skipped) to %s", n, len(skipped), target.where)
    return manifest


def _write(engine: Engine, source: Source, target: Target, good: dict[str, list[Record]], digests: dict[str, str],
           found: dict[str, dict], cfg: ShardConfig, remote: RemoteConfig) -> tuple[list[ShardTask], list[dict]]:
    """Plan the shards, reuse those an earlier run committed, write the rest. Returns the tasks and their
    fragment records."""
    tasks = plan_shards(good, digests, cfg.samples_per_shard)
    plans = [t.digest(source.schema) for t in tasks]
    fragments: list[dict | None] = [None] * len(tasks)
    for i, task in enumerate(tasks):
        frag = found.get(task.name)
        if frag is not None and frag.get("plan") == plans[i] and target.reusable(frag):
            fragments[i] = frag
    todo = [i for i, f in enumerate(fragments) if f is None]
    if found:
        log.info("reused %d of %d shards", len(tasks) - len(todo), len(tasks))
    t0 = time.perf_counter()
    root, n = str(source.image_root), sum(len(tasks[i].samples) for i in todo)
    with progress(total=n, desc="write", unit="img", leave=False) as bar:
        shards_done = iter(range(1, len(todo) + 1))

        def done(k: int) -> None:
            bar.set_postfix_str(f"{next(shards_done)}/{len(todo)} shards", refresh=False)
            bar.update(len(tasks[todo[k]].samples))

        written = engine.map(write_task, [(tasks[i], plans[i], source.schema, root, target.sink, remote)
                                          for i in todo], [tasks[i].name for i in todo], done=done)
    for i, frag in zip(todo, written):
        fragments[i] = frag
    dt = time.perf_counter() - t0
    log.info("wrote %d shards (%d images) in %.1f s (%.0f img/s, %s engine)", len(todo), n, dt, n / max(dt, 1e-9),
             engine.name)
    return tasks, fragments

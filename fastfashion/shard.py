"""Pack a FashionDataset folder into validated WebDataset shards with DALI indexes and a manifest.

``write_shards`` reads the source (:mod:`fastfashion.source`), validates every image (:mod:`fastfashion.validate`)
before anything is written, then writes each split through :class:`ShardSetWriter`: webdataset's ``TarWriter``
for the tars, :mod:`fastfashion.dali_index` for the ``.idx`` files, and ``manifest.json`` last (the format is
described in :mod:`fastfashion.shard_format`).

Atomicity: everything is built in a hidden temporary folder beside ``OUT_DIR`` (``.NAME.tmp-PID-XXXX``) and renamed
into place at the end. A failed, interrupted (Ctrl-C, SIGTERM) or killed run never leaves a folder that looks like a
shard set: temporary folders have no manifest until they are complete, and those left by a dead process (SIGKILL)
are removed by the next run. An existing ``OUT_DIR`` is replaced only with ``overwrite=True``, only if it is a shard
set (or empty), and only after the new one is complete.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from . import __version__
from .atomic import clean_stale, file_sha256, fsync, make_temp_dir, replace_dir
from .dali_index import entries_from_tar, write_index
from .schema import FASHION_SCHEMA, Schema
from .shard_format import FORMAT, MANIFEST, VERSION, encode_labels, read_manifest, sample_json, shard_names
from .source import LABELLED_SPLITS, SPLITS, Record, SourceError, class_counts, read_source
from .validate import JPEG_POLICY, check_files

__all__ = ["ShardConfig", "ShardSetWriter", "BadImageError", "write_shards", "read_manifest", "default_out_dir"]

log = logging.getLogger(__name__)

DEFAULT_SAMPLES_PER_SHARD = 500
"""Real set: 10 train shards of ~6 MB, 2 val, 2 test. fastfashion's loaders read samples by offset (from the .idx
files) in their own per-epoch order, so the shard count does not limit shuffling for them; 500 keeps enough train
shards for plain webdataset consumers, which hand whole shards to ranks x workers (e.g. 2 x 4 = 8 <= 10), while
per-file overhead stays negligible and a damaged shard costs little to re-create or re-verify."""
TAR_MTIME = 0  # fixed member mtime: the same source and options give byte-identical tars (and manifest)


class BadImageError(SourceError):
    """An image failed validation (truncated, not a JPEG, CMYK ...); names the split file and line listing it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """Options of :func:`write_shards`. Only ``samples_per_shard``, ``seed`` and ``skip_bad`` affect the output."""

    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD  # see DEFAULT_SAMPLES_PER_SHARD for why
    workers: int | None = None       # validation processes; None: all CPUs; 1: no subprocesses
    seed: int = 0                    # train-order shuffle
    skip_bad: bool = False           # record bad samples in the manifest and go on, instead of failing
    overwrite: bool = False          # replace an existing shard set (after the new one is complete)
    schema: Schema = FASHION_SCHEMA

    def __post_init__(self) -> None:
        if self.samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {self.samples_per_shard}")

    def manifest_options(self) -> dict:
        return {"samples_per_shard": self.samples_per_shard, "seed": self.seed, "skip_bad": self.skip_bad}


def default_out_dir(src_dir: str | os.PathLike) -> Path:
    """``shards/<name of SRC_DIR>`` (relative to the current directory)."""
    return Path("shards") / Path(src_dir).resolve().name


# --- temporary folders ------------------------------------------------------------------------------------------
def _check_target(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if not any(out_dir.iterdir()):
        return  # an empty folder is replaced without asking
    if not (out_dir / MANIFEST).is_file():
        raise FileExistsError(f"{out_dir} exists and is not a shard set; refusing to replace it")
    if not overwrite:
        raise FileExistsError(f"{out_dir} already holds a shard set; pass --overwrite to replace it")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while writing, so ``kill`` cleans up like Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# --- the writer ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sample:
    """What goes into one tar sample."""

    key: str
    path: str          # as listed, relative to the source root ("img/00042.jpg")
    jpeg: bytes
    labels: tuple[int, ...] | None


class ShardSetWriter:
    """Context manager building a shard set in a temporary folder; :meth:`commit` renames it into place.

    Leaving the ``with`` block without ``commit`` (an exception, Ctrl-C) removes the temporary folder::

        with ShardSetWriter(out_dir, schema) as w:
            w.write_split("train", samples, samples_per_shard=500)
            w.commit(manifest_without_splits)
    """

    def __init__(self, out_dir: str | os.PathLike, schema: Schema = FASHION_SCHEMA, *, overwrite: bool = False):
        self.out_dir = Path(out_dir)
        self.schema = schema
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self.splits: dict[str, dict] = {}

    def __enter__(self) -> "ShardSetWriter":
        clean_stale(self.out_dir)
        _check_target(self.out_dir, self.overwrite)
        self.tmp = make_temp_dir(self.out_dir)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp is not None:  # not committed
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def write_split(self, split: str, samples: Iterable[Sample], samples_per_shard: int) -> list[dict]:
        """Write ``samples`` (in order) into ``{split}-{i:05d}.tar`` + ``.idx`` of ``samples_per_shard`` each (the
        last may be smaller); return the shard entries for the manifest."""
        import webdataset as wds

        assert self.tmp is not None, "use ShardSetWriter as a context manager"
        shards: list[dict] = []
        it = iter(samples)
        while True:
            batch = [s for _, s in zip(range(samples_per_shard), it)]
            if not batch:
                break
            tar_name, idx_name = shard_names(split, len(shards))
            tar_path, idx_path = self.tmp / tar_name, self.tmp / idx_name
            with wds.TarWriter(str(tar_path), encoder=False, mtime=TAR_MTIME) as tw:
                for s in batch:
                    tw.write({"__key__": s.key, "jpg": s.jpeg, "lbl": encode_labels(s.labels, self.schema),
                              "json": sample_json(s.path, s.labels, self.schema)})
            entries = entries_from_tar(tar_path)
            if [e.key for e in entries] != [s.key for s in batch]:  # e.g. a key with a dot in it
                raise RuntimeError(f"{tar_name}: sample keys read back differ from those written")
            write_index(idx_path, entries)
            for p in (tar_path, idx_path):
                fsync(p)
            shards.append({"tar": tar_name, "idx": idx_name, "num_samples": len(batch),
                           "bytes": tar_path.stat().st_size, "sha256": file_sha256(tar_path),
                           "idx_sha256": file_sha256(idx_path)})
        return shards

    def commit(self, manifest: dict) -> Path:
        """Write ``manifest.json`` (sorted keys) and move the folder into place; returns ``out_dir``."""
        assert self.tmp is not None, "commit() called twice or outside the with block"
        path = self.tmp / MANIFEST
        path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        fsync(path)
        _check_target(self.out_dir, self.overwrite)  # re-check: someone may have created it meanwhile
        replace_dir(self.tmp, self.out_dir)
        self.tmp = None
        return self.out_dir


# --- the whole job ---------------------------------------------------------------------------------------------
def _skip_entry(split: str, line: int, path: str, reason: str) -> dict:
    return {"split": split, "key": Path(path).stem, "path": path, "line": line, "reason": reason}


def _fingerprint(src: Path, records: dict[str, list[Record]], digests: dict[str, str]) -> str:
    """sha256 over the split files' bytes and every listed image's sha256 (paths relative: location-independent)."""
    h = hashlib.sha256()
    for f in sorted((src / "split").glob("*.txt")):
        h.update(f"split/{f.name} {file_sha256(f)}\n".encode())
    for split, recs in records.items():
        for r in recs:
            h.update(f"{r.path} {digests.get(r.path, '-')}\n".encode())
    return "sha256:" + h.hexdigest()


def write_shards(src_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 cfg: ShardConfig = ShardConfig()) -> dict:
    """Validate ``src_dir`` and write its shard set to ``out_dir`` (default :func:`default_out_dir`).

    Returns the manifest. Raises :class:`~fastfashion.source.SourceError` (naming file and line) for a bad source or
    image unless ``cfg.skip_bad`` (then per-sample problems are listed under ``"skipped"`` in the manifest;
    structural ones still raise), ``FileExistsError`` if ``out_dir`` exists without ``cfg.overwrite``. Nothing is
    left behind on failure.
    """
    src = Path(src_dir)
    out = Path(out_dir) if out_dir is not None else default_out_dir(src)
    schema = cfg.schema
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents \
            or out.resolve() in src.resolve().parents:
        raise ValueError(f"output folder {out} must not contain or be inside the source {src}")
    clean_stale(out)
    _check_target(out, cfg.overwrite)  # fail fast, before minutes of validation

    skipped: list[dict] = []

    def on_error(split: str, line: int, path: str, err: SourceError) -> None:
        skipped.append(_skip_entry(split, line, path, str(err)))
        log.warning("skipping: %s", err)

    t0 = time.perf_counter()
    records = read_source(src, schema, on_error=on_error if cfg.skip_bad else None)
    all_recs = [r for s in SPLITS for r in records[s]]
    num_listed = len(all_recs) + len(skipped)
    # webdataset imports torch (~3 s): overlap that with validation, which mostly waits on worker processes.
    threading.Thread(target=importlib.import_module, args=("webdataset",), daemon=True).start()
    t1 = time.perf_counter()
    checks = check_files([src / r.path for r in all_recs], cfg.workers)
    t2 = time.perf_counter()
    log.info("read the source in %.1f s, validated %d images in %.1f s", t1 - t0, len(all_recs), t2 - t1)
    digests = {r.path: c.sha256 for r, c in zip(all_recs, checks) if c.sha256}
    bad = [(r, c.reason) for r, c in zip(all_recs, checks) if c.reason is not None]
    if bad and not cfg.skip_bad:
        r, reason = bad[0]
        more = f" (and {len(bad) - 1} more bad images)" if len(bad) > 1 else ""
        raise BadImageError(src / "split" / f"{r.split}.txt", r.line,
                            f"image {r.path!r}: {reason}{more}; use --skip-bad to leave bad samples out")
    for r, reason in bad:
        skipped.append(_skip_entry(r.split, r.line, r.path, f"{src / 'split' / f'{r.split}.txt'}:{r.line}: "
                                                            f"image {r.path!r}: {reason}"))
        log.warning("skipping %s: %s", r.path, reason)
    bad_paths = {r.path for r, _ in bad}
    good = {s: [r for r in records[s] if r.path not in bad_paths] for s in SPLITS}
    random.Random(cfg.seed).shuffle(good["train"])  # val/test keep split-file order
    order = {s: i for i, s in enumerate(SPLITS)}
    skipped.sort(key=lambda k: (order.get(k["split"], len(order)), k["line"]))

    def samples(recs: list[Record], bar) -> Iterator[Sample]:
        for r in recs:
            data = (src / r.path).read_bytes()
            if hashlib.sha256(data).hexdigest() != digests[r.path]:
                raise RuntimeError(f"{src / r.path} changed while sharding")
            bar.update(1)
            yield Sample(r.key, r.path, data, r.labels)

    from tqdm import tqdm

    manifest = {
        "format": FORMAT, "version": VERSION, "created_by": f"fastfashion {__version__}",
        "schema": schema.to_dict(),
        "source": {"name": src.resolve().name, "fingerprint": _fingerprint(src, records, digests),
                   "num_listed": num_listed},
        "options": cfg.manifest_options(),
        "jpeg_policy": JPEG_POLICY,
        "skipped": skipped,
        "splits": {},
    }
    with _sigterm_as_interrupt(), ShardSetWriter(out, schema, overwrite=cfg.overwrite) as writer, \
            tqdm(total=sum(len(v) for v in good.values()), desc="write", unit="img", leave=False) as bar:
        for split in SPLITS:
            recs = good[split]
            labelled = split in LABELLED_SPLITS or any(r.labels is not None for r in records[split])
            manifest["splits"][split] = {
                "num_samples": len(recs), "labelled": labelled,
                "class_counts": class_counts(recs, schema) if labelled else None,
                "shards": writer.write_split(split, samples(recs, bar), cfg.samples_per_shard)}
        writer.commit(manifest)
    n = sum(s["num_samples"] for s in manifest["splits"].values())
    log.info("wrote %d samples (%d skipped) to %s in %.1f s", n, len(skipped), out, time.perf_counter() - t2)
    return manifest

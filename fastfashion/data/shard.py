"""Pack a source -- a FashionDataset-layout folder or a CSV -- into validated WebDataset shards with DALI indexes,
wids indexes and a manifest.

``write_shards`` reads the source (:mod:`fastfashion.data.source`, :mod:`fastfashion.data.csv_source`), validates
every image (:mod:`fastfashion.data.validate`) before anything is written, then writes each split through
:class:`~fastfashion.data.pack.ShardWriter` (tars, ``.idx`` files, and ``manifest.json`` last; the format is
specified in ``docs/format.md``).

Atomicity: everything is built in a hidden temporary folder beside ``SHARD_DIR`` (``.NAME.tmp-PID-XXXX``) and renamed
into place at the end. A failed, interrupted (Ctrl-C, SIGTERM) or killed run never leaves a folder that looks like a
shard set: temporary folders have no manifest until they are complete, and those left by a dead process (SIGKILL)
are removed by the next run. An existing ``SHARD_DIR`` is replaced only with ``overwrite=True``, only if it is a shard
set (or empty), and only after the new one is complete.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import os
import random
import threading
import time
from pathlib import Path

from ..errors import ConfigError, FastfashionError, fixable
from ..format.atomic import file_sha256
from ..format.spec import TRAIN, split_order
from ..options import option
from ..progress import progress
from ..schema import Schema
from .csv_source import DEFAULT_SPLIT_RATIO, check_split_ratio, has_split_column, read_csv_source
from .pack import DEFAULT_SAMPLES_PER_SHARD, ShardWriter
from .source import Record, SourceError, read_source, source_schema
from .validate import check_files

log = logging.getLogger(__name__)


class BadImageError(SourceError):
    """An image failed validation (truncated, not a JPEG, CMYK ...); names the split file and line listing it."""


class SourceChangedError(FastfashionError, RuntimeError):
    """An image's bytes changed between validation and writing (another process is editing the source)."""


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
        "validation processes (default: all CPU cores); the output does not depend on it"))
    seed: int = option(0, help=(  # also a CSV's split assignment without a split column
        "seed of the train-order shuffle (default: %(default)s)"))
    skip_bad: bool = option(False, help=(
        "leave out bad samples (bad image, missing image, bad label line), listing each with its reason under "
        "'skipped' in manifest.json, instead of failing"))
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
        if self.samples_per_shard < 1:
            raise ConfigError(f"samples_per_shard must be >= 1, got {self.samples_per_shard}")
        check_split_ratio(self.split_ratio)

    def manifest_options(self) -> dict:
        return {"samples_per_shard": self.samples_per_shard, "seed": self.seed, "skip_bad": self.skip_bad}


def default_shard_dir(src_dir: str | os.PathLike) -> Path:
    """``shards/<name of SRC_DIR>`` (of a CSV: its name without ``.csv``), relative to the current directory."""
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
    image_root: Path
    listings: tuple[tuple[str, Path], ...]
    is_csv: bool = False
    dealt: bool = False  # a CSV without a split column: its rows were dealt to the splits by split_ratio


def open_source(src: str | os.PathLike, cfg: ShardConfig, on_error=None) -> Source:
    """A folder in the FashionDataset layout, or a ``.csv`` file (images under ``cfg.images``)."""
    src = Path(src)
    if src.suffix.lower() == ".csv" and not src.is_dir():
        schema, records = read_csv_source(src, cfg.images, cfg.schema, split_ratio=cfg.split_ratio, seed=cfg.seed,
                                          on_error=on_error)
        root = Path(cfg.images) if cfg.images is not None else src.parent
        return Source(src.resolve().stem, schema, records, root, ((src.name, src),), is_csv=True,
                      dealt=not has_split_column(src))
    if cfg.images is not None:
        raise ConfigError(f"images is only for a CSV source; {src} is a folder with img/ and split/")
    schema = source_schema(src, cfg.schema) if src.is_dir() else cfg.schema
    records = read_source(src, schema, on_error=on_error)
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


def _validate_images(src: Path, records: dict[str, list[Record]], cfg: ShardConfig,
                     skipped: list[dict]) -> tuple[dict[str, list[Record]], dict[str, str]]:  # src: image root
    """Fully decode every listed image. Returns the good records per split (train shuffled by ``cfg.seed``) and the
    sha256 of every readable image; a bad image raises :class:`BadImageError` or, with ``cfg.skip_bad``, is added
    to ``skipped``."""
    all_recs = [r for s in records for r in records[s]]
    t0 = time.perf_counter()
    checks = check_files([src / r.path for r in all_recs], cfg.workers)
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


def _write(writer: ShardWriter, root: Path, recs: list[Record], digests: dict[str, str], bar) -> None:
    """Write ``recs``, each image re-read and checked against the digest taken at validation."""
    for r in recs:
        data = (root / r.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != digests[r.path]:
            raise SourceChangedError(f"{root / r.path} changed while sharding")
        writer.write(r.key, data, r.labels, split=r.split, path=r.path)
        bar.update(1)


def write_shards(src_dir: str | os.PathLike, shard_dir: str | os.PathLike | None = None,
                 cfg: ShardConfig = ShardConfig()) -> dict:
    """Validate the source ``src_dir`` (a FashionDataset-layout folder, or a ``.csv`` with ``cfg.images``) and write
    its shard set to ``shard_dir`` (default :func:`default_shard_dir`).

    Returns the manifest. Raises :class:`~fastfashion.data.source.SourceError` (naming file and line) for a bad
    source or image unless ``cfg.skip_bad`` (then per-sample problems are listed under ``"skipped"`` in the
    manifest; structural ones still raise), ``FileExistsError`` if ``shard_dir`` holds a shard set and
    ``cfg.overwrite`` is off. Nothing is left behind on failure.
    """
    src = Path(src_dir)
    out = Path(shard_dir) if shard_dir is not None else default_shard_dir(src)
    _check_paths(src, out, cfg.images)
    skipped: list[dict] = []

    def on_error(split: str, line: int, path: str, err: SourceError) -> None:
        skipped.append(_skip_entry(split, line, path, str(err)))
        log.warning("skipping: %s", err)

    source = open_source(src, cfg, on_error if cfg.skip_bad else None)
    options = cfg.manifest_options()
    if source.dealt:  # only an option in effect is recorded: with a split column, the CSV says where each row goes
        options["split_ratio"] = list(cfg.split_ratio)
    # the target is checked here, before minutes of validation; the manifest's source and skipped come after it
    writer = ShardWriter(out, source.schema, samples_per_shard=cfg.samples_per_shard, overwrite=cfg.overwrite,
                         check_images=False, options=options)
    num_listed = sum(len(v) for v in source.records.values()) + len(skipped)
    # webdataset imports torch (~3 s): overlap that with validation, which mostly waits on worker processes.
    threading.Thread(target=importlib.import_module, args=("webdataset",), daemon=True).start()
    good, digests = _validate_images(source.image_root, source.records, cfg, skipped)
    t0 = time.perf_counter()
    writer.source = {"name": source.name, "fingerprint": _source_digest(source, digests), "num_listed": num_listed}
    writer.skipped = skipped
    with writer, progress(total=sum(len(v) for v in good.values()), desc="write", unit="img", leave=False) as bar:
        for split in sorted(good, key=split_order):
            _write(writer, source.image_root, good[split], digests, bar)
    manifest = writer.manifest
    n = sum(s["num_samples"] for s in manifest["splits"].values())
    log.info("wrote %d samples (%d skipped) to %s in %.1f s", n, len(skipped), out, time.perf_counter() - t0)
    return manifest

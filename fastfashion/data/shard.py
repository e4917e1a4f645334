"""Pack a FashionDataset folder into validated WebDataset shards with DALI indexes and a manifest.

``write_shards`` reads the source (:mod:`fastfashion.data.source`), validates every image
(:mod:`fastfashion.data.validate`) before anything is written, then writes each split through
:class:`~fastfashion.format.writer.ShardSetWriter` (tars, ``.idx`` files, and ``manifest.json`` last; the format is
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
from typing import Iterator

from ..errors import fixable, sigterm_as_terminated
from ..format.atomic import clean_stale, file_sha256
from ..format.spec import LABELLED_SPLITS, SPLITS, TRAIN, split_order
from ..format.writer import Sample, ShardSetWriter, check_target
from ..progress import progress
from ..schema import FASHION_SCHEMA, Schema
from .source import Record, SourceError, read_source
from .validate import JPEG_POLICY, check_files

log = logging.getLogger(__name__)

DEFAULT_SAMPLES_PER_SHARD = 500
"""Real set: 10 train shards of ~6 MB, 2 val, 2 test. fastfashion's loaders read samples by offset (from the .idx
files) in their own per-epoch order, so the shard count does not limit shuffling for them; 500 keeps enough train
shards for plain webdataset consumers, which hand whole shards to ranks x workers (e.g. 2 x 4 = 8 <= 10), while
per-file overhead stays negligible and a damaged shard costs little to re-create or re-verify."""


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


def default_shard_dir(src_dir: str | os.PathLike) -> Path:
    """``shards/<name of SRC_DIR>`` (relative to the current directory)."""
    return Path("shards") / Path(src_dir).resolve().name


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


def _check_paths(src: Path, out: Path) -> None:
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents \
            or out.resolve() in src.resolve().parents:
        raise ValueError(f"output folder {out} must not contain or be inside the source {src}")


def _validate_images(src: Path, records: dict[str, list[Record]], cfg: ShardConfig,
                     skipped: list[dict]) -> tuple[dict[str, list[Record]], dict[str, str]]:
    """Fully decode every listed image. Returns the good records per split (train shuffled by ``cfg.seed``) and the
    sha256 of every readable image; a bad image raises :class:`BadImageError` or, with ``cfg.skip_bad``, is added
    to ``skipped``."""
    all_recs = [r for s in SPLITS for r in records[s]]
    t0 = time.perf_counter()
    checks = check_files([src / r.path for r in all_recs], cfg.workers)
    log.info("validated %d images in %.1f s", len(all_recs), time.perf_counter() - t0)
    digests = {r.path: c.sha256 for r, c in zip(all_recs, checks) if c.sha256}
    bad = [(r, c.reason) for r, c in zip(all_recs, checks) if c.reason is not None]
    if bad and not cfg.skip_bad:
        r, reason = bad[0]
        more = f" (and {len(bad) - 1} more bad images)" if len(bad) > 1 else ""
        raise fixable(BadImageError(src / "split" / f"{r.split}.txt", r.line, f"image {r.path!r}: {reason}{more}"),
                      "skip_bad")
    for r, reason in bad:
        skipped.append(_skip_entry(r.split, r.line, r.path, f"{src / 'split' / f'{r.split}.txt'}:{r.line}: "
                                                            f"image {r.path!r}: {reason}"))
        log.warning("skipping %s: %s", r.path, reason)
    bad_paths = {r.path for r, _ in bad}
    good = {s: [r for r in records[s] if r.path not in bad_paths] for s in SPLITS}
    random.Random(cfg.seed).shuffle(good[TRAIN])  # val/test keep split-file order
    skipped.sort(key=lambda k: (split_order(k["split"]), k["line"]))
    return good, digests


def _samples(src: Path, recs: list[Record], digests: dict[str, str], bar) -> Iterator[Sample]:
    """The samples of ``recs``, each image re-read and checked against the digest taken at validation."""
    for r in recs:
        data = (src / r.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != digests[r.path]:
            raise RuntimeError(f"{src / r.path} changed while sharding")
        bar.update(1)
        yield Sample(r.key, r.path, data, r.labels)


def write_shards(src_dir: str | os.PathLike, shard_dir: str | os.PathLike | None = None,
                 cfg: ShardConfig = ShardConfig()) -> dict:
    """Validate ``src_dir`` and write its shard set to ``shard_dir`` (default :func:`default_shard_dir`).

    Returns the manifest. Raises :class:`~fastfashion.data.source.SourceError` (naming file and line) for a bad
    source or image unless ``cfg.skip_bad`` (then per-sample problems are listed under ``"skipped"`` in the
    manifest; structural ones still raise), ``FileExistsError`` if ``shard_dir`` holds a shard set and
    ``cfg.overwrite`` is off. Nothing is left behind on failure.
    """
    src = Path(src_dir)
    out = Path(shard_dir) if shard_dir is not None else default_shard_dir(src)
    _check_paths(src, out)
    clean_stale(out)
    check_target(out, cfg.overwrite)  # fail fast, before minutes of validation
    skipped: list[dict] = []

    def on_error(split: str, line: int, path: str, err: SourceError) -> None:
        skipped.append(_skip_entry(split, line, path, str(err)))
        log.warning("skipping: %s", err)

    records = read_source(src, cfg.schema, on_error=on_error if cfg.skip_bad else None)
    num_listed = sum(len(v) for v in records.values()) + len(skipped)
    # webdataset imports torch (~3 s): overlap that with validation, which mostly waits on worker processes.
    threading.Thread(target=importlib.import_module, args=("webdataset",), daemon=True).start()
    good, digests = _validate_images(src, records, cfg, skipped)
    t0 = time.perf_counter()
    source = {"name": src.resolve().name, "fingerprint": _fingerprint(src, records, digests),
              "num_listed": num_listed}
    with sigterm_as_terminated(), ShardSetWriter(out, cfg.schema, overwrite=cfg.overwrite) as writer, \
            progress(total=sum(len(v) for v in good.values()), desc="write", unit="img", leave=False) as bar:
        for split in SPLITS:
            labelled = split in LABELLED_SPLITS or any(r.labels is not None for r in records[split])
            writer.write_split(split, _samples(src, good[split], digests, bar), cfg.samples_per_shard,
                               labelled=labelled)
        manifest = writer.commit(source=source, options=cfg.manifest_options(), skipped=skipped,
                                 extra={"jpeg_policy": JPEG_POLICY})
    n = sum(s["num_samples"] for s in manifest["splits"].values())
    log.info("wrote %d samples (%d skipped) to %s in %.1f s", n, len(skipped), out, time.perf_counter() - t0)
    return manifest

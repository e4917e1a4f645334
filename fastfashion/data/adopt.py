"""Adopt a WebDataset shard set written by any tool: ``fastfashion index DIR`` (:func:`index_shards`).

The tars stay as they are. Every sample is checked first (a ``.jpg`` member whose structure the loader
accepts: JPEG markers, at most ``max_image_pixels`` pixels, an end-of-image marker, :mod:`fastfashion.format.jpeg`;
labels that fit the schema, unique keys; ``check_images`` also decodes every JPEG), then each ``NAME.tar`` gets its
DALI index ``NAME.idx``, each split its wids index, and the folder a ``manifest.json`` (counts, sizes, sha256, class
counts, the schema, the label member), written last. Nothing is written when a check fails.

* Splits: from the tar names (``train-000.tar``, ``val_3.tar``, ``test.tar``: the name up to the first ``-``,
  ``_`` or ``.``), or all tars in one split (``split=``).
* Labels: the first of ``.lbl`` (int64 x K), ``.cls`` (one attribute, webdataset's convention) and ``.json``
  (class ids or names, :mod:`fastfashion.format.labels`) that the samples carry; a split whose samples carry none
  is unlabelled (a set without any: ``label_member`` ``none``).
* Schema: the given one, else inferred from the labels (``.json``: its attribute names; ``.cls``: ``class``;
  ``.lbl``: ``attr1`` ...; classes ``"0"`` .. max for ids, the sorted names otherwise).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tarfile
from pathlib import Path

from ..errors import ConfigError, FastfashionError, TargetExistsError, fixable, sigterm_as_terminated
from ..format.atomic import file_sha256, fsync, write_file
from ..format.dali_index import IndexEntry, entries_from_tar, format_index
from ..format.jpeg import MAX_IMAGE_PIXELS, jpeg_problem
from ..format.labels import LABEL_MEMBERS, infer_schema, raw_labels, to_class_ids
from ..format.manifest import MANIFEST
from ..format.reader import ShardFiles, sample_key
from ..format.spec import JPEG_START, split_order
from ..format.writer import manifest_doc, write_wids_indexes
from ..options import option
from ..progress import progress
from ..schema import Schema, SchemaError
from .validate import JPEG_POLICY, check_jpeg

log = logging.getLogger(__name__)

_TAR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.tar")  # a name the manifest accepts
_SPLIT_PREFIX = re.compile(r"([A-Za-z0-9]+)[-_.]")


class AdoptError(FastfashionError, ValueError):
    """A shard set cannot be adopted; the message names the tar (and the key)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexConfig:
    """Options of :func:`index_shards`."""

    schema: Schema | None = option(None, metavar="FILE", parse=Schema.load, help=(  # None: from the label members
        "the attribute schema (schema.json or list_attr_cloth.txt); default: inferred from the labels"))
    split: str | None = option(None, metavar="SPLIT", help=(  # instead of reading it from the names
        "put every tar in this split (default: from the names: train-*, val-*, test-*)"))
    check_images: bool = option(False, help="also fully decode every JPEG (fastfashion shard's JPEG policy)")
    max_image_pixels: int = option(MAX_IMAGE_PIXELS, help=(  # PIL's default; the loader applies its own
        "refuse a JPEG whose header claims more pixels (default: %(default)s, PIL's limit)"))
    overwrite: bool = option(False, help="replace an existing manifest.json and .idx files")

    def __post_init__(self) -> None:
        if isinstance(self.max_image_pixels, bool) or not isinstance(self.max_image_pixels, int) \
                or self.max_image_pixels < 1:
            raise ConfigError(f"max_image_pixels must be a positive integer, got {self.max_image_pixels!r}")


@dataclasses.dataclass
class _Shard:
    tar: Path
    split: str
    entries: list[IndexEntry]
    raws: list = dataclasses.field(default_factory=list)   # label values per sample, before the schema
    ids: list = dataclasses.field(default_factory=list)    # class ids per sample (None: unlabelled)


def _split_of(tar: Path, split: str | None) -> str:
    if split is not None:
        return split
    m = _SPLIT_PREFIX.match(tar.name)
    if m is None or m.group(1) not in ("train", "val", "test"):
        raise fixable(AdoptError(f"{tar}: cannot tell the split from the name (expected train-*.tar, val-*.tar or "
                                 "test-*.tar)"), "index_split")
    return m.group(1)


def _entries(tar: Path) -> list[IndexEntry]:
    """The samples of one tar; an unreadable or empty tar is an error naming it."""
    try:
        entries = entries_from_tar(tar)
    except (tarfile.TarError, OSError) as e:
        raise AdoptError(f"{tar}: not a readable tar archive ({e or type(e).__name__})") from None
    if not entries:
        raise AdoptError(f"{tar}: an empty tar (no samples); remove it or write its samples")
    return entries


def _label_member(shards: list[_Shard]) -> str | None:
    """The label member of the set: the first of LABEL_MEMBERS that any sample carries."""
    present = {ext for sh in shards for e in sh.entries for ext in e.members}
    return next((m for m in LABEL_MEMBERS if m in present), None)


def _scan(shard: _Shard, member: str | None, files: ShardFiles, keys: dict[str, Path], cfg: IndexConfig,
          bar) -> None:
    """Check every sample of one tar and collect its raw labels."""
    for e in shard.entries:
        key = sample_key(e.key)
        where = f"{shard.tar}: sample {key!r}"
        if key in keys:
            raise AdoptError(f"{where}: key also in {keys[key]}")
        keys[key] = shard.tar
        if "jpg" not in e.members:
            raise AdoptError(f"{where} has no .jpg member (members: {', '.join(sorted(e.members))})")
        off, size = e.members["jpg"]
        if cfg.check_images:
            reason = check_jpeg(files.read(str(shard.tar), off, size), cfg.max_image_pixels)
        elif files.read(str(shard.tar), off, min(size, len(JPEG_START))) != JPEG_START:
            reason = "not JPEG data"
        else:  # the structure, no decode: what the loader checks before decoding
            problem = jpeg_problem(files.read(str(shard.tar), off, size), cfg.max_image_pixels)
            reason = None if problem is None else f"JPEG {problem}"
        if reason:
            raise AdoptError(f"{where}: .jpg member: {reason}")
        raw = None
        if member == "lbl" and "lbl" not in e.members:
            raise AdoptError(f"{where} has no .lbl member (a .lbl set needs one per sample: all -1 when unlabelled)")
        if member in e.members:
            try:
                raw = raw_labels(member, files.read(str(shard.tar), *e.members[member]))
            except ValueError as err:
                raise AdoptError(f"{where}: {err}") from None
        shard.raws.append(raw)
        bar.update(1)


def _apply_schema(shards: list[_Shard], member: str | None, schema: Schema) -> None:
    for sh in shards:
        for e, raw in zip(sh.entries, sh.raws):
            try:
                sh.ids.append(to_class_ids(member, raw, schema) if member else None)
            except ValueError as err:
                raise AdoptError(f"{sh.tar}: sample {sample_key(e.key)!r}: .{member} labels: {err}") from None


def _split_entries(shards: list[_Shard], schema: Schema) -> dict[str, dict]:
    """The manifest's ``splits`` (shards with checksums, class counts); a split is labelled when every sample is."""
    splits: dict[str, dict] = {}
    for split in sorted({sh.split for sh in shards}, key=split_order):
        mine = [sh for sh in shards if sh.split == split]
        labelled = [ids is not None for sh in mine for ids in sh.ids]
        if any(labelled) and not all(labelled):
            sh, e = next((sh, e) for sh in mine for e, ids in zip(sh.entries, sh.ids) if ids is None)
            raise AdoptError(f"{sh.tar}: sample {sample_key(e.key)!r} has no labels, other samples of split "
                             f"{split!r} do")
        counts = {a.name: [0] * a.num_classes for a in schema}
        for ids in (i for sh in mine for i in sh.ids if i is not None):
            for a, v in zip(schema, ids):
                counts[a.name][v] += 1
        entries = [{"tar": sh.tar.name, "idx": sh.tar.with_suffix(".idx").name, "num_samples": len(sh.entries),
                    "bytes": sh.tar.stat().st_size, "sha256": file_sha256(sh.tar)} for sh in mine]
        splits[split] = {"num_samples": sum(len(sh.entries) for sh in mine), "labelled": all(labelled) and
                         bool(labelled), "class_counts": counts if all(labelled) and labelled else None,
                         "shards": entries}
    return splits


def _read_set(d: Path, cfg: IndexConfig) -> tuple[list[_Shard], str | None, Schema]:
    tars = sorted(d.glob("*.tar"))
    if not tars:
        raise AdoptError(f"{d}: no .tar files to index")
    for t in tars:
        if not _TAR_NAME.fullmatch(t.name):
            raise AdoptError(f"{t}: rename it to letters, digits, '_', '-' and '.' (a name the manifest accepts)")
    shards = [_Shard(t, _split_of(t, cfg.split), _entries(t)) for t in tars]
    member = _label_member(shards)
    keys: dict[str, Path] = {}
    with ShardFiles() as files, progress(total=sum(len(sh.entries) for sh in shards), desc="index", unit="img",
                                         leave=False) as bar:
        for sh in shards:
            _scan(sh, member, files, keys, cfg, bar)
    try:
        schema = cfg.schema or infer_schema(member or "json", [r for sh in shards for r in sh.raws])
    except SchemaError as e:
        raise fixable(AdoptError(f"{d}: {e}"), "schema") from None
    if cfg.schema is None:
        log.info("schema inferred from the .%s members: %s", member,
                 ", ".join(f"{a.name} {list(a.classes)}" for a in schema))
    _apply_schema(shards, member, schema)
    return shards, member, schema


def index_shards(shard_dir: str | os.PathLike, cfg: IndexConfig = IndexConfig()) -> dict:
    """Adopt the WebDataset tars in ``shard_dir`` (see the module docstring); returns the manifest.

    Raises :class:`AdoptError` naming the tar and key of the first problem (nothing written then),
    FileExistsError when the folder has a manifest and ``cfg.overwrite`` is off.
    """
    d = Path(shard_dir)
    if not d.is_dir():
        raise AdoptError(f"{d}: not a folder")
    if (d / MANIFEST).exists() and not cfg.overwrite:
        raise fixable(TargetExistsError(f"{d} already has a {MANIFEST}; refusing to replace it"), "overwrite")
    shards, member, schema = _read_set(d, cfg)
    splits = _split_entries(shards, schema)
    written: list[Path] = []
    with sigterm_as_terminated():
        try:
            for sh in shards:
                idx = sh.tar.with_suffix(".idx")
                write_file(idx, lambda tmp, sh=sh: tmp.write_text(format_index(sh.entries), encoding="utf-8"))
                written.append(idx)
                entry = next(e for e in splits[sh.split]["shards"] if e["tar"] == sh.tar.name)
                entry["idx_sha256"] = file_sha256(idx)
            write_wids_indexes(d, splits)
            source_digest = hashlib.sha256("".join(f"{e['tar']} {e['sha256']}\n" for s in splits.values()
                                                   for e in s["shards"]).encode()).hexdigest()
            source = {"name": d.resolve().name, "fingerprint": "sha256:" + source_digest,
                      "num_listed": sum(s["num_samples"] for s in splits.values())}
            manifest = manifest_doc(schema, splits, source=source, options={"adopted": True,
                                    "check_images": cfg.check_images}, extra={"label_member": member or "none",
                                    **({"jpeg_policy": JPEG_POLICY} if cfg.check_images else {})})
            write_file(d / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                                                                encoding="utf-8"))
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
    for p in written:
        fsync(p)
    log.info("indexed %d samples in %d tars (%s labels)", manifest["source"]["num_listed"], len(shards), member)
    return manifest

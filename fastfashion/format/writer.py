"""The shard set writer: :class:`ShardSetWriter` writes tars (webdataset's ``TarWriter``), their DALI ``.idx``
files and ``manifest.json``, in a temporary folder renamed into place by :meth:`~ShardSetWriter.commit`.

Its reading half is :mod:`fastfashion.format.reader`; the format is specified in ``docs/format.md``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._version import __version__
from ..errors import FastfashionError, TargetExistsError, fixable
from ..schema import Schema
from .atomic import clean_stale, file_sha256, fsync, make_temp_dir, replace_dir, with_path
from .dali_index import entries_from_tar, write_index
from .spec import FORMAT, MANIFEST, VERSION, encode_labels, sample_json, shard_names, wids_index, wids_name

TAR_MTIME = 0  # fixed member mtime: the same samples and options give byte-identical tars (and manifest)


class ShardSetWriteError(FastfashionError, RuntimeError):
    """A shard did not read back as written (e.g. a sample key with a dot, which the tar format splits)."""


# --- the target folder ------------------------------------------------------------------------------------
def check_target(shard_dir: Path, overwrite: bool) -> None:
    """Raise :class:`~fastfashion.errors.TargetExistsError` (a FileExistsError) unless ``shard_dir`` may be
    written: missing, empty, or a shard set and ``overwrite``."""
    if not shard_dir.exists():
        return
    if not shard_dir.is_dir():
        raise TargetExistsError(f"{shard_dir} exists and is not a folder")
    if not any(shard_dir.iterdir()):
        return  # an empty folder is replaced without asking
    if not (shard_dir / MANIFEST).is_file():
        raise TargetExistsError(f"{shard_dir} exists and is not a shard set; refusing to replace it")
    if not overwrite:
        raise fixable(TargetExistsError(f"{shard_dir} already holds a shard set; refusing to replace it without "
                                      "overwrite=True"), "overwrite")


# --- the writer ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sample:
    """What goes into one tar sample."""

    key: str
    path: str          # as listed, relative to the source root ("img/00042.jpg")
    jpeg: bytes
    labels: tuple[int, ...] | None


class ShardSetWriter:
    """Context manager building a shard set in a temporary folder; :meth:`commit` writes ``manifest.json`` and
    renames the folder into place. Leaving the ``with`` block without ``commit`` (an exception, Ctrl-C) removes the
    temporary folder::

        with ShardSetWriter(shard_dir, schema) as w:
            w.write_split("train", samples, samples_per_shard=500, labelled=True)
            w.commit(source={...}, options={...})

    The writer owns every field of the format (name, version, schema, splits with their shards, sample counts,
    class counts and checksums); the caller supplies what only it knows (``source``, ``options``, ``skipped``,
    ``extra`` fields such as the JPEG policy).
    """

    def __init__(self, shard_dir: str | os.PathLike, schema: Schema, *, overwrite: bool = False):
        self.shard_dir = Path(shard_dir)
        self.schema = schema
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self.splits: dict[str, dict] = {}
        self._open: dict[str, dict] = {}  # split -> pending samples, written shards, class counts

    def __enter__(self) -> ShardSetWriter:
        clean_stale(self.shard_dir)
        check_target(self.shard_dir, self.overwrite)
        self.tmp = make_temp_dir(self.shard_dir)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp is not None:  # not committed
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def add(self, split: str, sample: Sample, samples_per_shard: int) -> None:
        """Append one sample to ``split``: a shard is written each time ``samples_per_shard`` are pending (the
        incremental form of :meth:`write_split`; :meth:`finish_split` writes the rest)."""
        if self.tmp is None:
            raise RuntimeError("ShardSetWriter.add outside its with block")
        if split in self.splits:
            raise RuntimeError(f"split {split!r} was already finished")
        st = self._open.setdefault(split, {"pending": [], "shards": [],
                                           "counts": {a.name: [0] * a.num_classes for a in self.schema}})
        st["pending"].append(sample)
        for a, v in zip(self.schema, sample.labels or ()):
            st["counts"][a.name][v] += 1
        if len(st["pending"]) >= samples_per_shard:
            st["shards"].append(self._write_shard(split, len(st["shards"]), st["pending"]))
            st["pending"] = []

    def finish_split(self, split: str, *, labelled: bool) -> dict:
        """Write ``split``'s last (smaller) shard and record its manifest entry (returned): ``num_samples``,
        ``labelled``, ``class_counts`` (counted from the labels written; None when unlabelled) and ``shards``. A
        split that got no sample gets an entry without shards."""
        st = self._open.pop(split, None) or {"pending": [], "shards": [],
                                              "counts": {a.name: [0] * a.num_classes for a in self.schema}}
        if st["pending"]:
            st["shards"].append(self._write_shard(split, len(st["shards"]), st["pending"]))
        shards = st["shards"]
        entry = {"num_samples": sum(sh["num_samples"] for sh in shards), "labelled": labelled,
                 "class_counts": st["counts"] if labelled else None, "shards": shards}
        self.splits[split] = entry
        return entry

    def write_split(self, split: str, samples: Iterable[Sample], samples_per_shard: int, *,
                    labelled: bool) -> dict:
        """Write ``samples`` (in order) into ``{split}-{i:05d}.tar`` + ``.idx`` of ``samples_per_shard`` each (the
        last may be smaller) and record the split's manifest entry (returned, see :meth:`finish_split`)."""
        if self.tmp is None:
            raise RuntimeError("ShardSetWriter.write_split outside its with block")
        for s in samples:
            self.add(split, s, samples_per_shard)
        return self.finish_split(split, labelled=labelled)

    def _write_shard(self, split: str, index: int, batch: list[Sample]) -> dict:
        """One tar and its ``.idx``; returns the shard's manifest entry. An OSError without a file name (a full
        disk) is raised again naming the tar."""
        tar_name, idx_name = shard_names(split, index)
        tar_path, idx_path = self.tmp / tar_name, self.tmp / idx_name
        try:
            return self._write_files(batch, tar_path, idx_path)
        except OSError as e:
            raise with_path(e, tar_path) from e

    def _write_files(self, batch: list[Sample], tar_path: Path, idx_path: Path) -> dict:
        import webdataset as wds
        tar_name, idx_name = tar_path.name, idx_path.name
        with wds.TarWriter(str(tar_path), encoder=False, mtime=TAR_MTIME) as tw:
            for s in batch:
                tw.write({"__key__": s.key, "jpg": s.jpeg, "lbl": encode_labels(s.labels, self.schema),
                          "json": sample_json(s.path, s.labels, self.schema)})
        entries = entries_from_tar(tar_path)
        if [e.key for e in entries] != [s.key for s in batch]:  # e.g. a key with a dot in it
            raise ShardSetWriteError(f"{tar_name}: sample keys read back differ from those written")
        write_index(idx_path, entries)
        for p in (tar_path, idx_path):
            fsync(p)
        return {"tar": tar_name, "idx": idx_name, "num_samples": len(batch), "bytes": tar_path.stat().st_size,
                "sha256": file_sha256(tar_path), "idx_sha256": file_sha256(idx_path)}

    def commit(self, *, source: dict, options: dict, skipped: Sequence[dict] = (), extra: dict | None = None) -> dict:
        """Write each split's wids index (:func:`~fastfashion.format.spec.wids_index`), ``manifest.json`` (sorted
        keys) and move the folder into place; returns the manifest."""
        if self.tmp is None:
            raise RuntimeError("ShardSetWriter.commit called twice or outside its with block")
        if self._open:
            raise RuntimeError(f"split(s) {sorted(self._open)} not finished (finish_split)")
        write_wids_indexes(self.tmp, self.splits)
        manifest = manifest_doc(self.schema, self.splits, source=source, options=options, skipped=skipped,
                                extra=extra)
        write_manifest(self.tmp, manifest)
        check_target(self.shard_dir, self.overwrite)  # re-check: someone may have created it meanwhile
        replace_dir(self.tmp, self.shard_dir)
        self.tmp = None
        return manifest


def write_wids_indexes(shard_dir: Path, splits: dict[str, dict]) -> None:
    """``{split}.wids.json`` for every split with shards (what ``wids.ShardListDataset`` opens)."""
    for split, entry in splits.items():
        if entry["shards"]:
            path = shard_dir / wids_name(split)
            try:
                path.write_text(wids_index(split, entry["shards"]), encoding="utf-8")
            except OSError as e:
                raise with_path(e, path) from e
            fsync(path)


def manifest_doc(schema: Schema, splits: dict[str, dict], *, source: dict, options: dict,
                 skipped: Sequence[dict] = (), extra: dict | None = None) -> dict:
    """The manifest: every format field (name, version, creator, schema, splits) and the caller's ``source``,
    ``options``, ``skipped`` and ``extra`` fields (specified in ``docs/format.md``)."""
    return {**(extra or {}), "format": FORMAT, "version": VERSION, "created_by": f"fastfashion {__version__}",
            "schema": schema.to_dict(), "source": source, "options": options, "skipped": list(skipped),
            "splits": splits}


def write_manifest(shard_dir: Path, manifest: dict) -> None:
    """``shard_dir/manifest.json`` with sorted keys, synced; a full disk names the file."""
    path = shard_dir / MANIFEST
    try:
        path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as e:
        raise with_path(e, path) from e
    fsync(path)

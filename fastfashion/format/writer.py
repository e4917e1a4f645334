"""The shard set writer: :class:`ShardSetWriter` writes tars (webdataset's ``TarWriter``), their DALI ``.idx``
files and ``manifest.json``, in a temporary folder renamed into place by :meth:`~ShardSetWriter.commit`.

Its reading half is :mod:`fastfashion.format.reader`; the format is specified in ``docs/format.md``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from ..errors import fixable
from ..schema import Schema
from .atomic import clean_stale, file_sha256, fsync, make_temp_dir, replace_dir
from .dali_index import entries_from_tar, write_index
from .spec import MANIFEST, encode_labels, sample_json, shard_names

TAR_MTIME = 0  # fixed member mtime: the same samples and options give byte-identical tars (and manifest)


# --- the target folder ------------------------------------------------------------------------------------
def check_target(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if not any(out_dir.iterdir()):
        return  # an empty folder is replaced without asking
    if not (out_dir / MANIFEST).is_file():
        raise FileExistsError(f"{out_dir} exists and is not a shard set; refusing to replace it")
    if not overwrite:
        raise fixable(FileExistsError(f"{out_dir} already holds a shard set; refusing to replace it without "
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
    """Context manager building a shard set in a temporary folder; :meth:`commit` renames it into place.

    Leaving the ``with`` block without ``commit`` (an exception, Ctrl-C) removes the temporary folder::

        with ShardSetWriter(out_dir, schema) as w:
            w.write_split("train", samples, samples_per_shard=500)
            w.commit(manifest_without_splits)
    """

    def __init__(self, out_dir: str | os.PathLike, schema: Schema, *, overwrite: bool = False):
        self.out_dir = Path(out_dir)
        self.schema = schema
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self.splits: dict[str, dict] = {}

    def __enter__(self) -> "ShardSetWriter":
        clean_stale(self.out_dir)
        check_target(self.out_dir, self.overwrite)
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
        check_target(self.out_dir, self.overwrite)  # re-check: someone may have created it meanwhile
        replace_dir(self.tmp, self.out_dir)
        self.tmp = None
        return self.out_dir

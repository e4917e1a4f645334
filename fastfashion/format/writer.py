"""Writing the format: :func:`write_shard` (one tar, the bytes webdataset's ``TarWriter`` writes, and its DALI
``.idx``: the unit of work of every writer front-end), the split entries, the wids indexes and ``manifest.json``, and
:func:`commit_set`, which writes the manifest last and renames the finished folder into place. The one writer
class built on them is :class:`fastfashion.data.pack.ShardWriter`.

Its reading half is :mod:`fastfashion.format.reader`; the format is specified in ``docs/format.md``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._version import __version__
from ..errors import FastfashionError, TargetExistsError, fixable
from ..schema import Schema
from .atomic import file_sha256, fsync, replace_dir, with_path
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


# --- one shard, one split, the set -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sample:
    """What goes into one tar sample."""

    key: str
    path: str          # as listed, relative to the source root ("img/00042.jpg")
    jpeg: bytes
    labels: tuple[int, ...] | None


def write_shard(folder: Path, split: str, index: int, samples: Iterable[Sample], schema: Schema) -> dict:
    """Write shard ``index`` of ``split`` into ``folder``: ``{split}-{index:05d}.tar`` (the samples in order, fixed
    member mtime and owner: the same samples give the same bytes) and its DALI ``.idx``, both synced; ``samples`` is
    iterated once (a generator reading each image as it goes holds one image at a time). Returns the
    shard's manifest entry (names, sample count, bytes, sha256 of both files). A pure function of its arguments:
    what a writer front-end (a local writer, a worker of a cluster) calls per shard. Raises
    :class:`ShardSetWriteError` when the tar does not read back with the keys written, an OSError naming the tar
    on a full disk."""
    tar_name, idx_name = shard_names(split, index)
    tar_path, idx_path = folder / tar_name, folder / idx_name
    try:
        keys = []
        with open(tar_path, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
            for s in samples:
                members = {"jpg": s.jpeg, "lbl": encode_labels(s.labels, schema),
                           "json": sample_json(s.path, s.labels, schema)}
                for ext in sorted(members):
                    _add(tar, f"{s.key}.{ext}", members[ext])
                keys.append(s.key)
        entries = entries_from_tar(tar_path)
        if [e.key for e in entries] != keys:  # e.g. a key with a dot in it
            raise ShardSetWriteError(f"{tar_name}: sample keys read back differ from those written")
        write_index(idx_path, entries)
        for p in (tar_path, idx_path):
            fsync(p)
        return {"tar": tar_name, "idx": idx_name, "num_samples": len(keys), "bytes": tar_path.stat().st_size,
                "sha256": file_sha256(tar_path), "idx_sha256": file_sha256(idx_path)}
    except OSError as e:
        raise with_path(e, tar_path) from e


def _add(tar: tarfile.TarFile, name: str, data: bytes | str) -> None:
    """One member, as webdataset's ``TarWriter(encoder=False, mtime=TAR_MTIME)`` writes it (owner ``bigdata``,
    mode 0444, members of a sample in sorted order): the bytes of every fastfashion tar since 0.1, without importing
    webdataset (and torch) in every worker."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o444
    info.uname = info.gname = "bigdata"
    tar.addfile(info, io.BytesIO(data))


def class_counts(samples: Iterable[Sample], schema: Schema) -> dict[str, list[int]]:
    """Per attribute, the number of samples of each class (unlabelled samples count nowhere)."""
    counts = {a.name: [0] * a.num_classes for a in schema}
    for sample in samples:
        for a, v in zip(schema, sample.labels or ()):
            counts[a.name][v] += 1
    return counts


def split_entry(shards: list[dict], *, labelled: bool, counts: dict[str, list[int]]) -> dict:
    """A split's manifest entry: ``num_samples``, ``labelled``, ``class_counts`` (None when unlabelled),
    ``shards``."""
    return {"num_samples": sum(sh["num_samples"] for sh in shards), "labelled": labelled,
            "class_counts": counts if labelled else None, "shards": shards}


def commit_set(tmp: Path, shard_dir: Path, manifest: dict, *, overwrite: bool) -> None:
    """Finish the set built in ``tmp``: each split's wids index, ``manifest.json`` (written last, sorted keys), then
    ``tmp`` renamed to ``shard_dir`` (an existing set replaced only with ``overwrite``, checked again here: someone
    may have created it meanwhile)."""
    write_wids_indexes(tmp, manifest["splits"])
    write_manifest(tmp, manifest)
    check_target(shard_dir, overwrite)
    replace_dir(tmp, shard_dir)


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

"""The Python writer for samples produced by code: :class:`ShardWriter`, what ``fastfashion shard`` writes through.

::

    from fastfashion import Schema, ShardWriter
    schema = Schema.load("schema.json")
    with ShardWriter("shards/mine", schema) as w:
        for key, jpeg_bytes, labels in samples:          # labels: ids or class names, a list or {attribute: value}
            w.write(key, jpeg_bytes, labels)             # split="train" by default; labels=None: unlabelled
    # shards/mine: tars, .idx files, wids indexes and manifest.json, as `fastfashion shard` writes them

Every JPEG is checked against the JPEG policy (:mod:`fastfashion.data.validate`) and every label against the
schema as it is written; a bad one raises :class:`ShardWriterError` naming the split and key, and nothing is left
behind (the set is built in a temporary folder and moved into place when the ``with`` block ends without error).
Samples are stored in the order written (``fastfashion shard`` shuffles train by its seed before writing).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ConfigError, FastfashionError, sigterm_as_terminated
from ..format.atomic import clean_stale, make_temp_dir
from ..format.spec import LABELLED_SPLITS, SPLIT_NAME, SPLITS, split_order
from ..format.writer import Sample, check_target, class_counts, commit_set, manifest_doc, split_entry, write_shard
from ..schema import Schema, SchemaError
from .validate import JPEG_POLICY, check_jpeg

DEFAULT_SAMPLES_PER_SHARD = 500
"""Real set: 10 train shards of ~6 MB, 2 val, 2 test. fastfashion's loaders read samples by offset (from the .idx
files) in their own per-epoch order, so the shard count does not limit shuffling for them; 500 keeps enough train
shards for plain webdataset consumers, which hand whole shards to ranks x workers (e.g. 2 x 4 = 8 <= 10), while
per-file overhead stays negligible and a damaged shard costs little to re-create or re-verify."""


class ShardWriterError(FastfashionError, ValueError):
    """A sample given to :class:`ShardWriter` is invalid; the message names the split and key."""


class ShardWriter:
    """Context manager writing a shard set sample by sample (see the module docstring): the one writer class. It
    checks each sample, cuts each split into shards of ``samples_per_shard`` and writes each one with
    :func:`~fastfashion.format.writer.write_shard` in a temporary folder beside ``out_dir``; leaving the ``with``
    block without error writes the manifest last and moves the folder into place
    (:func:`~fastfashion.format.writer.commit_set`), leaving it by an exception removes the folder.

    ``samples_per_shard``: samples per tar; ``overwrite``: replace an existing shard set (only once the new one is
    complete); the target is checked when the writer is made, before any work. ``check_images``: validate each
    JPEG as it is written (``fastfashion shard`` validates all of them in parallel first and turns this off);
    ``source``, ``options``, ``skipped``: manifest fields, read when the block ends (default: a source named after
    ``out_dir`` whose ``fingerprint`` is a digest over keys, paths, labels and image sha256s).
    """

    def __init__(self, out_dir: str | os.PathLike, schema: Schema, *,
                 samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD, overwrite: bool = False,
                 check_images: bool = True, source: dict | None = None, options: dict | None = None,
                 skipped: Sequence[dict] = ()):
        if samples_per_shard < 1:
            raise ConfigError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.out_dir, self.overwrite = Path(out_dir), overwrite
        self.schema, self.samples_per_shard, self.check_images = schema, samples_per_shard, check_images
        self.source, self.skipped = source, list(skipped)
        self.options = options if options is not None else {"samples_per_shard": samples_per_shard}
        clean_stale(self.out_dir)  # the temporaries of a killed run (an interrupted overwrite is put back)
        check_target(self.out_dir, overwrite)  # fail fast, before any work
        self._tmp: Path | None = None
        self._keys: dict[str, str] = {}          # key -> split
        self._labelled: dict[str, bool] = {}     # split -> whether its samples carry labels
        self._pending: dict[str, list[Sample]] = {}  # split -> samples of its next shard
        self._shards: dict[str, list[dict]] = {}     # split -> manifest entries of its written shards
        self._counts: dict[str, dict[str, list[int]]] = {}  # split -> class counts
        self._hash = hashlib.sha256()
        self._sigterm = sigterm_as_terminated()
        self.manifest: dict | None = None        # set when the with block ends without error

    def __enter__(self) -> ShardWriter:
        self._sigterm.__enter__()
        try:
            self._tmp = make_temp_dir(self.out_dir)
        except BaseException:
            self._sigterm.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.manifest = self._commit()
        finally:
            if self._tmp is not None:  # not committed: nothing is left behind
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
            self._sigterm.__exit__(exc_type, exc, tb)

    def write(self, key: str, jpeg: bytes, labels: Sequence | Mapping | None = None, *, split: str = "train",
              path: str | None = None) -> None:
        """Add one sample: ``labels`` as class ids or class names, in schema order or as ``{attribute: value}``;
        None for an unlabelled sample (only outside train and val). ``path``: recorded in the ``.json`` member
        (default ``KEY.jpg``). Raises :class:`ShardWriterError` naming the split and key."""
        if self._tmp is None:
            raise ShardWriterError("ShardWriter.write outside its with block")
        where = f"split {split!r} key {key!r}"
        if not isinstance(split, str) or not SPLIT_NAME.fullmatch(split):
            raise ShardWriterError(f"{where}: the split is not a plain name")
        if not isinstance(key, str) or not key or "." in key or "/" in key or key.strip() != key:
            raise ShardWriterError(f"{where}: a key is a non-empty name without '.', '/' or surrounding spaces")
        if key in self._keys:
            raise ShardWriterError(f"{where}: key already written (split {self._keys[key]!r})")
        ids = self._label_ids(where, split, labels)
        if self.check_images:
            reason = check_jpeg(jpeg)
            if reason:
                raise ShardWriterError(f"{where}: {reason}")
        self._keys[key] = split
        path = f"{key}.jpg" if path is None else path
        self._hash.update(f"{split} {key} {path} {ids} {hashlib.sha256(jpeg).hexdigest()}\n".encode())
        pending = self._pending.setdefault(split, [])
        pending.append(Sample(key, path, bytes(jpeg), ids))
        if len(pending) >= self.samples_per_shard:
            self._flush(split)

    def _flush(self, split: str) -> None:
        """Write the split's pending samples as its next shard."""
        pending, self._pending[split] = self._pending.get(split, []), []
        if not pending:
            return
        shards, counts = self._shards.setdefault(split, []), self._counts.setdefault(split, class_counts((),
                                                                                                     self.schema))
        shards.append(write_shard(self._tmp, split, len(shards), pending, self.schema))
        for name, add in class_counts(pending, self.schema).items():
            counts[name] = [a + b for a, b in zip(counts[name], add)]

    def _label_ids(self, where: str, split: str, labels) -> tuple[int, ...] | None:
        if labels is None:
            if split in LABELLED_SPLITS:
                raise ShardWriterError(f"{where}: the {split} split needs labels")
        else:
            try:
                labels = self.schema.parse_labels(labels)
            except SchemaError as e:
                raise ShardWriterError(f"{where}: {e}") from None
        labelled = self._labelled.setdefault(split, labels is not None)
        if labelled != (labels is not None):
            raise ShardWriterError(f"{where}: the split mixes labelled and unlabelled samples")
        return labels

    def _commit(self) -> dict:
        """Finish every split (train, val and test always, empty ones included) and write the manifest."""
        splits = {}
        for split in sorted(set(SPLITS) | set(self._labelled), key=split_order):
            self._flush(split)
            splits[split] = split_entry(self._shards.get(split, []),
                                        labelled=self._labelled.get(split, split in LABELLED_SPLITS),
                                        counts=self._counts.get(split, class_counts((), self.schema)))
        source = self.source or {"name": self.out_dir.resolve().name,
                                 "fingerprint": "sha256:" + self._hash.hexdigest(), "num_listed": len(self._keys)}
        manifest = manifest_doc(self.schema, splits, source=source, options=self.options, skipped=self.skipped,
                                extra={"jpeg_policy": JPEG_POLICY})
        commit_set(self._tmp, self.out_dir, manifest, overwrite=self.overwrite)
        self._tmp = None
        return manifest

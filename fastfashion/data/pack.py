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
from collections.abc import Mapping, Sequence

from ..errors import ConfigError, FastfashionError, sigterm_as_terminated
from ..format.spec import LABELLED_SPLITS, SPLIT_NAME, SPLITS, split_order
from ..format.writer import Sample, ShardSetWriter
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
    """Context manager writing a shard set sample by sample (see the module docstring).

    ``samples_per_shard``: samples per tar; ``overwrite``: replace an existing shard set (only once the new one is
    complete); ``check_images``: validate each JPEG as it is written (``fastfashion shard`` validates all of them in
    parallel first and turns this off); ``source``, ``options``, ``skipped``: manifest fields (default: a source
    named after ``out_dir`` whose ``fingerprint`` is a digest over keys, paths, labels and image sha256s).
    """

    def __init__(self, out_dir: str | os.PathLike, schema: Schema, *,
                 samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD, overwrite: bool = False,
                 check_images: bool = True, source: dict | None = None, options: dict | None = None,
                 skipped: Sequence[dict] = ()):
        if samples_per_shard < 1:
            raise ConfigError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.schema, self.samples_per_shard, self.check_images = schema, samples_per_shard, check_images
        self.source, self.skipped = source, list(skipped)
        self.options = options if options is not None else {"samples_per_shard": samples_per_shard}
        self._writer = ShardSetWriter(out_dir, schema, overwrite=overwrite)
        self._keys: dict[str, str] = {}         # key -> split
        self._labelled: dict[str, bool] = {}    # split -> whether its samples carry labels
        self._hash = hashlib.sha256()
        self._sigterm = sigterm_as_terminated()
        self.manifest: dict | None = None       # set when the with block ends without error

    def __enter__(self) -> ShardWriter:
        self._sigterm.__enter__()
        try:
            self._writer.__enter__()
        except BaseException:
            self._sigterm.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.manifest = self._commit()
        finally:
            self._writer.__exit__(exc_type, exc, tb)
            self._sigterm.__exit__(exc_type, exc, tb)

    def write(self, key: str, jpeg: bytes, labels: Sequence | Mapping | None = None, *, split: str = "train",
              path: str | None = None) -> None:
        """Add one sample: ``labels`` as class ids or class names, in schema order or as ``{attribute: value}``;
        None for an unlabelled sample (only outside train and val). ``path``: recorded in the ``.json`` member
        (default ``KEY.jpg``). Raises :class:`ShardWriterError` naming the split and key."""
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
        self._writer.add(split, Sample(key, path, bytes(jpeg), ids), self.samples_per_shard)

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
        for split in sorted(set(SPLITS) | set(self._labelled), key=split_order):
            self._writer.finish_split(split, labelled=self._labelled.get(split, split in LABELLED_SPLITS))
        source = self.source or {"name": self._writer.shard_dir.resolve().name,
                                 "fingerprint": "sha256:" + self._hash.hexdigest(), "num_listed": len(self._keys)}
        return self._writer.commit(source=source, options=self.options, skipped=self.skipped,
                                   extra={"jpeg_policy": JPEG_POLICY})

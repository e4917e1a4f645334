"""Names and encodings of the shard set format (the full specification is ``docs/format.md``).

A shard set is a folder holding ``manifest.json`` and, per split, ``{split}-{index:05d}.tar`` with a DALI index
``{split}-{index:05d}.idx`` beside each. Each sample (key = the image's file stem, e.g. ``"00042"``) has, in tar
order:

* ``KEY.jpg``  -- the original JPEG bytes, untouched;
* ``KEY.json`` -- ``{"label_ids": {"pattern": 5, ...}, "labels": {"pattern": "solid", ...}, "path":
  "img/00042.jpg"}`` (class ids and class names, schema order; both ``null`` for an unlabelled sample);
* ``KEY.lbl``  -- the labels as raw little-endian int64 x len(schema) (48 bytes for a six-attribute schema), read
  by DALI natively with ``dtypes=types.INT64``; all -1 for an unlabelled sample.
"""
from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence

from ..errors import FastfashionError
from ..schema import Schema

FORMAT = "fastfashion-shards"
VERSION = 1
MANIFEST = "manifest.json"
UNLABELLED = -1  # every .lbl entry of a sample without labels (the test split)

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS = (TRAIN, VAL, TEST)          # the splits of a source, in their usual order
LABELLED_SPLITS = (TRAIN, VAL)       # splits that always carry labels (any other may, with an _attr file)


SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")  # what a split may be called: it becomes part of file names


class LabelError(FastfashionError, ValueError):
    """A sample's label member cannot be read as class ids of the schema (wrong size, not JSON, unknown class)."""


def split_order(split: str) -> tuple[int, str]:
    """Sort key: train, val, test, then any other split by name."""
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def shard_names(split: str, index: int) -> tuple[str, str]:
    """``("train-00003.tar", "train-00003.idx")``."""
    return f"{split}-{index:05d}.tar", f"{split}-{index:05d}.idx"


def wids_name(split: str) -> str:
    """``"train.wids.json"``: the split's shard list for ``wids.ShardListDataset``."""
    return f"{split}.wids.json"


def wids_index(split: str, shards: Sequence[dict]) -> str:
    """The text of a wids shard index (``wids_version`` 1): the split's tars, relative to the index file, with
    their sample counts."""
    doc = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": split,
           "shardlist": [{"url": sh["tar"], "nsamples": sh["num_samples"]} for sh in shards]}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def encode_labels(labels: Sequence[int] | None, schema: Schema) -> bytes:
    """The ``.lbl`` member: little-endian int64 per attribute, or all :data:`UNLABELLED` for ``None``."""
    values = [UNLABELLED] * len(schema) if labels is None else [int(v) for v in labels]
    if len(values) != len(schema):
        raise LabelError(f"expected {len(schema)} labels, got {len(values)}")
    return struct.pack(f"<{len(values)}q", *values)


def unpack_labels(data: bytes, width: int | None = None) -> tuple[int, ...]:
    """The int64 values of a ``.lbl`` member (the one decoder of the format's label bytes); ``width``: the number of
    attributes it must hold (None: any non-zero multiple of 8 bytes). Raises :class:`LabelError` naming the size."""
    if width is not None and len(data) != 8 * width:
        raise LabelError(f".lbl member has {len(data)} bytes, expected {8 * width} (int64 x {width})")
    if len(data) % 8 or not data:
        raise LabelError(f".lbl member has {len(data)} bytes, not a multiple of 8 (int64 per attribute)")
    return struct.unpack(f"<{len(data) // 8}q", data)


def decode_labels(data: bytes, schema: Schema) -> tuple[int, ...] | None:
    """Inverse of :func:`encode_labels` (``None`` for an unlabelled sample)."""
    values = unpack_labels(data, len(schema))
    return None if all(v == UNLABELLED for v in values) else values


def sample_json(path: str, labels: Sequence[int] | None, schema: Schema) -> bytes:
    """The ``.json`` member: compact JSON ``{"label_ids": ..., "labels": ..., "path": ...}``: class ids and class
    names per attribute in schema order (both null for an unlabelled sample)."""
    ids = None if labels is None else {a.name: int(v) for a, v in zip(schema, labels)}
    doc = {"label_ids": ids, "labels": None if labels is None else schema.label_names(labels), "path": path}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


JPEG_START = b"\xff\xd8\xff"  # every .jpg member starts with a JPEG start-of-image marker and a segment marker


def label_problem(values: Sequence[int], schema: Schema) -> str | None:
    """Why decoded ``.lbl`` values are invalid for ``schema`` (None when valid): each a class id in range, or all
    :data:`UNLABELLED`."""
    if all(v == UNLABELLED for v in values):
        return None
    for a, v in zip(schema, values):
        if not 0 <= v < a.num_classes:
            return f"label {v} out of range for {a.name} (0..{a.num_classes - 1})"
    return None

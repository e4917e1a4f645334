"""The shard set format: sample members, label encoding, and ``manifest.json`` (read and summarised here; written by
:mod:`fastfashion.shard`).

A shard set is a folder holding ``manifest.json`` and, per split, ``{split}-{index:05d}.tar`` with a DALI index
``{split}-{index:05d}.idx`` beside each. Each sample (key = the image's file stem, e.g. ``"00042"``) has, in tar
order:

* ``KEY.jpg``  -- the original JPEG bytes, untouched;
* ``KEY.json`` -- ``{"labels": {"pattern": "solid", ...}, "path": "img/00042.jpg"}`` (class names, schema order;
  ``"labels": null`` for an unlabelled split, i.e. test);
* ``KEY.lbl``  -- the labels as raw little-endian int64 x len(schema) (48 bytes for the fashion schema), read by
  DALI natively with ``dtypes=types.INT64``; all -1 for an unlabelled sample.

The loader learns every length from the manifest, never by scanning tars.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Sequence

from .schema import Schema

FORMAT = "fastfashion-shards"
VERSION = 1
MANIFEST = "manifest.json"
UNLABELLED = -1  # every .lbl entry of a sample without labels (the test split)
EXTS = ("jpg", "json", "lbl")  # the members of every sample, in tar order (webdataset's TarWriter sorts them)


class ManifestError(ValueError):
    """A shard folder has no readable, supported ``manifest.json``, or its files disagree with it."""


def shard_names(split: str, index: int) -> tuple[str, str]:
    """``("train-00003.tar", "train-00003.idx")``."""
    return f"{split}-{index:05d}.tar", f"{split}-{index:05d}.idx"


def encode_labels(labels: Sequence[int] | None, schema: Schema) -> bytes:
    """The ``.lbl`` member: little-endian int64 per attribute, or all :data:`UNLABELLED` for ``None``."""
    values = [UNLABELLED] * len(schema) if labels is None else [int(v) for v in labels]
    if len(values) != len(schema):
        raise ValueError(f"expected {len(schema)} labels, got {len(values)}")
    return struct.pack(f"<{len(values)}q", *values)


def decode_labels(data: bytes, schema: Schema) -> tuple[int, ...] | None:
    """Inverse of :func:`encode_labels` (``None`` for an unlabelled sample)."""
    if len(data) != 8 * len(schema):
        raise ValueError(f".lbl member has {len(data)} bytes, expected {8 * len(schema)}")
    values = struct.unpack(f"<{len(schema)}q", data)
    return None if all(v == UNLABELLED for v in values) else values


def sample_json(path: str, labels: Sequence[int] | None, schema: Schema) -> bytes:
    """The ``.json`` member (compact, keys sorted; labels in schema order)."""
    doc = {"labels": None if labels is None else schema.label_names(labels), "path": path}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


SHARD_FIELDS = ("tar", "idx", "num_samples", "bytes", "sha256", "idx_sha256")  # every shard entry holds these


def read_manifest(shard_dir: str | os.PathLike, *, check_files: bool = True) -> dict:
    """Load and validate ``shard_dir/manifest.json``.

    Checks the format name and version, the required fields, that per-shard counts add up, and (``check_files``)
    that every listed tar and idx exists with the recorded tar size. Raises :class:`ManifestError` with a clear
    message (e.g. a folder that is not a shard set, or one written by a newer fastfashion).
    """
    d = Path(shard_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{d}: not a shard set (no {MANIFEST}); create one with 'fastfashion shard'")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: unreadable manifest: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a {FORMAT} manifest")
    if m.get("version") != VERSION:
        raise ManifestError(f"{path}: format version {m.get('version')!r} is not supported (this fastfashion reads "
                            f"version {VERSION}); re-shard with this version")
    for field in ("schema", "splits", "options", "source", "skipped"):
        if field not in m:
            raise ManifestError(f"{path}: missing field {field!r}")
    try:
        Schema.from_dict(m["schema"])
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"{path}: bad schema: {e}") from None
    for split, s in m["splits"].items():
        shards = s.get("shards", []) if isinstance(s, dict) else None
        if not isinstance(shards, list) or "num_samples" not in s:
            raise ManifestError(f"{path}: split {split!r} lacks 'shards' or 'num_samples'")
        for i, sh in enumerate(shards):
            missing = [k for k in SHARD_FIELDS if not isinstance(sh, dict) or k not in sh]
            if missing:
                raise ManifestError(f"{path}: split {split!r} shard {i} lacks {', '.join(missing)}")
        if sum(sh["num_samples"] for sh in shards) != s.get("num_samples"):
            raise ManifestError(f"{path}: split {split!r}: shard sample counts do not add up to num_samples")
        if check_files:
            for sh in shards:
                tar, idx = d / sh["tar"], d / sh["idx"]
                if not idx.is_file():
                    raise ManifestError(f"{idx}: listed in the manifest but missing")
                if not tar.is_file() or tar.stat().st_size != sh["bytes"]:
                    raise ManifestError(f"{tar}: missing or not {sh['bytes']} bytes as the manifest records")
    return m


def ordered_splits(manifest: dict) -> list[tuple[str, dict]]:
    """``(split, entry)`` pairs in the usual order (train, val, test, then any other by name); the JSON file itself
    has sorted keys."""
    rank = {"train": 0, "val": 1, "test": 2}
    return sorted(manifest["splits"].items(), key=lambda kv: (rank.get(kv[0], 3), kv[0]))


def manifest_schema(manifest: dict) -> Schema:
    """The :class:`Schema` a manifest was written with."""
    return Schema.from_dict(manifest["schema"])


def summarize_manifest(manifest: dict) -> str:
    """A few human-readable lines: source, options, per split samples/shards/bytes, class counts, skipped."""
    schema = manifest_schema(manifest)
    weights = {}
    train_counts = manifest["splits"].get("train", {}).get("class_counts")
    if train_counts:
        from .metrics import class_weights  # the trainer's weights (imports torch: only inspect calls this)
        weights = {a.name: w.tolist() for a, w in zip(schema, class_weights(train_counts, schema))}
    src, opt = manifest["source"], manifest["options"]
    lines = [f"{FORMAT} v{manifest['version']} from {src.get('name')!r} (fingerprint {src.get('fingerprint')})",
             "options: " + ", ".join(f"{k}={v}" for k, v in sorted(opt.items()))]
    for split, s in ordered_splits(manifest):
        size = sum(sh["bytes"] for sh in s["shards"])
        lines.append(f"{split}: {s['num_samples']} samples in {len(s['shards'])} shards, {size / 1e6:.1f} MB"
                     + ("" if s["labelled"] else " (unlabelled)"))
        for a in schema if s.get("class_counts") else ():
            counts = s["class_counts"][a.name]
            w = weights.get(a.name) if split == "train" else None
            lines.append(f"  {a.name:<9} " + "  ".join(
                f"{c}={n}" + (f" (w {w[i]:.2f})" if w else "") for i, (c, n) in enumerate(zip(a.classes, counts))))
    skipped = manifest.get("skipped", [])
    lines.append(f"skipped: {len(skipped)}")
    for k in skipped[:20]:
        lines.append(f"  {k['split']} {k['path']} (line {k['line']}): {k['reason']}")
    if len(skipped) > 20:
        lines.append(f"  ... and {len(skipped) - 20} more (see manifest.json)")
    return "\n".join(lines)


def verify_shards(shard_dir: str | os.PathLike, manifest: dict | None = None) -> None:
    """Recompute every tar's and idx's sha256; raise :class:`ManifestError` naming the first mismatch."""
    from .atomic import file_sha256

    d = Path(shard_dir)
    m = read_manifest(d) if manifest is None else manifest
    for s in m["splits"].values():
        for sh in s["shards"]:
            for name, want in ((sh["tar"], sh["sha256"]), (sh["idx"], sh["idx_sha256"])):
                if file_sha256(d / name) != want:
                    raise ManifestError(f"{d / name}: sha256 differs from the manifest (corrupted or modified)")

"""``manifest.json``: read and check it, verify the files against it, summarise it, derive the class weights.

The manifest is written last by :class:`~fastfashion.format.writer.ShardSetWriter`; every field is specified in
``docs/format.md``. Readers learn every length from it, never by scanning tars.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import FastfashionError, fixable
from ..schema import Schema
from .labels import LABEL_MEMBERS
from .spec import FORMAT, MANIFEST, TRAIN, VERSION, split_order


class ManifestError(FastfashionError, ValueError):
    """A shard folder has no readable, supported ``manifest.json``, or its files disagree with it."""


SHARD_FIELDS = ("tar", "idx", "num_samples", "bytes", "sha256", "idx_sha256")  # every shard entry holds these
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a plain file name inside the set's folder: no "/", no ".."
_SPLIT = re.compile(r"[A-Za-z0-9_-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def read_manifest(shard_dir: str | os.PathLike, *, check_files: bool = True) -> dict:
    """Load and validate ``shard_dir/manifest.json`` as untrusted input.

    Checks the format name and version, that every field the readers use has the right type and a sane range,
    that shard files are plain names inside ``shard_dir`` (no ``/``, no ``..``, not absolute), that per-shard
    counts add up, and (``check_files``) that every listed tar and idx exists with the recorded tar size. Raises
    :class:`ManifestError` naming the file and the field (e.g. a folder that is not a shard set, or one written by
    a newer fastfashion). Checksums are :func:`fastfashion.format.verify.verify_split`'s job.
    """
    d = Path(shard_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise fixable(ManifestError(f"{d}: not a shard set (no {MANIFEST})"), "shard_dir")
    try:
        m = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: JSON syntax, encoding, a 5,000-digit number
        raise ManifestError(f"{path}: unreadable manifest: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a {FORMAT} manifest")
    if m.get("version") != VERSION:
        raise ManifestError(f"{path}: format version {m.get('version')!r} is not supported (this fastfashion reads "
                            f"version {VERSION}); re-shard with this version")
    for field, kind in (("schema", dict), ("splits", dict), ("options", dict), ("source", dict), ("skipped", list)):
        if not isinstance(m.get(field), kind):
            raise ManifestError(f"{path}: field {field!r} is missing or not a JSON {kind.__name__}")
    try:
        schema = Schema.from_dict(m["schema"])
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"{path}: bad schema: {e}") from None
    for i, k in enumerate(m["skipped"]):
        if not isinstance(k, dict) or not all(isinstance(k.get(f), t) for f, t in (
                ("split", str), ("key", str), ("path", str), ("line", int), ("reason", str))):
            raise ManifestError(f"{path}: skipped entry {i} needs split, key, path, reason (text) and line (integer)")
    if m.get("label_member", "lbl") not in (*LABEL_MEMBERS, "none"):
        raise ManifestError(f"{path}: field 'label_member' {m.get('label_member')!r} is not one of "
                            f"{', '.join(LABEL_MEMBERS)}, none")
    for split, s in m["splits"].items():
        _check_split(path, split, s, schema)
        if check_files:
            for sh in s["shards"]:
                tar, idx = d / sh["tar"], d / sh["idx"]
                if not idx.is_file():
                    raise ManifestError(f"{idx}: listed in the manifest but missing")
                if not tar.is_file() or tar.stat().st_size != sh["bytes"]:
                    raise ManifestError(f"{tar}: missing or not {sh['bytes']} bytes as the manifest records")
    return m


def _count(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_split(path: Path, split: str, s, schema: Schema) -> None:
    """One ``splits`` entry: every field the readers use, with the right type and range."""
    where = f"{path}: split {split!r}"
    if not isinstance(split, str) or not _SPLIT.fullmatch(split):
        raise ManifestError(f"{path}: split name {split!r} is not a plain name")
    if not isinstance(s, dict) or not isinstance(s.get("shards"), list) or not _count(s.get("num_samples")):
        raise ManifestError(f"{where}: needs a list 'shards' and a non-negative integer 'num_samples'")
    if not isinstance(s.get("labelled"), bool):
        raise ManifestError(f"{where}: 'labelled' is missing or not true or false")
    counts = s.get("class_counts")
    if counts is not None and (not isinstance(counts, dict) or any(
            not isinstance(counts.get(a.name), list) or len(counts[a.name]) != a.num_classes
            or not all(_count(c) for c in counts[a.name]) for a in schema)):
        raise ManifestError(f"{where}: 'class_counts' does not match the schema (non-negative counts per class)")
    if s["labelled"] and counts is None:  # the trainer's class weights, inspect's histograms
        raise ManifestError(f"{where}: labelled, but field 'class_counts' is missing (per attribute, the number of "
                            "samples of each class)")
    for i, sh in enumerate(s["shards"]):
        _check_shard(f"{where} shard {i}", sh)
    if sum(sh["num_samples"] for sh in s["shards"]) != s["num_samples"]:
        raise ManifestError(f"{where}: shard sample counts do not add up to num_samples")


def _check_shard(where: str, sh) -> None:
    missing = [k for k in SHARD_FIELDS if not isinstance(sh, dict) or k not in sh]
    if missing:
        raise ManifestError(f"{where} lacks {', '.join(missing)}")
    for key, ext in (("tar", ".tar"), ("idx", ".idx")):
        name = sh[key]
        if not isinstance(name, str) or not _NAME.fullmatch(name) or not name.endswith(ext):
            raise ManifestError(f"{where}: {key} {name!r} is not a plain *{ext} file name inside the shard folder")
    for key, low in (("num_samples", 0), ("bytes", 0)):
        if not _count(sh[key], low):
            raise ManifestError(f"{where}: {key} {sh[key]!r} is not a non-negative integer")
    for key in ("sha256", "idx_sha256"):
        if not isinstance(sh[key], str) or not _SHA256.fullmatch(sh[key]):
            raise ManifestError(f"{where}: {key} {sh[key]!r} is not a hex sha256")


def ordered_splits(manifest: dict) -> list[tuple[str, dict]]:
    """``(split, entry)`` pairs in the usual order (train, val, test, then any other by name); the JSON file itself
    has sorted keys."""
    return sorted(manifest["splits"].items(), key=lambda kv: split_order(kv[0]))


def manifest_schema(manifest: dict) -> Schema:
    """The :class:`Schema` a manifest was written with."""
    return Schema.from_dict(manifest["schema"])


def summarize_manifest(manifest: dict) -> str:
    """A few human-readable lines: source, options, per split samples/shards/bytes, class counts, skipped."""
    schema = manifest_schema(manifest)
    weights = train_class_weights(manifest) or {}
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


def class_weights(class_counts: Mapping[str, Sequence[int]], schema: Schema) -> dict[str, list[float]]:
    """Per-class loss weights from train class counts: ``w_c = N / (K * n_c)`` per attribute.

    ``N`` is the number of labelled samples of the attribute (the sum of its counts), ``K`` its number of classes and
    ``n_c`` the count of class ``c``; a class with ``n_c == 0`` gets weight 0. A balanced attribute gets all ones.
    Returns ``{attribute: [w_0, ..., w_{K-1}]}`` in schema order. Raises ValueError on a count/schema mismatch.
    """
    out = {}
    for a in schema:
        if a.name not in class_counts:
            raise ValueError(f"class counts have no entry for attribute {a.name!r}")
        counts = [int(c) for c in class_counts[a.name]]
        if len(counts) != a.num_classes:
            raise ValueError(f"class counts for {a.name!r} have {len(counts)} entries, schema has {a.num_classes}")
        n = sum(counts)
        out[a.name] = [n / (a.num_classes * c) if c > 0 else 0.0 for c in counts]
    return out


def train_class_weights(manifest: dict) -> dict[str, list[float]] | None:
    """:func:`class_weights` of the manifest's train class counts (the trainer's loss weights); None without a
    labelled train split."""
    counts = manifest["splits"].get(TRAIN, {}).get("class_counts")
    return class_weights(counts, manifest_schema(manifest)) if counts else None

"""``manifest.json``: read and check it, verify the files against it, summarise it, derive the class weights.

The manifest is written last (:func:`~fastfashion.format.writer.commit_set`); every field is specified in
``docs/format.md``. Readers learn every length from it, never by scanning tars.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import FastfashionError, fixable
from ..schema import Schema
from .labels import LABEL_MEMBERS
from .spec import FORMAT, MANIFEST, SPLIT_NAME, VERSION, split_order


class ManifestError(FastfashionError, ValueError):
    """A shard folder has no readable, supported ``manifest.json``, or its files disagree with it."""


SHARD_FIELDS = ("tar", "idx", "num_samples", "bytes", "sha256", "idx_sha256")  # every shard entry holds these
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a plain file name inside the set's folder: no "/", no ".."
_SHA256 = re.compile(r"[0-9a-f]{64}")


MAX_MANIFEST_BYTES = 256 << 20  # a manifest larger than this is refused before it is read into memory


def read_manifest(shard_dir: str | os.PathLike, *, check_files: bool = True) -> dict:
    """Load and validate ``shard_dir/manifest.json`` (:func:`parse_manifest`, read with a size limit) and, with
    ``check_files``, that every listed tar and idx exists with the recorded tar size. Raises :class:`ManifestError`
    naming the file and the field (e.g. a folder that is not a shard set, or one written by a newer fastfashion).
    Checksums are :func:`fastfashion.format.verify.verify_split`'s job."""
    d = Path(shard_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise fixable(ManifestError(f"{d}: not a shard set (no {MANIFEST})"), "shard_dir")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise ManifestError(f"{path}: unreadable manifest: {e}") from None
    m = parse_manifest(data, str(path))
    if check_files:
        for s in m["splits"].values():
            for sh in s["shards"]:
                tar, idx = d / sh["tar"], d / sh["idx"]
                if not idx.is_file():
                    raise ManifestError(f"{idx}: listed in the manifest but missing")
                if not tar.is_file() or tar.stat().st_size != sh["bytes"]:
                    raise ManifestError(f"{tar}: missing or not {sh['bytes']} bytes as the manifest records")
    return m


def parse_manifest(data: bytes, where: str) -> dict:
    """Validate manifest bytes as untrusted input (a local file's or a download's; ``where`` names it in errors).

    Checks the size limit, the format name and version, that every field the readers use has the right type and a
    sane range, that shard files are plain names inside the set's folder (no ``/``, no ``..``, not absolute) and
    that per-shard counts add up. Raises :class:`ManifestError` naming ``where`` and the field."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where}: more than the {MAX_MANIFEST_BYTES} bytes a manifest may have")
    try:
        m = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # ValueError: JSON syntax, encoding, a 5,000-digit number
        raise ManifestError(f"{where}: unreadable manifest: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ManifestError(f"{where}: not a {FORMAT} manifest")
    if m.get("version") != VERSION:
        raise ManifestError(f"{where}: format version {m.get('version')!r} is not supported (this fastfashion reads "
                            f"version {VERSION}); re-shard with this version")
    for field, kind in (("schema", dict), ("splits", dict), ("options", dict), ("source", dict), ("skipped", list)):
        if not isinstance(m.get(field), kind):
            raise ManifestError(f"{where}: field {field!r} is missing or not a JSON {kind.__name__}")
    try:
        schema = Schema.from_dict(m["schema"])
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"{where}: bad schema: {e}") from None
    for i, k in enumerate(m["skipped"]):
        if not isinstance(k, dict) or not all(isinstance(k.get(f), t) for f, t in (
                ("split", str), ("key", str), ("path", str), ("line", int), ("reason", str))):
            raise ManifestError(f"{where}: skipped entry {i} needs split, key, path, reason (text) and line (integer)")
    if m.get("label_member", "lbl") not in (*LABEL_MEMBERS, "none"):
        raise ManifestError(f"{where}: field 'label_member' {m.get('label_member')!r} is not one of "
                            f"{', '.join(LABEL_MEMBERS)}, none")
    for split, s in m["splits"].items():
        _check_split(where, split, s, schema)
    return m


def _count(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_split(path: str, split: str, s, schema: Schema) -> None:
    """One ``splits`` entry: every field the readers use, with the right type and range."""
    where = f"{path}: split {split!r}"
    if not isinstance(split, str) or not SPLIT_NAME.fullmatch(split):
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


def summarize_manifest(manifest: dict, weights: Mapping[str, Sequence[float]] | None = None) -> str:
    """A few human-readable lines: source, options, per split samples/shards/bytes, class counts (with ``weights``,
    per attribute one weight per class, shown beside the train counts), skipped."""
    schema = manifest_schema(manifest)
    weights = weights or {}
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

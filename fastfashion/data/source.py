"""Read and validate a FashionDataset folder into per-split records.

Layout (``docs/data.md`` describes the real data set)::

    ROOT/img/00000.jpg ...
    ROOT/split/{train,val,test}.txt          one relative image path per line
    ROOT/split/{train,val}_attr.txt          one label vector per line, aligned with the .txt
    ROOT/split/list_attr_cloth.txt           the schema (or ROOT/split/schema.json, see Schema.load)

Every problem raises a subclass of :class:`SourceError` whose message names the file and (1-based) line.
Split files are UTF-8; CRLF line endings and a missing final newline are accepted; blank lines inside a file are
not. A key (image file stem) may not contain a dot: WebDataset splits a member name into key and extension at the
first dot of its base name.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import FastfashionError
from ..format.spec import LABELLED_SPLITS, SPLITS
from ..schema import FASHION_SCHEMA, Schema, SchemaError

log = logging.getLogger(__name__)

class SourceError(FastfashionError, ValueError):
    """Base class: the source folder is malformed. ``path`` and ``line`` name the culprit (line may be None)."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class MissingSplitFileError(SourceError):
    """A split file (``split/train.txt``, ``split/train_attr.txt`` ...) does not exist."""


class LineCountMismatchError(SourceError):
    """``X.txt`` and ``X_attr.txt`` have a different number of lines."""


class LabelCountError(SourceError):
    """A label line holds the wrong number of labels."""


class LabelValueError(SourceError):
    """A label is not an integer or out of range for its attribute."""


class BlankLineError(SourceError):
    """A blank line inside a split file."""


class EncodingError(SourceError):
    """A split file is not UTF-8 text (``line`` is where the first undecodable byte is)."""


class UnsafePathError(SourceError):
    """An image path escapes the data set root (``..``, absolute path, or a symlink pointing outside)."""


class MissingImageError(SourceError):
    """A listed image file does not exist."""


class BadKeyError(SourceError):
    """A key (image file stem) contains a dot, which would break WebDataset's key/extension split."""


class DuplicateKeyError(SourceError):
    """Two lines (in one split or across splits) name the same key (image file stem)."""


class SchemaMismatchError(SourceError):
    """The source's schema file (``split/list_attr_cloth.txt``, ``split/schema.json``) is malformed or disagrees
    with the given schema."""


PER_SAMPLE_ERRORS = (LabelCountError, LabelValueError, UnsafePathError, MissingImageError, BadKeyError)
"""Errors that concern one sample (one line pair); with ``on_error`` they are reported and that sample dropped.
Every other :class:`SourceError` (missing split file, encoding, line-count mismatch, blank line, duplicate key,
schema mismatch) is structural and always raises."""

OnError = Callable[[str, int, str, SourceError], None]
"""``on_error(split, line, path, error)``: called for each dropped sample; ``path`` is as listed in ``split.txt``."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One sample: ``key`` is the image file stem, ``path`` is relative to the root (POSIX style),
    ``labels`` the class id per schema attribute, or None for an unlabelled split. ``line`` is 1-based, in
    ``file``: the file that lists the sample (the split file, or a CSV)."""

    key: str
    path: str
    labels: tuple[int, ...] | None
    split: str
    line: int
    file: str = dataclasses.field(default="", compare=False)  # not part of what a sample is


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, accepting CRLF and a missing final newline; a blank line inside or bytes that
    are not UTF-8 raise."""
    if not path.is_file():
        raise MissingSplitFileError(path, None, "split file is missing")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise EncodingError(path, line, f"not UTF-8 text: byte {raw[e.start:e.start + 1]!r} at offset {e.start} "
                            f"({e.reason})") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            raise BlankLineError(path, i, "blank line")
    return lines


def _parse_labels(path: Path, lineno: int, line: str, schema: Schema) -> tuple[int, ...]:
    parts = line.split()
    if len(parts) != len(schema):
        raise LabelCountError(path, lineno, f"expected {len(schema)} labels, got {len(parts)}: {line!r}")
    out = []
    for attr, tok in zip(schema, parts):
        try:
            v = int(tok)
        except ValueError:
            raise LabelValueError(path, lineno, f"{attr.name} label {tok!r} is not an integer") from None
        if not 0 <= v < attr.num_classes:
            raise LabelValueError(path, lineno,
                                  f"{attr.name} label {v} out of range 0..{attr.num_classes - 1}")
        out.append(v)
    return tuple(out)


def _check_path(root: Path, list_file: Path, lineno: int, rel: str, check_images: bool,
                real_root: Path | None = None) -> str:
    rel = rel.strip()
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or ".." in p.parts:
        raise UnsafePathError(list_file, lineno, f"image path {rel!r} escapes the data set root")
    full = root / p
    if check_images:
        if not full.resolve().is_relative_to(real_root or root.resolve()):  # only a symlink can get here
            raise UnsafePathError(list_file, lineno, f"image path {rel!r} is a symlink pointing outside the root")
        if not full.is_file():
            raise MissingImageError(list_file, lineno, f"image file {rel!r} does not exist")
    return p.as_posix()


def read_split(root: str | os.PathLike, split: str, schema: Schema = FASHION_SCHEMA, *,
               check_images: bool = True, on_error: OnError | None = None) -> list[Record]:
    """Records of one split; labels are read for ``train``/``val`` (and any split with an ``_attr`` file).

    With ``on_error`` (lenient mode), a :data:`PER_SAMPLE_ERRORS` problem calls it and drops that sample instead
    of raising; without it (the default) the first problem raises.
    """
    root = Path(root)
    list_file = root / "split" / f"{split}.txt"
    attr_file = root / "split" / f"{split}_attr.txt"
    paths = read_lines(list_file)
    labels: list[tuple[int, ...] | SourceError] | None = None
    if split in LABELLED_SPLITS or attr_file.exists():
        rows = read_lines(attr_file)
        if len(rows) != len(paths):
            raise LineCountMismatchError(
                attr_file, min(len(rows), len(paths)) + 1,
                f"{len(rows)} label lines but {list_file.name} has {len(paths)} lines")
        labels = []
        for i, line in enumerate(rows, start=1):
            try:
                labels.append(_parse_labels(attr_file, i, line, schema))
            except PER_SAMPLE_ERRORS as e:
                if on_error is None:
                    raise
                labels.append(e)  # reported below, in line order with the path errors
    records, seen = [], {}
    real_root = root.resolve()  # once, not per image
    for i, listed in enumerate(paths, start=1):
        try:
            rel = _check_path(root, list_file, i, listed, check_images, real_root)
            if "." in Path(rel).stem:
                raise BadKeyError(list_file, i, f"key {Path(rel).stem!r} of {rel!r} contains a dot (WebDataset "
                                  "would split the member name there: rename the image)")
            if labels is not None and isinstance(labels[i - 1], SourceError):
                raise labels[i - 1]
        except PER_SAMPLE_ERRORS as e:
            if on_error is None:
                raise
            on_error(split, i, listed.strip(), e)
            continue
        key = Path(rel).stem
        if key in seen:
            raise DuplicateKeyError(list_file, i, f"key {key!r} already listed at line {seen[key]}")
        seen[key] = i
        records.append(Record(key, rel, labels[i - 1] if labels is not None else None, split, i, str(list_file)))
    return records


SCHEMA_FILES = ("schema.json", "list_attr_cloth.txt")  # in split/, in this order of preference


def source_schema(root: str | os.PathLike, schema: Schema | None = None) -> Schema:
    """The schema of a source folder: ``split/schema.json``, else ``split/list_attr_cloth.txt`` (six attribute
    types get the fashion names, others ``attr1`` ...), else :data:`~fastfashion.schema.FASHION_SCHEMA` (logged).
    With ``schema`` given, the folder's schema file, if any, must agree with it: :class:`SchemaMismatchError`
    names the file."""
    split_dir = Path(root) / "split"
    found = next((split_dir / f for f in SCHEMA_FILES if (split_dir / f).is_file()), None)
    if found is None:
        if schema is None:
            log.warning("%s has no schema file (%s); assuming the fashion schema", split_dir, " or ".join(SCHEMA_FILES))
        return schema or FASHION_SCHEMA
    try:
        if schema is not None and found.name == "list_attr_cloth.txt":
            schema.check_file(found)
            return schema
        own = Schema.load(found)
    except SchemaError as e:  # its message names the file already
        raise SchemaMismatchError(found, None, str(e).removeprefix(f"{found}: ").removeprefix(f"{found}")) from None
    if schema is not None and own != schema:
        raise SchemaMismatchError(found, None, f"schema {_short(own)} differs from the given {_short(schema)}")
    return own


def _short(schema: Schema) -> str:
    return ", ".join(f"{a.name}({a.num_classes})" for a in schema)


def read_source(root: str | os.PathLike, schema: Schema | None = None, *,
                splits: Iterable[str] = SPLITS, check_images: bool = True,
                on_error: OnError | None = None) -> dict[str, list[Record]]:
    """Read every split of a FashionDataset folder, checking keys across splits; the schema is ``schema`` or the
    folder's own (:func:`source_schema`, which also checks that the two agree).

    Raises a :class:`SourceError` subclass naming the file and line of the first problem found; with ``on_error``,
    per-sample problems (:data:`PER_SAMPLE_ERRORS`) are passed to it and those samples dropped (see
    :func:`read_split`).
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(root, None, "data set folder does not exist")
    schema = source_schema(root, schema)
    out: dict[str, list[Record]] = {}
    owner: dict[str, Record] = {}
    for split in splits:
        recs = read_split(root, split, schema, check_images=check_images, on_error=on_error)
        for r in recs:
            if r.key in owner:
                o = owner[r.key]
                raise DuplicateKeyError(root / "split" / f"{split}.txt", r.line,
                                        f"key {r.key!r} also in {o.split}.txt line {o.line}")
            owner[r.key] = r
        out[split] = recs
        log.info("%s: %d records", split, len(recs))
    return out


def class_counts(records: Iterable[Record], schema: Schema = FASHION_SCHEMA) -> dict[str, list[int]]:
    """Per attribute, how many records carry each class (unlabelled records are ignored)."""
    counts = {a.name: [0] * a.num_classes for a in schema}
    for r in records:
        if r.labels is not None:
            for a, v in zip(schema, r.labels):
                counts[a.name][v] += 1
    return counts

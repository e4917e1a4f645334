"""A CSV source, the layout most labelled image sets already have::

    path,colour,size,split          a header: the image path, one column per attribute, optionally ``split``
    img/00000.jpg,red,small,train   values are class names or class ids; all empty: an unlabelled sample
    img/00001.jpg,3,1,val

Image paths are relative to the images folder (``images``, default: the CSV's folder). Without a ``split`` column,
rows are dealt to train/val/test by ``split_ratio`` with a seeded shuffle (each split keeps CSV order). The schema
is the given one (the header must name its attributes), else ``schema.json`` beside the CSV, else inferred from
the values (numeric columns: classes ``"0"`` .. max; others: the sorted class names seen; logged). Every problem
raises a :class:`~fastfashion.data.source.SourceError` naming the CSV and its line, as the folder layout does.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..format.spec import SPLITS
from ..schema import Attribute, Schema, SchemaError
from .source import (
    PER_SAMPLE_ERRORS,
    BadKeyError,
    BlankLineError,
    DuplicateKeyError,
    EncodingError,
    LabelCountError,
    LabelValueError,
    MissingSplitFileError,
    OnError,
    Record,
    SchemaMismatchError,
    SourceError,
    _check_path,
)

log = logging.getLogger(__name__)

PATH_COLUMN, SPLIT_COLUMN = "path", "split"
DEFAULT_SPLIT_RATIO = (0.8, 0.1, 0.1)  # train, val, test
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_split_ratio(ratio: Sequence[float]) -> tuple[float, float, float]:
    """``(train, val, test)`` fractions, each in [0, 1], adding up to 1. Raises ValueError."""
    r = tuple(float(x) for x in ratio)
    if len(r) != 3 or any(not 0 <= x <= 1 for x in r) or abs(sum(r) - 1) > 1e-6:
        raise ConfigError(f"split_ratio must be three fractions (train, val, test) adding up to 1, got {ratio!r}")
    return r  # type: ignore[return-value]


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every row, header first; UTF-8 (a BOM is accepted), blank rows refused."""
    if not path.is_file():
        raise MissingSplitFileError(path, None, "CSV file is missing")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise EncodingError(path, raw[:e.start].count(b"\n") + 1, f"not UTF-8 text ({e.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    out, start = [], 1
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                raise BlankLineError(path, start, "blank line")
            out.append((start, [c.strip() for c in cells]))
            start = reader.line_num + 1
    except csv.Error as e:
        raise SourceError(path, reader.line_num, f"not CSV: {e}") from None
    if not out:
        raise SourceError(path, 1, f"empty: expected a header '{PATH_COLUMN},ATTRIBUTE,...'")
    return out


def has_split_column(csv_path: str | os.PathLike) -> bool:
    """Whether the CSV's header has a ``split`` column (without one, ``split_ratio`` deals the rows)."""
    return SPLIT_COLUMN in _rows(Path(csv_path))[0][1]


def _infer_schema(names: Sequence[str], columns: Sequence[Sequence[str]]) -> Schema:
    """One attribute per column: classes ``"0"`` .. max when every value is a class id, else the sorted names."""
    attrs = []
    for name, values in zip(names, columns):
        seen = {v for v in values if v}
        if not seen:
            raise SchemaError(f"column {name!r} has no value to infer its classes from; give a schema")
        if all(v.isdigit() for v in seen):
            attrs.append(Attribute(name, tuple(str(i) for i in range(max(int(v) for v in seen) + 1))))
        else:
            attrs.append(Attribute(name, tuple(sorted(seen))))
    schema = Schema(tuple(attrs))
    log.info("schema inferred from the CSV values: %s", ", ".join(f"{a.name} {list(a.classes)}" for a in schema))
    return schema


def _header(path: Path, header: list[str], schema: Schema | None) -> tuple[list[str], int | None]:
    """The attribute columns (in header order) and the index of the split column."""
    if not header or header[0] != PATH_COLUMN:
        raise SourceError(path, 1, f"the header must start with '{PATH_COLUMN}', got {','.join(header)!r}")
    split_col = header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header else None
    attrs = [h for i, h in enumerate(header[1:], start=1) if i != split_col]
    if len(set(header)) != len(header) or not all(attrs) or not attrs:
        raise SourceError(path, 1, "the header needs one or more distinct, non-empty attribute columns")
    if schema is not None and sorted(attrs) != sorted(schema.names):
        raise SchemaMismatchError(path, 1, f"columns {attrs} do not match the schema's attributes "
                                           f"{list(schema.names)}")
    return attrs, split_col


def _schema(path: Path, attrs: list[str], rows, columns: dict[str, int], schema: Schema | None) -> Schema:
    if schema is not None:
        return schema
    beside = path.parent / "schema.json"
    if beside.is_file():
        try:
            schema = Schema.load(beside)
        except SchemaError as e:
            raise SchemaMismatchError(beside, None, str(e).removeprefix(f"{beside}: ")) from None
        if sorted(attrs) != sorted(schema.names):
            raise SchemaMismatchError(path, 1, f"columns {attrs} do not match the attributes {list(schema.names)} "
                                               f"of {beside}")
        return schema
    try:
        return _infer_schema(attrs, [[cells[columns[a]] if len(cells) > columns[a] else "" for _, cells in rows]
                                     for a in attrs])
    except SchemaError as e:
        raise SourceError(path, None, str(e)) from None


def _splits(path: Path, rows, split_col: int | None, ratio, seed: int) -> list[str]:
    """The split of each row: its ``split`` cell, or dealt by ``ratio`` with a seeded shuffle."""
    if split_col is not None:
        out = []
        for line, cells in rows:
            s = cells[split_col] if len(cells) > split_col else ""
            if not _SPLIT_NAME.fullmatch(s):
                raise SourceError(path, line, f"split {s!r} is not a plain name such as {', '.join(SPLITS)}")
            out.append(s)
        return out
    n = len(rows)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_train = round(n * ratio[0])
    n_val = min(n - n_train, round(n * ratio[1]))
    out = [""] * n
    for rank, i in enumerate(order):
        out[i] = SPLITS[0] if rank < n_train else SPLITS[1] if rank < n_train + n_val else SPLITS[2]
    return out


def _labels(path: Path, line: int, values: dict[str, str], schema: Schema) -> tuple[int, ...] | None:
    if not any(values.values()):
        return None  # an unlabelled sample
    try:
        return schema.parse_labels(values)
    except SchemaError as e:
        raise LabelValueError(path, line, str(e)) from None


def read_csv_source(csv_path: str | os.PathLike, images: str | os.PathLike | None = None,
                    schema: Schema | None = None, *, split_ratio: Sequence[float] = DEFAULT_SPLIT_RATIO,
                    seed: int = 0, check_images: bool = True,
                    on_error: OnError | None = None) -> tuple[Schema, dict[str, list[Record]]]:
    """The schema and the records per split of a CSV source (see the module docstring).

    Raises a :class:`~fastfashion.data.source.SourceError` subclass naming the CSV and line; with ``on_error``,
    per-sample problems (:data:`~fastfashion.data.source.PER_SAMPLE_ERRORS`) are passed to it and those samples
    dropped. ``split_ratio`` and ``seed`` apply only without a ``split`` column.
    """
    path = Path(csv_path)
    root = Path(images) if images is not None else path.parent
    if not root.is_dir():
        raise SourceError(root, None, "images folder does not exist")
    rows = _rows(path)
    (_, header), rows = rows[0], rows[1:]
    attrs, split_col = _header(path, header, schema)
    columns = {h: i for i, h in enumerate(header)}
    schema = _schema(path, attrs, rows, columns, schema)
    splits = _splits(path, rows, split_col, check_split_ratio(split_ratio), seed)
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    seen: dict[str, int] = {}
    real_root = root.resolve()
    for (line, cells), split in zip(rows, splits):
        try:
            if len(cells) != len(header):
                raise LabelCountError(path, line, f"expected {len(header)} values, got {len(cells)}")
            rel = _check_path(root, path, line, cells[0], check_images, real_root)
            if "." in Path(rel).stem:
                raise BadKeyError(path, line, f"key {Path(rel).stem!r} of {rel!r} contains a dot (WebDataset would "
                                              "split the member name there: rename the image)")
            labels = _labels(path, line, {a: cells[columns[a]] for a in schema.names}, schema)
        except PER_SAMPLE_ERRORS as e:
            if on_error is None:
                raise
            on_error(split, line, cells[0] if cells else "", e)
            continue
        key = Path(rel).stem
        if key in seen:
            raise DuplicateKeyError(path, line, f"key {key!r} already listed at line {seen[key]}")
        seen[key] = line
        out.setdefault(split, []).append(Record(key, rel, labels, split, line, str(path)))
    log.info("%s: %s", path, ", ".join(f"{s} {len(v)}" for s, v in out.items()))
    return schema, out

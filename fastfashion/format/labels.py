"""Label members: where a sample's labels live in its tar, decoded into class ids of a schema.

A shard set names its label member in the manifest (``label_member``, default ``lbl``):

* ``lbl`` -- fastfashion's own: little-endian int64 x len(schema), all -1 for an unlabelled sample (read by DALI
  natively);
* ``cls`` -- webdataset's convention for one label: the class id (or class name) as text; a one-attribute schema;
* ``json`` -- a JSON object: ``{"label_ids": {attribute: id}}`` (what fastfashion writes), ``{"labels": {attribute:
  id or name}}``, or the attributes at its top level; ``null`` labels (or no attribute at all): unlabelled.

Sets adopted by ``fastfashion index`` may use any of them; loaders read a ``lbl`` set's labels from the tars as
they go, and decode the others once, when the loader is made (:func:`decode_labels_member`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..schema import Attribute, Schema, SchemaError
from .spec import UNLABELLED, LabelError, unpack_labels

LABEL_MEMBERS = ("lbl", "cls", "json")  # in order of preference when a sample has several


def raw_labels(kind: str, data: bytes) -> Any:
    """The label values of one member before a schema gives them meaning: a list of ints (``lbl``), a list of one
    value (``cls``), a dict ``{attribute: value}`` (``json``), or None when unlabelled. Raises ValueError."""
    if kind == "lbl":
        values = list(unpack_labels(data))
        return None if all(v == UNLABELLED for v in values) else values
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise LabelError(f".{kind} member is not UTF-8 text") from None
    if kind == "cls":
        if not text:
            raise LabelError(".cls member is empty")
        return [int(text) if text.lstrip("-").isdigit() else text]
    if kind != "json":
        raise LabelError(f"unknown label member {kind!r}; known: {', '.join(LABEL_MEMBERS)}")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise LabelError(f".json member is not JSON: {e}") from None
    if doc is None:  # a member that is just null: unlabelled, as docs/format.md says
        return None
    if not isinstance(doc, dict):
        raise LabelError(".json member is not a JSON object")
    for field in ("label_ids", "labels"):
        if field in doc:
            doc = doc[field]
            break
    else:
        doc = {k: v for k, v in doc.items() if isinstance(v, (int, str)) and not isinstance(v, bool)}
    if doc is None or doc == {}:
        return None
    if not isinstance(doc, dict):
        raise LabelError(".json labels are not an object {attribute: class}")
    return doc


def to_class_ids(kind: str, raw: Any, schema: Schema) -> tuple[int, ...] | None:
    """Class ids of ``raw`` (see :func:`raw_labels`) under ``schema``. Raises ValueError saying which value."""
    if raw is None:
        return None
    if kind == "json" and isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k in schema.names} if set(schema.names) <= set(raw) else raw
    try:
        return schema.parse_labels(raw)
    except SchemaError as e:
        raise LabelError(str(e)) from None


def decode_labels_member(kind: str, data: bytes, schema: Schema) -> tuple[int, ...]:
    """Class ids of one label member, all :data:`~fastfashion.format.spec.UNLABELLED` when unlabelled."""
    ids = to_class_ids(kind, raw_labels(kind, data), schema)
    return (UNLABELLED,) * len(schema) if ids is None else ids


def infer_schema(kind: str, raws: Sequence[Any]) -> Schema:
    """A schema for label values seen without one: ``lbl`` -> ``attr1`` ... with classes ``"0"`` .. max; ``cls``
    -> one attribute ``class``; ``json`` -> the attributes of the objects, in first-seen order, classes ``"0"`` ..
    max when every value is an id, else the sorted class names. Raises SchemaError when nothing is labelled."""
    seen = [r for r in raws if r is not None]
    if not seen:
        raise SchemaError("no labelled sample to infer a schema from; give one")
    if kind == "json":
        names = list(dict.fromkeys(k for r in seen for k in r))
        columns = [[r[n] for r in seen if n in r] for n in names]
    else:
        width = max(len(r) for r in seen)
        names = ["class"] if kind == "cls" else [f"attr{i + 1}" for i in range(width)]
        columns = [[r[i] for r in seen if len(r) > i] for i in range(width)]
    attrs = []
    for name, values in zip(names, columns):
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            attrs.append(Attribute(name, tuple(str(i) for i in range(max(values) + 1))))
        else:
            attrs.append(Attribute(name, tuple(sorted({str(v) for v in values}))))
    return Schema(tuple(attrs))

"""The attribute schema: categories and their class names, as data.

Everything that needs to know how many categories or classes there are (model heads, losses, metrics, the
manifest, the synthetic generator) asks a :class:`Schema`; nothing else hard-codes 6 or 26.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence

from .errors import FastfashionError


class SchemaError(FastfashionError, ValueError):
    """A schema file (``schema.json`` or ``list_attr_cloth.txt``) is malformed or disagrees with the expected
    schema."""


@dataclasses.dataclass(frozen=True)
class Attribute:
    """One category (``pattern``) and its class names in class-id order."""

    name: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if not self.classes:
            raise SchemaError(f"attribute {self.name!r} has no classes")
        if len(set(self.classes)) != len(self.classes):
            raise SchemaError(f"attribute {self.name!r} has duplicate class names")

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclasses.dataclass(frozen=True)
class Schema:
    """An ordered tuple of :class:`Attribute`; class ids are positions within each attribute."""

    attributes: tuple[Attribute, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", tuple(self.attributes))
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise SchemaError("duplicate attribute names")

    def __len__(self) -> int:
        return len(self.attributes)

    def __iter__(self):
        return iter(self.attributes)

    def __getitem__(self, i: int) -> Attribute:
        return self.attributes[i]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    @property
    def num_classes(self) -> tuple[int, ...]:
        """Classes per attribute, e.g. ``(7, 3, 3, 4, 6, 3)``."""
        return tuple(a.num_classes for a in self.attributes)

    @property
    def total_classes(self) -> int:
        return sum(self.num_classes)

    def flat_names(self) -> list[tuple[str, str]]:
        """All ``(attribute, class)`` pairs in official order (the 26 of the metric)."""
        return [(a.name, c) for a in self.attributes for c in a.classes]

    def check_labels(self, labels: Sequence[int]) -> str | None:
        """Return None if ``labels`` is valid, else a short reason."""
        if len(labels) != len(self.attributes):
            return f"expected {len(self.attributes)} labels, got {len(labels)}"
        for a, v in zip(self.attributes, labels):
            if not 0 <= int(v) < a.num_classes:
                return f"label {v} out of range for {a.name} (0..{a.num_classes - 1})"
        return None

    def label_names(self, labels: Sequence[int]) -> dict[str, str]:
        """``{"pattern": "solid", ...}`` for a label vector."""
        return {a.name: a.classes[int(v)] for a, v in zip(self.attributes, labels)}

    def label_ids(self, names: dict[str, str]) -> tuple[int, ...]:
        """Inverse of :meth:`label_names`."""
        return tuple(a.classes.index(names[a.name]) for a in self.attributes)

    def parse_labels(self, values) -> tuple[int, ...]:
        """Class ids from ``values``: a sequence of ids or class names in schema order, or a mapping
        ``{attribute: id or class name}`` naming every attribute. Raises :class:`SchemaError` saying which value."""
        if isinstance(values, dict):
            missing = [n for n in self.names if n not in values]
            if missing:
                raise SchemaError(f"no value for attribute {missing[0]!r} (labels name {sorted(values)})")
            values = [values[n] for n in self.names]
        values = list(values)
        if len(values) != len(self.attributes):
            raise SchemaError(f"expected {len(self.attributes)} labels, got {len(values)}")
        return tuple(_class_id(a, v) for a, v in zip(self.attributes, values))

    def to_dict(self) -> dict:
        return {"attributes": [{"name": a.name, "classes": list(a.classes)} for a in self.attributes]}

    @classmethod
    def from_dict(cls, d: dict) -> Schema:
        """Inverse of :meth:`to_dict`; also accepts ``{attribute: [class names]}`` (attributes in file order).
        Raises :class:`SchemaError` for any other shape."""
        if isinstance(d, dict) and "attributes" not in d and all(isinstance(v, list) for v in d.values()):
            d = {"attributes": [{"name": k, "classes": v} for k, v in d.items()]}
        attrs = d.get("attributes") if isinstance(d, dict) else None
        if not isinstance(attrs, list) or not attrs or not all(
                isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("classes"), list)
                and all(isinstance(c, str) for c in a["classes"]) for a in attrs):
            raise SchemaError('expected {"attributes": [{"name": NAME, "classes": [CLASS, ...]}, ...]} with at '
                              "least one attribute (or {NAME: [CLASS, ...], ...})")
        return cls(tuple(Attribute(a["name"], tuple(a["classes"])) for a in attrs))

    def to_json(self) -> str:
        """The text of a ``schema.json`` (what :meth:`load` reads)."""
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike) -> Schema:
        """A schema from a file: JSON (``schema.json``, see :meth:`from_dict`) or, for any other suffix, a
        ``list_attr_cloth.txt`` (:meth:`parse_list_attr_cloth`). Raises :class:`SchemaError` naming the file (and
        line), FileNotFoundError for a missing file."""
        if not str(path).endswith(".json"):
            return cls.parse_list_attr_cloth(path)
        with open(path, "rb") as f:
            raw = f.read()
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise SchemaError(f"{path}: not UTF-8 text ({e.reason})") from None
        except json.JSONDecodeError as e:
            raise SchemaError(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
        try:
            return cls.from_dict(doc)
        except SchemaError as e:
            raise SchemaError(f"{path}: {e}") from None

    # --- list_attr_cloth.txt -------------------------------------------------------------------------------
    def to_list_attr_cloth(self) -> str:
        """The exact text of a ``list_attr_cloth.txt`` for this schema (byte-identical to the real one)."""
        rows = [f"{c:<21}{i + 1}" for i, a in enumerate(self.attributes) for c in a.classes]
        return f"{self.total_classes} \nattribute_name   attribute_type\n" + "\n".join(rows) + "\n"

    @classmethod
    def parse_list_attr_cloth(cls, path: str | os.PathLike, names: Iterable[str] | None = None) -> Schema:
        """Parse ``split/list_attr_cloth.txt``: a count line, a header, then ``class_name type`` rows (type 1-based).

        ``names`` gives the attribute names in order (default: those of :data:`FASHION_SCHEMA` when the number of
        types matches, else ``attr1``, ``attr2`` ...). Raises :class:`SchemaError` naming file and line.
        """
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().splitlines()
        if len(lines) < 2:
            raise SchemaError(f"{path}: expected a count line and a header line")
        try:
            count = int(lines[0].strip())
        except ValueError:
            raise SchemaError(f"{path}:1: expected the number of classes, got {lines[0]!r}") from None
        groups: dict[int, list[str]] = {}
        rows = 0
        for lineno, line in enumerate(lines[2:], start=3):
            if not line.strip():
                if lineno == len(lines):
                    continue
                raise SchemaError(f"{path}:{lineno}: blank line")
            parts = line.split()
            if len(parts) != 2:
                raise SchemaError(f"{path}:{lineno}: expected 'class_name type', got {line!r}")
            try:
                t = int(parts[1])
            except ValueError:
                raise SchemaError(f"{path}:{lineno}: attribute type {parts[1]!r} is not an integer") from None
            if t < 1:
                raise SchemaError(f"{path}:{lineno}: attribute type must be >= 1, got {t}")
            if groups and t < max(groups):
                raise SchemaError(f"{path}:{lineno}: attribute types must not decrease")
            groups.setdefault(t, []).append(parts[0])
            rows += 1
        if rows != count:
            raise SchemaError(f"{path}:1: header says {count} classes, file lists {rows}")
        if sorted(groups) != list(range(1, len(groups) + 1)):
            raise SchemaError(f"{path}: attribute types are not consecutive from 1: {sorted(groups)}")
        if names is None:
            names = FASHION_SCHEMA.names if len(groups) == len(FASHION_SCHEMA) else [f"attr{t}" for t in groups]
        names = list(names)
        if len(names) != len(groups):
            raise SchemaError(f"{path}: {len(groups)} attribute types, but {len(names)} names given")
        return cls(tuple(Attribute(n, tuple(groups[t])) for n, t in zip(names, sorted(groups))))

    def check_file(self, path: str | os.PathLike) -> None:
        """Raise :class:`SchemaError` if the ``list_attr_cloth.txt`` at ``path`` disagrees with this schema."""
        other = Schema.parse_list_attr_cloth(path, names=[f"attr{i + 1}" for i in range(_count_types(path))])
        if other.num_classes != self.num_classes:
            raise SchemaError(f"{path}: classes per attribute {other.num_classes} != expected {self.num_classes}")
        for a, b in zip(self.attributes, other.attributes):
            for i, (x, y) in enumerate(zip(a.classes, b.classes)):
                if x != y:
                    raise SchemaError(f"{path}: {a.name} class {i} is {y!r}, expected {x!r}")


def _class_id(attr: Attribute, value) -> int:
    """The class id of ``value`` (an id, a class name, or an id written as text) for ``attr``."""
    if isinstance(value, str) and value in attr.classes:
        return attr.classes.index(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < attr.num_classes:
            return value
        raise SchemaError(f"{attr.name} label {value} out of range 0..{attr.num_classes - 1}")
    raise SchemaError(f"{attr.name} label {value!r} is neither a class id nor one of its class names")


def _count_types(path: str | os.PathLike) -> int:
    """Number of distinct attribute types in a list_attr_cloth.txt (parsed leniently for naming)."""
    with open(path, encoding="utf-8") as f:
        rows = [line.split() for line in f.read().splitlines()[2:] if line.strip()]
    return len({r[-1] for r in rows}) if rows else 0


FASHION_SCHEMA = Schema((
    Attribute("pattern", ("floral", "graphic", "striped", "embroidered", "pleated", "solid", "lattice")),
    Attribute("sleeve", ("long_sleeve", "short_sleeve", "sleeveless")),
    Attribute("length", ("maxi_length", "mini_length", "no_dress")),
    Attribute("neckline", ("crew_neckline", "v_neckline", "square_neckline", "no_neckline")),
    Attribute("fabric", ("denim", "chiffon", "cotton", "leather", "faux", "knit")),
    Attribute("fit", ("tight", "loose", "conventional")),
))

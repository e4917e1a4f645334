"""The schema is data: official order, list_attr_cloth.txt round trip, and strict parsing."""
from __future__ import annotations

import re

import pytest
from helpers import REAL_DATA as REAL

from fastfashion.schema import FASHION_SCHEMA, Attribute, Schema, SchemaError


def test_official_order_and_sizes():
    assert FASHION_SCHEMA.names == ("pattern", "sleeve", "length", "neckline", "fabric", "fit")
    assert FASHION_SCHEMA.num_classes == (7, 3, 3, 4, 6, 3)
    assert FASHION_SCHEMA.total_classes == 26
    assert FASHION_SCHEMA.flat_names()[0] == ("pattern", "floral")
    assert FASHION_SCHEMA.flat_names()[-1] == ("fit", "conventional")


def test_list_attr_cloth_round_trip(tmp_path):
    f = tmp_path / "list_attr_cloth.txt"
    f.write_text(FASHION_SCHEMA.to_list_attr_cloth())
    assert Schema.parse_list_attr_cloth(f) == FASHION_SCHEMA
    FASHION_SCHEMA.check_file(f)


@pytest.mark.realdata
@pytest.mark.skipif(not REAL.is_dir(), reason="real FashionDataset absent")
def test_matches_real_file_bytes():
    real = (REAL / "split" / "list_attr_cloth.txt").read_bytes()
    assert FASHION_SCHEMA.to_list_attr_cloth().encode() == real


def test_labels_names_round_trip():
    labels = (5, 2, 1, 0, 2, 2)
    names = FASHION_SCHEMA.label_names(labels)
    assert names["pattern"] == "solid" and names["fit"] == "conventional"
    assert FASHION_SCHEMA.label_ids(names) == labels
    assert FASHION_SCHEMA.check_labels(labels) is None
    assert FASHION_SCHEMA.check_labels((7, 0, 0, 0, 0, 0)) == "label 7 out of range for pattern (0..6)"
    assert FASHION_SCHEMA.check_labels((0, 0)) == "expected 6 labels, got 2"


def test_dict_round_trip():
    assert Schema.from_dict(FASHION_SCHEMA.to_dict()) == FASHION_SCHEMA


@pytest.mark.parametrize("text,msg", [
    ("x\nheader\n", ":1: expected the number of classes, got 'x'"),
    ("3 \nheader\na 1\nb 1\n", ":1: header says 3 classes, file lists 2"),
    ("2 \nheader\na 1\nb 3\n", ": attribute types are not consecutive from 1: [1, 3]"),
    ("2 \nheader\na 2\nb 1\n", ":4: attribute types must not decrease"),
    ("2 \nheader\na one\nb 1\n", ":3: attribute type 'one' is not an integer"),
])
def test_parse_errors_name_the_file(tmp_path, text, msg):
    f = tmp_path / "list_attr_cloth.txt"
    f.write_text(text)
    with pytest.raises(SchemaError, match=f"^{re.escape(str(f) + msg)}$"):
        Schema.parse_list_attr_cloth(f)


def test_check_file_detects_other_schema(tmp_path):
    f = tmp_path / "list_attr_cloth.txt"
    f.write_text(Schema((Attribute("a", ("x", "y")),)).to_list_attr_cloth())
    with pytest.raises(SchemaError,
                       match=f"^{re.escape(f'{f}: classes per attribute (2,) != expected (7, 3, 3, 4, 6, 3)')}$"):
        FASHION_SCHEMA.check_file(f)


def test_invalid_schema_rejected():
    with pytest.raises(SchemaError, match="^attribute 'a' has no classes$"):
        Attribute("a", ())
    with pytest.raises(SchemaError, match="^attribute 'a' has duplicate class names$"):
        Attribute("a", ("x", "x"))
    with pytest.raises(SchemaError, match="^duplicate attribute names$"):
        Schema((Attribute("a", ("x",)), Attribute("a", ("y",))))

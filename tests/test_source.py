"""The FashionDataset reader: layout, labels, and one test per error case."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from helpers import REAL_DATA as REAL
from PIL import Image

from fastfashion import FASHION_SCHEMA, Attribute, Schema
from fastfashion.data import source as src


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 12), (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


def write_set(root: Path, n=(3, 2, 2), *, eol: str = "\n", final_newline: bool = True) -> Path:
    """A minimal valid data set: n = (train, val, test) images, keys numbered continuously."""
    (root / "img").mkdir(parents=True)
    (root / "split").mkdir()
    (root / "split" / "list_attr_cloth.txt").write_text(FASHION_SCHEMA.to_list_attr_cloth())
    data, i = _jpeg(), 0
    for split, count in zip(src.SPLITS, n):
        paths, labels = [], []
        for _ in range(count):
            (root / "img" / f"{i:05d}.jpg").write_bytes(data)
            paths.append(f"img/{i:05d}.jpg")
            labels.append(" ".join(str((i + k) % c) for k, c in enumerate(FASHION_SCHEMA.num_classes)))
            i += 1
        _write_lines(root / "split" / f"{split}.txt", paths, eol, final_newline)
        if split != "test":
            _write_lines(root / "split" / f"{split}_attr.txt", labels, eol, final_newline)
    return root


def _write_lines(path: Path, lines, eol="\n", final_newline=True) -> None:
    text = eol.join(lines) + (eol if final_newline else "")
    path.write_bytes(text.encode())


def _edit(path: Path, fn) -> None:
    lines = path.read_text().splitlines()
    _write_lines(path, fn(lines))


def _at(root: Path, name: str, line: int | None = None) -> str:
    """Regex of the start of an error message: the full path of ``split/name`` and the line, as errors name them."""
    return "^" + re.escape(str(root / "split" / name)) + ("" if line is None else f":{line}")


def test_reads_records(tmp_path):
    recs = src.read_source(write_set(tmp_path))
    assert [len(recs[s]) for s in src.SPLITS] == [3, 2, 2]
    r = recs["train"][1]
    assert (r.key, r.path, r.split, r.line) == ("00001", "img/00001.jpg", "train", 2)
    assert r.labels == (1, 2, 0, 0, 5, 0)
    assert all(r.labels is None for r in recs["test"])
    counts = src.class_counts(recs["train"])
    assert counts["pattern"] == [1, 1, 1, 0, 0, 0, 0] and sum(counts["fit"]) == 3
    # write_set labels image i with class (i + k) % K for attribute k
    assert counts == {a.name: [sum((i + k) % a.num_classes == c for i in range(3)) for c in range(a.num_classes)]
                      for k, a in enumerate(FASHION_SCHEMA)}


@pytest.mark.parametrize("eol,final", [("\r\n", True), ("\n", False), ("\r\n", False)])
def test_crlf_and_missing_final_newline_accepted(tmp_path, eol, final):
    expected = src.read_source(write_set(tmp_path / "a"))
    got = src.read_source(write_set(tmp_path / "b", eol=eol, final_newline=final))
    assert got == expected


def test_missing_split_file(tmp_path):
    root = write_set(tmp_path)
    (root / "split" / "val_attr.txt").unlink()
    with pytest.raises(src.MissingSplitFileError, match=_at(root, "val_attr.txt") + ": split file is missing$"):
        src.read_source(root)


def test_line_count_mismatch(tmp_path):
    root = write_set(tmp_path)
    _edit(root / "split" / "train_attr.txt", lambda ls: ls[:-1])
    with pytest.raises(src.LineCountMismatchError,
                       match=_at(root, "train_attr.txt", 3) + r": 2 label lines but train\.txt has 3 lines$"):
        src.read_source(root)


def test_wrong_number_of_labels(tmp_path):
    root = write_set(tmp_path)
    _edit(root / "split" / "val_attr.txt", lambda ls: [ls[0], ls[1] + " 1"])
    with pytest.raises(src.LabelCountError,
                       match=_at(root, "val_attr.txt", 2) + ": expected 6 labels, got 7: '4 2 0 3 2 0 1'$"):
        src.read_source(root)


def test_non_integer_label(tmp_path):
    root = write_set(tmp_path)
    _edit(root / "split" / "train_attr.txt", lambda ls: [ls[0], "1 x 0 0 0 0", ls[2]])
    with pytest.raises(src.LabelValueError,
                       match=_at(root, "train_attr.txt", 2) + ": sleeve label 'x' is not an integer$"):
        src.read_source(root)


@pytest.mark.parametrize("bad,msg", [("7 0 0 0 0 0", "pattern label 7 out of range 0..6"),
                                     ("0 0 0 0 0 -1", "fit label -1 out of range 0..2")])
def test_out_of_range_label(tmp_path, bad, msg):
    root = write_set(tmp_path)
    _edit(root / "split" / "train_attr.txt", lambda ls: [bad] + ls[1:])
    with pytest.raises(src.LabelValueError, match=_at(root, "train_attr.txt", 1) + f": {re.escape(msg)}$"):
        src.read_source(root)


def test_blank_line_inside(tmp_path):
    root = write_set(tmp_path)
    _edit(root / "split" / "train.txt", lambda ls: [ls[0], "", *ls[1:]])
    with pytest.raises(src.BlankLineError, match=_at(root, "train.txt", 2) + ": blank line$"):
        src.read_source(root)


def test_non_utf8_split_file(tmp_path):
    root = write_set(tmp_path)
    f = root / "split" / "val.txt"
    f.write_bytes(b"img/00003.jpg\nimg/0000\xff4.jpg\n")
    with pytest.raises(src.EncodingError,
                       match=_at(root, "val.txt", 2) + r": not UTF-8 text: byte b'\\xff' at offset 22 "
                                                       r"\(invalid start byte\)$"):
        src.read_source(root)


def test_key_with_dot_rejected(tmp_path):
    root = write_set(tmp_path)
    (root / "img" / "00001.jpg").rename(root / "img" / "a.b.jpg")
    _edit(root / "split" / "train.txt", lambda ls: [ls[0], "img/a.b.jpg", ls[2]])
    with pytest.raises(src.BadKeyError, match=_at(root, "train.txt", 2) + r": key 'a\.b' of 'img/a\.b\.jpg' contains a "
                       r"dot \(WebDataset would split the member name there: rename the image\)$"):
        src.read_source(root)
    dropped = []
    recs = src.read_source(root, on_error=lambda *a: dropped.append(a[:3]))  # per-sample: lenient mode drops it
    assert [r.key for r in recs["train"]] == ["00000", "00002"] and dropped == [("train", 2, "img/a.b.jpg")]


@pytest.mark.parametrize("bad", ["../outside.jpg", "img/../../outside.jpg", "/etc/passwd"])
def test_path_escaping_root(tmp_path, bad):
    root = write_set(tmp_path)
    _edit(root / "split" / "test.txt", lambda ls: [ls[0], bad])
    with pytest.raises(src.UnsafePathError,
                       match=_at(root, "test.txt", 2) + f": image path {re.escape(repr(bad))} escapes the data set "
                                                        "root$"):
        src.read_source(root)


def test_symlink_pointing_outside(tmp_path):
    root = write_set(tmp_path / "ds")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(_jpeg())
    link = root / "img" / "00001.jpg"
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(src.UnsafePathError,
                       match=_at(root, "train.txt", 2) + r": image path 'img/00001\.jpg' is a symlink pointing outside "
                                                         "the root$"):
        src.read_source(root)


def test_symlink_inside_root_is_fine(tmp_path):
    root = write_set(tmp_path)
    link = root / "img" / "00001.jpg"
    link.unlink()
    link.symlink_to(root / "img" / "00000.jpg")
    assert [(r.key, r.path) for r in src.read_source(root)["train"]] == [
        ("00000", "img/00000.jpg"), ("00001", "img/00001.jpg"), ("00002", "img/00002.jpg")]


def test_symlinked_image_folder_inside_the_root_is_followed_outside_refused(tmp_path):
    """The documented rule (docs/data.md): a symlink, to a file or a folder, is followed when it resolves inside the
    data set folder; one resolving outside is refused naming the split file and line."""
    root = write_set(tmp_path / "ds")
    (root / "img").rename(root / "pictures")
    (root / "img").symlink_to("pictures")  # an image folder linked within the root
    assert [r.path for r in src.read_source(root)["train"]] == ["img/00000.jpg", "img/00001.jpg", "img/00002.jpg"]
    (root / "pictures").rename(tmp_path / "elsewhere")
    (root / "img").unlink()
    (root / "img").symlink_to(tmp_path / "elsewhere")  # an image folder on another disk
    with pytest.raises(src.UnsafePathError, match=_at(root, "train.txt", 1) + r": image path 'img/00000\.jpg' is a "
                                                  "symlink pointing outside the root$"):
        src.read_source(root)
    (root / "img").unlink()
    (tmp_path / "elsewhere").rename(root / "img")
    linked = tmp_path / "linked"
    linked.symlink_to(root)  # the data set folder itself may be a link: its target is the root
    assert [r.path for r in src.read_source(linked)["val"]] == ["img/00003.jpg", "img/00004.jpg"]


def test_missing_image(tmp_path):
    root = write_set(tmp_path)
    (root / "img" / "00004.jpg").unlink()
    with pytest.raises(src.MissingImageError,
                       match=_at(root, "val.txt", 2) + r": image file 'img/00004\.jpg' does not exist$"):
        src.read_source(root)


def test_duplicate_key_within_split(tmp_path):
    root = write_set(tmp_path)
    _edit(root / "split" / "train.txt", lambda ls: [ls[0], ls[1], ls[0]])
    with pytest.raises(src.DuplicateKeyError,
                       match=_at(root, "train.txt", 3) + ": key '00000' already listed at line 1$"):
        src.read_source(root)


def test_duplicate_key_across_splits(tmp_path):
    root = write_set(tmp_path)
    _edit(root / "split" / "test.txt", lambda ls: ["img/00002.jpg", ls[1]])
    with pytest.raises(src.DuplicateKeyError,
                       match=_at(root, "test.txt", 1) + r": key '00002' also in train\.txt line 3$"):
        src.read_source(root)


def test_schema_file_mismatch(tmp_path):
    root = write_set(tmp_path)
    f = root / "split" / "list_attr_cloth.txt"
    f.write_text(f.read_text().replace("floral ", "flower "))
    with pytest.raises(src.SchemaMismatchError, match=_at(root, "list_attr_cloth.txt")  # the path once
                       + ": pattern class 0 is 'flower', expected 'floral'$"):
        src.read_source(root, FASHION_SCHEMA)
    assert src.source_schema(root)[0].classes[0] == "flower"  # without a given schema: the folder's own


def test_schema_from_the_folder(tmp_path):
    root = write_set(tmp_path)
    (root / "split" / "list_attr_cloth.txt").unlink()
    two = Schema((Attribute("colour", tuple(f"c{i}" for i in range(7))), *FASHION_SCHEMA.attributes[1:]))
    (root / "split" / "schema.json").write_text(two.to_json())
    assert src.source_schema(root) == two
    assert src.read_source(root)["train"][0].labels is not None
    with pytest.raises(src.SchemaMismatchError, match=_at(root, "schema.json") + ": schema colour"):
        src.read_source(root, FASHION_SCHEMA)
    (root / "split" / "schema.json").write_text('{"attributes": [\n  {"name": 3}]}')
    with pytest.raises(src.SchemaMismatchError, match=_at(root, "schema.json") + r': expected \{"attributes"'):
        src.source_schema(root)


def test_errors_are_value_errors_with_location(tmp_path):
    root = write_set(tmp_path)
    _edit(root / "split" / "val_attr.txt", lambda ls: ["0 0 0"] + ls[1:])
    with pytest.raises(src.LabelCountError,
                       match=_at(root, "val_attr.txt", 1) + ": expected 6 labels, got 3: '0 0 0'$") as info:
        src.read_source(root)
    assert isinstance(info.value, ValueError) and isinstance(info.value, src.SourceError)
    assert info.value.path == str(root / "split" / "val_attr.txt") and info.value.line == 1


@pytest.mark.realdata
@pytest.mark.skipif(not REAL.is_dir(), reason=f"real FashionDataset not at {REAL}")
def test_real_dataset_counts():
    recs = src.read_source(REAL)
    assert {s: len(r) for s, r in recs.items()} == {"train": 5000, "val": 1000, "test": 1000}
    assert recs["train"][0].key == "00000" and recs["test"][-1].key == "06999"
    assert src.class_counts(recs["train"]) == {
        "pattern": [768, 853, 334, 422, 109, 2408, 106], "sleeve": [1523, 862, 2615], "length": [488, 951, 3561],
        "neckline": [2086, 826, 19, 2069], "fabric": [310, 702, 3399, 105, 48, 436], "fit": [749, 279, 3972]}

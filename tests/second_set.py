"""A second data set with another schema (2 attributes: 10 and 2 classes), generated in the layouts a user brings:
a CSV with images, and WebDataset tars written by webdataset's own writer. Each image is one solid colour that
encodes its labels, so a round trip can be checked by key, label and pixel."""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from fastfashion import Attribute, Schema

SCHEMA2 = Schema((Attribute("digit", tuple(f"d{i}" for i in range(10))), Attribute("tone", ("dark", "light"))))
SPLIT_SIZES = {"train": 24, "val": 10, "test": 6}


def labels_of(i: int) -> tuple[int, int]:
    return i % 10, (i // 10 + i) % 2


def jpeg(i: int, size: tuple[int, int] = (20, 24)) -> bytes:
    """A solid-colour JPEG (width, height ``size``) whose colour encodes sample ``i``'s labels."""
    d, t = labels_of(i)
    buf = io.BytesIO()
    Image.new("RGB", size, (20 * d + 20, 200 if t else 40, 128)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def samples(sizes: dict[str, int] = SPLIT_SIZES):
    """``(split, key, index)`` of every sample, splits in order, keys ``s00000`` ..."""
    i = 0
    for split, n in sizes.items():
        for _ in range(n):
            yield split, f"s{i:05d}", i
            i += 1


def expected(sizes: dict[str, int] = SPLIT_SIZES, *, unlabelled: tuple[str, ...] = ()) -> dict[str, tuple]:
    """key -> labels (all -1 in ``unlabelled`` splits)."""
    return {k: (-1, -1) if s in unlabelled else labels_of(i) for s, k, i in samples(sizes)}


def write_csv_set(root: Path, *, split_column: bool = True, with_schema: bool = True) -> Path:
    """``root/labels.csv`` (digit as a class id, tone as a class name) and ``root/images/*.jpg``; returns the CSV."""
    (root / "images").mkdir(parents=True)
    header = "path,digit,tone" + (",split" if split_column else "")
    lines = [header]
    for split, key, i in samples():
        (root / "images" / f"{key}.jpg").write_bytes(jpeg(i))
        d, t = labels_of(i)
        lines.append(f"{key}.jpg,{d},{SCHEMA2[1].classes[t]}" + (f",{split}" if split_column else ""))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    if with_schema:
        (root / "schema.json").write_text(SCHEMA2.to_json())
    return root / "labels.csv"


def write_outside_shards(d: Path, member: str = "json", per_tar: int = 10, *, unlabelled=("test",)) -> Path:
    """Tars ``{split}-NNNNNN.tar`` written by ``webdataset.ShardWriter``: ``.jpg`` plus labels as ``.json``
    (``{"digit": "d3", "tone": 1}``: names and ids mixed), ``.lbl`` (int64 x 2) or ``.cls`` (the digit only);
    no labels in ``unlabelled`` splits."""
    import numpy as np
    import webdataset as wds
    d.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list] = {}
    for split, key, i in samples():
        by_split.setdefault(split, []).append((key, i))
    for split, items in by_split.items():
        with wds.ShardWriter(str(d / f"{split}-%06d.tar"), maxcount=per_tar, verbose=0) as w:
            for key, i in items:
                sample = {"__key__": key, "jpg": jpeg(i)}
                dg, t = labels_of(i)
                if split not in unlabelled:
                    if member == "json":
                        sample["json"] = json.dumps({"digit": f"d{dg}", "tone": t}).encode()
                    elif member == "lbl":
                        sample["lbl"] = np.array([dg, t], dtype="<i8").tobytes()
                    else:
                        sample["cls"] = str(dg).encode()
                elif member == "lbl":
                    sample["lbl"] = np.array([-1, -1], dtype="<i8").tobytes()
                w.write(sample)
    return d

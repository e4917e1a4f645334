"""Bring your own data: another schema end to end (CSV source, outside WebDataset tars adopted by ``index``, the
Python ShardWriter), transform hooks, (height, width) sizes, and the errors a new user meets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import needs_dali
from second_set import SCHEMA2, SPLIT_SIZES, expected, jpeg, labels_of, samples, write_csv_set, write_outside_shards

from fastfashion import AugmentConfig, ShardWriter, make_loader
from fastfashion.cli import main
from fastfashion.data.adopt import AdoptError, IndexConfig, index_shards
from fastfashion.data.csv_source import read_csv_source
from fastfashion.data.shard import ShardConfig, write_shards
from fastfashion.data.source import LabelValueError, SourceError
from fastfashion.format.manifest import ManifestError, read_manifest
from fastfashion.schema import Attribute, Schema
from fastfashion.train.inference import evaluate_checkpoint, predict
from fastfashion.train.trainer import TrainConfig, train

BACKENDS = ["torch", pytest.param("dali-cpu", marks=needs_dali)]


@pytest.fixture(scope="module")
def csv_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("byod")
    csv = write_csv_set(root / "csv")
    write_shards(csv, root / "shards", ShardConfig(workers=1, samples_per_shard=8, images=root / "csv" / "images"))
    return root / "shards"


@pytest.fixture(scope="module")
def adopted(tmp_path_factory) -> Path:
    d = write_outside_shards(tmp_path_factory.mktemp("outside") / "tars", "json")
    index_shards(d, IndexConfig(schema=SCHEMA2, check_images=True))
    return d


def _labels_by_key(loader) -> dict[str, tuple]:
    return {k: tuple(v.tolist()) for b in loader for k, v in zip(b.keys, b.labels)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["csv", "adopted"])
def test_another_schema_end_to_end(kind, backend, csv_shards, adopted, tmp_path):
    """shard/index -> loader (exact labels by key, every split) -> train -> evaluate -> predict."""
    shard_dir, unlabelled = (csv_shards, ()) if kind == "csv" else (adopted, ("test",))
    assert read_manifest(shard_dir)["schema"] == SCHEMA2.to_dict()
    want = expected(unlabelled=unlabelled)
    for split, n in SPLIT_SIZES.items():
        loader = make_loader(shard_dir, split=split, batch_size=4, backend=backend, device="cpu", image_size=(16, 12),
                             with_keys=True, shuffle=False, drop_last=False, workers=0)
        got = _labels_by_key(loader)
        assert len(got) == n and got == {k: want[k] for k in got}
    if (kind, backend) not in (("csv", "torch"), ("adopted", "dali-cpu")):
        return  # training costs seconds: each layout and each backend trains once
    run = tmp_path / "run"
    train(TrainConfig(shard_dir=str(shard_dir), out=str(run), epochs=1, batch_size=8, image_size=16,
                      backend=backend, device="cpu", workers=0, checkpoint_minutes=None))
    m = evaluate_checkpoint(run / "best.pt", shard_dir, split="val", batch_size=8, device="cpu", backend=backend)
    assert m["num_samples"] == SPLIT_SIZES["val"] and set(m["per_attribute"]) == {"digit", "tone"}
    out = predict(run / "best.pt", shard_dir, tmp_path / "prediction.txt", batch_size=8, device="cpu",
                  backend=backend)
    rows = [list(map(int, line.split())) for line in out.read_text().splitlines()]
    assert len(rows) == SPLIT_SIZES["test"] and all(0 <= d < 10 and 0 <= t < 2 for d, t in rows)


@pytest.mark.parametrize("member", ["lbl", "cls"])
def test_index_other_label_members(member, tmp_path):
    d = write_outside_shards(tmp_path / "tars", member, per_tar=7)
    m = index_shards(d)  # schema inferred
    names = ["attr1", "attr2"] if member == "lbl" else ["class"]
    assert [a["name"] for a in m["schema"]["attributes"]] == names and m["label_member"] == member
    assert m["splits"]["train"]["class_counts"][names[0]] == [3, 3, 3, 3, 2, 2, 2, 2, 2, 2]
    assert not m["splits"]["test"]["labelled"] and (d / "train.wids.json").is_file()
    got = _labels_by_key(make_loader(d, split="val", batch_size=4, backend="torch", device="cpu", image_size=8,
                                     with_keys=True, workers=0))
    assert got == {k: labels_of(i)[:len(names)] for s, k, i in samples() if s == "val"}


def test_index_errors_name_the_tar_and_key(tmp_path):
    d = write_outside_shards(tmp_path / "tars", "json")
    other = Schema((Attribute("digit", tuple(f"x{i}" for i in range(10))), SCHEMA2[1]))
    with pytest.raises(AdoptError, match=r"train-000000\.tar: sample 's00000': \.json labels: digit label 'd0' is "):
        index_shards(d, IndexConfig(schema=other))
    assert not (d / "manifest.json").exists() and not list(d.glob("*.idx"))  # nothing written
    (d / "extra.tar").write_bytes((d / "val-000000.tar").read_bytes())
    with pytest.raises(AdoptError, match=r"extra\.tar: cannot tell the split"):
        index_shards(d)
    (d / "extra.tar").unlink()
    index_shards(d)
    with pytest.raises(FileExistsError, match="already has a manifest.json"):
        index_shards(d)


def test_csv_errors_name_file_and_line(tmp_path):
    csv = write_csv_set(tmp_path / "csv", split_column=False, with_schema=False)
    schema, recs = read_csv_source(csv, tmp_path / "csv" / "images", split_ratio=(0.5, 0.25, 0.25), seed=3)
    assert schema.names == ("digit", "tone") and schema[1].classes == ("dark", "light")  # inferred
    assert schema[0].classes == tuple(str(i) for i in range(10))
    assert {s: len(v) for s, v in recs.items()} == {"train": 20, "val": 10, "test": 10}
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:5] + [lines[5].replace(",dark", ",grey").replace(",light", ",grey")]
                             + lines[6:]) + "\n")
    with pytest.raises(LabelValueError, match=rf"^{csv}:6: tone label 'grey' is neither"):
        read_csv_source(csv, tmp_path / "csv" / "images", SCHEMA2)
    csv.write_text("file,digit\n")
    with pytest.raises(SourceError, match=rf"^{csv}:1: the header must start with 'path'"):
        read_csv_source(csv)


def test_cli_shard_csv_index_and_one_line_errors(tmp_path, capsys):
    csv = write_csv_set(tmp_path / "csv", split_column=False)
    assert main(["shard", str(csv), str(tmp_path / "s"), "--images", str(tmp_path / "csv" / "images"),
                 "--split-ratio", "0.6,0.2,0.2", "--workers", "1", "-q"]) == 0
    m = read_manifest(tmp_path / "s")
    assert m["options"]["split_ratio"] == [0.6, 0.2, 0.2] and m["splits"]["train"]["num_samples"] == 24
    (tmp_path / "other.json").write_text(Schema((Attribute("digit", ("a", "b")),)).to_json())
    assert main(["shard", str(csv), str(tmp_path / "s2"), "--schema", str(tmp_path / "other.json"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{csv}:1: columns" in err
    d = write_outside_shards(tmp_path / "tars", "json")
    (tmp_path / "schema2.json").write_text(SCHEMA2.to_json())
    assert main(["index", str(d), "--schema", str(tmp_path / "schema2.json"), "-q"]) == 0
    assert "labels from .json: digit (10), tone (2)" in capsys.readouterr().out
    assert main(["index", str(d), "-q"]) == 1
    assert capsys.readouterr().err.strip().endswith("pass --overwrite to replace it")


def test_cli_shard_a_csv_beside_its_output(tmp_path, monkeypatch):
    """README: ``fastfashion shard labels.csv shards/mine --images photos/`` run in the CSV's folder works: only the
    image folder and the output may not overlap; a split column means no split_ratio in the manifest."""
    write_csv_set(tmp_path)  # tmp/labels.csv (with a split column), tmp/images/
    monkeypatch.chdir(tmp_path)
    assert main(["shard", "labels.csv", "shards/mine", "--images", "images/", "--workers", "1", "-q"]) == 0
    m = read_manifest(tmp_path / "shards" / "mine")
    assert m["options"] == {"samples_per_shard": 500, "seed": 0, "skip_bad": False}  # only the options in effect
    from fastfashion.errors import ConfigError
    with pytest.raises(ConfigError, match=r"^output folder images/out must not contain or be inside the image "
                                          r"folder images$"):
        write_shards("labels.csv", "images/out", ShardConfig(images="images", workers=1))
    with pytest.raises(ConfigError, match=r"^output folder out must not contain or be inside the image folder \.$"):
        write_shards("labels.csv", "out", ShardConfig(workers=1))  # images default to the CSV's folder


def test_index_a_null_json_member_is_unlabelled(tmp_path):
    """docs/format.md: a .json member that is ``null`` marks an unlabelled sample (index and loaders agree)."""
    import webdataset as wds
    d = write_outside_shards(tmp_path / "tars", "json")
    for tar in d.glob("test-*.tar"):
        tar.unlink()
    with wds.ShardWriter(str(d / "test-%06d.tar"), maxcount=10, verbose=0) as w:
        for split, key, i in samples():
            if split == "test":
                w.write({"__key__": key, "jpg": jpeg(i), "json": b"null"})
    m = index_shards(d, IndexConfig(schema=SCHEMA2))
    assert m["splits"]["test"]["labelled"] is False and m["splits"]["test"]["num_samples"] == SPLIT_SIZES["test"]
    got = _labels_by_key(make_loader(d, split="test", batch_size=4, backend="torch", device="cpu", image_size=8,
                                     with_keys=True, workers=0))
    assert got == {k: (-1, -1) for s, k, _ in samples() if s == "test"}


def test_hand_written_manifest_is_refused_when_read(csv_shards, tmp_path, capsys):
    """A manifest missing what a verb needs is refused in one line naming the field, not a KeyError in train."""
    import shutil
    d = tmp_path / "set"
    shutil.copytree(csv_shards, d)
    m = json.loads((d / "manifest.json").read_text())
    del m["splits"]["train"]["class_counts"]
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="split 'train': labelled, but field 'class_counts' is missing"):
        read_manifest(d)
    assert main(["train", "--shards", str(d), "--out", str(tmp_path / "run"), "-q"]) == 1
    assert "field 'class_counts' is missing" in capsys.readouterr().err


def test_shard_writer_writes_what_shard_writes(csv_shards, tmp_path):
    """The Python writer fed the samples `shard` wrote, in the same order, gives the same tars and indexes."""
    m = read_manifest(csv_shards)
    order = {s: [k for k in (json.loads(line) for line in [])] for s in m["splits"]}  # noqa: F841
    from fastfashion.format.reader import split_keys
    by_key = {k: (s, i) for s, k, i in samples()}
    with ShardWriter(tmp_path / "w", SCHEMA2, samples_per_shard=8, source=m["source"], options=m["options"]) as w:
        for split in ("train", "val", "test"):
            for key in split_keys(csv_shards, m, split):
                s, i = by_key[key]
                w.write(key, jpeg(i), {"digit": labels_of(i)[0], "tone": SCHEMA2[1].classes[labels_of(i)[1]]},
                        split=split, path=f"{key}.jpg")
    assert w.manifest["splits"] == m["splits"]
    for f in sorted(csv_shards.glob("*.*[rx]")):  # tars and idx files
        assert (tmp_path / "w" / f.name).read_bytes() == f.read_bytes(), f.name
    with pytest.raises(ValueError, match="split 'train' key 'k1': not JPEG data|split 'train' key 'k1': .*JPEG"):
        with ShardWriter(tmp_path / "bad", SCHEMA2) as w:
            w.write("k1", b"not a jpeg", [0, 0])
    assert not (tmp_path / "bad").exists()


def test_json_members_carry_ids_and_wids_reads_the_set(csv_shards, tmp_path):
    import webdataset as wds
    import wids
    ds = wids.ShardListDataset(str(csv_shards / "val.wids.json"), cache_dir=str(tmp_path / "wids-cache"))
    assert len(ds) == SPLIT_SIZES["val"]
    doc = ds[0][".json"]  # decoded by wids' default decoder
    assert doc["label_ids"] == dict(zip(("digit", "tone"), labels_of(int(ds[0]["__key__"][1:]))))
    assert doc["labels"] == SCHEMA2.label_names(doc["label_ids"].values())
    urls = [str(csv_shards / sh["tar"]) for sh in read_manifest(csv_shards)["splits"]["val"]["shards"]]
    keys = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert keys == [ds[i]["__key__"] for i in range(len(ds))]


def test_transform_hooks_and_image_sizes(csv_shards):
    from torchvision.transforms import v2
    tv = v2.Compose([v2.Resize((10, 14)), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    loader = make_loader(csv_shards, split="val", batch_size=5, augment=tv, device="cpu", workers=0)
    assert loader.backend == "torch" and tuple(next(iter(loader)).images.shape) == (5, 3, 10, 14)
    with pytest.raises(TypeError, match="augment must be None, a bool, an AugmentConfig, or a callable"):
        make_loader(csv_shards, split="val", augment="flip")
    assert AugmentConfig(image_size=[64, 48]).hw == (64, 48) and AugmentConfig(image_size=64).hw == (64, 64)
    with pytest.raises(ValueError, match=r"image_size must be in 8\.\.1024"):
        AugmentConfig(image_size=(64, 4))


@needs_dali
def test_dali_transform_hook_sees_images_and_labels(csv_shards):
    def hook(images, labels):  # a function of DALI data nodes, placed in the graph after the decoder
        from nvidia.dali import fn, types
        small = fn.resize(images, size=[12, 10])
        return fn.crop_mirror_normalize(small, dtype=types.FLOAT, output_layout="CHW") * 0.0 + \
            fn.cast(labels[0], dtype=types.FLOAT)

    loader = make_loader(csv_shards, split="val", batch_size=5, backend="dali-cpu", augment=hook, device="cpu")
    b = next(iter(loader))
    assert tuple(b.images.shape) == (5, 3, 12, 10)
    assert b.images[:, 0, 0, 0].tolist() == b.labels[:, 0].float().tolist()
    with pytest.raises(TypeError, match="only the torch backend runs"):
        from torchvision.transforms import v2
        make_loader(csv_shards, split="val", augment=v2.ToImage(), backend="dali-cpu", device="cpu")


def test_cli_image_size_height_by_width():
    from fastfashion.loading.augment import parse_image_size
    assert parse_image_size("64x48") == (64, 48) and parse_image_size("64,48") == (64, 48)
    assert parse_image_size("224") == 224
    with pytest.raises(ValueError, match="not N or HEIGHTxWIDTH"):
        parse_image_size("64by48")


def test_synth_with_another_schema_keeps_the_names(tmp_path, capsys):
    from fastfashion.data.synth import SynthConfig, synthesize
    data = synthesize(tmp_path / "d", SynthConfig(train=12, val=4, test=4, workers=1, schema=SCHEMA2))
    m = write_shards(data, tmp_path / "s", ShardConfig(workers=1))
    assert m["schema"] == SCHEMA2.to_dict()
    assert main(["inspect", str(tmp_path / "s"), "--plots", str(tmp_path / "p"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "digit" in out and "tone" in out and (tmp_path / "p" / "class-hist-train.png").is_file()


def test_readme_byod_snippets_run(csv_shards, tmp_path, monkeypatch):
    """Every python block of the README's "Bring your own data" section runs, against shards/mine (the CSV set)."""
    import contextlib
    import io
    import re
    import shutil

    from helpers import HAVE_DALI
    readme = Path(__file__).resolve().parents[1] / "README.md"
    section = readme.read_text(encoding="utf-8").split("\n## Bring your own data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 5  # ShardWriter, transform, webdataset, wids, DALI
    shutil.copytree(csv_shards, tmp_path / "shards" / "mine")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "wids-cache"))  # wids copies even local shards there
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for code in blocks if HAVE_DALI else blocks[:-1]:
            exec(compile(code, str(readme), "exec"), {"__name__": "__main__"})  # the scripts run their main block
    lines = out.getvalue().splitlines()
    assert lines[0] == str({"colour": [1, 0], "size": [0, 1, 0]})  # the ShardWriter's train class counts
    assert lines[1] == "torch.Size([8, 3, 48, 32])"
    assert (tmp_path / "shards" / "made" / "val.wids.json").is_file()
    key = lines[2].split()[0]  # webdataset: the last train sample, its size and labels
    assert lines[2] == f"{key} (20, 24) [{' '.join(map(str, labels_of(int(key[1:]))))}]"
    key = lines[3].split()[0]  # wids
    assert lines[3].endswith(str(SCHEMA2.label_names(labels_of(int(key[1:])))))
    if HAVE_DALI:  # DALI: the first 4 val samples' labels
        assert " ".join(lines[4:]).replace("[", " ").replace("]", " ").split() == \
            [str(v) for i in range(24, 28) for v in labels_of(i)]

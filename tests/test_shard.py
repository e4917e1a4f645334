"""`fastfashion shard` / `inspect`: round trips (webdataset and DALI), DALI index bytes, validation, atomicity."""
from __future__ import annotations

import io
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REAL_DATA, make_dataset
from PIL import Image

from fastfashion import FASHION_SCHEMA, cli
from fastfashion.data import source as src_mod
from fastfashion.data.shard import BadImageError, ShardConfig, default_shard_dir, write_shards
from fastfashion.data.validate import check_jpeg
from fastfashion.errors import ConfigError
from fastfashion.format.dali_index import (
    IndexEntry,
    IndexFormatError,
    entries_from_tar,
    format_index,
    read_index,
    write_index,
)
from fastfashion.format.manifest import ManifestError, read_manifest
from fastfashion.format.spec import decode_labels, encode_labels
from fastfashion.format.verify import verify_shard_set

SPLITS = ("train", "val", "test")


def _cfg(**kw) -> ShardConfig:
    kw.setdefault("workers", 1)  # tests: no process pool unless the test is about it
    return ShardConfig(**kw)


@pytest.fixture(scope="module")
def tiny_shards(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "tiny"
    write_shards(tiny_dataset, out, _cfg(samples_per_shard=16))
    return out


@pytest.fixture(scope="module")
def small_src(tmp_path_factory) -> Path:
    """6/3/3 images, to be copied by tests that corrupt it."""
    return make_dataset(tmp_path_factory.mktemp("small") / "src", train=6, val=3, test=3, seed=1)


@pytest.fixture
def src_copy(small_src, tmp_path) -> Path:
    return Path(shutil.copytree(small_src, tmp_path / "src"))


def _source_samples(root: Path) -> dict[str, list[src_mod.Record]]:
    return src_mod.read_source(root)


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


# --- round trips -----------------------------------------------------------------------------------------------
def test_round_trip_with_webdataset(tiny_dataset, tiny_shards):
    import webdataset as wds

    m = read_manifest(tiny_shards)
    records = _source_samples(tiny_dataset)
    for split in SPLITS:
        urls = [str(tiny_shards / sh["tar"]) for sh in m["splits"][split]["shards"]]
        got = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
        recs = records[split]
        assert len(got) == len(recs) == m["splits"][split]["num_samples"]
        if split == "train":  # shuffled, a permutation
            assert sorted(s["__key__"] for s in got) == sorted(r.key for r in recs)
            assert [s["__key__"] for s in got] != [r.key for r in recs]
        else:  # split-file order
            assert [s["__key__"] for s in got] == [r.key for r in recs]
        by_key = {r.key: r for r in recs}
        for s in got:
            r = by_key[s["__key__"]]
            assert set(k for k in s if not k.startswith("__")) == {"jpg", "json", "lbl"}
            assert s["jpg"] == (tiny_dataset / r.path).read_bytes()
            assert decode_labels(s["lbl"], FASHION_SCHEMA) == r.labels
            doc = json.loads(s["json"])
            assert doc["path"] == r.path
            assert doc["labels"] == (None if r.labels is None else FASHION_SCHEMA.label_names(r.labels))
    assert m["splits"]["test"]["labelled"] is False and m["splits"]["test"]["class_counts"] is None
    assert m["splits"]["train"]["class_counts"] == src_mod.class_counts(records["train"])


def test_round_trip_with_dali_cpu_pipeline(tiny_dataset, tiny_shards):
    pytest.importorskip("nvidia.dali")
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types

    m = read_manifest(tiny_shards)
    records = _source_samples(tiny_dataset)
    for split in SPLITS:
        shards = m["splits"][split]["shards"]
        n = m["splits"][split]["num_samples"]

        @pipeline_def(batch_size=n, num_threads=1, device_id=None, prefetch_queue_depth=1)
        def pipe():
            return tuple(fn.readers.webdataset(
                paths=[str(tiny_shards / sh["tar"]) for sh in shards],  # noqa: B023 - built and run in this turn
                index_paths=[str(tiny_shards / sh["idx"]) for sh in shards],  # noqa: B023
                ext=["jpg", "lbl", "json"], dtypes=[types.UINT8, types.INT64, types.UINT8],
                missing_component_behavior="error", random_shuffle=False, name="reader"))

        p = pipe()
        p.build()
        assert p.reader_meta("reader")["epoch_size"] == n
        jpgs, lbls, jsons = p.run()
        by_key = {r.key: r for r in records[split]}
        keys = []
        for i in range(n):
            doc = json.loads(bytes(np.asarray(jsons[i])))
            r = by_key[Path(doc["path"]).stem]
            keys.append(r.key)
            assert bytes(np.asarray(jpgs[i])) == (tiny_dataset / r.path).read_bytes()
            lbl = np.asarray(lbls[i])
            assert lbl.dtype == np.int64 and lbl.shape == (len(FASHION_SCHEMA),)
            assert tuple(lbl.tolist()) == (r.labels if r.labels is not None else (-1,) * len(FASHION_SCHEMA))
        assert sorted(keys) == sorted(by_key)


def test_idx_byte_identical_to_dali_wds2idx(tiny_shards, tmp_path):
    wds2idx = pytest.importorskip("wds2idx")  # ships in DALI's wheel (site-packages/wds2idx.py)
    m = read_manifest(tiny_shards)
    for sh in m["splits"]["train"]["shards"] + m["splits"]["test"]["shards"]:
        ref = tmp_path / (sh["idx"] + ".ref")
        with wds2idx.IndexCreator(str(tiny_shards / sh["tar"]), str(ref), verbose=False) as ic:
            ic.create_index()
        assert (tiny_shards / sh["idx"]).read_bytes() == ref.read_bytes(), sh["idx"]


def test_fast_header_scan_equals_tarfile(tiny_shards, tmp_path, monkeypatch):
    import tarfile

    from fastfashion.format import dali_index

    fast = entries_from_tar(tiny_shards / "val-00000.tar")
    with tarfile.open(tiny_shards / "val-00000.tar") as tf:
        members = [(m.name, m.offset_data, m.size) for m in tf if m.isreg()]
    assert dali_index._scan_plain_ustar(tiny_shards / "val-00000.tar") == members  # the fast path was taken
    odd = tmp_path / "odd.tar"  # a directory and a pax long name: not plain ustar, tarfile handles it
    with tarfile.open(odd, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in (("d", None), ("x" * 120 + ".jpg", b"abc"), ("k.json", b"{}")):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
            ti.size = len(data or b"")
            tf.addfile(ti, io.BytesIO(data) if data else None)
    assert dali_index._scan_plain_ustar(odd) is None
    assert [e.key for e in entries_from_tar(odd)] == ["x" * 120, "k"]
    monkeypatch.setattr(dali_index, "_scan_plain_ustar", lambda path: None)
    assert entries_from_tar(tiny_shards / "val-00000.tar") == fast


def test_index_read_write_round_trip(tiny_shards, tmp_path):
    idx = tiny_shards / "train-00000.idx"
    entries = read_index(idx)
    assert entries == entries_from_tar(tiny_shards / "train-00000.tar")
    assert all(list(e.members) == ["jpg", "json", "lbl"] and e.members["lbl"][1] == 48 for e in entries)
    with open(tiny_shards / "train-00000.tar", "rb") as f:  # offsets point at the member data
        off, size = entries[1].members["jpg"]
        f.seek(off)
        assert f.read(2) == b"\xff\xd8"
    subset = list(reversed(entries[:3]))  # what a loader does for a per-epoch index
    write_index(tmp_path / "e.idx", subset)
    assert read_index(tmp_path / "e.idx") == subset
    assert format_index([IndexEntry("a", {"jpg": (512, 3)})]) == "v1.2 1\njpg 512 3 a.jpg\n"
    (tmp_path / "bad.idx").write_text("v1.2 2\njpg 512 3 a.jpg\n")
    with pytest.raises(IndexFormatError,
                       match=f"^{re.escape(str(tmp_path / 'bad.idx'))}:1: header says 2 samples, file has 1 lines$"):
        read_index(tmp_path / "bad.idx")


# --- layout and manifest ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("sps", [7, 40])
def test_shard_counts_follow_samples_per_shard(tiny_dataset, tmp_path, sps):
    m = write_shards(tiny_dataset, tmp_path / "out", _cfg(samples_per_shard=sps))
    for split, n in (("train", 40), ("val", 16), ("test", 16)):
        shards = m["splits"][split]["shards"]
        assert len(shards) == math.ceil(n / sps)
        assert [s["num_samples"] for s in shards] == [min(sps, n - i * sps) for i in range(len(shards))]
        assert [s["tar"] for s in shards] == [f"{split}-{i:05d}.tar" for i in range(len(shards))]
        for s in shards:
            assert (tmp_path / "out" / s["tar"]).stat().st_size == s["bytes"]
            assert len(read_index(tmp_path / "out" / s["idx"])) == s["num_samples"]
    verify_shard_set(tmp_path / "out", read_manifest(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix not in (".tar", ".idx")) == \
        ["manifest.json", "test.wids.json", "train.wids.json", "val.wids.json"]


def test_same_seed_same_bytes_whatever_the_workers(tiny_dataset, tiny_shards, tmp_path):
    write_shards(tiny_dataset, tmp_path / "w2", _cfg(samples_per_shard=16, workers=2))
    assert (tmp_path / "w2" / "manifest.json").read_bytes() == (tiny_shards / "manifest.json").read_bytes()
    text = (tiny_shards / "manifest.json").read_text()
    assert str(tiny_dataset.parent) not in text and str(tmp_path) not in text  # no absolute paths
    assert json.loads(text) == json.loads(json.dumps(json.loads(text), sort_keys=True))
    m3 = write_shards(tiny_dataset, tmp_path / "s1", _cfg(samples_per_shard=16, seed=1))
    first = [e.key for e in read_index(tmp_path / "s1" / "train-00000.idx")]
    assert first != [e.key for e in read_index(tiny_shards / "train-00000.idx")]
    assert m3["options"]["seed"] == 1
    assert m3["splits"]["val"] == read_manifest(tiny_shards)["splits"]["val"]  # val order does not use the seed


def test_read_manifest_errors(tiny_shards, tmp_path):
    with pytest.raises(ManifestError, match=f"^{re.escape(str(tmp_path))}: not a shard set \\(no manifest\\.json\\)$"):
        read_manifest(tmp_path)
    d = Path(shutil.copytree(tiny_shards, tmp_path / "copy"))
    m = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**m, "version": 99}))
    with pytest.raises(ManifestError, match=f"^{re.escape(str(d / 'manifest.json'))}: format version 99 is not "
                                            rf"supported \(this fastfashion reads version {m['version']}\); re-shard "
                                            "with this version$"):
        read_manifest(d)
    (d / "manifest.json").write_text(json.dumps(m))
    (d / "val-00000.tar").write_bytes(b"x")
    size = m["splits"]["val"]["shards"][0]["bytes"]
    with pytest.raises(ManifestError, match=f"^{re.escape(str(d / 'val-00000.tar'))}: missing or not {size} bytes "
                                            "as the manifest records$"):
        read_manifest(d)


def test_labels_encoding():
    assert encode_labels((5, 2, 2, 0, 2, 2), FASHION_SCHEMA) == b"".join(
        v.to_bytes(8, "little", signed=True) for v in (5, 2, 2, 0, 2, 2))
    assert encode_labels(None, FASHION_SCHEMA) == b"\xff" * 48
    assert decode_labels(encode_labels(None, FASHION_SCHEMA), FASHION_SCHEMA) is None


# --- validation ------------------------------------------------------------------------------------------------
def _jpeg(mode="RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 30, 90)).convert(mode).save(buf, "JPEG", **kw)
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (30, 20)).save(buf, "PNG")
    return buf.getvalue()


BAD_IMAGES = {  # case: (make the bad bytes from the good ones, regex of the validation reason)
    "truncated": (lambda ok: ok[: len(ok) // 2],  # the structure check finds it before the decode
                  re.escape("JPEG is truncated: no end-of-image marker after its scan (a scan cut short, or garbage "
                            "in it)")),
    "png": (lambda ok: _png(), re.escape("PNG data named .jpg (not a JPEG)")),
    "text": (lambda ok: b"not an image at all", re.escape("not a JPEG (no start-of-image marker)")),
    "empty": (lambda ok: b"", "empty file"),
    "cmyk": (lambda ok: _jpeg("CMYK"),
             re.escape("CMYK JPEG rejected (only RGB and grayscale: decoders disagree on CMYK/YCCK colours)")),
}


def _bad_image_message(root: Path, rel: str, line: int, reason: str) -> str:
    """Regex of the whole message (and skip reason) for a bad image listed at ``val.txt:line``."""
    return f"{re.escape(str(root / 'split' / 'val.txt'))}:{line}: image {re.escape(repr(rel))}: {reason}"


def test_jpeg_policy_accepts_grayscale_and_progressive():
    assert check_jpeg(_jpeg()) is None
    assert check_jpeg(_jpeg("L")) is None
    assert check_jpeg(_jpeg(progressive=True)) is None


def _second_val_image(root: Path) -> tuple[str, int]:
    return (root / "split" / "val.txt").read_text().splitlines()[1], 2


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_is_fatal_naming_file_and_line(src_copy, tmp_path, case):
    rel, line = _second_val_image(src_copy)
    make, reason = BAD_IMAGES[case]
    (src_copy / rel).write_bytes(make((src_copy / rel).read_bytes()))
    out = tmp_path / "out"
    with pytest.raises(BadImageError, match=f"^{_bad_image_message(src_copy, rel, line, reason)}$") as e:
        write_shards(src_copy, out, _cfg())
    assert f"val.txt:{line}:" in str(e.value) and rel in str(e.value)
    assert not out.exists() and _leftovers(out) == []


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_skipped_and_recorded(src_copy, tmp_path, case):
    rel, line = _second_val_image(src_copy)
    make, reason = BAD_IMAGES[case]
    (src_copy / rel).write_bytes(make((src_copy / rel).read_bytes()))
    m = write_shards(src_copy, tmp_path / "out", _cfg(skip_bad=True))
    [k] = m["skipped"]
    assert (k["split"], k["path"], k["line"], k["key"]) == ("val", rel, line, Path(rel).stem)
    assert re.fullmatch(_bad_image_message(src_copy, rel, line, reason), k["reason"]), k["reason"]
    assert m["splits"]["val"]["num_samples"] == 2 and m["splits"]["train"]["num_samples"] == 6
    keys = [e.key for e in read_index(tmp_path / "out" / "val-00000.idx")]
    listed = [Path(r).stem for r in (src_copy / "split" / "val.txt").read_text().splitlines()]
    assert Path(rel).stem not in keys and keys == [x for x in listed if x != Path(rel).stem]


def test_grayscale_jpeg_is_accepted(src_copy, tmp_path):
    rel, _ = _second_val_image(src_copy)
    (src_copy / rel).write_bytes(_jpeg("L"))
    m = write_shards(src_copy, tmp_path / "out", _cfg())
    assert m["skipped"] == [] and m["splits"]["val"]["num_samples"] == 3


def _break_label(root: Path) -> None:
    p = root / "split" / "train_attr.txt"
    lines = p.read_text().splitlines()
    lines[2] = "0 0 0 9 0 0"  # neckline has 4 classes
    p.write_text("\n".join(lines) + "\n")


def _remove_image(root: Path) -> None:
    (root / (root / "split" / "train.txt").read_text().splitlines()[2]).unlink()


@pytest.mark.parametrize("breaker,error,message", [
    (_break_label, src_mod.LabelValueError, "{root}/split/train_attr.txt:3: neckline label 9 out of range 0..3"),
    (_remove_image, src_mod.MissingImageError, "{root}/split/train.txt:3: image file '{rel}' does not exist")])
def test_bad_label_and_missing_image(src_copy, tmp_path, breaker, error, message):
    rel = (src_copy / "split" / "train.txt").read_text().splitlines()[2]
    message = message.format(root=src_copy, rel=rel)
    breaker(src_copy)
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        write_shards(src_copy, tmp_path / "out", _cfg())
    assert not (tmp_path / "out").exists()
    m = write_shards(src_copy, tmp_path / "out", _cfg(skip_bad=True))
    [k] = m["skipped"]
    assert (k["split"], k["line"]) == ("train", 3) and ":3:" in k["reason"]
    assert k["reason"] == message
    assert m["splits"]["train"]["num_samples"] == 5
    assert sum(m["splits"]["train"]["class_counts"]["pattern"]) == 5


def test_structural_errors_stay_fatal_with_skip_bad(src_copy, tmp_path):
    (src_copy / "split" / "val_attr.txt").unlink()
    with pytest.raises(src_mod.MissingSplitFileError,
                       match=f"^{re.escape(str(src_copy / 'split' / 'val_attr.txt'))}: split file is missing$"):
        write_shards(src_copy, tmp_path / "out", _cfg(skip_bad=True))


# --- atomicity and overwrite -----------------------------------------------------------------------------------
def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_run_leaves_no_set_and_the_same_run_again_reuses_its_shards(src_copy, tmp_path, monkeypatch,
                                                                                 exc, caplog):
    from fastfashion.format import writer
    calls = {"n": 0}
    real_add = writer._add

    def add(tar, name, data):
        calls["n"] += name.endswith(".jpg")
        if calls["n"] == 8:  # mid-way: both train shards are committed, val-00000 half written
            raise exc("boom")
        return real_add(tar, name, data)

    monkeypatch.setattr(writer, "_add", add)
    out = tmp_path / "out"
    with pytest.raises(exc, match="^boom$"):
        write_shards(src_copy, out, _cfg(samples_per_shard=4))
    assert calls["n"] == 8 and not out.exists() and _leftovers(out) == [".out.partial"]
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path / ".out.partial")  # not a shard set
    monkeypatch.undo()
    with caplog.at_level("INFO", logger="fastfashion.data.shard"):
        write_shards(src_copy, out, _cfg(samples_per_shard=4))
    assert "reused 2 of 4 shards" in caplog.text and _leftovers(out) == []
    write_shards(src_copy, tmp_path / "fresh", _cfg(samples_per_shard=4))
    assert _files(out) == _files(tmp_path / "fresh")


def test_a_run_that_commits_nothing_leaves_nothing(src_copy, tmp_path, monkeypatch):
    from fastfashion.format import writer
    monkeypatch.setattr(writer, "_add", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="^boom$"):
        write_shards(src_copy, tmp_path / "out", _cfg())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def _start_slow_writer(src: Path, out: Path, workers: int = 1) -> subprocess.Popen:
    """A subprocess sharding ``src`` slowly (0.2 s per sample, in its workers too), once it has committed a shard
    and is writing the next."""
    from helpers import slow_tasks_env
    flag = out.parent / "slow"
    flag.touch()
    script = (f"from fastfashion.data.shard import ShardConfig, write_shards\n"
              f"write_shards({str(src)!r}, {str(out)!r}, ShardConfig(workers={workers}, samples_per_shard=2))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=slow_tasks_env(flag, 0.2),
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out.parent / f".{out.name}.partial" / "_fragments" / "train-00000.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the writer subprocess did not commit a shard")
        time.sleep(0.05)
    return proc


@pytest.mark.slow
def test_sigterm_and_sigkill_mid_run(src_copy, tmp_path):
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    proc = _start_slow_writer(src_copy, out)
    proc.send_signal(signal.SIGTERM)  # cleaned up like Ctrl-C
    # SIGTERM becomes fastfashion.errors.Terminated (a KeyboardInterrupt), uncaught in this library-level script:
    # exit status 1 after the cleanup (the command line turns it into one line and 143, see test_cli)
    assert proc.wait() == 1 and not out.exists() and _leftovers(out) == [".out.partial"]
    assert not list(partial.glob(".attempt-*"))  # the interrupted shard's scratch folder is gone
    shutil.rmtree(partial)
    proc = _start_slow_writer(src_copy, out, workers=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # its pool workers notice the driver is gone and exit
    assert not out.exists() and _leftovers(out) == [".out.partial"]  # SIGKILL leaves the work folder ...
    with pytest.raises(ManifestError, match=f"^{re.escape(str(partial))}: not a shard set \\(no manifest\\.json\\)$"):
        read_manifest(partial)  # ... that is not a shard set ...
    (tmp_path / "slow").unlink()
    write_shards(src_copy, out, _cfg())  # ... and the next run reuses what it committed and removes the rest
    assert read_manifest(out)["splits"]["train"]["num_samples"] == 6 and _leftovers(out) == []
    write_shards(src_copy, tmp_path / "fresh", _cfg())
    assert _files(out) == _files(tmp_path / "fresh")


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(src_copy, tmp_path):
    out = tmp_path / "out"
    proc = _start_slow_writer(src_copy, out)
    try:
        with pytest.raises(ConfigError, match=f"^{re.escape(str(out))}: another conversion is writing it"):
            write_shards(src_copy, out, _cfg())
    finally:
        proc.kill()
        proc.wait()


def test_overwrite_semantics(src_copy, tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_shards(src_copy, out, _cfg(seed=0))
    with pytest.raises(FileExistsError, match=f"^{re.escape(str(out))} already holds a shard set; refusing to "
                                              r"replace it without overwrite=True$"):
        write_shards(src_copy, out, _cfg(seed=1))
    assert read_manifest(out)["options"]["seed"] == 0
    # a failing overwrite keeps the old set intact
    monkeypatch.setattr("fastfashion.data.output.commit_set", lambda *a, **kw: (_ for _ in ()).throw(
        RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="^disk full$"):
        write_shards(src_copy, out, _cfg(seed=1, overwrite=True))
    monkeypatch.undo()
    assert read_manifest(out)["options"]["seed"] == 0 and _leftovers(out) == []
    write_shards(src_copy, out, _cfg(seed=1, overwrite=True))
    assert read_manifest(out)["options"]["seed"] == 1 and _leftovers(out) == []
    # a folder that is not a shard set is never replaced
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"^{re.escape(str(other))} exists and is not a shard set; refusing to "
                                              "replace it$"):
        write_shards(src_copy, other, _cfg(overwrite=True))
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match=f"^output folder {re.escape(str(src_copy / 'shards'))} must not contain or "
                                         f"be inside the source {re.escape(str(src_copy))}$"):
        write_shards(src_copy, src_copy / "shards", _cfg())


def test_default_shard_dir(tmp_path):
    assert default_shard_dir(tmp_path / "FashionDataset") == Path("shards") / "FashionDataset"


# --- command line ----------------------------------------------------------------------------------------------
def test_cli_shard_and_inspect(src_copy, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["-q", "shard", str(src_copy), str(out), "--samples-per-shard", "4", "--workers", "1"]) == 0
    assert "train 6 in 2 shards" in capsys.readouterr().out
    assert cli.main(["-q", "inspect", str(out), "--verify", "--plots", str(tmp_path / "png")]) == 0
    text = capsys.readouterr().out
    assert "train: 6 samples in 2 shards" in text and "test: 3 samples in 1 shards" in text and "(w " in text
    for split in ("train", "val"):
        assert Image.open(tmp_path / "png" / f"class-hist-{split}.png").format == "PNG"
    assert not (tmp_path / "png" / "class-hist-test.png").exists()  # unlabelled


def test_cli_errors_are_one_line(src_copy, tmp_path, capsys):
    rel, _ = _second_val_image(src_copy)
    (src_copy / rel).write_bytes(_png())
    assert cli.main(["-q", "shard", str(src_copy), str(tmp_path / "out"), "--workers", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "val.txt:2:" in err[0] and "--skip-bad" in err[0]
    assert err == [f"fastfashion shard: error: {src_copy / 'split' / 'val.txt'}:2: image {rel!r}: PNG data named .jpg "
                   "(not a JPEG); use --skip-bad to leave bad samples out"]
    assert cli.main(["-q", "shard", str(src_copy), str(tmp_path / "out"), "--workers", "1", "--skip-bad"]) == 0
    assert cli.main(["-q", "shard", str(src_copy), str(tmp_path / "out"), "--workers", "1"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"fastfashion shard: error: {tmp_path / 'out'} already holds a shard set; refusing to replace it without "
        "overwrite=True; pass --overwrite to replace it"]


# --- the real data set -----------------------------------------------------------------------------------------
@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not (REAL_DATA / "split").is_dir(), reason="real FashionDataset absent")
def test_real_dataset_counts(tmp_path):
    m = write_shards(REAL_DATA, tmp_path / "fashion", ShardConfig())
    assert {s: v["num_samples"] for s, v in m["splits"].items()} == {"train": 5000, "val": 1000, "test": 1000}
    assert [len(m["splits"][s]["shards"]) for s in SPLITS] == [10, 2, 2] and m["skipped"] == []
    assert m["splits"]["train"]["class_counts"] == {  # docs/data.md, "Train class counts"
        "pattern": [768, 853, 334, 422, 109, 2408, 106], "sleeve": [1523, 862, 2615],
        "length": [488, 951, 3561], "neckline": [2086, 826, 19, 2069],
        "fabric": [310, 702, 3399, 105, 48, 436], "fit": [749, 279, 3972]}
    assert sum(m["splits"]["val"]["class_counts"]["pattern"]) == 1000


def test_hand_edited_manifest_missing_fields_is_a_clear_error(tiny_dataset, tmp_path):
    out = tmp_path / "s"
    write_shards(tiny_dataset, out, ShardConfig(workers=1))
    m = json.loads((out / "manifest.json").read_text())
    del m["splits"]["val"]["shards"][0]["bytes"]
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=f"^{re.escape(str(out / 'manifest.json'))}: split 'val' shard 0 lacks "
                                            "bytes$"):
        read_manifest(out)


def test_a_full_disk_names_the_file():
    """ENOSPC carries no file name of its own; the library's writers add it."""
    from fastfashion.format.atomic import with_path
    err = with_path(OSError(28, "No space left on device"), "/data/run/last.pt")
    assert str(err) == "[Errno 28] No space left on device: '/data/run/last.pt'"
    named = OSError(2, "No such file or directory", "/x")
    assert with_path(named, "/y") is named


def test_the_pixel_limit_at_shard_time_is_an_option(src_copy, tmp_path):
    with pytest.raises(BadImageError, match=r"split/train\.txt:1: image 'img/\d+\.jpg': .*max_image_pixels"):
        write_shards(src_copy, tmp_path / "out", _cfg(max_image_pixels=100))
    m = write_shards(src_copy, tmp_path / "out", _cfg(max_image_pixels=400 * 400))
    assert m["options"]["max_image_pixels"] == 400 * 400  # a changed limit is recorded; the default is not
    assert "max_image_pixels" not in write_shards(src_copy, tmp_path / "out2", _cfg())["options"]


def test_a_million_workers_is_the_cpus(src_copy, tmp_path, caplog):
    from fastfashion.hardware import available_cpus
    with caplog.at_level("WARNING"):
        write_shards(src_copy, tmp_path / "out", _cfg(workers=1_000_000))
    assert f"workers 1000000 is more than the {available_cpus()} CPUs" in caplog.text
    assert read_manifest(tmp_path / "out")["splits"]["train"]["num_samples"] == 6

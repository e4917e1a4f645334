"""Runs every shard-corruption scenario against one backend, in a process of its own, and prints one JSON line per
scenario: ``{"scenario": ..., "error": "<type>: <message>" or null, "batches": n}``. Used by test_faults.py, which
fails when this process dies of a signal (a segmentation fault) or a scenario ends differently than expected.

    python fault_runner.py BASE_SHARD_DIR WORK_DIR BACKEND
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tarfile
from pathlib import Path

from fastfashion.format.atomic import file_sha256
from fastfashion.loading.loader import make_loader

VAL0, VAL1 = "val-00000.tar", "val-00001.tar"


def member(tar: Path, name: str) -> tuple[int, int]:
    with tarfile.open(tar) as tf:
        m = tf.getmember(name)
        return m.offset_data, m.size


def first_member(tar: Path, ext: str) -> str:
    with tarfile.open(tar) as tf:
        return next(m.name for m in tf if m.name.endswith(ext))


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def edit_manifest(d: Path, change) -> None:
    m = json.loads((d / "manifest.json").read_text())
    change(m)
    (d / "manifest.json").write_text(json.dumps(m))


def rehash(d: Path, tar: str) -> None:
    """Record a tar's new sha256 in the manifest: an adversarial set whose checksums agree with its content."""
    def change(m):
        for s in m["splits"].values():
            for sh in s["shards"]:
                if sh["tar"] == tar:
                    sh["sha256"] = file_sha256(d / tar)
    edit_manifest(d, change)


def shard_entry(m: dict, i: int = 0) -> dict:
    return m["splits"]["val"]["shards"][i]


SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


@scenario
def intact(d):
    pass


@scenario
def flipped_jpeg_byte(d):
    off, size = member(d / VAL1, first_member(d / VAL1, ".jpg"))
    flip(d / VAL1, off + size // 2)


@scenario
def flipped_lbl_byte(d):
    off, _ = member(d / VAL1, first_member(d / VAL1, ".lbl"))
    flip(d / VAL1, off)


@scenario
def zeroed_jpeg_start(d):
    off, _ = member(d / VAL1, first_member(d / VAL1, ".jpg"))
    patch(d / VAL1, off, b"\x00")


@scenario
def zeroed_jpeg_start_unverified(d):
    zeroed_jpeg_start(d)
    return {"verify": False}


@scenario
def truncated_tar(d):
    with open(d / VAL1, "r+b") as f:
        f.truncate(1024)


@scenario
def deleted_idx(d):
    (d / "val-00001.idx").unlink()


@scenario
def garbage_idx(d):
    (d / "val-00001.idx").write_text("hello world\n")


@scenario
def garbage_idx_unverified(d):
    garbage_idx(d)
    return {"verify": False}


@scenario
def binary_idx_unverified(d):
    (d / "val-00001.idx").write_bytes(bytes(range(256)))
    return {"verify": False}


@scenario
def idx_of_another_shard(d):
    shutil.copy(d / "val-00000.idx", d / "val-00001.idx")


@scenario
def idx_of_another_shard_unverified(d):
    idx_of_another_shard(d)
    return {"verify": False}


@scenario
def swapped_tars_same_size(d):
    """val-00001's bytes replaced by val-00000's, cut or padded to val-00001's size (a swap of equal-size tars)."""
    size = (d / VAL1).stat().st_size
    data = (d / VAL0).read_bytes()[:size]
    (d / VAL1).write_bytes(data + b"\x00" * (size - len(data)))


@scenario
def label_out_of_range_rehashed(d):
    """A .lbl pushed out of range, and the manifest's sha256 updated to match: only the label check can see it."""
    off, _ = member(d / VAL1, first_member(d / VAL1, ".lbl"))
    patch(d / VAL1, off, struct.pack("<q", 133))
    rehash(d, VAL1)


@scenario
def label_out_of_range_unverified(d):
    label_out_of_range_rehashed(d)
    return {"verify": False}


def _jpeg_segment(data: bytes, markers: set[int]) -> tuple[int, int]:
    """(offset, end) of the first segment of a JPEG whose marker is in ``markers``."""
    pos = 2
    while data[pos + 1] not in markers:
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return pos, pos + 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]


def _hostile_jpeg(d: Path, change) -> None:
    """Replace the first .jpg of val-00001.tar by ``change(its bytes)`` (same size), in place."""
    off, size = member(d / VAL1, first_member(d / VAL1, ".jpg"))
    with open(d / VAL1, "rb") as f:
        f.seek(off)
        data = f.read(size)
    new = change(data)
    assert len(new) == size
    patch(d / VAL1, off, new)


def _bomb(data: bytes) -> bytes:
    sof, _ = _jpeg_segment(data, {0xC0, 0xC2})
    return data[:sof + 5] + struct.pack(">HH", 20000, 20000) + data[sof + 9:]  # claims 20000x20000 pixels


@scenario
def bomb_header_indexed(d):
    """A JPEG whose header claims 20000x20000 pixels (400 M, 1.2 GB decoded; DALI's CPU decoder allocates it and
    fills it with grey), in a set adopted with `fastfashion index` without --check-images and a raised pixel limit:
    the loader's own limit (the default) refuses it before decoding."""
    _hostile_jpeg(d, _bomb)
    from fastfashion.data.adopt import IndexConfig, index_shards
    index_shards(d, IndexConfig(overwrite=True, max_image_pixels=10 ** 9))


@scenario
def bomb_header_rehashed(d):
    _hostile_jpeg(d, _bomb)
    rehash(d, VAL1)


@scenario
def truncated_scan_rehashed(d):
    """The second half of the JPEG zeroed (a file cut short and padded, as a crashed copy leaves it)."""
    _hostile_jpeg(d, lambda b: b[:len(b) // 2] + bytes(len(b) - len(b) // 2))
    rehash(d, VAL1)


@scenario
def garbage_after_header_rehashed(d):
    """Random bytes after a valid frame header (DALI decodes random bytes after a scan header into garbage)."""
    def change(b):
        _, end = _jpeg_segment(b, {0xC0, 0xC2})
        return b[:end] + bytes((i * 167 + 13) % 251 for i in range(len(b) - end))
    _hostile_jpeg(d, change)
    rehash(d, VAL1)


@scenario
def garbage_scan_rehashed(d):
    """Random bytes (with 0xFF in them) in place of the scan data, the end-of-image marker kept: the headers are
    valid, so only a decoder sees it."""
    def change(b):
        _, end = _jpeg_segment(b, {0xDA})
        return b[:end] + bytes((i * 167 + 13) % 256 for i in range(len(b) - end - 2)) + b"\xff\xd9"
    _hostile_jpeg(d, change)
    rehash(d, VAL1)


@scenario
def undefined_tables_rehashed(d):
    """The quantization tables turned into a comment of the same size: a valid structure that no decoder can decode
    (PIL: broken data stream; DALI: quantization table not defined), found only when the batch is decoded."""
    def change(b):
        out = bytearray(b)
        pos = 2
        while out[pos + 1] != 0xDA:
            if out[pos + 1] == 0xDB:
                out[pos + 1] = 0xFE
            pos += 2 + struct.unpack(">H", bytes(out[pos + 2:pos + 4]))[0]
        return bytes(out)
    _hostile_jpeg(d, change)
    rehash(d, VAL1)


@scenario
def manifest_tar_escapes_folder(d):
    outside = d.parent / f"{d.name}-outside"
    outside.mkdir()
    shutil.copy(d / VAL1, outside / "x.tar")
    edit_manifest(d, lambda m: shard_entry(m, 1).update(tar=f"../{outside.name}/x.tar"))


@scenario
def manifest_absolute_tar(d):
    edit_manifest(d, lambda m: shard_entry(m, 1).update(tar=str((d / VAL1).resolve())))


@scenario
def manifest_num_samples_not_integer(d):
    edit_manifest(d, lambda m: shard_entry(m).update(num_samples="5"))


@scenario
def manifest_num_samples_huge(d):
    def change(m):
        shard_entry(m)["num_samples"] = 10 ** 12
        m["splits"]["val"]["num_samples"] = sum(sh["num_samples"] for sh in m["splits"]["val"]["shards"])
    edit_manifest(d, change)


@scenario
def manifest_bad_sha(d):
    edit_manifest(d, lambda m: shard_entry(m).update(sha256="xyz"))


@scenario
def manifest_not_json(d):
    (d / "manifest.json").write_bytes(b"\x89PNG not json")


# --- issue 23, cases 3-7: bounds and networks (the loader's arguments, or the set served over HTTP) ---------------
@scenario
def batch_size_100000(d):
    return {"batch_size": 100000}  # lowered to the split's 12 samples: one batch


@scenario
def workers_1000000(d):
    return {"workers": 1000000}  # lowered to the CPUs


@scenario
def manifest_over_the_size_limit(d):
    from fastfashion.format.manifest import MAX_MANIFEST_BYTES
    with open(d / "manifest.json", "r+b") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: zeros after the JSON, costs no disk


@scenario
def served_through_chaos(d):
    return {"serve": "chaos"}  # 30 % of the requests fail: retried, the same 3 batches


@scenario
def served_tar_longer_than_the_manifest_says(d):
    with open(d / VAL1, "ab") as f:
        f.write(b"\0" * 4096)  # the manifest's size and sha256 are of the shorter file
    return {"serve": "http"}


def _loader(d: Path, backend: str, opts: dict, stack):
    """The loader of the scenario: of the folder, or of the folder served over HTTP (``serve``)."""
    from remote_servers import chaos_server, http_server

    from fastfashion.remote.store import RemoteConfig
    kw = dict(batch_size=4, backend=backend, device="cpu", image_size=16, workers=0)
    serve = opts.pop("serve", None)
    kw.update(opts)
    if serve is None:
        return make_loader(d, "val", **kw)
    if serve == "chaos":
        base, _ = stack.enter_context(chaos_server(d.parent, rate=0.3, seed=1, stall=1.0))
    else:
        base = stack.enter_context(http_server(d.parent))
    return make_loader(f"{base}/{d.name}", "val", cache_dir=d.parent / "cache",
                       remote=RemoteConfig(retries=8, backoff=0.01, timeout=0.5), **kw)


def run(base: Path, work: Path, backend: str, name: str) -> dict:
    import contextlib
    d = work / name / "shards"
    shutil.copytree(base, d)
    opts = SCENARIOS[name](d) or {}
    batches = 0
    try:
        with contextlib.ExitStack() as stack:
            loader = _loader(d, backend, opts, stack)
            for _ in loader:
                batches += 1
            loader.close()
    except Exception as e:  # noqa: BLE001 - the test compares type and message
        return {"scenario": name, "error": f"{type(e).__name__}: {e}", "batches": batches}
    return {"scenario": name, "error": None, "batches": batches}


def main() -> int:
    base, work, backend = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in SCENARIOS:
        print(json.dumps({"start": name}), flush=True)  # the last one started names a crash
        print(json.dumps(run(base, work, backend, name)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

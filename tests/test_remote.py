"""Remote shard sets against real servers on 127.0.0.1 (``remote_servers``): http.server and moto's S3 server
reached through s3fs. Same batches as the local set; verified, shared, bounded cache; one-line errors."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from helpers import HAVE_DALI, make_dataset
from remote_servers import free_port, http_server, s3_server

from fastfashion.data.shard import ShardConfig, write_shards
from fastfashion.format.manifest import ManifestError
from fastfashion.format.verify import IntegrityError
from fastfashion.loading.loader import make_loader
from fastfashion.remote.cache import ShardCache, cached_summary
from fastfashion.remote.store import RemoteConfig, RemoteError, parse_size, parse_storage_options, redact
from fastfashion.remote.upload import upload_shard_set, verify_remote

pytest.importorskip("s3fs")
BACKENDS = ["torch", *(["dali-cpu"] if HAVE_DALI else [])]
FAST = RemoteConfig(retries=1, backoff=0.01, timeout=5)


@pytest.fixture(scope="module")
def local_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    data = make_dataset(root / "data", train=40, val=12, test=8)
    write_shards(data, root / "shards", ShardConfig(samples_per_shard=6, workers=1, seed=0))
    return root / "shards"


def batches(loader, epochs=(0,)):
    out = []
    for e in epochs:
        loader.set_epoch(e)
        for b in loader:
            out.append((b.keys, b.labels.clone(), b.images.clone()))
    return out


def assert_same(a, b):
    assert len(a) == len(b) > 0
    for (ka, la, ia), (kb, lb, ib) in zip(a, b):
        assert ka == kb
        assert torch.equal(la, lb)
        assert torch.equal(ia, ib)


def loader_kw(backend, **kw):
    return dict(batch_size=4, backend=backend, device="cpu", augment=False, image_size=16, with_keys=True,
                workers=0, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_http_set_gives_the_local_batches(local_set, tmp_path, backend):
    with http_server(local_set.parent) as base:
        url = f"{base}/shards"
        remote = make_loader(url, "train", cache_dir=tmp_path / "cache", remote=FAST, **loader_kw(backend))
        got = batches(remote, (0, 1))
    want = batches(make_loader(local_set, "train", **loader_kw(backend)), (0, 1))
    assert_same(got, want)
    assert remote.remote.downloaded_bytes > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_shard_to_bucket_then_loader_same_batches(local_set, tmp_path, backend):
    with s3_server() as (opts, bucket):
        cfg = RemoteConfig(storage_options=opts, retries=1, backoff=0.01, timeout=5)
        upload_shard_set(local_set, f"s3://{bucket}/fashion", config=cfg)
        with pytest.raises(RemoteError, match="already exists"):
            upload_shard_set(local_set, f"s3://{bucket}/fashion", config=cfg)
        remote = make_loader(f"s3://{bucket}/fashion", "val", cache_dir=tmp_path / "c", remote=cfg,
                             **loader_kw(backend))
        got = batches(remote)
        assert verify_remote(f"s3://{bucket}/fashion", cfg) == 2 * sum(
            len(s["shards"]) for s in remote.remote.manifest["splits"].values())
    assert_same(got, batches(make_loader(local_set, "val", **loader_kw(backend))))


@pytest.mark.parametrize("backend", BACKENDS)
def test_streamed_through_a_bounded_cache_gives_the_local_windowed_batches(local_set, tmp_path, backend):
    sizes = [sh["bytes"] for sh in json.loads((local_set / "manifest.json").read_text())["splits"]["train"]["shards"]]
    limit = sum(sorted(sizes)[-3:]) + 20_000  # 3 windows of 1 shard and the .idx files
    with http_server(local_set.parent) as base:
        remote = make_loader(f"{base}/shards", "train", cache_dir=tmp_path / "c", cache_limit=limit, window=1,
                             **loader_kw(backend))
        assert remote.streaming
        got = batches(remote, (1,))
    want = batches(make_loader(local_set, "train", order="windowed", window=1, **loader_kw(backend)), (1,))
    assert_same(got, want)


def test_warm_cache_downloads_nothing_and_offline_works(local_set, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    with http_server(local_set.parent) as base:
        url = f"{base}/shards"
        first = make_loader(url, "val", cache_dir=cache, remote=FAST, **loader_kw("torch"))
        want = batches(first)
        second = make_loader(url, "val", cache_dir=cache, remote=FAST, **loader_kw("torch"))
        assert second.remote.downloaded == []
    # the server is stopped
    off = make_loader(url, "val", cache_dir=cache, offline=True, **loader_kw("torch"))
    assert_same(batches(off), want)
    # online with the host down and the set cached: the error says where the copy is, the command line --offline
    from fastfashion.cli import main
    from fastfashion.errors import fix_param
    with pytest.raises(RemoteError) as e:
        make_loader(url, "val", cache_dir=cache, remote=FAST, **loader_kw("torch"))
    folder = next(p for p in cache.iterdir() if p.name != "urls")
    assert str(e.value) == (f"{url}/manifest.json: the shard set's manifest: host unreachable after 2 tries; this set "
                            f"is in the cache {folder}")
    assert fix_param(e.value) == "use_offline"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # inspect reads the default cache root
    shutil.copytree(cache, tmp_path / "xdg" / "fastfashion" / "shards")
    assert main(["-q", "inspect", url, "--retries", "0"]) == 1
    assert capsys.readouterr().err.strip().endswith("shards/" + folder.name + "; pass --offline to read it from the "
                                                    "cache")
    with pytest.raises(RemoteError, match=r"offline, and .* not in the cache"):
        make_loader(url, "train", cache_dir=cache, offline=True, **loader_kw("torch"))


def test_bad_names_404_unreachable_are_one_line(local_set, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(local_set, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["splits"]["val"]["shards"][0]["tar"] = "../../etc/passwd.tar"
    (bad / "manifest.json").write_text(json.dumps(m))
    with http_server(tmp_path) as base:
        with pytest.raises(ManifestError) as e:
            make_loader(f"{base}/bad", "val", cache_dir=tmp_path / "c", remote=FAST, **loader_kw("torch"))
        assert f"{base}/bad/manifest.json" in str(e.value) and "not a plain" in str(e.value)
        with pytest.raises(RemoteError) as e:
            make_loader(f"{base}/nothing", "val", cache_dir=tmp_path / "c", remote=FAST, **loader_kw("torch"))
        assert str(e.value) == f"{base}/nothing/manifest.json: the shard set's manifest: not found (404)"
        (bad / "manifest.json").write_text(json.dumps(json.loads((local_set / "manifest.json").read_text())))
        name = m["splits"]["val"]["shards"][1]["tar"]
        (bad / name).unlink()
        with pytest.raises(RemoteError) as e:
            make_loader(f"{base}/bad", "val", cache_dir=tmp_path / "c", remote=FAST, **loader_kw("torch"))
        assert str(e.value) == f"{base}/bad/{name}: shard file {name}: not found (404)"
    url = f"http://127.0.0.1:{free_port()}/shards"
    with pytest.raises(RemoteError) as e:
        make_loader(url, "val", cache_dir=tmp_path / "c", remote=FAST, **loader_kw("torch"))
    assert str(e.value) == f"{url}/manifest.json: the shard set's manifest: host unreachable after 2 tries"
    assert "\n" not in str(e.value)


def test_corrupted_object_is_downloaded_again_then_refused(local_set, tmp_path):
    with s3_server() as (opts, bucket):
        cfg = RemoteConfig(storage_options=opts, retries=0, timeout=5)
        upload_shard_set(local_set, f"s3://{bucket}/set", config=cfg)
        import s3fs
        fs = s3fs.S3FileSystem(**opts)
        name = json.loads((local_set / "manifest.json").read_text())["splits"]["val"]["shards"][0]["tar"]
        data = bytearray(fs.cat(f"{bucket}/set/{name}"))
        data[700] ^= 0xFF
        fs.pipe(f"{bucket}/set/{name}", bytes(data))
        with pytest.raises(RemoteError) as e:
            make_loader(f"s3://{bucket}/set", "val", cache_dir=tmp_path / "c", remote=cfg, **loader_kw("torch"))
        assert str(e.value) == (f"s3://{bucket}/set/{name}: shard file {name}: sha256 differs from the manifest in 2 "
                                "downloads (corrupted in the store)")
        with pytest.raises(IntegrityError, match=f"s3://{bucket}/set/{name}: sha256 differs"):
            verify_remote(f"s3://{bucket}/set", cfg)
        folder = next(p for p in (tmp_path / "c").iterdir() if p.name != "urls")
        assert not (folder / name).exists() and not list(folder.glob(f".{name}*"))


def test_cache_limit_never_exceeded_while_streaming(local_set, tmp_path):
    sizes = [sh["bytes"] for sh in json.loads((local_set / "manifest.json").read_text())["splits"]["train"]["shards"]]
    with http_server(local_set.parent) as base:
        url = f"{base}/shards"
        with pytest.raises(RemoteError, match=r"cache_limit 1000 bytes is below the \d+ bytes .* at least \d+"):
            make_loader(url, "train", cache_dir=tmp_path / "c", cache_limit=1000, window=1, **loader_kw("torch"))
        limit = sum(sorted(sizes)[-3:]) + 20_000
        loader = make_loader(url, "train", cache_dir=tmp_path / "c", cache_limit=limit, window=1,
                             **loader_kw("torch"))
        assert loader.order == "windowed" and loader.streaming
        folder, peak, keys = loader.remote.dir, 0, []
        stop = threading.Event()

        def sample():
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, sum(p.stat().st_size for p in folder.iterdir() if p.is_file()
                                     and p.name != "manifest.json" and p.exists()))
                time.sleep(0.002)

        t = threading.Thread(target=sample)
        t.start()
        try:
            for e in (0, 1):
                loader.set_epoch(e)
                keys.append([k for b in loader for k in b.keys])
        finally:
            stop.set()
            t.join()
    assert 0 < peak <= limit
    assert keys[0] == loader.keys(0) and sorted(keys[0]) != keys[0] and keys[0] != keys[1]
    assert len(keys[0]) == 40 // 4 * 4


def test_two_processes_share_one_cache(local_set, tmp_path):
    script = textwrap.dedent("""
        import json, sys
        from fastfashion.remote.cache import ShardCache
        from fastfashion.remote.store import RemoteConfig
        c = ShardCache(sys.argv[1], RemoteConfig(cache_dir=sys.argv[2]))
        c.fetch_split("train"); c.close()
        print(json.dumps(c.downloaded))
    """)
    with http_server(local_set.parent) as base:
        procs = [subprocess.Popen([sys.executable, "-c", script, f"{base}/shards", str(tmp_path / "c")],
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    names = [n for o in outs for n in o]
    shards = json.loads((local_set / "manifest.json").read_text())["splits"]["train"]["shards"]
    assert sorted(names) == sorted(n for sh in shards for n in (sh["tar"], sh["idx"]))  # each once, in all


def test_sigkill_mid_download_leaves_no_complete_file(local_set, tmp_path):
    import http.server

    class Slow(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def copyfile(self, src, dst):
            try:
                while chunk := src.read(2048):
                    dst.write(chunk)
                    time.sleep(0.05 if self.path.endswith(".tar") else 0)
            except OSError:  # the client was killed
                pass

    script = textwrap.dedent("""
        import sys
        from fastfashion.remote.cache import ShardCache
        from fastfashion.remote.store import RemoteConfig
        c = ShardCache(sys.argv[1], RemoteConfig(cache_dir=sys.argv[2]))
        c.fetch_split("val")
    """)
    with http_server(local_set.parent, Slow) as base:
        p = subprocess.Popen([sys.executable, "-c", script, f"{base}/shards", str(tmp_path / "c")])
        deadline = time.time() + 30
        while time.time() < deadline and not list((tmp_path / "c").glob("*/.*.tar.tmp*")):
            time.sleep(0.05)
        time.sleep(0.2)
        p.kill()
        p.wait()
        folder = next(p for p in (tmp_path / "c").iterdir() if p.name != "urls")
        assert list(folder.glob(".*.tar.tmp*")), "the kill came before a download started"
        assert not list(folder.glob("*.tar"))  # nothing complete-looking
    with http_server(local_set.parent) as base:  # the next run recovers
        c = ShardCache(f"{base}/shards", RemoteConfig(cache_dir=tmp_path / "c"))
        c.fetch_split("val")
        c.close()
    assert not list(folder.glob(".*.tmp*"))
    m = json.loads((local_set / "manifest.json").read_text())
    assert set(cached_summary(folder)) >= {sh["tar"] for sh in m["splits"]["val"]["shards"]}


def test_helpers():
    assert redact("https://user:secret@host:9/a/b?X-Amz-Signature=abc") == "https://host:9/a/b"
    assert parse_size("500M") == 500_000_000 and parse_size("1KiB") == 1024 and parse_size("12") == 12
    assert parse_storage_options(["anon=true", "client_kwargs.endpoint_url=http://x:1", "n=3"]) == {
        "anon": True, "client_kwargs": {"endpoint_url": "http://x:1"}, "n": 3}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_storage_options(["justakey"])
    with pytest.raises(ValueError):
        RemoteConfig(cache_limit=0)


def test_cli_shard_to_url_inspect_verify_and_errors(tmp_path, tiny_dataset, capsys):
    from fastfashion.cli import main
    with s3_server() as (opts, bucket):
        endpoint = opts["client_kwargs"]["endpoint_url"]
        so = ["--storage-option", f"client_kwargs.endpoint_url={endpoint}", "--storage-option", "key=testing",
              "--storage-option", "secret=s3cr3t-value", "--retries", "0"]
        url = f"s3://{bucket}/cli"
        assert main(["-q", "shard", str(tiny_dataset), url, "--samples-per-shard", "16", "--workers", "1", *so]) == 0
        assert main(["-q", "shard", str(tiny_dataset), url, "--workers", "1", *so]) == 1
        assert main(["-q", "inspect", url, "--verify", *so]) == 0
        assert main(["-q", "inspect", f"s3://{bucket}/none", *so]) == 1
        import s3fs

        from fastfashion.format.spec import wids_index
        fs, m = s3fs.S3FileSystem(**opts), json.loads(s3fs.S3FileSystem(**opts).cat(f"{bucket}/cli/manifest.json"))
        for split in ("train", "val", "test"):  # docs/format.md lists them: uploaded with the set
            assert fs.cat(f"{bucket}/cli/{split}.wids.json").decode() == wids_index(split, m["splits"][split]["shards"])
    out = capsys.readouterr()
    assert "verify: every tar and idx matches its sha256" in out.out
    assert "no class histograms written (the set is a URL): pass --plots DIR to write them there" in out.out
    errors = out.err.strip().splitlines()
    assert errors == [f"fastfashion shard: error: {url}/manifest.json: a shard set already exists there; pass "
                      "--overwrite to replace it",
                      f"fastfashion inspect: error: s3://{bucket}/none/manifest.json: the shard set's manifest: not "
                      "found (404)"]
    assert "s3cr3t" not in out.out + out.err


def test_cli_bench_url_reports_cold_and_warm_beside_local(local_set, tmp_path, capsys):
    from fastfashion.cli import main
    with http_server(local_set.parent) as base:
        rc = main(["-q", "bench", "--shards", f"{base}/shards", "--backends", "torch", "--split", "val",
                   "--batch-size", "4", "--image-size", "16", "--no-augment", "--rounds", "2", "--batches", "2",
                   "--warmup", "0", "--workers", "0", "--train-steps", "0", "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    out = capsys.readouterr().out  # (no --json: its default PNG would build matplotlib's font cache, minutes here)
    assert re.search(r"remote \(torch, blocked order\): cold epoch [0-9.]+ s \([0-9.]+ MB", out)
    assert re.search(r"warm cache \d+ img/s vs local copy \d+ img/s: [0-9.]+ x \(median of 2 rounds\)", out)


def test_timeout_and_403_are_one_line(local_set, tmp_path):
    import http.server

    class Stuck(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path.startswith("/forbidden"):
                self.send_error(403)
                return
            time.sleep(3)  # never answers in time
            self.send_error(500)

        do_HEAD = do_GET

    cfg = RemoteConfig(retries=1, backoff=0.01, timeout=0.3)
    with http_server(local_set.parent, Stuck) as base:
        with pytest.raises(RemoteError) as e:
            make_loader(f"{base}/forbidden", "val", cache_dir=tmp_path / "c", remote=cfg, **loader_kw("torch"))
        assert str(e.value) == f"{base}/forbidden/manifest.json: the shard set's manifest: access denied (403)"
        with pytest.raises(RemoteError) as e:
            make_loader(f"{base}/slow", "val", cache_dir=tmp_path / "c", remote=cfg, **loader_kw("torch"))
        assert str(e.value) == f"{base}/slow/manifest.json: the shard set's manifest: timed out after 2 tries"


def test_a_full_cache_disk_is_one_line(local_set, tmp_path, monkeypatch):
    import builtins
    import errno

    import fastfashion.remote.store as store_mod

    def full(path, mode="r", *a, **kw):
        if "w" in mode and ".tmp" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return builtins.open(path, mode, *a, **kw)

    monkeypatch.setattr(store_mod, "open", full, raising=False)  # Store.download writes the temporary
    with http_server(local_set.parent) as base:
        with pytest.raises(RemoteError) as e:
            make_loader(f"{base}/shards", "val", cache_dir=tmp_path / "c", remote=FAST, **loader_kw("torch"))
    # downloads run in parallel: whichever file fails first is named
    assert re.search(r": the cache disk is full while writing val-0000\d\.(tar|idx)$", str(e.value)), str(e.value)
    assert "\n" not in str(e.value)
    folder = next(p for p in (tmp_path / "c").iterdir() if p.name != "urls")
    assert not list(folder.glob(".*.tmp*")) and not list(folder.glob("*.tar"))


@pytest.mark.long  # 20-30 s on the 2-core machine: make test-long
def test_train_then_predict_offline_from_a_url(local_set, tmp_path):
    from fastfashion.cli import main
    cache = ["--cache-dir", str(tmp_path / "c")]
    with http_server(local_set.parent) as base:
        url = f"{base}/shards"
        assert main(["-q", "train", "--shards", url, "--out", str(tmp_path / "r"), "--epochs", "1", "--max-steps", "2",
                     "--batch-size", "8", "--image-size", "16", "--backend", "torch", "--workers", "0", *cache]) == 0
    # the server is gone: predict reads the cache that training filled (train and val)
    assert main(["-q", "predict", "--shards", url, "--checkpoint", str(tmp_path / "r" / "last.pt"), "--out",
                 str(tmp_path / "p.txt"), "--split", "val", "--backend", "torch", "--offline", *cache]) == 0
    assert len((tmp_path / "p.txt").read_text().splitlines()) == 12
    # and on the default split (test): training cached it too
    assert main(["-q", "predict", "--shards", url, "--checkpoint", str(tmp_path / "r" / "last.pt"), "--out",
                 str(tmp_path / "t.txt"), "--backend", "torch", "--offline", *cache]) == 0
    assert len((tmp_path / "t.txt").read_text().splitlines()) == 8


def test_a_split_cached_also_is_there_offline(local_set, tmp_path):
    """ShardCache.fetch_also (what the trainer calls for the test split): the split whole in the cache, unless the
    cache is bounded; offline it downloads nothing."""
    with http_server(local_set.parent) as base:
        url = f"{base}/shards"
        bounded = ShardCache(url, RemoteConfig(cache_dir=tmp_path / "c", cache_limit=10**9))
        assert bounded.fetch_also("test") is False and bounded.fetch_also("nosuch") is False
        assert not list(bounded.dir.glob("test-*"))
        cache = ShardCache(url, RemoteConfig(cache_dir=tmp_path / "c"))
        assert cache.fetch_also("test") is True
        assert sorted(cache.downloaded) == sorted(f"test-0000{i}.{x}" for i in range(2) for x in ("idx", "tar"))
    off = make_loader(url, "test", cache_dir=tmp_path / "c", offline=True, **loader_kw("torch"))
    assert sum(len(b.keys) for b in off) == 8

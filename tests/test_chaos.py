"""Flaky networks: a seeded chaos server on 127.0.0.1 (``remote_servers.chaos_server``) drops connections
mid-body, cuts bodies short, stalls past the client's timeout and answers 500/503 for about a fifth of the requests.
Every transient failure is retried with backoff; reading through it gives exactly what the local set gives, four
processes sharing one cold cache download each shard once, and a failure that outlasts the retries is one line
naming the URL. Downloads stop at the manifest's size + 1 byte."""
from __future__ import annotations

import http.server
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import make_dataset
from remote_servers import chaos_server, http_server

from fastfashion.data.shard import ShardConfig, write_shards
from fastfashion.loading.loader import make_loader
from fastfashion.remote.store import RemoteConfig, RemoteError
from fastfashion.remote.upload import verify_remote

# timeout 0.5 s: a stall (1.5 s) is a timeout; 8 retries with 10 ms backoff: P(a request fails 9 times) ~ 0.2**9
CHAOS = RemoteConfig(retries=8, backoff=0.01, timeout=0.5)
CHAOS_FLAGS = ["--retries", "8", "--timeout", "0.5"]


@pytest.fixture(scope="module")
def local_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("chaos")
    data = make_dataset(root / "data", train=24, val=12, test=4)
    write_shards(data, root / "shards", ShardConfig(samples_per_shard=4, workers=1, seed=0))
    return root / "shards"


def _shard_files(local_set, splits=("train", "val", "test")) -> list[str]:
    m = json.loads((local_set / "manifest.json").read_text())
    return sorted(f"/shards/{sh[k]}" for s in splits for sh in m["splits"][s]["shards"] for k in ("tar", "idx"))


def _batches(loader):
    return [(b.keys, b.labels, b.images) for b in loader]


def test_loader_through_chaos_gives_the_local_batches(local_set, tmp_path):
    kw = dict(batch_size=4, backend="torch", device="cpu", augment=False, image_size=16, with_keys=True, workers=0)
    local = _batches(make_loader(local_set, "val", **kw))
    with chaos_server(local_set.parent, rate=0.3, seed=3) as (base, chaos):
        remote = _batches(make_loader(f"{base}/shards", "val", cache_dir=tmp_path / "c", remote=CHAOS, **kw))
    assert sum(chaos.made.values()) >= 3  # faults did happen (seeded: the same ones on every run)
    assert len(local) == len(remote) == 3
    for (ka, la, ia), (kb, lb, ib) in zip(local, remote):
        assert ka == kb and torch.equal(la, lb) and torch.equal(ia, ib)


def test_train_and_evaluate_through_chaos_equal_local(local_set, tmp_path, capsys):
    """``fastfashion train`` (1 epoch) and ``evaluate`` from the chaos server: the same weights and metrics as from
    the local folder."""
    from fastfashion.cli import main
    common = ["--epochs", "1", "--batch-size", "4", "--image-size", "16", "--backend", "torch", "--workers", "0",
              "--device", "cpu", "--recipe", "demo"]
    assert main(["-q", "train", "--shards", str(local_set), "--out", str(tmp_path / "local"), *common]) == 0
    with chaos_server(local_set.parent, rate=0.2, seed=5) as (base, chaos):
        url = f"{base}/shards"
        assert main(["-q", "train", "--shards", url, "--out", str(tmp_path / "remote"), "--cache-dir",
                     str(tmp_path / "c"), *CHAOS_FLAGS, *common]) == 0
        evals = []
        capsys.readouterr()
        for shards, extra in ((str(local_set), []), (url, ["--cache-dir", str(tmp_path / "c2"), *CHAOS_FLAGS])):
            # a fresh cache (c2): evaluate downloads through the chaos too
            assert main(["-q", "evaluate", "--shards", shards, "--checkpoint", str(tmp_path / "remote" / "last.pt"),
                         "--backend", "torch", "--device", "cpu", "--json", *extra]) == 0
            evals.append(json.loads(capsys.readouterr().out))
    assert sum(chaos.made.values()) >= 5
    a = torch.load(tmp_path / "local" / "last.pt", map_location="cpu", weights_only=False)["model"]
    b = torch.load(tmp_path / "remote" / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for e in evals:
        e.pop("checkpoint", None), e.pop("shards", None)
    assert evals[0] == evals[1] and evals[0]["num_samples"] == 12


def test_four_processes_share_one_cold_cache_through_chaos(local_set, tmp_path):
    script = textwrap.dedent("""
        import json, sys
        from fastfashion.remote.cache import ShardCache
        from fastfashion.remote.store import RemoteConfig
        c = ShardCache(sys.argv[1], RemoteConfig(cache_dir=sys.argv[2], retries=8, backoff=0.01, timeout=0.5))
        for split in ("train", "val", "test"):
            c.fetch_split(split)
        c.close()
        print(json.dumps(c.downloaded))
    """)
    with chaos_server(local_set.parent, rate=0.2, seed=7) as (base, chaos):
        procs = [subprocess.Popen([sys.executable, "-c", script, f"{base}/shards", str(tmp_path / "c")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [o[1][-500:] for o in outs]
    downloaded = sorted(f"/shards/{n}" for o in outs for n in json.loads(o[0]))
    assert downloaded == _shard_files(local_set)  # each file downloaded by exactly one process
    assert {p: chaos.served[p] for p in downloaded} == {p: 1 for p in downloaded}  # and answered in full once
    assert sum(chaos.made.values()) >= 5


def test_a_failure_that_outlasts_the_retries_is_one_line(local_set, tmp_path):
    cfg = RemoteConfig(retries=2, backoff=0.01, timeout=0.5)
    for fault, kind in (("drop", "connection dropped mid-body"), ("503", "server error (503)"),
                        ("stall", "timed out")):
        with chaos_server(local_set.parent, rate=1.0, faults=(fault,), stall=1.0) as (base, chaos):
            with pytest.raises(RemoteError) as e:
                make_loader(f"{base}/shards", "val", cache_dir=tmp_path / "c", remote=cfg, workers=0)
        assert str(e.value) == f"{base}/shards/manifest.json: the shard set's manifest: {kind} after 3 tries"
        assert chaos.gets["/shards/manifest.json"] == 3


def test_truncated_bodies_are_retried_then_one_line(local_set, tmp_path):
    """A body cut short with a clean close and no Content-Length (nothing for the HTTP client to notice): the size
    check notices, and the download is retried."""
    calls = {"n": 0}

    class Short(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if not self.path.endswith("val-00001.tar"):
                return super().do_GET()
            calls["n"] += 1
            data = open(self.translate_path(self.path), "rb").read()
            self.send_response(200)
            self.end_headers()  # HTTP/1.0, no length: the body ends where the connection closes
            self.wfile.write(data[: len(data) // 3] if calls["n"] <= 2 else data)

    with http_server(local_set.parent, Short) as base:
        loader = make_loader(f"{base}/shards", "val", cache_dir=tmp_path / "c", remote=CHAOS, workers=0,
                             backend="torch", image_size=16, batch_size=4)
        assert sum(len(b.labels) for b in loader) == 12 and calls["n"] == 3
        calls["n"] = -100  # every answer short from now on
        with pytest.raises(RemoteError) as e:
            verify_remote(f"{base}/shards", RemoteConfig(retries=1, backoff=0.01))
    size = (local_set / "val-00001.tar").stat().st_size
    assert str(e.value) == (f"{base}/shards/val-00001.tar: shard file val-00001.tar: {size // 3} of {size} bytes "
                            "arrived after 2 tries")
    assert "\n" not in str(e.value)


def test_downloads_stop_at_the_manifest_size_plus_one_byte(local_set, tmp_path):
    """A server that sends an endless body for a tar: ``inspect --verify`` (verify_remote) and the cache read
    size + 1 bytes and refuse it, naming the URL (before this, inspect --verify read without a limit)."""
    sent = {}
    size = (local_set / "val-00000.tar").stat().st_size

    class Endless(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if not self.path.endswith("val-00000.tar"):
                return super().do_GET()
            self.send_response(200)
            self.end_headers()
            sent[self.path] = 0
            try:
                while sent[self.path] < 1 << 30:  # 1 GB at most, in case the client never stops
                    self.wfile.write(b"\0" * 65536)
                    sent[self.path] += 65536
            except OSError:
                pass

    with http_server(local_set.parent, Endless) as base:
        with pytest.raises(RemoteError) as e:
            verify_remote(f"{base}/shards", RemoteConfig(retries=0))
        assert str(e.value) == (f"{base}/shards/val-00000.tar: shard file val-00000.tar: more than the {size} bytes "
                                "the manifest records")
        with pytest.raises(RemoteError) as e:
            make_loader(f"{base}/shards", "val", cache_dir=tmp_path / "c", remote=RemoteConfig(retries=0),
                        workers=0, backend="torch")
        assert str(e.value).endswith(f"more than the {size} bytes the manifest records")
    assert max(sent.values()) < 64 << 20  # the server stopped soon after: the client hung up after size + 1

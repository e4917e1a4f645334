"""The opened shard set: one manifest read per set (one request for a URL), one sample table per split with labels
decoded once, shared by every loader and verb; loaders given a set leave it open, loaders that opened one close it."""
from __future__ import annotations

import collections
import functools
import http.server
import threading

import numpy as np
import pytest
from helpers import make_shard_set

from fastfashion import FastfashionError, ShardSet
from fastfashion.format.spec import UNLABELLED
from fastfashion.loading.loader import make_loader
from fastfashion.remote.store import RemoteConfig
from fastfashion.shardset import SplitError


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    return make_shard_set(tmp_path_factory.mktemp("shardset"), train=24, val=8, test=8, samples_per_shard=8)


class _Counting(http.server.SimpleHTTPRequestHandler):
    counts: collections.Counter  # set per server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.counts[("GET", self.path.lstrip("/"))] += 1
        super().do_GET()

    def do_HEAD(self):  # noqa: N802
        self.counts[("HEAD", self.path.lstrip("/"))] += 1
        super().do_HEAD()


@pytest.fixture()
def counting_server(shard_set):
    """The set served on 127.0.0.1 by a server that counts requests per object."""
    counts: collections.Counter = collections.Counter()
    handler = type("Handler", (_Counting,), {"counts": counts})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(shard_set)))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", counts
    finally:
        srv.shutdown()
        srv.server_close()


def _manifest_requests(counts) -> int:
    return sum(n for (_, path), n in counts.items() if path == "manifest.json")


def test_open_reads_once_and_shares_the_sample_table(shard_set):
    shards = ShardSet.open(shard_set)
    assert ShardSet.open(shards) is shards  # an opened set passes through
    assert shards.splits == ["train", "val", "test"] and shards.url is None
    a = shards.samples("val")
    assert shards.samples("val") is a  # read once per set object
    assert a.labels.dtype == np.int64 and a.labels.shape == (8, len(shards.schema))
    assert (a.labels >= 0).all() and a.checked.all()
    test = shards.samples("test")
    assert (test.labels == UNLABELLED).all()  # unlabelled: every value -1
    assert shards.keys("val") == [r.key for r in a.refs]
    with make_loader(shards, "val", batch_size=4, backend="torch", device="cpu", image_size=16, with_keys=True,
                     workers=0) as loader:
        assert loader.samples is a  # the loader reads the set's table, not its own copy
        got = {k: lab.tolist() for b in loader for k, lab in zip(b.keys, b.labels)}
    assert got == {r.key: a.labels[i].tolist() for i, r in enumerate(a.refs)}


def test_a_missing_split_is_one_library_error(shard_set):
    shards = ShardSet.open(shard_set)
    with pytest.raises(SplitError, match=r": no split 'nope' \(has \['test', 'train', 'val'\]\)$") as e:
        shards.entry("nope")
    assert isinstance(e.value, FastfashionError) and isinstance(e.value, ValueError)
    with pytest.raises(SplitError, match=r"split 'test' is unlabelled$"):
        shards.entry("test", labelled=True)


def test_train_from_a_url_reads_the_manifest_once(counting_server, tmp_path):
    """`fastfashion train --shards URL`: one request for manifest.json (a GET, no HEAD), for both loaders."""
    from fastfashion.cli import main
    url, counts = counting_server
    rc = main(["-q", "train", "--shards", url, "--out", str(tmp_path / "run"), "--epochs", "1", "--max-steps", "1",
               "--batch-size", "8", "--image-size", "16", "--backend", "torch", "--workers", "0", "--device", "cpu",
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    assert [(m, p) for (m, p) in counts if p == "manifest.json"] == [("GET", "manifest.json")]
    assert _manifest_requests(counts) == 1
    counts.clear()
    assert main(["-q", "evaluate", "--shards", url, "--checkpoint", str(tmp_path / "run" / "last.pt"), "--backend",
                 "torch", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert _manifest_requests(counts) == 1


def test_loaders_share_a_url_set_and_leave_it_open(counting_server, tmp_path):
    url, counts = counting_server
    remote = RemoteConfig(cache_dir=tmp_path / "cache")
    kw = dict(batch_size=4, backend="torch", device="cpu", image_size=16, workers=0)
    with ShardSet.open(url, remote=remote) as shards:
        assert shards.url == url and shards.dir.parent == tmp_path / "cache"
        train = make_loader(shards, "train", **kw)
        val = make_loader(shards, "val", **kw)
        assert sum(1 for _ in train) == len(train) and sum(1 for _ in val) == len(val)
        train.close()
        assert sum(1 for _ in val) == len(val)  # closing one loader leaves the shared set usable
        val.close()
    assert _manifest_requests(counts) == 1
    assert counts[("GET", "train-00000.tar")] == 1  # each object fetched once, into the set's cache


def test_a_loader_closes_the_set_it_opened(shard_set, monkeypatch):
    closed = []
    monkeypatch.setattr(ShardSet, "close", lambda self: closed.append(self))
    loader = make_loader(shard_set, "val", batch_size=4, backend="torch", device="cpu", image_size=16, workers=0)
    loader.close()
    assert closed == [loader.shards]
    shards = ShardSet.open(shard_set)
    make_loader(shards, "val", batch_size=4, backend="torch", device="cpu", image_size=16, workers=0).close()
    assert closed == [loader.shards]  # not the caller's


def test_readme_shardset_snippet_runs(counting_server, tmp_path, monkeypatch, capsys):
    """README's ShardSet snippet, against the test server instead of example.com."""
    import pathlib
    import re
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    [code] = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "ShardSet.open(" in b]
    url, counts = counting_server
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    exec(compile(code.replace("https://example.com/sets/fashion", url), "README.md", "exec"), {"__name__": "__main__"})
    assert "['train', 'val', 'test']" in capsys.readouterr().out
    assert _manifest_requests(counts) == 1


def test_a_manifest_is_read_in_one_bounded_request(counting_server, shard_set):
    """Store.read_bounded: the whole object in one GET, however the body is chunked; refused past the limit, having
    read at most limit + 1 bytes."""
    from fastfashion.remote.store import RemoteError, Store
    url, counts = counting_server
    size = (shard_set / "manifest.json").stat().st_size
    store = Store(url, RemoteConfig(retries=0))
    assert store.read_bounded("manifest.json", "the manifest", size) == (shard_set / "manifest.json").read_bytes()
    assert counts == {("GET", "manifest.json"): 1}
    with pytest.raises(RemoteError, match=r"/manifest\.json: the manifest: more than the 100 bytes it may have$"):
        store.read_bounded("manifest.json", "the manifest", 100)

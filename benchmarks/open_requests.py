"""Requests a verb makes to a remote shard set: `fastfashion train --shards URL` (and evaluate/inspect) against a
local HTTP server that counts requests per object.

    python benchmarks/open_requests.py [--verbs train,evaluate,inspect]

Builds a tiny synthetic set in a temporary folder, serves it on 127.0.0.1, runs each verb in this process through
``fastfashion.cli.main`` with a fresh cache, and prints the requests per object (GET and HEAD). No data is kept.
"""
from __future__ import annotations

import argparse
import collections
import functools
import http.server
import os
import tempfile
import threading
from pathlib import Path


def _counting_server(folder: Path, counts: collections.Counter):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _count(self) -> None:
            counts[(self.command, self.path.lstrip("/"))] += 1

        def do_GET(self):  # noqa: N802 - http.server's naming
            self._count()
            super().do_GET()

        def do_HEAD(self):  # noqa: N802
            self._count()
            super().do_HEAD()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verbs", default="train,evaluate,inspect")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ff-requests-") as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        from fastfashion.cli import main as cli
        from fastfashion.data.shard import ShardConfig, write_shards
        from fastfashion.data.synth import SynthConfig, synthesize
        src = synthesize(Path(tmp) / "src", SynthConfig(train=32, val=16, test=16, workers=1))
        shards = Path(tmp) / "shards"
        write_shards(src, shards, ShardConfig(samples_per_shard=16, workers=1))
        counts: collections.Counter = collections.Counter()
        srv = _counting_server(shards, counts)
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        run = Path(tmp) / "run"
        commands = {
            "train": ["train", "--shards", url, "--out", str(run), "--recipe", "demo", "--epochs", "1",
                      "--batch-size", "8", "--image-size", "32", "--backend", "torch", "--workers", "0",
                      "--device", "cpu", "-q"],
            "evaluate": ["evaluate", "--shards", url, "--checkpoint", str(run / "best.pt"), "--backend", "torch",
                         "--device", "cpu", "-q"],
            "inspect": ["inspect", url, "-q"],
        }
        try:
            for verb in args.verbs.split(","):
                counts.clear()
                rc = cli(commands[verb])
                manifest = sum(n for (m, p), n in counts.items() if p == "manifest.json")
                total = sum(counts.values())
                print(f"{verb}: exit {rc}, {total} requests, {manifest} for manifest.json: "
                      + ", ".join(f"{m} {p} x{n}" for (m, p), n in sorted(counts.items()) if p == "manifest.json"))
        finally:
            srv.shutdown()
            srv.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

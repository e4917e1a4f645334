"""Real servers for the remote-shard tests, on 127.0.0.1 with a free port, stopped after use: python's
``http.server`` in a thread serving a folder, the same with seeded faults (:func:`chaos_server`), and moto's
``ThreadedMotoServer`` reached through s3fs as a bucket."""
from __future__ import annotations

import collections
import contextlib
import functools
import http.server
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: D401 - no request lines in the test output
        pass


@contextlib.contextmanager
def http_server(folder: str | Path, handler=_QuietHandler) -> Iterator[str]:
    """Serve ``folder`` over HTTP; yields the base URL ``http://127.0.0.1:PORT``."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


FAULTS = ("drop", "truncate", "stall", "500", "503")


class Chaos:
    """What a :func:`chaos_server` did: ``gets``/``heads[path]`` requests (any outcome), ``served[path]`` GETs
    answered in full, ``made[kind]`` faults made.
    Decisions are drawn from one generator seeded with ``seed`` (under a lock), so a run with the same requests in
    the same order meets the same faults."""

    def __init__(self, rate: float, seed: int, stall: float, faults=FAULTS):
        self.rate, self.stall, self.faults = rate, stall, tuple(faults)
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.gets: collections.Counter[str] = collections.Counter()
        self.heads: collections.Counter[str] = collections.Counter()
        self.made: collections.Counter[str] = collections.Counter()
        self.served: collections.Counter[str] = collections.Counter()  # GETs answered in full, per path
        self.on = True  # False: serve faithfully (a test's reference run)

    def draw(self, method: str, path: str) -> str | None:
        with self.lock:
            (self.gets if method == "GET" else self.heads)[path] += 1
            if not self.on or self.rng.random() >= self.rate:
                return None
            kind = self.rng.choice(self.faults if method == "GET" else [f for f in self.faults
                                                                         if f in ("stall", "500", "503")])
            self.made[kind] += 1
            return kind


class _ChaosHandler(_QuietHandler):
    """Serves the folder, except that about ``chaos.rate`` of the requests (GET and HEAD) fail: ``drop`` resets the
    connection half-way through the body (RST), ``truncate`` closes it cleanly after half the body its
    Content-Length announced, ``stall`` answers nothing for ``chaos.stall`` seconds then closes, ``500``/``503``
    answer a server error."""

    chaos: Chaos
    protocol_version = "HTTP/1.1"  # keep-alive, as real object stores: a fault must not poison the next request

    def _fault(self, method: str) -> bool:
        kind = self.chaos.draw(method, self.path.split("?", 1)[0])
        if kind in ("500", "503"):
            self.send_response(int(kind))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        if kind == "stall":
            time.sleep(self.chaos.stall)
            self.close_connection = True
            return True
        if kind in ("drop", "truncate"):
            path = self.translate_path(self.path)
            if not os.path.isfile(path):
                return False
            data = open(path, "rb").read()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            if kind == "drop":  # SO_LINGER 0: close() sends RST, a connection reset mid-body
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return True
        return False

    def do_GET(self) -> None:
        try:
            if not self._fault("GET"):
                super().do_GET()
                with self.chaos.lock:
                    self.chaos.served[self.path.split("?", 1)[0]] += 1
        except OSError:  # the client gave up (a stall past its timeout)
            self.close_connection = True

    def do_HEAD(self) -> None:
        try:
            if not self._fault("HEAD"):
                super().do_HEAD()
        except OSError:
            self.close_connection = True


@contextlib.contextmanager
def chaos_server(folder: str | Path, *, rate: float = 0.2, seed: int = 0, stall: float = 1.5,
                 faults=FAULTS) -> Iterator[tuple[str, Chaos]]:
    """:func:`http_server` of ``folder`` whose requests fail at ``rate`` (seeded; see :class:`_ChaosHandler`);
    yields the base URL and the :class:`Chaos` record (GETs per path, faults made)."""
    chaos = Chaos(rate, seed, stall, faults)
    handler = type("Handler", (_ChaosHandler,), {"chaos": chaos})
    with http_server(folder, handler) as base:
        yield base, chaos


@contextlib.contextmanager
def s3_server() -> Iterator[tuple[dict, str]]:
    """A moto S3 server with one new bucket; yields the storage options that reach it through s3fs and the
    bucket's name (moto keeps its buckets per process, so each server gets a fresh name)."""
    import uuid

    import s3fs
    from moto.server import ThreadedMotoServer
    port = free_port()
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    opts = {"key": "testing", "secret": "testing",
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    try:
        fs = s3fs.S3FileSystem(**opts)
        fs.call_s3("create_bucket", Bucket=bucket)
        yield opts, bucket
    finally:
        srv.stop()

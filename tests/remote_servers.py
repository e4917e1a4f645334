"""Real servers for the remote-shard tests, on 127.0.0.1 with a free port, stopped after use: python's
``http.server`` in a thread serving a folder, and moto's ``ThreadedMotoServer`` reached through s3fs as a bucket."""
from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import threading
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

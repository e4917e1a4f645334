"""Object storage through fsspec: which shard folders are URLs, how to reach them, and one line per failure.

A shard folder is either a local path or a URL that fsspec understands (``s3://``, ``gs://``, ``https://``,
``http://``, ``file://``, ...). :class:`Store` turns a URL and the user's storage options into
the filesystem and the set's root, with retries, timeouts and error translation. Credentials come
only from each library's own chain (environment, profiles, metadata servers); nothing here logs them:
:func:`redact` strips a ``user:password@`` part from any URL before it reaches a message, and storage options are
never formatted into one.

Errors: every failure is a :class:`RemoteError` (an OSError, so the command line prints it as one line) naming the
redacted URL of the object and, where a shard is concerned, the shard: host unreachable, 403, 404, a timeout after
the configured retries (exponential backoff), a response of the wrong size.

Transient failures (a connection refused, reset or dropped mid-body, a body cut short, a stall past ``timeout``, 5xx)
are retried ``retries`` times with capped exponential backoff (:data:`MAX_BACKOFF`, jittered so that ranks that
failed together do not retry together); an answer (403, 404) or an object larger than it may be is not. Every read
of an object is bounded: :meth:`Store.read_bounded` and :meth:`Store.download` stop at the expected size + 1 byte.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..errors import ConfigError, FastfashionError, fixable
from ..options import option

log = logging.getLogger(__name__)

T = TypeVar("T")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # protocol -> the pip extra that brings its library
MAX_BACKOFF = 10.0  # seconds: the longest wait between two tries (backoff * 2**k grows to it)
MAX_PREFETCH = 32   # download threads: more only queue on one network link and one disk
CHUNK = 1 << 20     # bytes per read of a streamed download


class RemoteError(FastfashionError, OSError):
    """A remote shard set cannot be read or written; the message names the (redacted) URL and the shard.
    ``transient``: the store could not be reached (unreachable, timed out, a server error), as opposed to an answer
    (403, 404) or a bad object."""

    transient = False
    kind: str | None = None  # for a transient one raised inside a try: what went wrong in a few words


def _retryable(message: str, kind: str) -> RemoteError:
    """A failure inside one try that another try may cure (a body cut short): :meth:`Store.call` retries it."""
    err = RemoteError(message)
    err.transient, err.kind = True, kind
    return err


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and _SCHEME.match(path) is not None


def redact(url: str) -> str:
    """``url`` without a ``user:password@`` part and without a query string (signed URLs carry keys there)."""
    m = _SCHEME.match(url)
    if not m:
        return url
    rest = url[m.end():]
    host, sep, path = rest.partition("/")
    host = host.rsplit("@", 1)[-1]
    return f"{m.group(0)}{host}{sep}{path.split('?', 1)[0]}"


def join(url: str, name: str) -> str:
    """``url/name`` (one slash)."""
    return url.rstrip("/") + "/" + name


_SECRET = re.compile(r"key|secret|token|password|passwd|credential|session|auth|sas|signature", re.I)


class StorageOptions(dict):
    """Storage options that keep secrets out of every copy made for display: ``items()`` (what
    ``dataclasses.asdict``, ``json.dumps`` and so checkpoints, metrics and bench JSON read) and ``repr`` show
    ``<redacted>`` for a key that looks secret (``key``, ``secret``, ``token``, ``password`` ...), while ``dict()``
    and ``**`` (what the filesystem gets) see the real values."""

    def items(self):  # noqa: D401
        return [(k, "<redacted>" if isinstance(k, str) and _SECRET.search(k) and not isinstance(v, Mapping)
                 else StorageOptions(v) if isinstance(v, Mapping) else v) for k, v in super().items()]

    def __repr__(self) -> str:
        return repr(dict(self.items()))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RemoteConfig:
    """How a remote shard set is reached and cached (what ``make_loader``'s remote keywords fill in).

    ``storage_options``: passed to the fsspec filesystem (``endpoint_url``/``client_kwargs``, ``anon``, region
    ...; never logged). ``cache_dir``: the cache root (None: ``$XDG_CACHE_HOME/fastfashion/shards``); each set gets
    a folder named by its manifest's sha256 (16 hex digits). ``cache_limit``: bytes the set's cache folder may hold
    (None: no limit); refused at start when below the working set, naming the minimum. ``offline``: use the cache alone.
    ``retries``/``timeout``/``backoff``: per request, a failed transfer is tried ``retries`` more times after
    ``backoff * 2**k`` seconds; ``timeout`` seconds without progress fails a try. ``prefetch``: download threads.
    """

    storage_options: Mapping[str, Any] = option(
        default_factory=dict, flag="--storage-option", action="append", metavar="KEY=VALUE",
        parse=lambda pairs: parse_storage_options(pairs), help=(  # (defined below)
            "fsspec filesystem option, repeatable; a.b=V nests (e.g. client_kwargs.endpoint_url=http://minio:9000, "
            "anon=true). Credentials: the library's own chain (environment, profiles)"))
    cache_dir: str | os.PathLike | None = option(None, metavar="DIR", help=(
        "local cache root (default: $XDG_CACHE_HOME/fastfashion/shards)"))
    cache_limit: int | None = option(None, metavar="SIZE", parse=lambda text: parse_size(text), help=(
        "most bytes the set's cache may hold, e.g. 20G (default: no limit); a split larger than it is read in the "
        "windowed order"))
    offline: bool = option(False, help="read the cache only, no network")
    retries: int = option(3, help="retries per request (default: %(default)s)")
    timeout: float = option(60.0, metavar="S", help=(
        "seconds without progress before a request fails (default: %(default)s)"))
    backoff: float = 0.5
    prefetch: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.storage_options, Mapping):
            raise ConfigError("storage_options must be a mapping of keyword arguments for the fsspec filesystem")
        object.__setattr__(self, "storage_options", StorageOptions(dict.items(self.storage_options)
                                                                   if isinstance(self.storage_options, dict)
                                                                   else self.storage_options))
        if self.cache_limit is not None and (isinstance(self.cache_limit, bool) or int(self.cache_limit) < 1):
            raise ConfigError(f"cache_limit must be a positive number of bytes, got {self.cache_limit!r}")
        if self.retries < 0 or self.timeout <= 0 or self.backoff < 0 or self.prefetch < 1:
            raise ConfigError("retries >= 0, timeout > 0, backoff >= 0 and prefetch >= 1 are required")
        if self.prefetch > MAX_PREFETCH:
            log.warning("prefetch %d download threads is more than %d: using %d", self.prefetch, MAX_PREFETCH,
                        MAX_PREFETCH)
            object.__setattr__(self, "prefetch", MAX_PREFETCH)


def parse_size(text: str) -> int:
    """``"500M"``, ``"2G"``, ``"1.5GB"``, ``"1048576"`` -> bytes (decimal units: k/M/G/T = 1e3..1e12; ``KiB`` ...
    binary). Raises ValueError."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKMGT]?)(i?)[bB]?\s*", text)
    if not m:
        raise ConfigError(f"not a size: {text!r} (e.g. 500M, 20G, 1073741824)")
    base = 1024 if m.group(3) else 1000
    power = {"": 0, "k": 1, "K": 1, "M": 2, "G": 3, "T": 4}[m.group(2)]
    return int(float(m.group(1)) * base ** power)


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` (``--storage-option``) -> a dict; ``true``/``false``/numbers become JSON values and
    ``a.b=V`` nests (``client_kwargs.endpoint_url=http://...``). Raises ValueError naming the bad pair (not its
    value: it may be a secret)."""
    import json
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--storage-option needs KEY=VALUE, got one without '=' (key {key[:40]!r})")
        try:
            parsed = json.loads(value) if value in ("true", "false", "null") or re.fullmatch(
                r"-?[0-9]+(\.[0-9]+)?", value) else value
        except ValueError:
            parsed = value
        node = out
        *parents, last = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = parsed
    return out


def _with_timeouts(protocol: str, options: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """The user's options plus a per-request timeout for the libraries that take one (theirs win)."""
    opts = dict(options)
    if protocol in ("http", "https"):
        import aiohttp
        client = dict(opts.get("client_kwargs", {}))
        client.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout))
        opts["client_kwargs"] = client
    elif protocol in ("s3", "s3a"):
        config = dict(opts.get("config_kwargs", {}))
        config.setdefault("connect_timeout", timeout)
        config.setdefault("read_timeout", timeout)
        config.setdefault("retries", {"max_attempts": 1})  # our retries, with our messages
        opts["config_kwargs"] = config
    return opts


class Store:
    """One remote shard folder: the fsspec filesystem, the folder's path in it, and retried, translated calls."""

    def __init__(self, url: str, config: RemoteConfig):
        import fsspec
        m = _SCHEME.match(url)
        self.url, self.config = url.rstrip("/"), config
        self.protocol = m.group(1).lower() if m else "file"
        try:
            self.fs, self.root = fsspec.core.url_to_fs(
                self.url, **_with_timeouts(self.protocol, config.storage_options, config.timeout))
        except ImportError as e:
            extra = EXTRAS.get(self.protocol)
            hint = f"; install it with pip install 'fastfashion[{extra}]'" if extra else ""
            raise RemoteError(f"{redact(url)}: no fsspec filesystem for {self.protocol}:// ({e}){hint}") from None
        except ValueError as e:
            raise RemoteError(f"{redact(url)}: {e}") from None
        self.root = self.root.rstrip("/")

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root else name

    def where(self, name: str) -> str:
        """The redacted URL of object ``name`` (what messages show)."""
        return redact(join(self.url, name))

    def call(self, what: str, name: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried on transient failures with exponential backoff, failures translated into one-line
        :class:`RemoteError` naming ``what`` (e.g. ``shard train-00003.tar``) and the object's URL."""
        cfg, attempt = self.config, 0
        while True:
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - translated below; unknown ones re-raised
                kind, transient = classify(e)
                if kind is None:
                    raise
                if not transient or attempt >= cfg.retries:
                    tries = f" after {attempt + 1} tries" if transient else ""
                    err = fixable(RemoteError(f"{self.where(name)}: {what}: {kind}{tries}"), _FIX.get(kind, ""))
                    err.transient = transient
                    raise err from None
                delay = min(cfg.backoff * 2 ** attempt, MAX_BACKOFF) * random.uniform(0.5, 1.0)  # noqa: S311
                log.info("%s: %s: %s; retrying in %.1f s", self.where(name), what, kind, delay)
                time.sleep(delay)
                attempt += 1

    def size(self, name: str, what: str) -> int:
        info = self.call(what, name, lambda: self.fs.info(self.path(name)))
        return int(info.get("size") or 0)

    def _stream(self, name: str, cap: int, write: Callable[[bytes], object]) -> int:
        """One try: object ``name`` to ``write`` chunk by chunk, stopping after ``cap + 1`` bytes; returns the bytes
        read (``cap + 1``: the object is larger than ``cap``). Over http(s) one streamed GET (``size`` skips
        fsspec's HEAD, block size 0 streams the body: a lying server cannot make us buffer more)."""
        opts = {"block_size": 0, "size": cap + 1} if self.protocol in ("http", "https") else {}
        got = 0
        with self.fs.open(self.path(name), "rb", **opts) as f:
            while got <= cap and (chunk := f.read(min(CHUNK, cap + 1 - got))):  # a stream read returns what arrived
                write(chunk)
                got += len(chunk)
        return got

    def read_bounded(self, name: str, what: str, limit: int) -> bytes:
        """Object ``name``, refused when it holds more than ``limit`` bytes (at most ``limit + 1`` are read); retried
        like :meth:`call`. Over http(s) one streamed GET (no HEAD first); elsewhere the store's size, then the
        bytes."""
        if self.protocol not in ("http", "https"):
            size = self.size(name, what)
            if size > limit:
                raise RemoteError(f"{self.where(name)}: {what}: {size} bytes, more than the {limit} it may have")

        def go() -> bytearray:
            buf = bytearray()  # grows in place: a hostile object costs about limit bytes, not twice that
            self._stream(name, limit, buf.extend)
            return buf

        data = self.call(what, name, go)
        if len(data) > limit:
            raise RemoteError(f"{self.where(name)}: {what}: more than the {limit} bytes it may have")
        return bytes(data)

    def download(self, name: str, dst: str | os.PathLike, what: str, *, size: int | None = None,
                 limit: int | None = None) -> int:
        """Stream object ``name`` into the local file ``dst`` (created or truncated on every try), reading at most
        ``size + 1`` bytes (``size``: what the manifest records; the object must have exactly that many) or, with
        ``size`` None, ``limit + 1`` (an upper bound). Retried like :meth:`call`, a body cut short included. Returns
        the byte count; raises :class:`RemoteError` naming the URL for an object larger than it may be, or one
        still short after the retries; the caller removes ``dst`` on failure. An OSError of the local disk is
        raised as it is."""
        if (size is None) == (limit is None):
            raise ConfigError("Store.download needs exactly one of size and limit")
        cap = size if size is not None else limit

        def go() -> int:
            with open(dst, "wb") as out:
                got = self._stream(name, cap, out.write)
            if got > cap:
                records = "the manifest records" if size is not None else "it may have"
                raise RemoteError(f"{self.where(name)}: {what}: more than the {cap} bytes {records}")
            if size is not None and got != size:
                raise _retryable(f"{self.where(name)}: {what}: {got} of {size} bytes arrived",
                                 f"{got} of {size} bytes arrived")
            return got

        return self.call(what, name, go)

    def exists(self, name: str) -> bool:
        return self.call(f"object {name}", name, lambda: self.fs.exists(self.path(name)))


_FIX = {"host unreachable": "storage_options", "access denied (403)": "storage_options"}


def classify(e: BaseException) -> tuple[str | None, bool]:
    """``(what went wrong in a few words, whether another try may help)``; ``(None, False)`` for an exception
    that is not a transfer failure. fsspec's http filesystem reports any failure of a HEAD as FileNotFoundError:
    its cause decides."""
    cause = e.__cause__ or e.__context__
    if isinstance(e, FileNotFoundError) and cause is not None and cause is not e:
        kind = classify(cause)
        if kind[0] is not None:
            return kind
    return _classify_one(e)


_MID_BODY = ("ClientPayloadError", "IncompleteRead", "IncompleteReadError", "ResponseStreamingError",
             "ChunkedEncodingError", "ProtocolError", "ContentLengthError", "TransferEncodingError")
_LOST = ("ServerDisconnectedError", "ConnectionClosedError", "RemoteDisconnected")


def _names(e: BaseException) -> set[str]:
    return {c.__name__ for c in type(e).__mro__}


def _classify_one(e: BaseException) -> tuple[str | None, bool]:
    import asyncio
    if isinstance(e, RemoteError):  # raised inside a try: a body cut short is retried, a refusal is final
        return (e.kind or str(e), True) if e.transient else (None, False)
    names = _names(e)
    if names & set(_MID_BODY):
        return "connection dropped mid-body", True
    if "ClientConnectorError" in names or isinstance(e, ConnectionRefusedError):
        return "host unreachable", True
    if names & set(_LOST) or isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)) or (
            isinstance(e, OSError) and e.errno in (errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE)):
        return "connection lost", True
    status = getattr(e, "status", None)
    response = getattr(e, "response", None)
    if status is None and isinstance(response, dict):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    name = type(e).__name__
    if isinstance(e, FileNotFoundError) or status == 404:
        return "not found (404)", False
    if isinstance(e, PermissionError) or status in (401, 403):
        return "access denied (403)", False
    if isinstance(e, (TimeoutError, asyncio.TimeoutError)) or "Timeout" in name:
        return "timed out", True
    if "Connect" in name or isinstance(e, ConnectionError) or "Connection" in name:
        return "host unreachable", True
    if isinstance(status, int) and status >= 500:
        return f"server error ({status})", True
    if isinstance(status, int) and status >= 400:
        return f"refused ({status})", False
    if isinstance(e, OSError) and e.errno is None and name in ("OSError",):
        return f"failed: {str(e).splitlines()[0][:200] if str(e) else name}", True
    return None, False

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
"""
from __future__ import annotations

import dataclasses
import logging
import os
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


class RemoteError(FastfashionError, OSError):
    """A remote shard set cannot be read or written; the message names the (redacted) URL and the shard.
    ``transient``: the store could not be reached (unreachable, timed out, a server error), as opposed to an answer
    (403, 404) or a bad object."""

    transient = False


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
                delay = cfg.backoff * 2 ** attempt
                log.info("%s: %s: %s; retrying in %.1f s", self.where(name), what, kind, delay)
                time.sleep(delay)
                attempt += 1

    def size(self, name: str, what: str) -> int:
        info = self.call(what, name, lambda: self.fs.info(self.path(name)))
        return int(info.get("size") or 0)

    def cat(self, name: str, what: str) -> bytes:
        return self.call(what, name, lambda: self.fs.cat_file(self.path(name)))

    def read_bounded(self, name: str, what: str, limit: int) -> bytes:
        """Object ``name``, refused when it holds more than ``limit`` bytes (at most ``limit + 1`` are read). Over
        http(s) one streamed GET (no HEAD first); elsewhere the store's size, then the bytes."""
        def http() -> bytes:
            # size= skips fsspec's HEAD; block_size 0 streams the body, so a lying server cannot make us buffer more
            chunks, got = [], 0
            with self.fs.open(self.path(name), "rb", block_size=0, size=limit) as f:
                while got <= limit and (chunk := f.read(limit + 1 - got)):  # a stream read returns what arrived
                    chunks.append(chunk)
                    got += len(chunk)
            return b"".join(chunks)

        if self.protocol in ("http", "https"):
            data = self.call(what, name, http)
        else:
            size = self.size(name, what)
            if size > limit:
                raise RemoteError(f"{self.where(name)}: {what}: {size} bytes, more than the {limit} it may have")
            data = self.cat(name, what)
        if len(data) > limit:
            raise RemoteError(f"{self.where(name)}: {what}: more than the {limit} bytes it may have")
        return data

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


def _classify_one(e: BaseException) -> tuple[str | None, bool]:
    import asyncio
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

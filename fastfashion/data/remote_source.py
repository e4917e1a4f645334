"""A source at a URL (``s3://``, ``gs://``, ``http(s)://``, ``file://``): its listing files are copied into a local
temporary folder and read there by the same readers as a local source; its images stay where they are (the
workers read them). Messages and the manifest name the URL, never the temporary copy.

A folder URL in the FashionDataset layout needs its ``split/`` files: they are listed where the store can list
(object stores, ``file://``, an http server's index page), else the usual names are tried (``train.txt``,
``train_attr.txt`` ... ``schema.json``, ``list_attr_cloth.txt``). A CSV URL brings ``schema.json`` beside it when
there is one; its images are relative to the CSV's folder (or ``images``).
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

from ..format.spec import SPLITS
from ..remote.store import RemoteConfig, RemoteError, Store
from .source import SCHEMA_FILES, SourceError

log = logging.getLogger(__name__)

MAX_LISTING_BYTES = 8 << 30  # one listing file (a split file, a CSV): ~50 M lines fit well below this
_USUAL = tuple(f"{s}{suffix}.txt" for s in SPLITS for suffix in ("", "_attr")) + SCHEMA_FILES


def _fetch(store: Store, name: str, local: Path) -> None:
    size = store.size(name, "listing file")
    if size > MAX_LISTING_BYTES:
        raise RemoteError(f"{store.where(name)}: listing file of {size} bytes, more than {MAX_LISTING_BYTES}")
    local.parent.mkdir(parents=True, exist_ok=True)
    store.call("listing file", name, lambda: store.fs.get_file(store.path(name), str(local)))


def _split_names(store: Store) -> list[str]:
    """Names of the files in ``split/`` at the store."""
    try:
        found = store.call("split folder", "split", lambda: store.fs.ls(store.path("split"), detail=False))
        names = sorted({str(p).rstrip("/").rsplit("/", 1)[-1] for p in found})
        names = [n for n in names if n.endswith((".txt", ".json"))]
        if names:
            return names
    except (RemoteError, NotImplementedError, ValueError) as e:
        log.debug("cannot list %s: %s; trying the usual names", store.where("split/"), e)
    return [n for n in _USUAL if store.exists(f"split/{n}")]


@contextlib.contextmanager
def mirrored(url: str, config: RemoteConfig, *, csv: bool):
    """Yield ``(local copy, rename)``: a folder (or a CSV file) holding the source's listing files, and a function
    turning any text that names the copy into one that names the URL. The copy is removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="fastfashion-listing-"))
    try:
        if csv:
            base, name = url.rstrip("/").rsplit("/", 1)
            store = Store(base, config)
            _fetch(store, name, tmp / name)
            if store.exists("schema.json"):
                _fetch(store, "schema.json", tmp / "schema.json")
            local, remote_base = tmp / name, base
        else:
            store = Store(url, config)
            names = _split_names(store)
            if not names:
                raise SourceError(store.where("split/"), None, "no split files found (split/train.txt ...)")
            for n in names:
                _fetch(store, f"split/{n}", tmp / "split" / n)
            local, remote_base = tmp, url.rstrip("/")
        yield local, lambda text: str(text).replace(str(tmp), remote_base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""Uploading a local shard set to a URL (``fastfashion shard SRC URL`` writes there directly, through
:mod:`fastfashion.data.output`, with the same rules) and checking one there (``inspect --verify URL``).

The manifest is the commit point: :func:`upload_shard_set` uploads every tar,
``.idx`` and ``{split}.wids.json``, checks each object's size, and writes ``manifest.json`` last, so a reader sees
either no set or a complete one. Replacing an existing set (``overwrite``) first deletes its manifest (readers then
see no set rather than a mix), and after the new manifest deletes the old set's objects the new one does not list.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from ..errors import fixable
from ..format.dali_index import IndexFormatError, read_index
from ..format.manifest import MAX_MANIFEST_BYTES, parse_manifest, read_manifest
from ..format.spec import MANIFEST, wids_name
from ..format.verify import IntegrityError, verify_file
from ..progress import progress
from .cache import idx_limit
from .store import RemoteConfig, RemoteError, Store

log = logging.getLogger(__name__)


def set_files(manifest: dict) -> list[str]:
    """Every file of a set but its manifest: the tars and ``.idx`` files, and each split's ``{split}.wids.json``."""
    return [sh[k] for s in manifest["splits"].values() for sh in s["shards"] for k in ("tar", "idx")] + \
        [wids_name(split) for split, s in manifest["splits"].items() if s["shards"]]


def upload_shard_set(shard_dir: str | os.PathLike, url: str, *, overwrite: bool = False,
                     config: RemoteConfig = RemoteConfig()) -> dict:
    """Upload the local shard set ``shard_dir`` to ``url``: tars, ``.idx`` files and the wids indexes
    (``{split}.wids.json``, tar names relative to it: they work at the URL too), then ``manifest.json``.
    Returns the manifest. Raises :class:`RemoteError` for a URL that already holds a set (without ``overwrite``),
    and the store's one-line errors."""
    d = Path(shard_dir)
    manifest = read_manifest(d)
    store = Store(url, config)
    old = None
    if store.exists(MANIFEST):
        if not overwrite:
            raise fixable(RemoteError(f"{store.where(MANIFEST)}: a shard set already exists there"), "overwrite")
        old = parse_manifest(store.read_bounded(MANIFEST, "the old manifest", MAX_MANIFEST_BYTES),
                             store.where(MANIFEST))
        store.call("the old manifest", MANIFEST, lambda: store.fs.rm_file(store.path(MANIFEST)))
    names = [n for n in set_files(manifest) if (d / n).is_file()]  # a set written before wids indexes has none
    for name in progress(names, desc="upload", unit="file", off=len(names) < 8):
        put_file(store, d / name, name)
    put_file(store, d / MANIFEST, MANIFEST)
    for name in sorted(set(set_files(old)) - set(names)) if old else ():
        if name.endswith(".wids.json") and not store.exists(name):
            continue  # the old set was uploaded without its wids indexes
        store.call(f"old shard file {name}", name, lambda name=name: store.fs.rm_file(store.path(name)))
    log.info("uploaded %d files to %s", len(names) + 1, store.where(""))
    return manifest


def put_file(store: Store, local: Path, name: str) -> None:
    """Upload one file and check the stored size."""
    size = local.stat().st_size
    store.call(f"upload of {name}", name, lambda: store.fs.put_file(str(local), store.path(name)))
    got = store.size(name, f"uploaded {name}")
    if got != size:
        raise RemoteError(f"{store.where(name)}: stored {got} bytes of {size}")


def read_remote_manifest(url: str, config: RemoteConfig = RemoteConfig()) -> dict:
    """The checked manifest of the set at ``url`` (nothing cached, nothing else downloaded)."""
    store = Store(url, config)
    return parse_manifest(store.read_bounded(MANIFEST, "the shard set's manifest", MAX_MANIFEST_BYTES),
                          store.where(MANIFEST))


def verify_remote(url: str, config: RemoteConfig = RemoteConfig(), manifest: dict | None = None) -> int:
    """Download every tar and ``.idx`` of the set at ``url`` once (one at a time, into a temporary folder) and
    check it with :func:`~fastfashion.format.verify.verify_file` against the manifest's size and sha256, and each
    ``.idx``'s sample count (``manifest``: the set's, when already read). Returns the number of files checked; raises
    :class:`~fastfashion.format.verify.IntegrityError` naming the URL of the first bad object."""
    store = Store(url, config)
    manifest = read_remote_manifest(url, config) if manifest is None else manifest
    n = 0
    with tempfile.TemporaryDirectory(prefix="fastfashion-verify-") as d:
        shards = [sh for s in manifest["splits"].values() for sh in s["shards"]]
        for sh in progress(shards, desc="verify", unit="shard", off=len(shards) < 8):
            for name, size, sha in ((sh["tar"], sh["bytes"], sh["sha256"]), (sh["idx"], None, sh["idx_sha256"])):
                local = Path(d) / name  # at most the manifest's size + 1 byte (an .idx: its bound) is read
                store.download(name, local, f"shard file {name}", size=size,
                               limit=None if size is not None else idx_limit(sh["num_samples"]))
                try:
                    verify_file(local, local.stat().st_size if size is None else size, sha, force=True)
                    if size is None and len(read_index(local)) != sh["num_samples"]:
                        raise IntegrityError(f"{local}: not {sh['num_samples']} samples as the manifest records")
                except (IntegrityError, IndexFormatError) as e:
                    raise IntegrityError(str(e).replace(str(local), store.where(name))) from None
                local.unlink()
                n += 1
    return n

"""The opened shard set: one object every stage shares, instead of a path string each stage opens again.

:meth:`ShardSet.open` resolves where a set is (a local folder, or a URL read through its verified local cache,
:class:`~fastfashion.remote.cache.ShardCache`), reads and checks its ``manifest.json`` once (one request for a
URL), and gives its schema; per split it reads the sample table once (:meth:`ShardSet.samples`: key, shard,
offsets, sizes, and the labels decoded into one int64 array and range-checked once,
:class:`~fastfashion.format.reader.SplitSamples`). The loader (:func:`~fastfashion.loading.loader.make_loader`),
the trainer, evaluate/predict, bench and inspect take a ``ShardSet``; given a path or URL they open one at the edge.

A ``ShardSet`` holds the cache's download threads of a URL: :meth:`ShardSet.close` (or ``with``) releases them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import fixable
from .format.jpeg import MAX_IMAGE_PIXELS
from .format.manifest import ManifestError, manifest_schema, ordered_splits, read_manifest, summarize_manifest
from .format.reader import SplitSamples, read_split_samples
from .format.verify import verify_shard_set, verify_split
from .remote.store import RemoteConfig, is_url, redact

log = logging.getLogger(__name__)

__all__ = ["ShardSet", "SplitError"]


class SplitError(ManifestError):
    """The shard set has no split of that name, or the split cannot serve the purpose (unlabelled)."""


class ShardSet:
    """A shard set opened once (see the module docstring). Make one with :meth:`open`.

    ``location``: the folder or URL as given (what messages name); ``dir``: the local folder read (the set's own,
    or its cache folder for a URL); ``url``: the URL, or None for a local set; ``manifest``, ``schema``;
    ``remote``: how a URL is reached and cached; ``verify``: whether each split's tars and ``.idx`` files are
    checked against the manifest's sha256 before their first read (:mod:`fastfashion.format.verify`)."""

    def __init__(self, folder: Path, manifest: dict, *, location: str, remote: RemoteConfig = RemoteConfig(),
                 verify: bool = True, cache=None):
        self.dir, self.manifest, self.location = Path(folder), manifest, location
        self.remote, self.verify, self.cache = remote, bool(verify), cache
        self.url = location if cache is not None else None
        self.schema = manifest_schema(manifest)
        self._samples: dict[tuple[str, bool, int], SplitSamples] = {}  # (split, tars, max_pixels)
        self._verified: set[str] = set()

    @classmethod
    def open(cls, location: str | os.PathLike | ShardSet, *, remote: RemoteConfig | None = None,
             verify: bool = True) -> ShardSet:
        """The shard set at ``location``: a folder written by ``fastfashion shard``/``index``, or an fsspec URL
        (``s3://``, ``gs://``, ``https://``, ``file://``) read through its cache (``remote``: storage options,
        cache folder and limit, offline, retries). A ``ShardSet`` is returned as it is. Raises
        :class:`~fastfashion.format.manifest.ManifestError` for a folder that is not a shard set, a bad manifest or
        a listed file missing; :class:`~fastfashion.remote.store.RemoteError` for a store that cannot be reached or
        a set that is not there."""
        if isinstance(location, ShardSet):
            return location
        remote = RemoteConfig() if remote is None else remote
        if is_url(location):
            from .remote.cache import ShardCache
            cache = ShardCache(str(location), remote)  # the manifest: fetched once, checked, kept in the cache
            return cls(cache.dir, cache.manifest, location=str(location).rstrip("/"), remote=remote, verify=verify,
                       cache=cache)
        return cls(Path(location), read_manifest(location), location=str(location), remote=remote, verify=verify)

    # --- what the manifest says ------------------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        """Split names in the usual order (train, val, test, then any other by name)."""
        return [name for name, _ in ordered_splits(self.manifest)]

    def entry(self, split: str, *, labelled: bool = False) -> dict:
        """The manifest's entry of ``split``. Raises :class:`SplitError` for a split the set lacks, or (with
        ``labelled``) one without labels."""
        s = self.manifest["splits"].get(split)
        if s is None:
            raise fixable(SplitError(f"{self}: no split {split!r} (has {sorted(self.manifest['splits'])})"), "split")
        if labelled and not s["labelled"]:
            raise fixable(SplitError(f"{self}: split {split!r} is unlabelled"), "split")
        return s

    def shards(self, split: str) -> list[dict]:
        """The manifest's shard entries of ``split``."""
        return self.entry(split)["shards"]

    def num_samples(self, split: str) -> int:
        return self.entry(split)["num_samples"]

    def summary(self, weights=None) -> str:
        """Human-readable lines (:func:`~fastfashion.format.manifest.summarize_manifest`)."""
        return summarize_manifest(self.manifest, weights)

    # --- the files ---------------------------------------------------------------------------------------
    def fetch(self, split: str) -> None:
        """A URL's split: every ``.idx`` and tar in the cache, verified on arrival (no-op for a local set)."""
        if self.cache is not None:
            self.cache.fetch_split(split)

    def verify_split(self, split: str) -> None:
        """Check the split's tars and ``.idx`` files against the manifest once per set object (with ``verify``;
        a URL's files are verified as they arrive in the cache). Raises
        :class:`~fastfashion.format.verify.IntegrityError` naming the first bad file."""
        if self.verify and self.cache is None and split not in self._verified:
            verify_split(self.dir, self.manifest, split)
            self._verified.add(split)

    def verify_all(self) -> int:
        """Hash every file of every split again (``inspect --verify``); a URL's objects are downloaded once each
        into a temporary folder. Returns the number of files checked."""
        if self.cache is None:
            return verify_shard_set(self.dir, self.manifest)
        from .remote.upload import verify_remote
        return verify_remote(self.url, self.remote, self.manifest)

    def samples(self, split: str, *, tars: bool = True, verify: bool = True,
                max_pixels: int = MAX_IMAGE_PIXELS) -> SplitSamples:
        """The sample table of ``split``, read once per set object (see
        :func:`~fastfashion.format.reader.read_split_samples`): the local files must be there (a URL's:
        :meth:`fetch` first, or ``tars=False`` for a split streamed through a bounded cache, whose samples are
        checked as their tars arrive). Verifies the split first (:meth:`verify_split`) when ``tars`` and
        ``verify`` (False: this reader opts out even if the set verifies). ``max_pixels``: the pixel limit of every
        JPEG header (:mod:`fastfashion.format.jpeg`)."""
        key = (split, tars, max_pixels)
        self.entry(split)
        if tars and verify:
            self.verify_split(split)
        if key not in self._samples:
            self._samples[key] = read_split_samples(self.dir, self.manifest, split, self.schema, tars=tars,
                                                       max_pixels=max_pixels)
        return self._samples[key]

    def keys(self, split: str) -> list[str]:
        """Sample keys of ``split`` in shard order (= split-file order for val and test)."""
        loaded = next((v for (s, _, _), v in self._samples.items() if s == split), None)
        if loaded is None:
            from .format.reader import split_keys
            return split_keys(self.dir, self.manifest, split)
        return [r.key for r in loaded.refs]

    # --- lifetime ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop a URL's download threads and save what was verified (the set stays usable: they restart)."""
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> ShardSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __str__(self) -> str:
        return redact(self.location) if self.url else self.location

    def __repr__(self) -> str:
        return f"ShardSet({str(self)!r}, splits={self.splits})"

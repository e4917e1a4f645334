"""Remote shard sets: any fsspec URL where a shard folder is accepted.

* :mod:`.store` -- URLs, storage options, retries and one-line errors (:class:`~.store.RemoteError`);
* :mod:`.cache` -- :class:`~.cache.ShardCache`, the verified, shared, bounded local copy the loaders read;
* :mod:`.upload` -- :func:`~.upload.upload_shard_set` (a local set to a URL) and
  :func:`~.upload.verify_remote` (``fastfashion inspect --verify URL``).

This layer imports the leaves and :mod:`fastfashion.format`; :mod:`fastfashion.data`, :mod:`fastfashion.loading`
and everything above import it. fsspec is imported only when a URL is used.
"""

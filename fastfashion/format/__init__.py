"""The shard set format, both halves side by side (specification: ``docs/format.md``).

* :mod:`.spec` -- names and encodings: file names, split names, the ``.lbl`` and ``.json`` members;
* :mod:`.manifest` -- ``manifest.json``: read, check, verify, summarise (the writer builds it);
* :mod:`.dali_index` -- DALI ``.idx`` files: build from a tar, write, read;
* :mod:`.writer` -- :func:`~.writer.write_shard` (one tar and its index), the manifest, :func:`~.writer.commit_set`;
* :mod:`.reader` -- the sample reader: a split's samples by byte offset (what every backend reads);
* :mod:`.atomic` -- crash-safe files and folders, used by every writer in the library.

This layer imports only the leaves :mod:`fastfashion.schema`, :mod:`fastfashion.errors`, :mod:`fastfashion.fsutil`
and :mod:`fastfashion._version` (and the standard library; webdataset inside the writer).
"""

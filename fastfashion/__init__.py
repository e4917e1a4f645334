"""fastfashion: validated WebDataset shards and an NVIDIA DALI pipeline feeding a ResNet-18 multi-head trainer.

Subpackages by stage (each imports only the ones before it): :mod:`.format` (the shard set format), :mod:`.data`
(sources, validation, synthetic data), :mod:`.loading` (``make_loader`` and its backends), :mod:`.train` (model,
trainer, inference), :mod:`.bench` (benchmarks, baseline, plots, demo); :mod:`.cli` on top. ``docs/modules.md`` has
the map.
"""
from __future__ import annotations

from ._version import __version__  # noqa: F401
from .errors import FastfashionError  # noqa: F401  (light: the base of every error the library raises)
from .schema import FASHION_SCHEMA, Attribute, Schema  # noqa: F401  (light: no torch import)

_LAZY = {  # public name -> module; imported on first use: `import fastfashion` must not import torch or DALI
    "make_loader": ".loading.loader", "FashionLoader": ".loading.loader", "LoaderConfig": ".loading.base",
    "Batch": ".loading.base", "LoaderError": ".loading.base", "AugmentConfig": ".loading.augment",
    "ShardWriter": ".data.pack", "write_shards": ".data.shard", "ShardConfig": ".data.shard",
    "index_shards": ".data.adopt", "IndexConfig": ".data.adopt", "ShardSet": ".shardset",
}


__all__ = ["__version__", "Attribute", "Schema", "FASHION_SCHEMA", "FastfashionError", *_LAZY]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'fastfashion' has no attribute {name!r}")

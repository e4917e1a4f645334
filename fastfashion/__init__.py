"""fastfashion: validated WebDataset shards and an NVIDIA DALI pipeline feeding a ResNet-18 multi-head trainer."""
from __future__ import annotations

__version__ = "0.1.0"

from .schema import FASHION_SCHEMA, Attribute, Schema  # noqa: F401  (light: no torch import)


def __getattr__(name: str):
    # Lazy: `import fastfashion` must not import torch or DALI.
    if name in ("make_loader", "Batch"):
        from . import loader
        return getattr(loader, name)
    raise AttributeError(f"module 'fastfashion' has no attribute {name!r}")

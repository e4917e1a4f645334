"""Helpers shared by tests (importable as ``helpers`` because pytest puts tests/ on sys.path)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastfashion.data.synth import SynthConfig, synthesize

try:
    import nvidia.dali  # noqa: F401
    HAVE_DALI = True
except ImportError:  # the torch backend's tests run without it
    HAVE_DALI = False
needs_dali = pytest.mark.skipif(not HAVE_DALI, reason="NVIDIA DALI is not installed")

# The real data set, when present (tests that use it skip otherwise).
REAL_DATA = Path(os.environ.get("FASTFASHION_REAL_DATA",
                                Path(__file__).resolve().parents[2] / "shared" / "FashionDataset"))


def make_dataset(path: str | os.PathLike, *, train: int, val: int, test: int, seed: int = 0) -> Path:
    """Write a synthetic FashionDataset (real layout) to ``path`` in-process and return its path.

    For tests that need a private copy to corrupt; prefer the session-scoped ``tiny_dataset`` fixture otherwise.
    """
    return synthesize(path, SynthConfig(train=train, val=val, test=test, seed=seed, workers=1))

"""Shared fixtures: a tiny synthetic FashionDataset built once per test session."""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TQDM_DISABLE", "1")  # quiet tests
# the library's caches (verified shards, owners of temporary files) in a folder of this test session, not the user's
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="fastfashion-test-cache-")

import pytest  # noqa: E402
from helpers import make_dataset  # noqa: E402,F401  (re-exported for tests that import it from conftest)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Path to a synthetic set of 40 train / 16 val / 16 test images (seed 0). Read-only: do not modify it."""
    return make_dataset(tmp_path_factory.mktemp("synth") / "tiny", train=40, val=16, test=16, seed=0)

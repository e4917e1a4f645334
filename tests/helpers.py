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


README = Path(__file__).resolve().parents[1] / "README.md"


def make_shard_set(root: str | os.PathLike, *, train: int, val: int, test: int, samples_per_shard: int) -> Path:
    """A synthetic set under ``root/data`` sharded to ``root/shards`` (returned)."""
    from fastfashion.data.shard import ShardConfig, write_shards
    root = Path(root)
    write_shards(make_dataset(root / "data", train=train, val=val, test=test), root / "shards",
                 ShardConfig(samples_per_shard=samples_per_shard, workers=1))
    return root / "shards"


def readme_script(heading: str, shards: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """The one ```python block of README.md's section ``### {heading}``, exactly as written but for its
    ``SHARDS = "shards/FashionDataset"`` line (set to ``shards``), saved as a script in ``folder``."""
    import re
    text = README.read_text(encoding="utf-8")
    assert f"\n### {heading}\n" in text, f"README.md has no section {heading!r}"
    section = re.split(r"\n#{2,3} ", text.split(f"\n### {heading}\n", 1)[1], maxsplit=1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"README.md section {heading!r}: {len(blocks)} python blocks"
    line = 'SHARDS = "shards/FashionDataset"\n'
    assert blocks[0].count(line) == 1, f"README.md section {heading!r} sets no SHARDS"
    name = re.match(r'"""(\w+\.py)', blocks[0])
    assert name, f"README.md section {heading!r}: the script's docstring does not start with its file name"
    path = Path(folder) / name.group(1)
    path.write_text(blocks[0].replace(line, f"SHARDS = {str(shards)!r}\n"), encoding="utf-8")
    return path


def slow_tasks_env(flag: str | os.PathLike, seconds: float = 0.1) -> dict[str, str]:
    """The environment for a subprocess whose shard writing (its own and its workers') is slowed down while the
    file ``flag`` exists: ``seconds`` per image (tests/slow_tasks/sitecustomize.py)."""
    here = Path(__file__).resolve().parent / "slow_tasks"
    path = os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "FASTFASHION_TEST_SLOW": str(flag),
            "FASTFASHION_TEST_SLOW_S": str(seconds), "TQDM_DISABLE": "1"}

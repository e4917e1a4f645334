"""The plan of a conversion: which validated sample goes into which shard, decided on the driver before any shard
is written.

The plan is a pure function of the good records per split (train already shuffled by the seed), their image
digests and ``samples_per_shard``: never of the engine, the number of workers or timing. Each :class:`ShardTask`
carries a :func:`plan digest <ShardTask.digest>` over everything that decides its bytes (format version, writer
version, schema, split, index, every sample's key, path, labels and image sha256); a re-run reuses a committed shard
only when its fragment record holds the same digest.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from .._version import __version__
from ..format.spec import VERSION, shard_names, split_order
from ..schema import Schema


@dataclasses.dataclass(frozen=True)
class PlannedSample:
    """One sample of a shard task: its key, path relative to the image root, labels (None: unlabelled), the sha256
    of its image bytes taken at validation, and where it is listed (file, line) for messages."""

    key: str
    path: str
    labels: tuple[int, ...] | None
    sha256: str
    file: str
    line: int


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """Shard ``index`` of ``split``: its samples in order."""

    split: str
    index: int
    samples: tuple[PlannedSample, ...]

    @property
    def name(self) -> str:
        """``train-00003``: the stem of the shard's files and of its fragment record."""
        return shard_names(self.split, self.index)[0].removesuffix(".tar")

    def digest(self, schema: Schema) -> str:
        """sha256 over everything that decides the shard's bytes."""
        doc = {"format": VERSION, "writer": __version__, "schema": schema.to_dict(), "split": self.split,
               "index": self.index, "samples": [[s.key, s.path, s.labels, s.sha256] for s in self.samples]}
        return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def plan_shards(good: dict[str, list], digests: dict[str, str], samples_per_shard: int) -> list[ShardTask]:
    """Cut each split's records (in the order given) into shards of ``samples_per_shard``; splits in format order.
    ``good``: split -> :class:`~fastfashion.data.source.Record` list; ``digests``: image path -> sha256."""
    tasks = []
    for split in sorted(good, key=split_order):
        recs = good[split]
        for index, start in enumerate(range(0, len(recs), samples_per_shard)):
            tasks.append(ShardTask(split, index, tuple(
                PlannedSample(r.key, r.path, r.labels, digests[r.path], r.file, r.line)
                for r in recs[start:start + samples_per_shard])))
    return tasks

"""Class balance from a shard set's train class counts: the loss weights of the seed recipe, which ``inspect``
also prints beside the counts. Pure Python (no torch), so that ``inspect`` needs no model code."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..format.manifest import ManifestError, manifest_schema
from ..format.spec import TRAIN
from ..schema import Schema


def class_weights(class_counts: Mapping[str, Sequence[int]], schema: Schema) -> dict[str, list[float]]:
    """Per-class loss weights from train class counts: ``w_c = N / (K * n_c)`` per attribute.

    ``N`` is the number of labelled samples of the attribute (the sum of its counts), ``K`` its number of classes and
    ``n_c`` the count of class ``c``; a class with ``n_c == 0`` gets weight 0. A balanced attribute gets all ones.
    Returns ``{attribute: [w_0, ..., w_{K-1}]}`` in schema order. Raises
    :class:`~fastfashion.format.manifest.ManifestError` (a ValueError) on a count/schema mismatch.
    """
    out = {}
    for a in schema:
        if a.name not in class_counts:
            raise ManifestError(f"class counts have no entry for attribute {a.name!r}")
        counts = [int(c) for c in class_counts[a.name]]
        if len(counts) != a.num_classes:
            raise ManifestError(f"class counts for {a.name!r} have {len(counts)} entries, schema has {a.num_classes}")
        n = sum(counts)
        out[a.name] = [n / (a.num_classes * c) if c > 0 else 0.0 for c in counts]
    return out


def train_class_weights(manifest: dict) -> dict[str, list[float]] | None:
    """:func:`class_weights` of the manifest's train class counts (the trainer's loss weights); None without a
    labelled train split."""
    counts = manifest["splits"].get(TRAIN, {}).get("class_counts")
    return class_weights(counts, manifest_schema(manifest)) if counts else None

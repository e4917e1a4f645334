"""Data sources: the FashionDataset folder layout read and validated (:mod:`.source`), image validation
(:mod:`.validate`), packing a source into a shard set (:mod:`.shard`) and the synthetic generator (:mod:`.synth`,
:mod:`.synth_render`). This layer imports :mod:`fastfashion.schema`, :mod:`fastfashion.hardware` and
:mod:`fastfashion.format`.
"""

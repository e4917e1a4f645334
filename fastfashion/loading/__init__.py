"""Loading: :func:`~.loader.make_loader` and its :class:`~.base.LoaderConfig`, the sample order (pure functions),
augmentation parameters, and the backends behind one protocol (:mod:`.backends`).

This layer imports :mod:`fastfashion.schema`, :mod:`fastfashion.hardware` and :mod:`fastfashion.format`, never the
trainer or the benchmarks.
"""

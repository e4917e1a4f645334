"""Training and inference: the model, the trainer (:func:`~.trainer.train_one_epoch`, :func:`~.trainer.evaluate`,
:func:`~.trainer.train`), metrics, checkpoints, distributed setup, device helpers, evaluate/predict.

This layer imports :mod:`fastfashion.schema`, :mod:`fastfashion.hardware`, :mod:`fastfashion.format` and
:mod:`fastfashion.loading`.
"""

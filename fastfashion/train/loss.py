"""The training loss: the class-weighted (or logit-adjusted) multi-head cross-entropy, and its weights or log
priors from the manifest's train class counts (``TrainConfig.class_balance``)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..format.spec import TRAIN
from .balance import train_class_weights
from .config import TrainError


def multi_head_loss(logits: Sequence[torch.Tensor], labels: torch.Tensor, weights: Sequence[torch.Tensor | None],
                    label_smoothing: float = 0.0, log_priors: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Sum over attributes ``i`` of the class-weighted cross-entropy ``CE(logits_i + log_priors_i, labels[:, i]; w_i)``.

    ``w_i`` as :func:`loss_weights` makes them (None: unweighted). Each term is PyTorch's weighted mean:
    ``sum_b w[y_b] * ce_b / sum_b w[y_b]``. ``log_priors`` (the logit-adjusted loss, :func:`loss_weights`): added to
    the logits in the loss only, so the model's own logits are what predicts.
    """
    if log_priors is not None:
        logits = [lg.float() + lp for lg, lp in zip(logits, log_priors)]
    return sum(F.cross_entropy(lg.float(), labels[:, i], weight=w, label_smoothing=label_smoothing)
               for i, (lg, w) in enumerate(zip(logits, weights)))


def loss_weights(manifest: dict, device: torch.device, balance: str = "weights"
                 ) -> tuple[list[torch.Tensor | None], list[torch.Tensor] | None]:
    """``(class weights, log priors)`` of the loss, one tensor per attribute in schema order, from the manifest's
    train class counts; ``balance`` (:data:`~fastfashion.train.config.CLASS_BALANCES`) says how the loss makes up for
    rare classes:

    - ``weights`` (the seed's): ``w_c = N / (K * n_c)`` (0 for a class absent from train), no log priors;
    - ``sqrt``: the square roots of those weights (tempered: a class 100x rarer weighs 10x more, not 100x);
    - ``logit-adjust``: no weights; log priors ``log(max(n_c, 1) / N)`` added to the logits in the loss (Menon et
      al. 2021, "Long-tail learning via logit adjustment"), so that the model's own logits rank classes by
      ``p(x | class)``, which is what the average class accuracy rewards.
    """
    weights = train_class_weights(manifest)
    if weights is None:
        raise TrainError("the shard set has no labelled train split: no class weights")
    if balance == "logit-adjust":
        counts = manifest["splits"][TRAIN]["class_counts"]
        priors = [torch.tensor(counts[name], dtype=torch.float32, device=device).clamp(min=1) for name in weights]
        return [None] * len(weights), [torch.log(c / c.sum()) for c in priors]
    power = 0.5 if balance == "sqrt" else 1.0
    return [torch.tensor(w, dtype=torch.float32, device=device) ** power for w in weights.values()], None

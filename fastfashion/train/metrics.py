"""The official metric (average class accuracy), per-attribute accuracy, confusion matrices.

Everything is computed from one confusion matrix per attribute (rows = true class, columns = predicted class):
confusion matrices sum exactly across batches and across distributed ranks, so a metric of a whole split is the
same however it was split up.

Average class accuracy (the challenge's score): for each of the schema's (attribute, class) pairs (26 for the
fashion schema) the recall ``correct_c / total_c`` over the images whose true label is that class, then the flat
mean of those recalls. **A class absent from the ground truth** has no defined recall: it is *excluded* from the
mean (the mean is over the present classes only) and listed under ``"absent_classes"`` in :func:`summarize`'s
result, so a reader sees that the score covers fewer than 26 classes. Predictions of an absent class still count
against the recall of the true class. Samples whose label is negative (unlabelled) are ignored.

An undefined metric is NaN in Python (e.g. the average when every class is absent); JSON has no NaN, so whatever is
written as JSON (``metrics.json``, ``evaluate --json``) goes through :func:`json_safe`, which makes it ``null``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..format.spec import LabelError
from ..schema import Schema


def confusion_matrices(preds: torch.Tensor, targets: torch.Tensor, schema: Schema) -> list[torch.Tensor]:
    """One int64 ``[K, K]`` confusion matrix per attribute (row = true, column = predicted) on the CPU.

    ``preds`` and ``targets`` are integer ``[N, len(schema)]``; rows with a negative target are ignored per attribute.
    """
    preds = torch.as_tensor(preds).long().cpu()
    targets = torch.as_tensor(targets).long().cpu()
    if preds.shape != targets.shape or preds.dim() != 2 or preds.shape[1] != len(schema):
        raise ValueError(f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)} must both be "
                         f"[N, {len(schema)}]")
    cms = []
    for i, k in enumerate(schema.num_classes):
        t, p = targets[:, i], preds[:, i]
        keep = t >= 0
        t, p = t[keep], p[keep]
        if (t >= k).any() or (p < 0).any() or (p >= k).any():
            raise LabelError(f"attribute {schema[i].name!r}: class ids must be in 0..{k - 1}")
        cms.append(torch.bincount(t * k + p, minlength=k * k).reshape(k, k))
    return cms


def class_recalls(cms: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per attribute, float64 recall per class; NaN for a class absent from the ground truth."""
    out = []
    for cm in cms:
        cm = cm.double()
        totals = cm.sum(dim=1)
        out.append(torch.where(totals > 0, cm.diagonal() / totals.clamp(min=1), torch.full_like(totals, math.nan)))
    return out


def avg_class_accuracy_from_cms(cms: Sequence[torch.Tensor]) -> float:
    """Flat mean of the per-class recalls over all attributes, absent classes excluded (NaN if all are absent)."""
    r = torch.cat(class_recalls(cms))
    present = ~torch.isnan(r)
    return float(r[present].mean()) if present.any() else math.nan


def avg_class_accuracy(preds: torch.Tensor, targets: torch.Tensor, schema: Schema) -> float:
    """The official score for integer ``[N, len(schema)]`` predictions and targets (see the module docstring)."""
    return avg_class_accuracy_from_cms(confusion_matrices(preds, targets, schema))


def per_attribute_accuracy(cms: Sequence[torch.Tensor], schema: Schema) -> dict[str, float]:
    """``{attribute: exact-match accuracy}`` (NaN for an attribute with no labelled samples)."""
    out = {}
    for a, cm in zip(schema, cms):
        total = int(cm.sum())
        out[a.name] = float(cm.diagonal().sum()) / total if total else math.nan
    return out


def summarize(cms: Sequence[torch.Tensor], schema: Schema, loss: float | None = None) -> dict:
    """The metrics dict of ``metrics.json`` and ``evaluate --json``.

    Keys: ``avg_class_accuracy`` (official), ``accuracy`` (mean over attributes of exact-match accuracy),
    ``per_attribute`` {name: accuracy}, ``loss`` (when given), ``class_recall`` {attribute: {class: recall or
    None if absent}}, ``absent_classes`` ["attribute/class", ...] and ``num_samples``. ``avg_class_accuracy``,
    ``accuracy`` and ``per_attribute`` values are NaN when undefined (no labelled sample); :func:`json_safe` maps
    them to None for JSON.
    """
    per_attr = per_attribute_accuracy(cms, schema)
    accs = [v for v in per_attr.values() if not math.isnan(v)]
    recalls = class_recalls(cms)
    class_recall, absent = {}, []
    for a, r in zip(schema, recalls):
        class_recall[a.name] = {}
        for c, v in zip(a.classes, r.tolist()):
            if math.isnan(v):
                absent.append(f"{a.name}/{c}")
                class_recall[a.name][c] = None
            else:
                class_recall[a.name][c] = v
    out = {
        "avg_class_accuracy": avg_class_accuracy_from_cms(cms),
        "accuracy": sum(accs) / len(accs) if accs else math.nan,
        "per_attribute": per_attr,
        "class_recall": class_recall,
        "absent_classes": absent,
        "num_samples": int(cms[0].sum()) if cms else 0,
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) replaced by None, through nested dicts, lists and tuples
    (tuples become lists): ``json.dumps`` would write the non-standard token ``NaN``, which strict parsers reject.
    Other values are returned as they are."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


class MetricAccumulator:
    """Accumulates confusion matrices and a sample-weighted loss over batches; :meth:`all_reduce` sums over ranks.

    State stays on the device of the logits (no host sync per batch on a GPU); :attr:`cms` and :meth:`compute`
    copy it to the CPU.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._flat: list[torch.Tensor] | None = None  # per attribute: K*K counts + 1 bin for ignored (negative) labels
        self._scalars: torch.Tensor | None = None     # [loss sum, samples with a loss, samples]

    def _init(self, device: torch.device) -> None:
        self._flat = [torch.zeros(k * k + 1, dtype=torch.int64, device=device) for k in self.schema.num_classes]
        self._scalars = torch.zeros(3, dtype=torch.float64, device=device)

    def state_dict(self) -> dict | None:
        """The accumulated counts as CPU tensors (None before the first batch): saved by a mid-epoch checkpoint."""
        if self._flat is None:
            return None
        return {"flat": [f.cpu() for f in self._flat], "scalars": self._scalars.cpu()}

    def load_state_dict(self, state: dict | None) -> None:
        """Continue from :meth:`state_dict` (moved to the device of the next batch)."""
        if state is None:
            self._flat = self._scalars = None
            return
        self._flat = [f.clone() for f in state["flat"]]
        self._scalars = state["scalars"].clone()

    def reduced_state(self) -> dict | None:
        """:meth:`state_dict` summed over ranks, leaving this rank's own counts as they are (every rank calls it)."""
        copy = MetricAccumulator(self.schema)
        copy.load_state_dict(self.state_dict())
        if copy._flat is None:
            copy._init(torch.device("cpu"))
        copy.all_reduce()
        return copy.state_dict()

    def update(self, logits: Sequence[torch.Tensor], targets: torch.Tensor, loss: torch.Tensor | float | None = None
               ) -> None:
        """Add a batch: ``logits`` one ``[B, K_i]`` per attribute, ``targets`` ``[B, len(schema)]``, mean ``loss``."""
        preds = torch.stack([lg.detach().argmax(dim=1) for lg in logits], dim=1)
        if self._flat is None:
            self._init(preds.device)
        elif self._flat[0].device != preds.device:  # restored from a checkpoint
            self._flat = [f.to(preds.device) for f in self._flat]
            self._scalars = self._scalars.to(preds.device)
        targets = targets.to(preds.device)
        for i, (k, flat) in enumerate(zip(self.schema.num_classes, self._flat)):
            t = targets[:, i]
            idx = torch.where(t >= 0, t * k + preds[:, i], k * k)
            flat.index_add_(0, idx, torch.ones_like(idx))
        n = targets.shape[0]
        if loss is not None:
            self._scalars[0] += torch.as_tensor(loss, device=preds.device).detach().double() * n
            self._scalars[1] += n
        self._scalars[2] += n

    @property
    def cms(self) -> list[torch.Tensor]:
        if self._flat is None:
            return [torch.zeros(k, k, dtype=torch.int64) for k in self.schema.num_classes]
        return [f[:k * k].cpu().reshape(k, k) for k, f in zip(self.schema.num_classes, self._flat)]

    def all_reduce(self) -> None:
        """Sum the state over all ranks of the default process group (no-op when not distributed).

        Every rank must call it; a rank that saw no batch contributes zeros.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        if self._flat is None:
            self._init(torch.device(device))
        sizes = [f.numel() for f in self._flat]
        flat = torch.cat(self._flat).to(device)
        scalars = self._scalars.to(device)
        dist.all_reduce(flat)
        dist.all_reduce(scalars)
        self._flat = [t.to(self._scalars.device) for t in flat.split(sizes)]
        self._scalars = scalars.to(self._scalars.device)

    def compute(self) -> dict:
        s = self._scalars.tolist() if self._scalars is not None else [0.0, 0.0, 0.0]
        return summarize(self.cms, self.schema, loss=s[0] / s[1] if s[1] else None)

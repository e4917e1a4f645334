"""The official metric against a plain reference implementation, confusion matrices, class weights."""
from __future__ import annotations

import math

import pytest
import torch

from fastfashion.schema import FASHION_SCHEMA as S
from fastfashion.train.balance import class_weights
from fastfashion.train.metrics import MetricAccumulator, avg_class_accuracy, confusion_matrices, json_safe, summarize


def reference_avg_class_accuracy(preds, targets, num_classes):
    """Plain loops: recall per (attribute, class) present in the ground truth, flat mean."""
    recalls = []
    for i, k in enumerate(num_classes):
        for c in range(k):
            total = sum(1 for t in targets if t[i] == c)
            if total == 0:
                continue  # absent from the ground truth: excluded (the documented policy)
            correct = sum(1 for p, t in zip(preds, targets) if t[i] == c and p[i] == c)
            recalls.append(correct / total)
    return sum(recalls) / len(recalls)


def random_labels(n, gen):
    return torch.stack([torch.randint(0, k, (n,), generator=gen) for k in S.num_classes], dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_avg_class_accuracy_matches_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    targets, preds = random_labels(300, gen), random_labels(300, gen)
    # make some predictions right so recalls differ from chance
    right = torch.rand(300, 6, generator=gen) < 0.5
    preds = torch.where(right, targets, preds)
    ours = avg_class_accuracy(preds, targets, S)
    ref = reference_avg_class_accuracy(preds.tolist(), targets.tolist(), S.num_classes)
    assert ours == pytest.approx(ref, abs=1e-12)


def test_absent_class_is_excluded_and_reported():
    gen = torch.Generator().manual_seed(5)
    targets, preds = random_labels(200, gen), random_labels(200, gen)
    # neckline class 2 (square) and pattern class 6 (lattice) absent from the ground truth, but still predicted
    targets[:, 3][targets[:, 3] == 2] = 0
    targets[:, 0][targets[:, 0] == 6] = 5
    preds[:10, 3] = 2
    ours = avg_class_accuracy(preds, targets, S)
    ref = reference_avg_class_accuracy(preds.tolist(), targets.tolist(), S.num_classes)
    assert ours == pytest.approx(ref, abs=1e-12)
    summary = summarize(confusion_matrices(preds, targets, S), S)
    assert summary["absent_classes"] == ["pattern/lattice", "neckline/square_neckline"]
    assert summary["class_recall"]["neckline"]["square_neckline"] is None
    assert summary["avg_class_accuracy"] == pytest.approx(ref, abs=1e-12)


def test_perfect_and_majority_baselines():
    gen = torch.Generator().manual_seed(0)
    targets = random_labels(500, gen)
    assert avg_class_accuracy(targets, targets, S) == 1.0
    majority = torch.zeros_like(targets)  # always class 0: recall 1 for one class per attribute
    assert avg_class_accuracy(majority, targets, S) == pytest.approx(6 / 26)


def test_confusion_matrices_and_accuracies():
    targets = torch.tensor([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 2, 2, 3, 5, 2]])
    preds = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1], [1, 2, 2, 3, 5, 0]])
    cms = confusion_matrices(preds, targets, S)
    assert [tuple(cm.shape) for cm in cms] == [(k, k) for k in S.num_classes]
    # rows are the true class, columns the predicted one
    expected = [torch.zeros(k, k, dtype=torch.long) for k in S.num_classes]
    for t, p in zip(targets.tolist(), preds.tolist()):
        for i in range(len(S.num_classes)):
            expected[i][t[i], p[i]] += 1
    assert all(torch.equal(cm.long(), e) for cm, e in zip(cms, expected))
    assert cms[0][1, 0] == 1 and cms[0][1, 1] == 1 and cms[0][0, 0] == 1
    s = summarize(cms, S, loss=0.5)
    assert s["per_attribute"]["pattern"] == pytest.approx(2 / 3)
    assert s["per_attribute"]["fit"] == pytest.approx(2 / 3)
    assert s["per_attribute"]["sleeve"] == 1.0
    assert s["accuracy"] == pytest.approx((4 * 1.0 + 2 * 2 / 3) / 6)
    assert s["loss"] == 0.5 and s["num_samples"] == 3


def test_unlabelled_rows_are_ignored():
    targets = torch.tensor([[0, 0, 0, 0, 0, 0], [-1] * 6])
    preds = torch.tensor([[0, 0, 0, 0, 0, 0], [1] * 6])
    cms = confusion_matrices(preds, targets, S)
    assert sum(int(cm.sum()) for cm in cms) == 6
    assert all(int(cm[0, 0]) == 1 for cm in cms)  # the one labelled row, counted once per attribute


def test_accumulator_sums_batches_exactly():
    gen = torch.Generator().manual_seed(3)
    targets = random_labels(64, gen)
    logits = [torch.randn(64, k, generator=gen) for k in S.num_classes]
    acc = MetricAccumulator(S)
    for lo in range(0, 64, 10):
        acc.update([lg[lo:lo + 10] for lg in logits], targets[lo:lo + 10], loss=1.0)
    preds = torch.stack([lg.argmax(1) for lg in logits], 1)
    whole = confusion_matrices(preds, targets, S)
    assert all(torch.equal(a, b) for a, b in zip(acc.cms, whole))
    m = acc.compute()
    assert m["loss"] == pytest.approx(1.0) and m["avg_class_accuracy"] == avg_class_accuracy(preds, targets, S)


def test_class_weights_formula():
    counts = {a.name: [0] * a.num_classes for a in S}
    counts["pattern"] = [10, 20, 0, 10, 10, 50, 0]  # N = 100, K = 7
    counts["sleeve"] = [5, 5, 5]
    w = class_weights(counts, S)
    assert list(w) == list(S.names)
    assert w["pattern"] == pytest.approx([100 / 70, 100 / 140, 0, 100 / 70, 100 / 70, 100 / 350, 0])
    assert w["sleeve"] == pytest.approx([1.0, 1.0, 1.0])
    assert w["fit"] == [0.0, 0.0, 0.0]  # no labelled sample: every weight 0, never NaN
    with pytest.raises(ValueError, match="^class counts for 'sleeve' have 2 entries, schema has 3$"):
        class_weights({**counts, "sleeve": [1, 2]}, S)
    with pytest.raises(ValueError, match="^class counts have no entry for attribute 'fit'$"):
        class_weights({k: v for k, v in counts.items() if k != "fit"}, S)


def test_undefined_metrics_become_json_null():
    """No labelled sample: every class absent, averages NaN in Python, null in JSON (NaN is not JSON)."""
    import json

    s = summarize(confusion_matrices(torch.zeros(2, 6, dtype=torch.long), torch.full((2, 6), -1), S), S)
    assert math.isnan(s["avg_class_accuracy"])
    assert s["absent_classes"] == [f"{a}/{c}" for a, c in S.flat_names()]  # all 26, in official order
    safe = json_safe({**s, "history": [{"x": math.inf, "y": (1.5, -math.inf)}]})
    text = json.dumps(safe, allow_nan=False)  # raises on any NaN/inf left
    back = json.loads(text)
    assert back["avg_class_accuracy"] is None and back["accuracy"] is None
    assert set(back["per_attribute"].values()) == {None}
    assert back["history"] == [{"x": None, "y": [1.5, None]}]
    assert back["absent_classes"] == s["absent_classes"] and back["num_samples"] == 0

"""PNG figures of the shard set and the benchmarks (the training curves are :mod:`fastfashion.train.curves`)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..train.curves import pyplot, save_figure

if TYPE_CHECKING:
    from ..schema import Schema


def plot_class_histogram(class_counts: Mapping[str, Sequence[int]], schema: Schema, path: str | os.PathLike, *,
                         weights: Mapping[str, Sequence[float]] | None = None, title: str = "") -> Path:
    """Class counts per attribute (the seed report's figure 1), one panel per schema attribute; with ``weights``
    (e.g. :func:`~fastfashion.train.balance.class_weights` of the train counts, the trainer's) each class is shown
    with its loss weight (red dots, second axis). Written atomically."""
    plt = pyplot()
    path = Path(path)
    cols = min(3, len(schema))
    rows = -(-len(schema) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, a in zip(axes.flat, schema):
        counts = list(class_counts[a.name])
        x = range(a.num_classes)
        bars = ax.bar(x, counts, color="tab:blue")
        ax.set_xticks(list(x), a.classes, rotation=35, ha="right", fontsize=8)
        ax.set(title=a.name, ylabel="samples")
        for b, n in zip(bars, counts):
            ax.annotate(str(n), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=7)
        if weights is not None:
            tw = ax.twinx()
            tw.plot(list(x), list(weights[a.name]), "o", color="tab:red")
            tw.set_ylabel("class weight", color="tab:red")
            tw.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(schema):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(plt, fig, path)


def bar_label(row: dict, key: str = "ratio_to_baseline") -> str:
    """The text above one bar of :func:`plot_bench`: the row's ratio (``x``) or share (``%``), the same figure as the
    table's, marked when its rounds were too noisy (:mod:`fastfashion.bench.rounds`)."""
    if key not in row:
        label = ""
    elif key == "share_of_ceiling":
        label = f"{100 * row[key]:.0f}%"
    else:
        label = f"{row[key]:.1f}x"
    return f"{label} noisy".strip() if row.get("warnings") else label


def plot_bench(result: dict, path: str | os.PathLike) -> Path:
    """Bar chart of :func:`fastfashion.bench.report.run_bench`'s result: median images/s per backend with the
    min-max spread as error bars and the ratio to the baseline above each bar (the ratio of the medians, as in the
    table); with a training part a second panel shows end-to-end training images/s and the share of the ceiling.
    Rows too noisy to report are hatched and labelled ``noisy``."""
    plt = pyplot()
    path = Path(path)
    ok = {n: r for n, r in result["loaders"].items() if r["status"] == "ok"}
    panels = 2 if result.get("train") else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0][0]
    names = list(ok)
    med = [ok[n]["images_per_s"] for n in names]
    err = [[m - ok[n]["images_per_s_min"] for n, m in zip(names, med)],
           [ok[n]["images_per_s_max"] - m for n, m in zip(names, med)]]
    bars = ax.bar(names, med, yerr=err, capsize=4, color="tab:green")
    for b, n in zip(bars, names):
        if ok[n].get("warnings"):
            b.set_hatch("//")
        ax.annotate(bar_label(ok[n]), (b.get_x() + b.get_width() / 2, ok[n]["images_per_s_max"]), ha="center",
                    va="bottom", xytext=(0, 3), textcoords="offset points")  # above the error bar
    ax.set_ylim(top=1.12 * max(ok[n]["images_per_s_max"] for n in names) if names else None)  # room for labels
    cfg = result["config"]
    ax.set(title=f"loader images/s (batch {cfg['batch_size']}, {cfg['image_size']} px)", ylabel="images/s")
    if panels == 2:
        tr = {n: v for n, v in result["train"].items() if "images_per_s" in v}  # failed runs have no bar
        ax2 = axes[0][1]
        bars = ax2.bar(list(tr), [v["images_per_s"] for v in tr.values()], color="tab:purple")
        for b, v in zip(bars, tr.values()):
            if v.get("warnings"):
                b.set_hatch("//")
            ax2.annotate(bar_label(v, "share_of_ceiling"), (b.get_x() + b.get_width() / 2, v["images_per_s"]),
                         ha="center", va="bottom", xytext=(0, 3), textcoords="offset points")
        if tr:
            ax2.set_ylim(top=1.12 * max(v["images_per_s"] for v in tr.values()))
        ax2.set(title="ResNet-18 training images/s (share of the ceiling)", ylabel="images/s")
        ax2.tick_params(axis="x", rotation=30)
    m = result["machine"]
    fig.suptitle(f"{result['date'][:10]} - {m.get('cpu')} x{m['cpu_count']} - GPU: {m.get('gpu') or 'none'}",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(plt, fig, path)


def accuracy_at(history: Sequence[Mapping], minutes: float) -> float | None:
    """The best val average class accuracy a run had reached after ``minutes`` of training (its ``best.pt`` at that
    point: epoch ends only), None before its first epoch ended."""
    done = [r["val"]["avg_class_accuracy"] for r in history if r["minutes"] <= minutes + 1e-9]
    return max(done) if done else None


def time_to_accuracy(runs: Mapping[str, Sequence[Mapping]]) -> list[dict]:
    """At every epoch end of every run, each run's best val average class accuracy so far (the side-by-side table
    behind "ahead at every equal wall-clock point")."""
    times = sorted({r["minutes"] for h in runs.values() for r in h})
    return [{"minutes": t, **{name: accuracy_at(h, t) for name, h in runs.items()}} for t in times]


def plot_time_to_accuracy(runs: Mapping[str, Sequence[Mapping]], path: str | os.PathLike, *, title: str = "",
                          target: float | None = None) -> Path:
    """Val average class accuracy against training minutes (training plus validation wall time), one curve per run
    (``name -> metrics.json rows``), best-so-far as a step line; ``target`` as a dashed line. Written atomically."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, history in runs.items():
        t = [0.0] + [r["minutes"] for r in history]
        best, acc = [], 0.0
        for r in history:
            acc = max(acc, r["val"]["avg_class_accuracy"])
            best.append(acc)
        ax.step(t, [None] + best, where="post", label=f"{name} (best so far)")
        ax.plot(t[1:], [r["val"]["avg_class_accuracy"] for r in history], "o", ms=3, alpha=0.6)
    if target is not None:
        ax.axhline(target, ls="--", color="grey", lw=1)
    ax.set(xlabel="minutes (training + validation, wall clock)", ylabel="val average class accuracy",
           title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(plt, fig, Path(path))

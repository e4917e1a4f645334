"""PNG figures. matplotlib is imported lazily, with the non-interactive Agg backend (no display needed)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from .schema import Schema


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: Path) -> Path:
    """Write a figure atomically (see :func:`fastfashion.atomic.write_file`) and close it."""
    from .atomic import write_file
    try:
        write_file(path, lambda tmp: fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)
    return path


def plot_training_curves(history: Sequence[dict], path: str | os.PathLike) -> Path:
    """Loss and accuracy curves per epoch (the seed report's figure 2) from ``metrics.json`` rows.

    Left: train and val loss. Right: train and val accuracy and val average class accuracy. Written atomically.
    """
    plt = _pyplot()
    path = Path(path)
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [r["train"]["loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val"]["loss"] for r in history], "o-", label="val")
    ax_loss.set(title="loss (class-weighted CE, sum over categories)", xlabel="epoch", ylabel="loss")
    ax_acc.plot(epochs, [r["train"]["accuracy"] for r in history], "o-", label="train accuracy")
    ax_acc.plot(epochs, [r["val"]["accuracy"] for r in history], "o-", label="val accuracy")
    ax_acc.plot(epochs, [r["val"]["avg_class_accuracy"] for r in history], "s-", label="val avg class accuracy")
    ax_acc.set(title="accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_class_histogram(class_counts: Mapping[str, Sequence[int]], schema: "Schema", path: str | os.PathLike, *,
                         weights: Mapping[str, Sequence[float]] | None = None, title: str = "") -> Path:
    """Class counts per attribute (the seed report's figure 1), one panel per schema attribute; with ``weights``
    (e.g. the trainer's :func:`~fastfashion.metrics.class_weights` from the train counts) each class is shown
    with its loss weight (red dots, second axis). Written atomically."""
    plt = _pyplot()
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
    return _save(plt, fig, path)


def plot_bench(result: dict, path: str | os.PathLike) -> Path:
    """Bar chart of :func:`fastfashion.bench.run_bench`'s result: median images/s per backend with the min-max spread
    as error bars and the ratio to the baseline above each bar; with CUDA a second panel shows end-to-end training."""
    plt = _pyplot()
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
        label = f"{ok[n]['ratio_to_baseline']:.1f}x" if "ratio_to_baseline" in ok[n] else ""
        ax.annotate(label, (b.get_x() + b.get_width() / 2, ok[n]["images_per_s_max"]), ha="center", va="bottom",
                    xytext=(0, 3), textcoords="offset points")  # above the error bar
    cfg = result["config"]
    ax.set(title=f"loader images/s (batch {cfg['batch_size']}, {cfg['image_size']} px)", ylabel="images/s")
    if panels == 2:
        tr = {n: v for n, v in result["train"].items() if "images_per_s" in v}  # failed runs have no bar
        ax2 = axes[0][1]
        ax2.bar(list(tr), [v["images_per_s"] for v in tr.values()], color="tab:purple")
        ax2.set(title="ResNet-18 training images/s", ylabel="images/s")
        ax2.tick_params(axis="x", rotation=30)
    m = result["machine"]
    fig.suptitle(f"{result['date'][:10]} - {m.get('cpu')} x{m['cpu_count']} - GPU: {m.get('gpu') or 'none'}",
                 fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)

"""The training curves PNG (loss and accuracy per epoch) and the figure helpers the other plots share.

matplotlib is imported lazily, with the non-interactive Agg backend (no display needed); it is optional: callers
that draw a figure as a by-product catch ImportError and go on.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..format.atomic import write_file


def pyplot():
    """matplotlib.pyplot on the Agg backend (raises ImportError without matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(plt, fig, path: Path) -> Path:
    """Write a figure atomically (:func:`~fastfashion.format.atomic.write_file`) and close it."""
    try:
        write_file(path, lambda tmp: fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)
    return path


def plot_training_curves(history: Sequence[dict], path: str | os.PathLike) -> Path:
    """Loss and accuracy curves per epoch (the seed report's figure 2) from ``metrics.json`` rows.

    Left: train and val loss. Right: train and val accuracy and val average class accuracy. Written atomically.
    """
    plt = pyplot()
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
    return save_figure(plt, fig, path)

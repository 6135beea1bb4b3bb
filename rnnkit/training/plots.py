"""The PNG plots of a run, drawn with matplotlib's object API (no pyplot, no
display: the Agg canvas renders straight to the file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rnnkit.data.dataset import Sequences
from rnnkit.training.rundir import write_atomically


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    write_atomically(path, lambda partial: figure.savefig(partial, format="png", dpi=100))


def plot_curves(history: list[dict[str, Any]], best_epoch: int, path: Path) -> Figure:
    """Loss and accuracy per epoch, training and validation, the best epoch
    marked; epochs ticked at whole numbers only. Returns the figure saved."""
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        axes.plot(epochs, [row[f"train_{metric}"] for row in history], "o-", ms=3, label="train")
        val = [row[f"val_{metric}"] for row in history]
        if val[0] is not None:
            axes.plot(epochs, val, "o-", ms=3, label="validation")
        axes.axvline(best_epoch, color="grey", ls=":", label=f"best (epoch {best_epoch})")
        axes.set(xlabel="epoch", ylabel=metric, title=metric.capitalize())
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    _save(figure, path)
    return figure


def plot_confusion(confusion: np.ndarray, path: Path) -> None:
    """The test confusion matrix: true class by row, predicted class by column."""
    classes = confusion.shape[0]
    size = min(3 + 0.5 * classes, 14)
    figure = Figure(figsize=(size, size), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set(
        xlabel="predicted class", ylabel="true class",
        title=f"Test confusion ({np.trace(confusion)} of {confusion.sum()} right)",
        xticks=range(classes), yticks=range(classes),
    )
    if classes <= 20:
        threshold = confusion.max() / 2
        for (true, predicted), count in np.ndenumerate(confusion):
            axes.text(
                predicted, true, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > threshold else "black",
            )
    _save(figure, path)


def plot_samples(data: Sequences, predicted: np.ndarray, path: Path) -> Figure:
    """A few sequences, each titled with its predicted and true labels (red when
    wrong): a line per sequence of one feature (value by step), else a
    steps-by-features image (for the digit sets, the picture itself).
    Returns the figure saved."""
    count = len(data)
    columns = min(count, 6)
    rows = -(-count // columns)
    figure = Figure(figsize=(2.2 * columns, 2.2 * rows), layout="constrained")
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for n, axes in enumerate(grid):
        if n >= count:
            axes.set_axis_off()
            continue
        steps = data.steps if data.lengths is None else int(data.lengths[n])
        values = data.x[n, :steps]  # (T, F)
        if data.features == 1:
            axes.plot(values[:, 0], lw=1)
            axes.set_xlabel("step", fontsize=7)
            axes.set_ylabel("value", fontsize=7)
        else:
            axes.imshow(values, cmap="gray_r", aspect="auto")
            axes.set_xticks([])
            axes.set_xlabel("feature", fontsize=7)
            axes.set_ylabel("step", fontsize=7)
        axes.tick_params(labelsize=6)
        truth = "?" if data.y is None else int(data.y[n])
        right = data.y is not None and truth == predicted[n]
        axes.set_title(
            f"predicted {predicted[n]}, true {truth}", fontsize=8, color="black" if right else "red"
        )
    _save(figure, path)
    return figure

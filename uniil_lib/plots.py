"""Plots people would rather look at than read: accuracy-matrix heatmaps and metric bars."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def accuracy_heatmap(matrix, task_names: Sequence[str] | None = None, *, title: str = "", ax=None, vmax: float = 100.0):
    """Heatmap of an accuracy matrix (rows: after step i, columns: task j), annotated in %.

    Cells above the diagonal are tasks not yet learned (transfer), the diagonal is plasticity, and cells
    below it show what is remembered. Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    a = np.asarray(matrix, dtype=float)
    names = list(task_names) if task_names is not None else [str(j) for j in range(a.shape[1])]
    if ax is None:
        size = max(4.0, 0.7 * len(names) + 2)
        _, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(a, annot=True, fmt=".0f", vmin=0, vmax=vmax, cmap="viridis", cbar_kws={"label": "accuracy (%)"},
                xticklabels=names, yticklabels=[f"after {n}" for n in names], ax=ax, square=True)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("training step")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    return ax


def heatmap_grid(results: dict, task_names: Sequence[str], *, suptitle: str = ""):
    """One heatmap per method, side by side; ``results`` maps method name -> matrix. Returns the Figure."""
    import matplotlib.pyplot as plt

    n = len(results)
    size = max(4.0, 0.7 * len(task_names) + 2)
    fig, axes = plt.subplots(1, n, figsize=((size + 1) * n, size), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], results.items()):
        accuracy_heatmap(matrix, task_names, title=name, ax=ax)
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig

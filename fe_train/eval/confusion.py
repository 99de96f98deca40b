"""A confusion matrix as a PNG: gold classes down, predictions across, counts in the cells."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_confusion(counts: Sequence[Sequence[int]], rows: Sequence[str], columns: Sequence[str], out_path: str | Path,
                   title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    matrix = np.asarray(counts)  # (classes, classes + 1): the last column counts replies naming no class
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(columns), 1.0 + 0.7 * len(rows)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(columns)), labels=list(columns), rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), labels=list(rows))
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    high = matrix.max() if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > high / 2 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return Path(out_path)
